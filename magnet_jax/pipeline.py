"""Text -> tokens -> audio with a released MAGNeT checkpoint: audiocraft's ``MAGNeT`` in JAX.

    from magnet_jax.pipeline import MAGNeT
    model = MAGNeT.from_pretrained("facebook/magnet-small-10secs")      # or a local folder
    out = model.generate(["80s synth pop", "calm piano"], seed=0)       # audio [2, 1, N], tokens [2, 4, T]
    out = model.generate_continuation(wav, 44100, ["...continue with drums"])

What ``from_pretrained`` reads is what audiocraft's ``MAGNeT.get_pretrained`` reads: a folder (a
local one, or Hugging Face's ``facebook/magnet-*`` repo) holding ``state_dict.bin`` (the LM and the
text projection, with the experiment's ``xp.cfg``) and ``compression_state_dict.bin`` (EnCodec: a
native export, or the redirect ``{'pretrained': 'facebook/encodec_32khz'}``). Every setting comes
from ``xp.cfg`` (the text encoder's name, the segment duration, the LM shape) or the codec itself
(the frame rate). The torch pickles are converted once into an orbax folder (``convert``), cached
per checkpoint file, so every later load reads orbax and safetensors only: torch is not imported.

Generation reproduces audiocraft's ``MAGNeT.generate``: descriptions and their null conditions are
tokenized together (padded to the longest prompt of the batch: padding changes MAGNeT's
cross-attention, so it is kept), the compiled sampler (``magnet_jax.lm.sampler``) decodes all stages
in one program, and EnCodec decodes the tokens. Like the reference, MAGNeT emits exactly one segment
(``dataset.segment_duration``, trimmed to whole spans by the 'nonoverlap' arrangement). Many prompts
run in fixed-size batches (the last padded by repeating its last prompt, so its text padding and
its compiled program stay the same), each batch split over the devices of a mesh.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from magnet_jax.seeds import seed_key
from magnet_jax.codec import Encodec, EncodecConfig
from magnet_jax.codec.runner import CodecRunner
from magnet_jax import integrity
from magnet_jax.lm.config import LMConfig
from magnet_jax.lm.model import MagnetLM
from magnet_jax.lm.sampler import MagnetSampler, SamplerConfig, output_length
from magnet_jax.text import Conditioner

log = logging.getLogger(__name__)

# The released checkpoints audiocraft's MAGNeT.get_pretrained documents.
KNOWN_MODELS: dict[str, str] = {
    "facebook/magnet-small-10secs": "text to music, 10 s, 300M",
    "facebook/magnet-medium-10secs": "text to music, 10 s, 1.5B",
    "facebook/magnet-small-30secs": "text to music, 30 s, 300M",
    "facebook/magnet-medium-30secs": "text to music, 30 s, 1.5B",
    "facebook/audio-magnet-small": "text to sound effects, 10 s, 300M",
    "facebook/audio-magnet-medium": "text to sound effects, 10 s, 1.5B",
}
# The model used when none is named: the small model trained on the synthetic corpus that ships
# inside the package (magnet_jax/assets/default_model, see its MODEL_CARD.md), when present.
DEFAULT_MODEL_DIR = Path(__file__).parent / "assets" / "default_model"
DEFAULT_MODEL: str | None = str(DEFAULT_MODEL_DIR) if (DEFAULT_MODEL_DIR / "magnet.json").is_file() else None
MINILM = "minilm"               # magnet.json's text encoder name for all-MiniLM-L6-v2

LM_FILE = "state_dict.bin"
CODEC_FILE = "compression_state_dict.bin"
META_FILE = "magnet.json"      # marks a converted folder
FORMAT = 1
CACHE_ENV = "MAGNET_JAX_CACHE"


class PipelineError(ValueError):
    """Input the user can fix (model name, files, durations, prompts): a one-line message."""


class ModelNotFoundError(PipelineError, FileNotFoundError):
    """The model name is unknown, or its files are missing (which ones, and where)."""


class Generation(NamedTuple):
    """What a generate call returns: audio float32 [N, C, samples], tokens int32 [N, K, T]."""
    audio: np.ndarray
    tokens: np.ndarray
    sample_rate: int


@dataclasses.dataclass(frozen=True)
class CheckpointFiles:
    """The two files of an audiocraft MAGNeT export, and where they came from."""
    lm: Path
    codec: Path
    source: str


# -- finding the files ----------------------------------------------------------------------------
def known_models_text() -> str:
    return ", ".join(KNOWN_MODELS)


def no_model_message() -> str:
    """What to pass when no model is named and no default model ships yet."""
    return (f"no model given and the default model is missing from {DEFAULT_MODEL_DIR} (reinstall "
            "magnet-jax, or rebuild it with scripts/train_default_model.sh): pass a released "
            f"checkpoint name ({known_models_text()}), a folder holding {LM_FILE} and {CODEC_FILE}, "
            "or a folder written by `magnet-jax convert` / `magnet-jax export`")


def locate(name_or_path: str | os.PathLike) -> CheckpointFiles | Path:
    """A converted folder (Path), or the two audiocraft files of a local folder or a hub name."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if (path / META_FILE).is_file():
            return path
        missing = [f for f in (LM_FILE, CODEC_FILE) if not (path / f).is_file()]
        if missing:
            raise ModelNotFoundError(
                f"{path} is missing {' and '.join(missing)}: a MAGNeT folder holds {LM_FILE} (the LM "
                f"with its xp.cfg) and {CODEC_FILE} (the codec), as audiocraft exports them, or is a "
                f"folder written by `magnet-jax convert` ({META_FILE})")
        return CheckpointFiles(path / LM_FILE, path / CODEC_FILE, str(path.absolute()))
    if path.exists():
        raise ModelNotFoundError(f"{path} is a file; pass the folder that holds {LM_FILE} and {CODEC_FILE}")
    name = str(name_or_path)
    if name not in KNOWN_MODELS:
        raise ModelNotFoundError(f"unknown model {name!r}: not a folder here and not a released "
                                 f"MAGNeT checkpoint ({known_models_text()})")
    return CheckpointFiles(_hub_file(name, LM_FILE), _hub_file(name, CODEC_FILE), name)


