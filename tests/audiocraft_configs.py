"""The xp.cfg of each released model family, composed from audiocraft's own configuration tree.

A released checkpoint's ``xp.cfg`` is audiocraft's ``config/`` tree composed by hydra (through
dora) with the arguments of the model's training grid (``audiocraft/grids/...``), dumped with
``OmegaConf.to_yaml``. ``compose`` does the same with hydra's compose API (``version_base='1.1'``,
as audiocraft's ``train.py``), so every key is what a real file holds: e.g. magnet-small-10secs
says ``transformer_lm.cross_attention: false`` (builders turn it on from ``fuser.cross``),
``memory_efficient: true``, ``segment_duration: 0`` and ``span_len: -1`` (the loader takes
``dataset.segment_duration`` and ``masking.span_len``). Tests shrink only the scale keys.

The tree: $MAGNET_JAX_AUDIOCRAFT_CONFIG, else ``../shared/audiocraft_config`` beside the checkout,
else the copy ``scripts/install_reference.sh`` extracts from audiocraft 1.3.0's PyPI sdist.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Sequence

import reference

CONFIG_ENV = "MAGNET_JAX_AUDIOCRAFT_CONFIG"
SDIST_COPY = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "magnet_jax_reference" / "audiocraft-1.3.0" / "config"


@dataclasses.dataclass(frozen=True)
class Family:
    """A released model: its training grid's arguments and what its model card says."""
    name: str
    solver: str
    dset: str
    grid: tuple[str, ...]           # the overrides its grid (audiocraft/grids/...) adds
    dim: int
    num_heads: int
    num_layers: int
    segment_duration: float
    sample_rate: int
    t5: str
    t5_width: int
    kind: str = "magnet"            # "magnet" or "musicgen"
    n_q: int = 4
    card: int = 2048
    channels: int = 1

    @property
    def hop(self) -> int:
        return self.sample_rate // 50


_MEDIUM = ("model/lm/model_scale=medium",)
_FSDP = ("autocast=false", "fsdp.use=true")
_TEN_S = ("dataset.segment_duration=10", "dataset.batch_size=576", "generate.lm.decoding_steps=[20,10,10,10]")
_MUSIC = dict(solver="magnet/magnet_32khz", dset="internal/music_400k_32khz", sample_rate=32000,
              t5="t5-base", t5_width=768)
_AUDIO = dict(solver="magnet/audio_magnet_16khz", dset="internal/sounds_16khz", sample_rate=16000,
              t5="t5-large", t5_width=1024, segment_duration=10)
_SMALL = dict(dim=1024, num_heads=16, num_layers=24)
_MEDIUM_SIZE = dict(dim=1536, num_heads=24, num_layers=48)

# audiocraft/grids/magnet/magnet_32khz.py and audio_magnet_16khz.py. The magnet grid binds the
# 10 s variant of the medium block without `medium` (a slip in the grid: the released
# magnet-medium-10secs is 1.5B), so medium-10secs is composed with `medium` added.
MAGNET_FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("facebook/magnet-small-10secs", grid=_TEN_S, segment_duration=10, **_SMALL, **_MUSIC),
    Family("facebook/magnet-small-30secs", grid=(), segment_duration=30, **_SMALL, **_MUSIC),
    Family("facebook/magnet-medium-10secs", grid=_FSDP + _MEDIUM + _TEN_S, segment_duration=10,
           **_MEDIUM_SIZE, **_MUSIC),
    Family("facebook/magnet-medium-30secs", grid=_FSDP + _MEDIUM + ("optim.optimizer=adamw", "optim.lr=1e-4"),
           segment_duration=30, **_MEDIUM_SIZE, **_MUSIC),
    Family("facebook/audio-magnet-small", grid=(), **_SMALL, **_AUDIO),
    Family("facebook/audio-magnet-medium", grid=_MEDIUM + _FSDP, **_MEDIUM_SIZE, **_AUDIO),
)}


