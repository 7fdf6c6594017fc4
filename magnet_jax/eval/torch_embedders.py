"""CLAP and PaSST as Fréchet-audio-distance embedders, run through the models' own PyTorch packages.

Both read weights the user already has on disk (no PyPI package ships them, and nothing here
downloads) and compute what the reference packages compute, on the CPU or wherever torch puts
them. torch and the packages are imported when a loader is called, not when this module is.

    from magnet_jax.eval.torch_embedders import load_clap, load_passt
    clap = load_clap("~/weights/630k-audioset-best.pt")          # [N, samples @ 48 kHz] -> [N, 512]
    passt = load_passt("~/weights/passt-s-f128-p16-s10-ap.476-swa.pt")  # [N, samples @ 32 kHz] -> [N, 768]

(``magnet-jax eval --embedding clap=PATH`` / ``passt=PATH``.) Installs, each with ``--no-deps``
because the packages' declared pins (numpy<2, wandb, torchaudio, timm) are not needed:

    pip install --no-deps laion_clap==1.1.7 torchlibrosa==0.1.0 h5py pandas braceexpand webdataset wget ftfy wcwidth
    pip install --no-deps hear21passt==0.0.26

**CLAP** (LAION-CLAP, ``laion_clap``). ``CLAP_Module.__init__`` fetches RoBERTa from the Hugging
Face hub, so the loader builds only the audio branch with the package's classes (HTSAT from
``create_htsat_model`` and the ``model_configs/HTSAT-*.json`` config; the ``audio_projection`` MLP
as ``CLAP.__init__`` builds it) and loads the checkpoint's ``audio_branch.*`` /
``audio_projection.*`` keys (``module.`` stripped; the text tower's keys are ignored). It then
runs the package's own ``CLAP_Module.get_audio_embedding_from_data(x, use_tensor=False)``: int16
quantization, ``repeatpad`` of clips shorter than 10 s, HTSAT, projection, L2 normalization, a
512-d row per clip. The architecture (HTSAT-tiny for the 630k checkpoints, HTSAT-base for the
``music_*`` ones, HTSAT-large, HTSAT-tiny-win-1536) is read off the checkpoint's shapes.
For clips longer than 10 s the package takes one *random* 10-s crop; here instead every 10-s
window is embedded (windows from the start every 10 s, the last one ending at the clip's end, so
nothing is padded) and the clip's row is the mean of its windows' embeddings, L2-normalized
again: deterministic, and it sees the whole clip. Fusion checkpoints (``*-fusion-*.pt``) are
refused: their feature path needs torchaudio and torchvision at run time.

**PaSST** (``hear21passt``). The model is built with the package's ``get_basic_model(mode=
"embed_only")`` (of ``hear21passt.base``, or ``base20sec`` / ``base30sec`` / ``hop100base`` /
``hop160base`` for those checkpoints) with ``pretrained=False``, then the local state dict goes
through the package's ``checkpoint_filter_fn`` and a strict load. The embedding is the package's
``get_scene_embeddings``: in ``embed_only`` mode, the 768-d mean of the final-norm CLS and
distillation tokens, one row per clip. A clip up to the model's window (10 s for ``base``) is one
forward pass; a longer one is cut by the package into windows of that length every 2.5 s (after
reflect-padding half a window at both ends) whose embeddings are averaged. Clips shorter than
one 16-frame patch (4801 samples, 0.15 s, for ``base``) are refused.

**Stand-ins.** The PyPI wheels of torchvision and torchaudio are CUDA builds whose compiled
extensions cannot load next to the CPU torch wheel, and timm imports torchvision. laion_clap
imports torchvision only for image transforms, its training data loader and a frozen-batch-norm
helper; hear21passt imports timm only to download weights, and torchaudio for its training-time
SpecAugment masks and Kaldi's mel filter bank. When the real module cannot be imported, the
loaders put a stand-in into ``sys.modules`` for the duration of the package's import only: its
attributes raise when used, except the training-only masks (built, never run in eval mode) and
``torchaudio.compliance.kaldi.get_mel_banks``, which is copied below from torchaudio 2.11 (BSD-2).
laion_clap's ``training/data.py`` also loads three text tokenizers from the hub when imported;
during that import their ``from_pretrained`` returns a stand-in instead (the audio path never
tokenizes), so loading never touches the network.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.machinery
import inspect
import io
import json
import math
import os
import sys
import types
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

CLAP_PIP = ("pip install --no-deps laion_clap==1.1.7 torchlibrosa==0.1.0 h5py pandas braceexpand "
            "webdataset wget ftfy wcwidth")
PASST_PIP = "pip install --no-deps hear21passt==0.0.26"
TORCH_PIP = "pip install torch"

CLAP_SAMPLE_RATE = 48000
CLAP_WINDOW = 480000                      # 10 s: the package's max_len
CLAP_AUDIO_PREFIXES = ("audio_branch.", "audio_projection.")
# the rest of a CLAP checkpoint: text tower, the contrastive heads and temperatures
CLAP_OTHER_PREFIXES = ("text_branch.", "text_transform.", "text_projection.", "audio_transform.",
                       "token_embedding.", "positional_embedding", "ln_final.", "logit_scale_a",
                       "logit_scale_t")
CLAP_FUSION_PREFIXES = ("audio_branch.fusion_model.", "audio_branch.mel_conv2d.")
# HTSAT width (the projection's input) -> model config; tiny with a 1536-sample STFT window is its own config
CLAP_AMODELS = {768: "HTSAT-tiny", 1024: "HTSAT-base", 2048: "HTSAT-large"}

PASST_SAMPLE_RATE = 32000
PASST_VARIANTS = ("base", "base20sec", "base30sec", "hop100base", "hop160base")
# time patches of the positional embedding -> variant (200 is also hop160base: pass variant=)
PASST_VARIANT_BY_TIME_PATCHES = {99: "base", 200: "base20sec", 300: "base30sec", 320: "hop100base"}


# ----------------------------------------------------------------------------------------------
# imports: lazy, with clear errors, and stand-ins for modules whose wheels cannot load here
# ----------------------------------------------------------------------------------------------
def _require_torch():
    try:
        import torch
    except ImportError as err:
        raise ImportError(f"the CLAP and PaSST embedders need PyTorch: {TORCH_PIP}") from err
    return torch


def _is_real(module: types.ModuleType) -> bool:
    return getattr(module, "__file__", None) is not None


def _importable(name: str) -> bool:
    """Whether the real ``name`` imports (a module without a file in sys.modules is a stub)."""
    module = sys.modules.get(name)
    if module is not None:
        return _is_real(module)
    if importlib.machinery.PathFinder.find_spec(name) is None:
        return False
    try:
        return _is_real(importlib.import_module(name))
    except Exception:  # noqa: BLE001 - a broken install (e.g. a CUDA extension) is "not importable"
        return False


def _unavailable(qualname: str, why: str) -> type:
    def _raise(*args, **kwargs):
        raise RuntimeError(f"{qualname} is a stand-in ({why}); the embedding path should not use it")
    return type(qualname.rpartition(".")[2] or qualname, (), {"__init__": _raise, "__call__": _raise})


def _stand_in(name: str, why: str, **attrs: Any) -> types.ModuleType:
    """A module whose unknown public attributes are classes that raise when built or called."""
    module = types.ModuleType(name, f"stand-in for {name}: {why}")
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    module.__path__ = []                                   # a package, so submodule imports resolve

    def __getattr__(attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _unavailable(f"{name}.{attr}", why)

    module.__getattr__ = __getattr__
    for key, value in attrs.items():
        setattr(module, key, value)
    return module


@contextlib.contextmanager
def _modules_in_place(modules: dict[str, types.ModuleType]) -> Iterator[None]:
    """Put ``modules`` into sys.modules for the block, then restore what was there before."""
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


def _link_packages(modules: dict[str, types.ModuleType]) -> dict[str, types.ModuleType]:
    for name, module in modules.items():
        parent, _, child = name.rpartition(".")
        if parent in modules:
            setattr(modules[parent], child, module)
    return modules


def _torchvision_stand_ins() -> dict[str, types.ModuleType]:
    why = "torchvision: laion_clap imports it for images and training only"
    names = ("torchvision", "torchvision.transforms", "torchvision.datasets", "torchvision.ops",
             "torchvision.ops.misc")
    return _link_packages({name: _stand_in(name, why) for name in names})


def _timm_stand_ins() -> dict[str, types.ModuleType]:
    why = "timm: hear21passt imports it only to download pretrained weights"

    def download_cached_file(*args, **kwargs):
        raise RuntimeError("hear21passt tried to download weights; load a local state dict instead")

    modules = {name: _stand_in(name, why) for name in ("timm", "timm.models")}
    modules["timm.models._hub"] = _stand_in("timm.models._hub", why, download_cached_file=download_cached_file)
    return _link_packages(modules)


# Kaldi's mel filter bank, from torchaudio 2.11 (torchaudio/compliance/kaldi.py, BSD-2-Clause,
# Copyright (c) 2017 Facebook Inc. (Soumith Chintala)); the vtln_warp_factor == 1 path only.
def _mel_scale_scalar(freq: float) -> float:
    return 1127.0 * math.log(1.0 + freq / 700.0)


def _kaldi_get_mel_banks(num_bins: int, window_length_padded: int, sample_freq: float, low_freq: float,
                         high_freq: float, vtln_low: float, vtln_high: float, vtln_warp_factor: float):
    import torch
    if vtln_warp_factor != 1.0:
        raise NotImplementedError("this copy of torchaudio's get_mel_banks has no VTLN warping")
    assert num_bins > 3, "Must have at least 3 mel bins"
    assert window_length_padded % 2 == 0
    num_fft_bins = window_length_padded / 2
    nyquist = 0.5 * sample_freq
    if high_freq <= 0.0:
        high_freq += nyquist
    assert (0.0 <= low_freq < nyquist) and (0.0 < high_freq <= nyquist) and (low_freq < high_freq), \
        f"Bad values in options: low-freq {low_freq} and high-freq {high_freq} vs. nyquist {nyquist}"
    fft_bin_width = sample_freq / window_length_padded
    mel_low_freq = _mel_scale_scalar(low_freq)
    mel_high_freq = _mel_scale_scalar(high_freq)
    mel_freq_delta = (mel_high_freq - mel_low_freq) / (num_bins + 1)
    bin = torch.arange(num_bins).unsqueeze(1)
    left_mel = mel_low_freq + bin * mel_freq_delta
    center_mel = mel_low_freq + (bin + 1.0) * mel_freq_delta
    right_mel = mel_low_freq + (bin + 2.0) * mel_freq_delta
    center_freqs = 700.0 * ((center_mel / 1127.0).exp() - 1.0)
    mel = (1127.0 * (1.0 + (fft_bin_width * torch.arange(num_fft_bins)) / 700.0).log()).unsqueeze(0)
    up_slope = (mel - left_mel) / (center_mel - left_mel)
    down_slope = (right_mel - mel) / (right_mel - center_mel)
    bins = torch.max(torch.zeros(1), torch.min(up_slope, down_slope))
    return bins, center_freqs


def _torchaudio_stand_ins() -> dict[str, types.ModuleType]:
    import torch
    why = "torchaudio: hear21passt uses only its Kaldi mel filter bank and training-time masks"

    class _TrainingOnlyMask(torch.nn.Module):
        """torchaudio's FrequencyMasking / TimeMasking: SpecAugment, applied only in training."""

        def __init__(self, *args, **kwargs):
            super().__init__()

        def forward(self, x):
            raise RuntimeError("SpecAugment masking is training-only; the embedders run in eval mode")

    modules = {
        "torchaudio": _stand_in("torchaudio", why),
        "torchaudio.transforms": _stand_in("torchaudio.transforms", why, FrequencyMasking=_TrainingOnlyMask,
                                           TimeMasking=_TrainingOnlyMask),
        "torchaudio.compliance": _stand_in("torchaudio.compliance", why),
        "torchaudio.compliance.kaldi": _stand_in("torchaudio.compliance.kaldi", why,
                                                 get_mel_banks=_kaldi_get_mel_banks),
    }
    return _link_packages(modules)