def _hub_file(repo: str, filename: str) -> Path:
    """One file of a hub repo: downloaded when online, from the Hugging Face cache offline."""
    try:
        from huggingface_hub import hf_hub_download
        return Path(hf_hub_download(repo_id=repo, filename=filename))
    except Exception as err:  # noqa: BLE001 - no network, not cached, no hub library: one message
        raise ModelNotFoundError(
            f"could not get {filename} of {repo} from the Hugging Face Hub or its cache "
            f"({type(err).__name__}). Without network, download https://huggingface.co/{repo} "
            f"elsewhere (`huggingface-cli download {repo} --local-dir DIR`), copy DIR here and pass "
            f"that folder instead of the name") from err


def _hub_snapshot(repo: str) -> Path:
    """A hub model folder (the codec a compression_state_dict.bin redirects to)."""
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(repo_id=repo, allow_patterns=["config.json", "*.safetensors",
                                                                     "pytorch_model.bin"]))
    except Exception as err:  # noqa: BLE001
        raise ModelNotFoundError(
            f"the codec redirects to the Hugging Face model {repo!r}, which could not be fetched or "
            f"found in the cache ({type(err).__name__}); download it elsewhere "
            f"(`huggingface-cli download {repo} --local-dir DIR`) and pass codec=DIR "
            f"(--codec DIR on the command line)") from err


# -- the conversion cache -------------------------------------------------------------------------
def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where converted checkpoints live: ``cache_dir``, $MAGNET_JAX_CACHE, or ~/.cache/magnet_jax."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "magnet_jax")


def cache_folder(files: CheckpointFiles, cache_dir: str | os.PathLike | None = None) -> Path:
    """One folder per checkpoint content: named after the source, keyed by the files' identity
    (real path, size, modification time), so a changed file is converted again."""
    ident = hashlib.sha1()
    for f in (files.lm, files.codec):
        st = f.resolve().stat()
        ident.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", files.source.strip("/"))[-60:].strip("-") or "model"
    return cache_root(cache_dir) / f"{slug}-{ident.hexdigest()[:12]}"


