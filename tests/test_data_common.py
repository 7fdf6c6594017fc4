"""Shared, cached fixtures of the data tests (tiny real codec, a tokenized synthetic corpus).

Why a module: building even a tiny EnCodec compiles ~70 small init programs (~20 s on two busy
cores); every data test module reuses one instance per session through these caches.
"""
import functools
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from data_pipelines import synth
from data_pipelines.audio import AudioSettings
from data_pipelines.encoder import CodecEncoder
from data_pipelines.manifests import read_manifest
from data_pipelines.tokenize import TokenizeOptions, tokenize
from xla_flags import xla_flags

REPO = Path(__file__).resolve().parents[1]
# a small random-init 16 kHz EnCodec: the real architecture family, hop 320 (50 Hz), 4 x 2048
TINY_CODEC = {"n_filters": 4, "dimension": 16, "lstm": 1}
SEGMENT_S = 2.0
CLIP_S = 3.0          # -> a 2 s and a 1 s segment per clip (1 s >= min_segment_ratio 0.5)


def tiny_encoder(batch_size: int = 8) -> CodecEncoder:
    return _tiny_encoder(batch_size)


@functools.lru_cache(maxsize=None)      # keyed on positional values: wrappers normalise defaults
def _tiny_encoder(batch_size: int) -> CodecEncoder:
    return CodecEncoder.from_name("encodec_16khz", batch_size, seed=0, overrides=TINY_CODEC)


def settings(**kw) -> AudioSettings:
    enc = tiny_encoder()
    return AudioSettings(sample_rate=enc.sample_rate, channels=enc.channels,
                         segment_duration=kw.pop("segment_duration", SEGMENT_S), **kw)


def synth_corpus(clips: int = 6) -> Path:
    return _synth_corpus(clips)


@functools.lru_cache(maxsize=None)
def _synth_corpus(clips: int) -> Path:
    root = Path(tempfile.mkdtemp(prefix="magnet_synth_"))
    synth.write_corpus(root, clips, duration=CLIP_S, sample_rate=16000, seed=0, progress=False)
    return root


def tokenized_synth(clips: int = 6, clips_per_shard: int = 2) -> tuple[Path, dict]:
    """The synthetic corpus tokenized in-process: (dataset folder, summary)."""
    return _tokenized_synth(clips, clips_per_shard)


@functools.lru_cache(maxsize=None)
def _tokenized_synth(clips: int, clips_per_shard: int) -> tuple[Path, dict]:
    out = Path(tempfile.mkdtemp(prefix="magnet_tokens_")) / "magnet_tokens" / "1.0.0"
    summary = tokenize(read_manifest(synth_corpus(clips)), tiny_encoder(), settings(), out,
                       TokenizeOptions(clips_per_shard=clips_per_shard, progress=False))
    return out, summary


def cli_env(cache_dir: Path) -> dict:
    """Environment for a tokenize subprocess: repo importable, 8 CPU devices like the tests,
    and a persistent compilation cache so a second run skips the codec's init compiles."""
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = xla_flags(devices=8)
    env["JAX_COMPILATION_CACHE_DIR"] = str(cache_dir)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    return env


def tokenize_cmd(source: Path, out: Path, *extra: str) -> list[str]:
    overrides = [a for k, v in TINY_CODEC.items() for a in ("--codec-override", f"{k}={v}")]
    return [sys.executable, "-m", "data_pipelines.cli", "tokenize", str(source), "--out", str(out),
            "--codec", "encodec_16khz", "--segment-duration", str(SEGMENT_S), "--batch-size", "8",
            "--no-progress", *overrides, *extra]


def run_cli(cmd: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