class _Lazy:
    """A tokenizer stand-in: fine to create at import, raises when used."""

    def __init__(self, what: str):
        self._what = what

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self._what} is a stand-in: the CLAP embedder uses the audio branch only")

    def __getattr__(self, attr: str):
        raise RuntimeError(f"{self._what}.{attr} is a stand-in: the CLAP embedder uses the audio branch only")


@contextlib.contextmanager
def _tokenizers_offline(classes: list[type]) -> Iterator[None]:
    """``cls.from_pretrained`` returns a stand-in for the block (laion_clap's import-time tokenizers)."""
    unique = list(dict.fromkeys(classes))
    saved = {cls: cls.__dict__.get("from_pretrained") for cls in unique}
    for cls in unique:
        cls.from_pretrained = classmethod(lambda c, name, *a, **k: _Lazy(f"{c.__name__}.from_pretrained({name!r})"))
    try:
        yield
    finally:
        for cls, original in saved.items():
            if original is None:
                delattr(cls, "from_pretrained")
            else:
                setattr(cls, "from_pretrained", original)


@functools.lru_cache(maxsize=1)
def _import_laion_clap() -> types.SimpleNamespace:
    """Import laion_clap (with stand-ins where needed) -> its CLAP_Module, CLAP, CLAPAudioCfp,
    create_htsat_model and the model_configs directory."""
    _require_torch()
    if "laion_clap" not in sys.modules and importlib.machinery.PathFinder.find_spec("laion_clap") is None:
        raise ImportError(f"the CLAP embedder needs LAION-CLAP's package: {CLAP_PIP}")
    # laion_clap imports these from transformers; resolving them first keeps transformers' cached
    # "is torchvision available" answer from ever seeing a stand-in
    from transformers import (BartModel, BartTokenizer, BertModel, BertTokenizer,  # noqa: F401
                              RobertaModel, RobertaTokenizer)
    from transformers.tokenization_utils_base import BatchEncoding  # noqa: F401
    stand_ins = {} if _importable("torchvision") else _torchvision_stand_ins()
    tokenizers = [BertTokenizer, RobertaTokenizer, BartTokenizer]
    with _modules_in_place(stand_ins), _tokenizers_offline(tokenizers):
        try:
            hook = importlib.import_module("laion_clap.hook")
            # laion_clap puts its own directory on sys.path and imports clap_module from there
            htsat = importlib.import_module("clap_module.htsat")
            model = importlib.import_module("clap_module.model")
            factory = importlib.import_module("clap_module.factory")
        except ImportError as err:
            raise ImportError(f"laion_clap cannot be imported ({err}); install it with: {CLAP_PIP}") from err
    return types.SimpleNamespace(
        CLAP_Module=hook.CLAP_Module, CLAP=model.CLAP, CLAPAudioCfp=model.CLAPAudioCfp,
        create_htsat_model=htsat.create_htsat_model, config_dir=Path(factory.__file__).parent / "model_configs")