# -- conversion (the only part that needs torch) ----------------------------------------------------
def _read_codec(path: Path, codec_folder: str | os.PathLike | None) -> tuple[EncodecConfig, Encodec]:
    """compression_state_dict.bin -> our Encodec; a hub redirect is fetched (or read from the cache)."""
    from magnet_jax.codec.convert import load_audiocraft_codec
    from magnet_jax.lm.convert import read_torch_checkpoint
    pkg = read_torch_checkpoint(path)
    if isinstance(pkg, Mapping) and "pretrained" in pkg and codec_folder is None:
        codec_folder = _hub_snapshot(str(pkg["pretrained"]))
    return load_audiocraft_codec(path, hf_folder=codec_folder)


def _check_compatible(lm: LMConfig, codec: EncodecConfig) -> None:
    if lm.n_q > codec.n_q or lm.card != codec.bins:
        raise PipelineError(f"the LM models {lm.n_q} codebooks of {lm.card} codes but the codec has "
                            f"{codec.n_q} of {codec.bins}: the two files are not from one model")
    if codec.frame_rate != int(codec.frame_rate):
        raise PipelineError(f"codec frame rate {codec.frame_rate} Hz is not a whole number")


def convert(name_or_path: str | os.PathLike | CheckpointFiles, out: str | os.PathLike, *,
            text_encoder: str | os.PathLike | None = None,
            codec: str | os.PathLike | None = None) -> Path:
    """Convert an audiocraft MAGNeT export to an orbax folder that loads without torch.

    Written to a temporary sibling and renamed, so an interrupted conversion never leaves a folder
    that looks complete. ``text_encoder`` (a local T5 folder) is recorded so later loads find it.
    """
    from magnet_jax.lm.checkpoint import save_lm
    from magnet_jax.lm.convert import (CONDITION_PREFIX, lm_config_from_xp, lm_from_state, read_torch_checkpoint,
                                       split_checkpoint)
    from magnet_jax.text import output_proj_from_torch, text_settings_from_xp

    files = name_or_path if isinstance(name_or_path, CheckpointFiles) else locate(name_or_path)
    if isinstance(files, Path):
        raise PipelineError(f"{files} is already converted (it holds {META_FILE})")
    codec_cfg, codec_model = _read_codec(files.codec, codec)
    state, xp = split_checkpoint(read_torch_checkpoint(files.lm))
    if xp is None:
        raise PipelineError(f"{files.lm} has no 'xp.cfg': not an audiocraft export")
    lm_cfg = lm_config_from_xp(xp, frame_rate=int(codec_cfg.frame_rate))
    _check_compatible(lm_cfg, codec_cfg)
    lm_cfg, lm = lm_from_state(state, lm_cfg)
    meta: dict[str, Any] = {
        "format": FORMAT, "source": files.source, "files": [str(files.lm), str(files.codec)],
        "lm": dataclasses.asdict(lm_cfg), "codec": dataclasses.asdict(codec_cfg), "text": None,
        "text_encoder": str(Path(text_encoder).absolute()) if text_encoder else None, "xp_cfg": xp}
    text_params = None
    if lm_cfg.cross_attention:
        settings = text_settings_from_xp(xp)
        prefix = f"{CONDITION_PREFIX}conditioners.{settings.attribute}.output_proj"
        proj = output_proj_from_torch({k: v for k, v in state.items() if k.startswith(CONDITION_PREFIX)}, prefix)
        text_params = {"weight": proj["kernel"].T, "bias": proj["bias"]}   # torch layout
        meta["text"] = dataclasses.asdict(settings)
    return _write_converted(Path(out), meta, lm, codec_model, text_params, save_lm)


