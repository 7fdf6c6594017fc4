"""The one place that reads torch pickles (audiocraft exports, Hugging Face ``pytorch_model.bin``,
torchvggish weights), always with ``weights_only=True``.

A torch checkpoint is a pickle, and a pickle can name any callable to run while it loads. With
``weights_only=True`` torch's unpickler rebuilds tensors, containers and plain values only, and
refuses anything else before calling it, so a file with a code payload is an error, never code
that runs. ``allow`` widens that for a caller that needs one more harmless type (numpy arrays in
torchvggish's PCA file). torch is imported here only, when a pickle is actually read.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Mapping


class TorchFileError(ValueError):
    """A file that is not a readable torch pickle of plain data: names it and says why."""


def load(path: str | os.PathLike, what: str = "a torch checkpoint", allow: Iterable[Any] = ()) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with one-line errors."""
    try:
        import torch
    except ImportError as err:
        raise ImportError(f"reading {path} ({what}, a torch pickle) needs torch: pip install torch") from err
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist")
    if os.path.isdir(path):
        raise TorchFileError(f"{path} is a folder; pass the file ({what}) inside it")
    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - one line: which file and why
        first = (str(err).strip().splitlines() or [""])[0][:200]
        refused = "Weights only load failed" in str(err)
        hint = (" (it asks to build objects other than tensors and plain data, which is refused: no code "
                "from a checkpoint ever runs)" if refused else "")
        raise TorchFileError(f"cannot read {path} as {what}{hint}: {type(err).__name__}: {first}") from err


def load_mapping(path: str | os.PathLike, what: str = "a torch state dict", allow: Iterable[Any] = ()) -> Mapping:
    """``load``, refusing anything that is not a mapping (a state dict or an export's dict)."""
    data = load(path, what, allow)
    if not isinstance(data, Mapping):
        raise TorchFileError(f"{path} holds a {type(data).__name__}, not {what} (a dict of name -> tensor)")
    return data