@functools.lru_cache(maxsize=1)
def _import_passt() -> types.SimpleNamespace:
    """Import hear21passt (with stand-ins where needed) -> its variant modules and models.passt."""
    _require_torch()
    if "hear21passt" not in sys.modules and importlib.machinery.PathFinder.find_spec("hear21passt") is None:
        raise ImportError(f"the PaSST embedder needs the hear21passt package: {PASST_PIP}")
    stand_ins = {}
    if not _importable("torchaudio"):
        stand_ins.update(_torchaudio_stand_ins())
    if not _importable("timm"):
        stand_ins.update(_timm_stand_ins())
    with _modules_in_place(stand_ins):
        try:
            variants = {v: importlib.import_module(f"hear21passt.{v}") for v in PASST_VARIANTS}
            passt = importlib.import_module("hear21passt.models.passt")
        except ImportError as err:
            raise ImportError(f"hear21passt cannot be imported ({err}); install it with: {PASST_PIP}") from err
    return types.SimpleNamespace(variants=variants, base=variants["base"], passt=passt)


# ----------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------
def _load_torch_file(path: str, what: str) -> Any:
    torch = _require_torch()
    path = os.path.expanduser(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"cannot read the {what} checkpoint {path}: {type(err).__name__}: {err}") from err


def _check_file(path: str, what: str) -> str:
    full = os.path.expanduser(str(path))
    if not os.path.isfile(full):
        raise FileNotFoundError(f"{what} checkpoint not found: {path}")
    return full