def _write_converted(out: Path, meta: dict, lm: MagnetLM, codec: Encodec, text_params: dict | None,
                     save_lm) -> Path:
    import orbax.checkpoint as ocp
    out = out.expanduser().absolute()
    if out.exists() and not (out / META_FILE).is_file() and any(out.iterdir()):
        raise PipelineError(f"{out} exists and is not a converted MAGNeT folder; pick an empty or new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_lm(lm, tmp / "lm")
        with ocp.StandardCheckpointer() as ckpt:
            ckpt.save(tmp / "codec", nnx.to_pure_dict(nnx.state(codec)), force=True)
            if text_params is not None:
                ckpt.save(tmp / "text", text_params, force=True)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
        integrity.write_manifest(tmp)   # last: a folder with a manifest is complete
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# -- loading a converted folder (no torch) ---------------------------------------------------------
def _restore(path: Path) -> Any:
    import orbax.checkpoint as ocp
    try:
        with ocp.StandardCheckpointer() as ckpt:
            return jax.tree.map(np.asarray, ckpt.restore(path.absolute()))
    except Exception as err:  # noqa: BLE001 - any failure to read weights: one line naming the folder
        raise _unreadable(path, err) from err


def _unreadable(path: Path, err: Exception) -> PipelineError:
    """A weights folder that orbax cannot read (damaged or truncated files in a folder without a
    manifest, or loaded with verify=False): the first line of the cause, not orbax's traceback."""
    from magnet_jax.train.checkpointing import root_cause
    return PipelineError(f"cannot read the weights in {path} ({root_cause(err)}): the folder is damaged or "
                         f"incomplete; write it again")


def load_converted_codec(folder: str | os.PathLike, *, verify: bool = True) -> tuple[EncodecConfig, Encodec]:
    """The codec of a converted model folder (the shipped default model included): what
    ``tokenize --codec-weights`` needs to make tokens a converted LM can be fine-tuned on.
    ``verify``: check the folder's files against its manifest first (see ``verify_model_folder``)."""
    folder = Path(folder).absolute()
    if verify:
        verify_model_folder(folder)
    meta = _read_meta(folder)
    cfg = EncodecConfig(**meta["codec"])
    return cfg, _load_codec(folder, cfg)


def verify_model_folder(folder: Path) -> None:
    """Check every file of a model folder against its manifest (``magnet_jax.integrity``) before
    anything is read from it: a damaged weight file is one error naming it, never a generation
    from damaged weights. A folder without a manifest (older versions, by hand) loads with a warning."""
    remedy = ("Write it again (convert or export it again; delete a cached conversion to redo it; reinstall "
              "magnet-jax for the shipped model), or pass --no-verify (verify=False) to load it as it is")
    try:
        integrity.verify(folder, what="model folder", remedy=remedy)
    except integrity.IntegrityError as err:
        raise PipelineError(str(err)) from None


def _read_meta(folder: Path) -> dict:
    meta = json.loads((folder / META_FILE).read_text())
    if meta.get("format") != FORMAT:
        raise PipelineError(f"{folder} was converted by another magnet-jax version (format "
                            f"{meta.get('format')}, this one reads {FORMAT}); convert it again")
    return meta


def _load_codec(folder: Path, cfg: EncodecConfig) -> Encodec:
    abstract = nnx.eval_shape(lambda: Encodec(cfg, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, _restore(folder / "codec")))
    return nnx.merge(graphdef, state)


def _load_lm(folder: Path, compute_dtype: str) -> MagnetLM:
    from magnet_jax.lm.checkpoint import load_lm
    from magnet_jax.lm.convert import build_lm
    try:
        lm = load_lm(folder / "lm")
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - see _unreadable
        raise _unreadable(folder / "lm", err) from err
    if lm.cfg.compute_dtype == compute_dtype:
        return lm
    return build_lm(lm.cfg.replace(compute_dtype=compute_dtype), nnx.to_pure_dict(nnx.state(lm, nnx.Param)))


def _load_conditioner(folder: Path, meta: dict, dim: int,
                      text_encoder: str | os.PathLike | None, mesh: Mesh | None) -> Conditioner | None:
    """T5 (override > the folder recorded at conversion > xp.cfg's hub name) + output_proj."""
    from magnet_jax.text import TextEncoder, TextSettings
    from magnet_jax.text.conditioner import TextConditioner, load_output_proj
    if meta["text"] is None:
        return None
    settings = TextSettings(**meta["text"])
    recorded = meta.get("text_encoder")
    if settings.encoder == MINILM:      # a model trained by this project (magnet_jax.export)
        path = text_encoder or None
        encoder = TextEncoder.minilm(path, max_length=meta.get("text_max_tokens"), mesh=mesh)
    else:
        path = text_encoder or (recorded if recorded and Path(recorded).is_dir() else settings.encoder)
        encoder = TextEncoder.t5(path, mesh=mesh)
    conditioner = TextConditioner(encoder.width, dim, nnx.Rngs(0))
    proj = _restore(folder / "text")
    width = proj["weight"].shape[1]
    if width != encoder.width:
        raise PipelineError(f"text encoder {path} gives {encoder.width}-wide states but the checkpoint's "
                            f"output_proj expects {width} ({settings.encoder}); pass the right T5")
    load_output_proj(conditioner, {"p.weight": proj["weight"], "p.bias": proj["bias"]}, "p")
    return Conditioner(encoder, conditioner)


def auto_mesh() -> Mesh | None:
    """A data-parallel mesh over every accelerator; None on one device or on CPU (virtual CPU
    devices share the same cores, so splitting a batch over them gains nothing)."""
    from magnet_jax.train.sharding import make_mesh
    devices = jax.devices()
    if len(devices) < 2 or devices[0].platform == "cpu":
        return None
    return make_mesh(data=-1, devices=devices)


# -- audio helpers -----------------------------------------------------------------------------------
def convert_audio(wav: np.ndarray, from_rate: int, to_rate: int, channels: int) -> np.ndarray:
    """[B, C, N] float32 at ``from_rate`` -> [B, channels, M] at ``to_rate`` (audiocraft's
    convert_audio: resample, then mix down to mono, repeat mono, or keep the first channels).
    Resampling uses soxr (audiocraft uses julius: the two differ slightly)."""
    if from_rate != to_rate:
        import soxr
        wav = np.stack([soxr.resample(x.T, from_rate, to_rate).T for x in wav]).astype(np.float32)
    src = wav.shape[1]
    if src == channels:
        return wav
    if channels == 1:
        return wav.mean(axis=1, keepdims=True)
    if src == 1:
        return np.repeat(wav, channels, axis=1)
    if src > channels:
        return wav[:, :channels]
    raise PipelineError(f"the prompt audio has {src} channels; the model takes {channels}")


def _pad_index(start: int, batch: int, n: int) -> list[int]:
    """Rows of one fixed-size batch: the real ones, then the last real one repeated."""
    return [min(i, n - 1) for i in range(start, start + batch)]


# -- the model -----------------------------------------------------------------------------------------
class MAGNeT:
    """A MAGNeT LM, its text conditioner and its codec, with audiocraft's generation API."""

    def __init__(self, lm: MagnetLM, codec: Encodec, conditioner: Conditioner | None, *,
                 name: str = "", mesh: Mesh | None = None):
        _check_compatible(lm.cfg, codec.cfg)
        if lm.cfg.frame_rate != int(codec.cfg.frame_rate):
            raise PipelineError(f"LM frame rate {lm.cfg.frame_rate} != codec frame rate {codec.cfg.frame_rate}")
        self.name = name
        self.mesh = mesh
        self.lm_cfg = lm.cfg
        self.codec_cfg = codec.cfg
        self.conditioner = conditioner
        self.sampler = MagnetSampler(lm, mesh)
        self.codec = CodecRunner(codec, mesh)
        self.generation_params = SamplerConfig()
        self.checkpoint_dir: Path | None = None

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike | None = None, *,
                        text_encoder: str | os.PathLike | None = None,
                        codec: str | os.PathLike | None = None,
                        cache_dir: str | os.PathLike | None = None,
                        mesh: Mesh | None | str = "auto", compute_dtype: str = "float32",
                        verify: bool = True) -> "MAGNeT":
        """Load a released checkpoint (hub name), an audiocraft folder, or a converted folder.

        An audiocraft export is converted once (torch) into ``cache_dir`` (default
        $MAGNET_JAX_CACHE or ~/.cache/magnet_jax) and read from there afterwards (no torch).
        ``text_encoder``: a local T5 folder when xp.cfg's hub name (t5-base / t5-large) cannot be
        fetched; ``codec``: a local EncodecModel folder for a codec redirect; ``mesh``: "auto"
        (every accelerator), None (one device) or a Mesh; ``compute_dtype``: the LM's
        "float32" or "bfloat16"; ``verify``: check the converted folder's files against its
        manifest (False for huge trusted folders).
        """
        name_or_path = name_or_path if name_or_path is not None else DEFAULT_MODEL
        if name_or_path is None:
            raise ModelNotFoundError(no_model_message())
        found = locate(name_or_path)
        if isinstance(found, Path):
            folder = found
        else:
            folder = cache_folder(found, cache_dir)
            if not (folder / META_FILE).is_file():
                log.info("converting %s into %s (once)", found.source, folder)
                convert(found, folder, text_encoder=text_encoder, codec=codec)
        model = cls.load_converted(folder, text_encoder=text_encoder, mesh=mesh,
                                   compute_dtype=compute_dtype, verify=verify)
        model.name = str(name_or_path)
        return model

    @classmethod
    def load_converted(cls, folder: str | os.PathLike, *, text_encoder: str | os.PathLike | None = None,
                       mesh: Mesh | None | str = "auto", compute_dtype: str = "float32",
                       verify: bool = True) -> "MAGNeT":
        """A folder written by ``convert`` or ``export`` (orbax + JSON; reads no torch pickle),
        checked against its manifest first unless ``verify=False``."""
        folder = Path(folder).absolute()
        if verify:
            verify_model_folder(folder)
        meta = _read_meta(folder)
        mesh = auto_mesh() if mesh == "auto" else mesh
        lm = _load_lm(folder, compute_dtype)
        _, codec_model = load_converted_codec(folder, verify=False)      # verified above
        conditioner = _load_conditioner(folder, meta, lm.cfg.dim, text_encoder, mesh)
        model = cls(lm, codec_model, conditioner, name=meta["source"], mesh=mesh)
        model.checkpoint_dir = folder
        if meta.get("generation"):      # the defaults an exported model was evaluated with
            model.set_generation_params(**meta["generation"])
        return model

    # -- properties (the reference's names) ---------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.codec_cfg.sample_rate

    @property
    def frame_rate(self) -> int:
        return self.lm_cfg.frame_rate

    @property
    def audio_channels(self) -> int:
        return self.codec_cfg.channels

    @property
    def duration(self) -> float:
        """Seconds of one segment: MAGNeT generates exactly this (xp.cfg dataset.segment_duration)."""
        return self.lm_cfg.segment_duration

    def output_frames(self, config: SamplerConfig | None = None) -> int:
        """Frames generated: the segment, trimmed to whole spans for 'nonoverlap' (500 -> 498)."""
        return output_length(self.lm_cfg, config or self.generation_params, self.lm_cfg.sequence_len)

    def set_generation_params(self, **params: Any) -> SamplerConfig:
        """Change the default sampler parameters (SamplerConfig fields), as audiocraft's method."""
        self.generation_params = self.sampler_config(params)
        return self.generation_params

    def sampler_config(self, params: Mapping[str, Any]) -> SamplerConfig:
        fields = {f.name for f in dataclasses.fields(SamplerConfig)}
        unknown = sorted(set(params) - fields)
        if unknown:
            raise PipelineError(f"unknown sampler parameter(s) {unknown}; known: {sorted(fields)}")
        config = dataclasses.replace(self.generation_params, **params).for_codebooks(self.lm_cfg.n_q)
        try:
            config.validate(self.lm_cfg.n_q)
        except ValueError as err:
            raise PipelineError(str(err)) from err
        return config

    def _check_duration(self, duration: float | None) -> None:
        if duration is not None and not math.isclose(float(duration), self.duration, rel_tol=1e-6):
            raise PipelineError(
                f"this MAGNeT model generates {self.duration:g} s segments only (its training segment, "
                f"xp.cfg dataset.segment_duration); {float(duration):g} s cannot be produced: "
                f"omit the duration or ask for {self.duration:g}")

    # -- generation -----------------------------------------------------------------------------
    def generate(self, descriptions: Sequence[str | None] | str, *, seed: int = 0,
                 key: jax.Array | None = None, batch_size: int | None = None, progress: bool = False,
                 duration: float | None = None, **params: Any) -> Generation:
        """Audio and tokens for text descriptions (None or "" = no text). ``params``: any
        SamplerConfig field (decoding_steps, temperature, anneal_temp, use_sampling, top_k, top_p,
        max_cfg_coef, min_cfg_coef, span_scoring, span_arrangement)."""
        descriptions = _descriptions(descriptions)
        return self._generate(descriptions, None, seed, key, batch_size, progress, duration, params)

    def generate_unconditional(self, num_samples: int, *, seed: int = 0, key: jax.Array | None = None,
                               batch_size: int | None = None, progress: bool = False,
                               duration: float | None = None, **params: Any) -> Generation:
        """Samples without text (both CFG halves are the null condition, so no CFG work is done)."""
        if int(num_samples) < 1:
            raise PipelineError(f"num_samples={num_samples}: ask for at least one sample")
        return self._generate([None] * int(num_samples), None, seed, key, batch_size, progress, duration, params)

    def generate_continuation(self, prompt: np.ndarray | jax.Array, prompt_sample_rate: int,
                              descriptions: Sequence[str | None] | None = None, *, seed: int = 0,
                              key: jax.Array | None = None, batch_size: int | None = None,
                              progress: bool = False, duration: float | None = None,
                              **params: Any) -> Generation:
        """Continue audio prompts ``[B, C, N]`` (or ``[C, N]``) at ``prompt_sample_rate``: the prompts
        are resampled to the codec's rate, encoded, and their tokens pinned while the rest is
        decoded. One prompt with several descriptions continues that prompt once per description."""
        wav = np.asarray(prompt, np.float32)
        if wav.ndim == 2:
            wav = wav[None]
        if wav.ndim != 3 or wav.shape[-1] < 1:
            raise PipelineError(f"prompt audio has shape {tuple(wav.shape)}; expected [B, C, N] or [C, N] "
                                f"with N >= 1 samples")
        bad = int(wav.size - np.count_nonzero(np.isfinite(wav)))
        if bad:   # NaN through the codec is a constant code, and the continuation would be silent garbage
            raise PipelineError(f"prompt audio has {bad} NaN/inf samples of {wav.size}: repair the audio first")
        descriptions = _descriptions(descriptions if descriptions is not None else [None] * wav.shape[0])
        if wav.shape[0] == 1 and len(descriptions) > 1:
            wav = np.repeat(wav, len(descriptions), axis=0)
        if wav.shape[0] != len(descriptions):
            raise PipelineError(f"{wav.shape[0]} prompt audios but {len(descriptions)} descriptions")
        wav = convert_audio(wav, int(prompt_sample_rate), self.sample_rate, self.audio_channels)
        return self._generate(descriptions, wav, seed, key, batch_size, progress, duration, params)

    def _generate(self, descriptions: list[str | None], prompt_audio: np.ndarray | None, seed: int,
                  key: jax.Array | None, batch_size: int | None, progress: bool,
                  duration: float | None, params: Mapping[str, Any]) -> Generation:
        from tqdm.auto import tqdm
        self._check_duration(duration)
        config = self.sampler_config(params)
        self._check_prompt(prompt_audio, config)
        n = len(descriptions)
        batch = self._batch_size(batch_size, n)
        if key is None:
            try:
                key = seed_key(seed)
            except ValueError as err:
                raise PipelineError(str(err)) from None
        tokens, audio = [], []
        starts = range(0, n, batch)
        for i, start in enumerate(tqdm(starts, desc="generating", unit="batch", disable=not progress)):
            rows = _pad_index(start, batch, n)
            prompt = None if prompt_audio is None else self._encode_prompt(prompt_audio[rows])
            codes = self.generate_tokens(jax.random.fold_in(key, i), [descriptions[r] for r in rows],
                                         prompt, config)
            tokens.append(codes)
            audio.append(self.codec.decode(codes))
        keep = [min(batch, n - s) for s in starts]
        tokens_np = np.concatenate([np.asarray(t)[:k] for t, k in zip(tokens, keep)])
        audio_np = np.concatenate([np.asarray(a)[:k] for a, k in zip(audio, keep)])
        return Generation(audio_np.astype(np.float32), tokens_np.astype(np.int32), self.sample_rate)

    def _batch_size(self, batch_size: int | None, n: int) -> int:
        """Rows per compiled call: all prompts at once by default (as the reference), rounded up
        to a multiple of the mesh's data-parallel size."""
        from magnet_jax.train.sharding import batch_axis_size
        if batch_size is not None and int(batch_size) < 1:
            raise PipelineError(f"batch_size={batch_size}: must be >= 1")
        batch = min(int(batch_size or n), n)
        if self.mesh is not None:
            ways = batch_axis_size(self.mesh)
            batch = -(-batch // ways) * ways
        return batch

    def _check_prompt(self, wav: np.ndarray | None, config: SamplerConfig) -> None:
        if wav is None:
            return
        frames, limit = self.codec.num_frames(wav.shape[-1]), self.output_frames(config)
        if frames >= limit:
            raise PipelineError(
                f"the prompt audio lasts {wav.shape[-1] / self.sample_rate:.3f} s ({frames} frames), not "
                f"shorter than the {limit / self.frame_rate:.3f} s ({limit} frames) this model generates: "
                f"shorten the prompt so something is left to generate")

    def _encode_prompt(self, wav: np.ndarray) -> jax.Array:
        return self.codec.encode(jnp.asarray(wav), n_q=self.lm_cfg.n_q)

    def conditions(self, descriptions: Sequence[str | None]) -> jax.Array | None:
        """The projected text condition [B, S, D] (tokenized with the null texts, as the reference);
        None when no row has text (the null condition's cross-attention output is exactly 0)."""
        if all(not d for d in descriptions):
            return None
        if self.conditioner is None:
            raise PipelineError("this model has no text conditioner; pass None descriptions")
        cond, _null = self.conditioner.encode_with_null(list(descriptions))
        if self.mesh is not None:
            from magnet_jax.train.sharding import logical_sharding
            cond = jax.device_put(cond, logical_sharding(self.mesh, "batch", None, None))
        return cond

    def generate_tokens(self, key: jax.Array, descriptions: Sequence[str | None],
                        prompt: jax.Array | None = None, config: SamplerConfig | None = None) -> jax.Array:
        """One batch: tokens [B, K, T] (the compiled sampler, no audio)."""
        try:
            return self.sampler.generate(key, cond=self.conditions(descriptions), prompt=prompt,
                                         num_samples=len(descriptions),
                                         config=config or self.generation_params)
        except ValueError as err:
            raise PipelineError(str(err)) from err

    def decode(self, tokens: np.ndarray | jax.Array) -> np.ndarray:
        """Tokens [B, K, T] -> audio [B, C, T * hop] (the reference's generate_audio)."""
        return np.asarray(self.codec.decode(jnp.asarray(tokens)))


def _descriptions(descriptions: Sequence[str | None] | str) -> list[str | None]:
    if isinstance(descriptions, str):
        descriptions = [descriptions]
    descriptions = list(descriptions)
    if not descriptions:
        raise PipelineError("no descriptions given: pass at least one prompt (None for no text)")
    bad = [i for i, d in enumerate(descriptions) if d is not None and not isinstance(d, str)]
    if bad:
        raise PipelineError(f"descriptions must be strings or None; entries {bad[:5]} are not")
    return descriptions
