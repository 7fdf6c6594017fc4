"""Find and read a Hugging Face text-encoder folder: config.json, weights, tokenizer files.

Text encoders arrive as Hugging Face folders. We read them without `transformers` (a heavy,
torch-bound dependency that serving does not need): the config is JSON, the weights are
safetensors (or a torch pickle, read with torch only when that is all there is), and the
tokenizer is `tokenizer.json` (Rust `tokenizers`) or `spiece.model` (`sentencepiece`).

A name that is not a local folder is looked up on the Hugging Face Hub through
`huggingface_hub`; when that fails (no network, as on the machines this project is built on),
the error says exactly which files to place in which folder.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "spiece.model")
# Small side files read when present (special tokens, extra ids, lower-casing).
OPTIONAL_FILES = ("tokenizer_config.json", "special_tokens_map.json")
# "t5-base" or "google/flan-t5-base"; anything else that does not exist is a wrong local path.
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


class ModelFilesError(FileNotFoundError):
    """A text-encoder folder (or hub name) does not provide the files we need."""


def _needed_files_text(folder: str) -> str:
    return (f"  {folder}/config.json\n"
            f"  {folder}/model.safetensors   (or pytorch_model.bin)\n"
            f"  {folder}/tokenizer.json      (or spiece.model for T5)")


def resolve_model_folder(name_or_path: str | os.PathLike) -> Path:
    """Return a local folder holding config, weights and tokenizer for `name_or_path`.

    A path that exists is used as is. Anything else is treated as a Hugging Face Hub name
    (e.g. "t5-base", "google/flan-t5-base") and fetched with `huggingface_hub`; only the files
    an encoder needs are downloaded (not the decoder-sized extras some repos carry).
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        check_model_folder(path)
        return path
    if path.exists():
        raise ModelFilesError(f"{path} is a file; pass the folder that holds config.json, "
                              f"the weights and the tokenizer:\n" + _needed_files_text(str(path)))
    name = str(name_or_path)
    if not _HUB_NAME.fullmatch(name):
        raise ModelFilesError(f"text-encoder folder {name} does not exist; create it with:\n"
                              + _needed_files_text(name))
    try:
        from huggingface_hub import snapshot_download
        folder = Path(snapshot_download(
            repo_id=name,
            allow_patterns=["config.json", *WEIGHT_FILES, *TOKENIZER_FILES, *OPTIONAL_FILES]))
    except Exception as err:  # noqa: BLE001 - any hub failure gets the same actionable message
        raise ModelFilesError(
            f"could not get text encoder {name!r} from the Hugging Face Hub "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}).\n"
            f"Without network, copy these files from https://huggingface.co/{name} into a "
            f"local folder and pass that folder's path instead of the name:\n"
            + _needed_files_text(f"<folder for {name}>")) from err
    check_model_folder(folder)
    return folder


def check_model_folder(folder: Path) -> None:
    """Raise a ModelFilesError listing every missing file (with where it must go)."""
    missing = []
    if not (folder / "config.json").is_file():
        missing.append(f"{folder}/config.json")
    if not any((folder / f).is_file() for f in WEIGHT_FILES):
        missing.append(f"{folder}/model.safetensors (or pytorch_model.bin)")
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        missing.append(f"{folder}/tokenizer.json (or spiece.model for T5)")
    if missing:
        raise ModelFilesError("text-encoder folder is incomplete; missing:\n  "
                              + "\n  ".join(missing)
                              + "\n(save them from the Hugging Face repo of the model; "
                                "transformers' save_pretrained writes all of them)")


def read_json(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_optional_json(path: Path) -> dict[str, Any]:
    return read_json(path) if path.is_file() else {}


def load_weights(folder: Path, keep: Callable[[str], bool] = lambda k: True) -> dict[str, np.ndarray]:
    """Read the folder's weights as float32 numpy arrays, only the keys `keep` accepts.

    safetensors is read lazily key by key, so an encoder-only load of a full T5 checkpoint
    never materialises the decoder.
    """
    st = folder / "model.safetensors"
    if st.is_file():
        from safetensors import safe_open
        out = {}
        with safe_open(str(st), framework="np") as f:
            for key in f.keys():
                if keep(key):
                    out[key] = np.asarray(f.get_tensor(key))
        return _to_float32(out)
    bin_path = folder / "pytorch_model.bin"
    if bin_path.is_file():
        from magnet_jax import torch_pickle
        try:
            sd = torch_pickle.load_mapping(bin_path, "a Hugging Face state dict")
        except ImportError as err:
            raise ModelFilesError(f"{bin_path} is a torch pickle and torch is not installed; "
                                  f"install torch, or convert the weights to "
                                  f"{folder}/model.safetensors") from err
        except torch_pickle.TorchFileError as err:
            raise ModelFilesError(str(err)) from err
        return _to_float32({k: v.float().numpy() if v.is_floating_point() else v.numpy()
                            for k, v in sd.items() if keep(k)})
    raise ModelFilesError(f"no weights in {folder}: place model.safetensors "
                          f"(or pytorch_model.bin) there")


def _to_float32(sd: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: (v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v)
            for k, v in sd.items()}


def take(sd: Mapping[str, np.ndarray], key: str, shape: tuple[int, ...], used: set[str]) -> np.ndarray:
    """Fetch one checkpoint tensor, check its shape, and record that it was used."""
    if key not in sd:
        raise KeyError(f"checkpoint has no {key!r}: the folder does not hold the model its "
                       f"config.json describes")
    value = sd[key]
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"checkpoint tensor {key!r} has shape {tuple(value.shape)}, the config "
                         f"implies {tuple(shape)}")
    used.add(key)
    return value


def check_all_used(sd: Mapping[str, np.ndarray], used: set[str], ignore: Iterable[str] = ()) -> None:
    """Fail when a checkpoint tensor was not consumed: a silently random weight is the classic
    port bug, so every key must be either used or explicitly ignored."""
    ignore = tuple(ignore)
    left = sorted(k for k in sd if k not in used and not k.startswith(ignore))
    if left:
        raise ValueError(f"{len(left)} checkpoint tensors were not used by the port: {left[:8]}"
                         f"{' ...' if len(left) > 8 else ''}")