def _tensor_dict(obj: Any, what: str, path: str) -> dict:
    import torch
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} is not a {what} state dict (a dict of tensors)")
    return dict(obj)


def _list(keys, limit: int = 8) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _strict_load(module, state: dict, what: str, path: str) -> None:
    expected = set(module.state_dict())
    unknown, missing = set(state) - expected, expected - set(state)
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"unknown keys: {_list(unknown)}")
        if missing:
            parts.append(f"missing keys: {_list(missing)}")
        raise ValueError(f"{path} does not fit the {what} model ({'; '.join(parts)})")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:                       # shape mismatches
        raise ValueError(f"{path} does not fit the {what} model: {err}") from err


def _clip_array(audio: np.ndarray, name: str, min_samples: int) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 2:
        raise ValueError(f"{name}: audio must be mono [N, samples], got shape {audio.shape}")
    if audio.shape[1] < min_samples:
        raise ValueError(f"{name}: clips of {audio.shape[1]} samples are too short; it needs at least "
                         f"{min_samples} samples")
    if not np.all(np.isfinite(audio)):
        raise ValueError(f"{name}: audio contains NaN or infinity")
    return audio


# ----------------------------------------------------------------------------------------------
# CLAP
# ----------------------------------------------------------------------------------------------
def clap_audio_state(checkpoint: Any, path: str = "checkpoint") -> dict:
    """The ``audio_branch.*`` / ``audio_projection.*`` tensors of a CLAP checkpoint
    (``{"state_dict": {"module.<key>": tensor}}`` or a bare state dict; ``module.`` stripped).
    Raises ValueError on keys that belong to no CLAP model and on fusion checkpoints."""
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    state = _tensor_dict(state, "CLAP", path)
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    fusion = [k for k in state if k.startswith(CLAP_FUSION_PREFIXES)]
    if fusion:
        raise ValueError(f"{path} is a fusion CLAP checkpoint ({fusion[0]}, ...); only non-fusion checkpoints "
                         "(e.g. 630k-audioset-best.pt, music_audioset_epoch_15_esc_90.14.pt) are supported")
    unknown = [k for k in state if not k.startswith(CLAP_AUDIO_PREFIXES + CLAP_OTHER_PREFIXES)]
    if unknown:
        raise ValueError(f"{path}: unknown keys for a CLAP checkpoint: {_list(unknown)}")
    audio = {k: v for k, v in state.items() if k.startswith(CLAP_AUDIO_PREFIXES)}
    if not audio:
        raise ValueError(f"{path} has no audio_branch / audio_projection keys: not a CLAP checkpoint")
    return audio


