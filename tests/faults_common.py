"""Shared pieces of the fault-injection tests (tests/test_faults_*.py): a tiny token dataset, the
tiny LM's command-line overrides, real damage to ArrayRecord shards, and a CLI runner.

Why real damage: riegeli checks a hash per chunk, so overwritten bytes inside the record data
fail at the first read of that chunk, and a truncated file opens as an empty shard; the tests
reproduce both on real shards instead of mocking the reader.
"""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np

from magnet_jax.cli import main
from magnet_jax.train.data import pattern_codes, write_token_dataset

T = 24                      # frames: 0.48 s at 50 Hz (tests/test_train.py's tiny model)
CARD = 64


@functools.lru_cache(maxsize=None)
def _token_dataset() -> Path:
    rng = np.random.default_rng(0)
    out = Path(tempfile.mkdtemp(prefix="magnet_faults_")) / "magnet_tokens" / "1.0.0"
    return write_token_dataset(out, {"train": pattern_codes(rng, 32, 4, 40, CARD),
                                     "valid": pattern_codes(rng, 8, 4, 40, CARD)}, card=CARD)


def token_dataset(copy_to: Path | None = None) -> Path:
    """A 4 x 64 token set (32 train clips in 4 shards of 8, 8 valid); a private copy when asked
    (tests that damage it)."""
    import shutil
    src = _token_dataset()
    if copy_to is None:
        return src
    shutil.copytree(src, copy_to)
    return copy_to


def tiny_train(data_dir: Path | str, *overrides: str) -> list[str]:
    """``key=value`` overrides of configs/tiny_lm.py:unconditional for a 1-layer dim-32 LM."""
    return ["lm.dim=32", "lm.num_heads=4", "lm.num_layers=1", "lm.ffn_dim=64", f"lm.card={CARD}",
            f"lm.segment_duration={T / 50}", "train.batch_size=8", "train.progress=false",
            "train.log_every=1", "train.eval_every=0", "train.steps=4", "train.checkpoint_every=100",
            "train.async_checkpoint=false", "optim.warmup=1", "optim.total_steps=1000", "mesh.devices=1",
            "data.prefetch=2", f"data.dir={data_dir}", *overrides]


def train_cmd(workdir: Path, data_dir: Path | str, *overrides: str) -> list[str]:
    return ["train", "--config", "configs/tiny_lm.py:unconditional", "--workdir", str(workdir),
            *tiny_train(data_dir, *overrides)]


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    """``magnet-jax ARGV`` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str, verb: str) -> str:
    """The single error line a verb prints (no traceback before or after it)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"magnet-jax {verb}: error: "), err[-3000:]
    return lines[0]


def overwrite_middle(path: Path, n: int = 64) -> None:
    """Invert ``n`` bytes in the middle of a shard's record data. ArrayRecord pads the data to a
    64 KiB block (zeros) before its footer, so the data is what precedes the last non-zero byte
    of the first block."""
    data = bytearray(path.read_bytes())
    end = int(np.nonzero(np.frombuffer(bytes(data[:1 << 16]), np.uint8))[0][-1])
    mid = end // 2 - n // 2
    data[mid:mid + n] = bytes(255 - b for b in data[mid:mid + n])
    path.write_bytes(bytes(data))


def truncate_half(path: Path) -> None:
    """Cut a shard to half its size (a copy or a download that stopped)."""
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