# audiocraft/grids/musicgen/musicgen_base_32khz.py, musicgen_melody_32khz.py and
# musicgen_stereo_finetune_32khz.py (for the MusicGen issue; the MAGNeT converter refuses them).
_MG = dict(solver="musicgen/musicgen_base_32khz", dset="internal/music_400k_32khz", segment_duration=30,
           sample_rate=32000, t5="t5-base", t5_width=768, kind="musicgen")
_ADAM = ("optim.optimizer=adamw", "optim.lr=1e-4")
_LARGE = ("model/lm/model_scale=large", "classifier_free_guidance.training_dropout=0.2",
          "conditioners.description.t5.word_dropout=0.2", *_ADAM, "optim.max_norm=3")
_LARGE_SIZE = dict(dim=2048, num_heads=32, num_layers=48)
_STEREO = ("codebooks_pattern.delay.delays=[0,0,1,1,2,2,3,3]", "transformer_lm.n_q=8",
           "interleave_stereo_codebooks.use=true", "channels=2")
MUSICGEN_FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("facebook/musicgen-small", grid=_FSDP, **_SMALL, **_MG),
    Family("facebook/musicgen-medium", grid=_FSDP + _MEDIUM + _ADAM, **_MEDIUM_SIZE, **_MG),
    Family("facebook/musicgen-large", grid=_FSDP + _LARGE, **_LARGE_SIZE, **_MG),
    Family("facebook/musicgen-melody", grid=_FSDP + _MEDIUM + _ADAM, **_MEDIUM_SIZE,
           **dict(_MG, solver="musicgen/musicgen_melody_32khz")),
    Family("facebook/musicgen-stereo-small", grid=_FSDP + _STEREO, n_q=8, channels=2, **_SMALL, **_MG),
    Family("facebook/musicgen-stereo-medium", grid=_FSDP + _STEREO + _MEDIUM + _ADAM, n_q=8, channels=2,
           **_MEDIUM_SIZE, **_MG),
    Family("facebook/musicgen-stereo-large", grid=_FSDP + _STEREO + _LARGE, n_q=8, channels=2,
           **_LARGE_SIZE, **_MG),
)}


def config_dir() -> Path:
    """audiocraft 1.3.0's ``config/`` tree (fails in CI, skips elsewhere, when there is none)."""
    here = Path(__file__).resolve().parents[1]
    candidates = [Path(p) for p in [os.environ.get(CONFIG_ENV)] if p]
    candidates += [here.parent / "shared" / "audiocraft_config", SDIST_COPY]
    for path in candidates:
        if (path / "config.yaml").is_file() and (path / "solver").is_dir():
            return path

    def missing():
        raise FileNotFoundError(f"no audiocraft config tree in {[str(c) for c in candidates]}")
    return reference.require_import(missing, "audiocraft's config/ tree", "bash scripts/install_reference.sh")


def compose(solver: str, dset: str, overrides: Sequence[str] = ()):
    """The composed training config (an OmegaConf DictConfig) for ``solver`` + ``overrides``."""
    hydra = reference.require("hydra")
    from hydra import compose as hydra_compose, initialize_config_dir
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # hydra's version_base 1.1 compatibility notice
        hydra.core.global_hydra.GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.1"):
            return hydra_compose(config_name="config",
                                 overrides=[f"solver={solver}", f"dset={dset}", *overrides])


def family_xp(family: Family, overrides: Sequence[str] = ()):
    """A family's composed xp.cfg, with extra ``overrides`` (e.g. the shrunk scale keys)."""
    return compose(family.solver, family.dset, [*family.grid, *overrides])


def shrink(dim: int = 48, num_heads: int = 3, num_layers: int = 2) -> list[str]:
    """The scale keys (model/lm/model_scale's), shrunk so a test runs in seconds."""
    return [f"transformer_lm.dim={dim}", f"transformer_lm.num_heads={num_heads}",
            f"transformer_lm.num_layers={num_layers}"]


def to_yaml(cfg) -> str:
    """The text audiocraft's export writes as 'xp.cfg' (``OmegaConf.to_yaml``, unresolved)."""
    from omegaconf import OmegaConf
    return OmegaConf.to_yaml(cfg)