def infer_clap_amodel(audio_state: dict, path: str = "checkpoint") -> str:
    """The laion_clap audio config (``HTSAT-tiny``, ``HTSAT-base``, ...) that fits these shapes."""
    proj = audio_state.get("audio_projection.0.weight")
    if proj is None or proj.ndim != 2 or int(proj.shape[1]) not in CLAP_AMODELS:
        shape = None if proj is None else tuple(proj.shape)
        raise ValueError(f"{path}: cannot tell the HTSAT size from audio_projection.0.weight {shape}; "
                         f"pass amodel= (one of {sorted(CLAP_AMODELS.values())})")
    amodel = CLAP_AMODELS[int(proj.shape[1])]
    stft = audio_state.get("audio_branch.spectrogram_extractor.stft.conv_real.weight")
    if amodel == "HTSAT-tiny" and stft is not None and int(stft.shape[-1]) == 1536:
        amodel = "HTSAT-tiny-win-1536"
    return amodel


def _clap_audio_model(pk: types.SimpleNamespace, model_cfg: dict):
    """CLAP's audio half, built as ``CLAP.__init__`` builds it, with CLAP's own audio methods."""
    import torch
    defaults = inspect.signature(pk.CLAP.__init__).parameters
    joint = defaults["joint_embed_shape"].default
    if defaults["mlp_act"].default != "relu":
        raise RuntimeError("unexpected laion_clap version: CLAP's default mlp_act is not relu")

    class ClapAudio(torch.nn.Module):
        encode_audio = pk.CLAP.encode_audio
        get_audio_embedding = pk.CLAP.get_audio_embedding

        def __init__(self):
            super().__init__()
            audio_cfg = pk.CLAPAudioCfp(**model_cfg["audio_cfg"])
            self.audio_cfg = audio_cfg
            self.audio_branch = pk.create_htsat_model(audio_cfg, False, "None")
            self.audio_projection = torch.nn.Sequential(
                torch.nn.Linear(model_cfg["embed_dim"], joint), torch.nn.ReLU(), torch.nn.Linear(joint, joint))

    return ClapAudio()


