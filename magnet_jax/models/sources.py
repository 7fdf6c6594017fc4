"""Where checkpoints come from: released names on the Hugging Face Hub (or its cache), local
audiocraft folders, folders written by ``convert`` / ``export``, the shipped default model, and the
cache of converted checkpoints.

A released folder holds ``state_dict.bin`` (the LM and the text projection, with the experiment's
``xp.cfg``) and ``compression_state_dict.bin`` (EnCodec: a native export, or the redirect
``{'pretrained': 'facebook/encodec_32khz'}``), as audiocraft's ``get_pretrained`` reads them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from pathlib import Path

from magnet_jax.models.errors import ModelNotFoundError

# The released checkpoints audiocraft's MAGNeT.get_pretrained and MusicGen.get_pretrained document.
KNOWN_MODELS: dict[str, str] = {
    "facebook/magnet-small-10secs": "text to music, 10 s, 300M",
    "facebook/magnet-medium-10secs": "text to music, 10 s, 1.5B",
    "facebook/magnet-small-30secs": "text to music, 30 s, 300M",
    "facebook/magnet-medium-30secs": "text to music, 30 s, 1.5B",
    "facebook/audio-magnet-small": "text to sound effects, 10 s, 300M",
    "facebook/audio-magnet-medium": "text to sound effects, 10 s, 1.5B",
    "facebook/musicgen-small": "MusicGen, text to music, up to 30 s per window, 300M",
    "facebook/musicgen-medium": "MusicGen, text to music, 1.5B",
    "facebook/musicgen-large": "MusicGen, text to music, 3.3B",
    "facebook/musicgen-melody": "MusicGen with chroma conditioning (refused: its chroma conditioner is not ported)",
    "facebook/musicgen-stereo-small": "MusicGen, stereo, 300M",
    "facebook/musicgen-stereo-medium": "MusicGen, stereo, 1.5B",
    "facebook/musicgen-stereo-large": "MusicGen, stereo, 3.3B",
}
# The model used when none is named: the small model trained on the synthetic corpus that ships
# inside the package (magnet_jax/assets/default_model, see its MODEL_CARD.md), when present.
DEFAULT_MODEL_DIR = Path(__file__).parents[1] / "assets" / "default_model"
DEFAULT_MODEL: str | None = str(DEFAULT_MODEL_DIR) if (DEFAULT_MODEL_DIR / "magnet.json").is_file() else None
# Models trained here that ship inside the package, by the name --model / load_model take.
SHIPPED_MODELS: dict[str, Path] = {
    "melody-tiny": Path(__file__).parents[1] / "assets" / "default_melody",   # MeLoDy, docs/melody.md
}
MINILM = "minilm"               # magnet.json's text encoder name for all-MiniLM-L6-v2

LM_FILE = "state_dict.bin"
CODEC_FILE = "compression_state_dict.bin"
META_FILE = "magnet.json"      # marks a converted folder
FORMAT = 1
CACHE_ENV = "MAGNET_JAX_CACHE"


@dataclasses.dataclass(frozen=True)
class CheckpointFiles:
    """The two files of an audiocraft MAGNeT export, and where they came from."""
    lm: Path
    codec: Path
    source: str


# -- finding the files ----------------------------------------------------------------------------
def known_models_text() -> str:
    return ", ".join([*KNOWN_MODELS, *SHIPPED_MODELS])


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
    if name in SHIPPED_MODELS:
        return _shipped(name)
    if name not in KNOWN_MODELS:
        raise ModelNotFoundError(f"unknown model {name!r}: not a folder here and not a released "
                                 f"MAGNeT checkpoint ({known_models_text()})")
    return CheckpointFiles(_hub_file(name, LM_FILE), _hub_file(name, CODEC_FILE), name)


def _shipped(name: str) -> Path:
    """The packaged folder of a model trained here (``SHIPPED_MODELS``)."""
    folder = SHIPPED_MODELS[name]
    if not (folder / META_FILE).is_file():
        raise ModelNotFoundError(f"{name!r} ships inside magnet-jax at {folder}, which is missing or incomplete: "
                                 "reinstall magnet-jax, or rebuild it with its recipe (its MODEL_CARD.md names it)")
    return folder


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