class ClapEmbedder:
    """LAION-CLAP audio embeddings: mono 48 kHz ``[N, samples]`` -> L2-normalized ``[N, 512]``.

    Clips up to 10 s: exactly ``CLAP_Module.get_audio_embedding_from_data(x, use_tensor=False)``.
    Longer clips: the mean of their 10-s windows' embeddings, normalized (see the module doc)."""
    name = "clap"
    sample_rate = CLAP_SAMPLE_RATE
    min_samples = 1

    def __init__(self, module, amodel: str, batch_size: int = 8):
        self.module = module            # a laion_clap CLAP_Module around the audio half
        self.amodel = amodel
        self.batch_size = int(batch_size)

    @staticmethod
    def windows(samples: int) -> list[int]:
        """Start offsets of the 10-s windows of a clip longer than 10 s."""
        starts = list(range(0, samples - CLAP_WINDOW + 1, CLAP_WINDOW))
        if starts[-1] + CLAP_WINDOW < samples:
            starts.append(samples - CLAP_WINDOW)
        return starts

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        import torch
        audio = _clip_array(audio, "CLAP", self.min_samples)
        samples = audio.shape[1]
        starts = self.windows(samples) if samples > CLAP_WINDOW else [0]
        width = min(samples, CLAP_WINDOW)
        pieces = [clip[s:s + width] for clip in audio for s in starts]
        rows = []
        with torch.no_grad():
            for i in range(0, len(pieces), self.batch_size):
                rows.append(self.module.get_audio_embedding_from_data(pieces[i:i + self.batch_size],
                                                                      use_tensor=False))
        emb = np.concatenate(rows).astype(np.float32).reshape(len(audio), len(starts), -1)
        if len(starts) == 1:
            return emb[:, 0]
        mean = emb.mean(axis=1)
        return (mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def load_clap(path: str, amodel: str | None = None, batch_size: int = 8) -> ClapEmbedder:
    """A LAION-CLAP checkpoint (``630k-audioset-best.pt``, ``music_audioset_epoch_15_esc_90.14.pt``,
    ...) -> ``ClapEmbedder``. ``amodel`` (``HTSAT-tiny``, ``HTSAT-base``, ...) overrides the
    architecture read off the checkpoint's shapes."""
    full = _check_file(path, "CLAP")
    pk = _import_laion_clap()
    audio_state = clap_audio_state(_load_torch_file(full, "CLAP"), path)
    amodel = amodel or infer_clap_amodel(audio_state, path)
    config = pk.config_dir / f"{amodel}.json"
    if not config.is_file():
        known = sorted(p.stem for p in pk.config_dir.glob("HTSAT-*.json"))
        raise ValueError(f"unknown CLAP audio model {amodel!r}; laion_clap has {known}")
    model_cfg = json.loads(config.read_text())
    model_cfg.update(enable_fusion=False, fusion_type="None")
    import torch
    with torch.random.fork_rng(devices=[]):          # the throwaway random init leaves torch's RNG alone
        model = _clap_audio_model(pk, model_cfg)
    _strict_load(model, audio_state, f"CLAP {amodel} audio", path)
    model.eval()
    module = pk.CLAP_Module.__new__(pk.CLAP_Module)     # __init__ would fetch RoBERTa from the hub
    torch.nn.Module.__init__(module)
    module.enable_fusion = False
    module.model = model
    module.model_cfg = model_cfg
    module.eval()
    return ClapEmbedder(module, amodel, batch_size=batch_size)


# ----------------------------------------------------------------------------------------------
# PaSST
# ----------------------------------------------------------------------------------------------
def infer_passt_variant(state: dict, path: str = "checkpoint") -> str:
    """hear21passt module (``base``, ``base20sec``, ...) whose model fits the positional embedding."""
    pos = state.get("time_new_pos_embed")
    if pos is None:
        raise ValueError(f"{path} has no time_new_pos_embed: not a PaSST state dict")
    patches = int(pos.shape[-1])
    if patches not in PASST_VARIANT_BY_TIME_PATCHES:
        raise ValueError(f"{path}: no hear21passt model has {patches} time patches; pass variant= "
                         f"(one of {PASST_VARIANTS})")
    return PASST_VARIANT_BY_TIME_PATCHES[patches]


class PasstEmbedder:
    """PaSST scene embeddings (``hear21passt``'s ``get_scene_embeddings``, ``mode="embed_only"``):
    mono 32 kHz ``[N, samples]`` -> ``[N, 768]``, the mean of the CLS and distillation tokens."""
    name = "passt"
    sample_rate = PASST_SAMPLE_RATE

    def __init__(self, model, get_scene_embeddings: Callable, variant: str, batch_size: int = 4):
        self.model = model              # hear21passt PasstBasicWrapper, mode="embed_only"
        self._scene = get_scene_embeddings
        self.variant = variant
        self.batch_size = int(batch_size)
        mel, patch = model.mel, model.net.patch_embed
        # one patch of frames (stft center=True on the pre-emphasized n-1 samples), and enough
        # samples for the STFT's reflect padding
        self.min_samples = max((patch.patch_size[1] - 1) * mel.hopsize + 1, mel.n_fft // 2 + 2)

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        import torch
        audio = _clip_array(audio, "PaSST", self.min_samples)
        rows = []
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Input image size")
            for i in range(0, len(audio), self.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(audio[i:i + self.batch_size]))
                rows.append(self._scene(x, self.model).cpu().numpy())
        return np.concatenate(rows).astype(np.float32)


def load_passt(path: str, variant: str | None = None, arch: str | None = None,
               batch_size: int = 4) -> PasstEmbedder:
    """A PaSST state dict (``passt-s-f128-p16-s10-ap.476-swa.pt`` and the like) -> ``PasstEmbedder``.

    ``variant`` names the hear21passt module whose ``get_basic_model`` builds the model (read off
    the positional embedding when omitted; ``hop160base`` has the shapes of ``base20sec`` and must
    be named). ``arch`` is passed to ``hear21passt.base.get_basic_model`` (default there:
    ``passt_s_swa_p16_128_ap476``; ``passt_s_kd_p16_128_ap486`` is the same network)."""
    full = _check_file(path, "PaSST")
    pk = _import_passt()
    checkpoint = _load_torch_file(full, "PaSST")
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("model"), dict):
        checkpoint = checkpoint["model"]        # as the package's checkpoint_filter_fn reads DeiT files
    state = _tensor_dict(checkpoint, "PaSST", path)
    variant = variant or infer_passt_variant(state, path)
    if variant not in pk.variants:
        raise ValueError(f"unknown PaSST variant {variant!r}; one of {PASST_VARIANTS}")
    module = pk.variants[variant]
    head = state.get("head.1.weight")
    n_classes = int(head.shape[0]) if head is not None else 527
    kwargs = {"mode": "embed_only"}
    if arch is not None:
        if variant != "base":
            raise ValueError("arch= applies to variant='base' only")
        kwargs["arch"] = arch
    import torch
    original = module.get_model_passt
    module.get_model_passt = functools.partial(original, pretrained=False, n_classes=n_classes)
    try:
        # the package prints the model; its random init should leave torch's RNG alone
        with contextlib.redirect_stdout(io.StringIO()), torch.random.fork_rng(devices=[]):
            model = module.get_basic_model(**kwargs)
    finally:
        module.get_model_passt = original
    pk.passt.first_RUN = False                                   # its forward's debug prints
    state = pk.passt.checkpoint_filter_fn(state, model.net)
    _strict_load(model.net, state, f"PaSST {variant}", path)
    model.eval()
    return PasstEmbedder(model, pk.base.get_scene_embeddings, variant, batch_size=batch_size)
