"""Test-session setup that must happen before JAX or audiocraft is imported.

- 8 virtual CPU devices, so sharding tests can build (8,1,1), (2,2,2), (1,2,4) meshes.
- Stub modules for torchaudio / spacy / laion_clap (see tests/reference.py).
- The files that take minutes are collected first: the test command runs two workers
  (``-n 2 --dist loadfile``, each file on one worker, handed out in collection order), and a long
  file that starts last keeps one worker busy while the other has nothing left to do.
- XLA's CPU backend at optimisation level 0 (tests/xla_flags.py says why and what it saves).
- A persistent XLA compilation cache, fresh for each session: many tests build the same tiny
  model or train step again (a resumed run, the same codec in another test, a CLI subprocess),
  and a cache hit skips the recompilation that dominated their time. It starts empty, so a run
  never reuses programs from another checkout; the size bound turns on jax's file lock, which the
  multi-process tests need because they write to it at the same time.
"""
import atexit
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from xla_flags import xla_flags  # noqa: E402  (imports no JAX)

os.environ.setdefault("XLA_FLAGS", xla_flags(devices=8))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="magnet_jax_xla_cache_")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(8 << 30))

import reference  # noqa: E402

reference.install_stubs()


# the slowest files first (seconds per file with two workers, `--durations=0`: test_train 430,
# test_melody_train_dpd 210, test_train_multihost 180, test_docs 160, ...); the rest keep their order
SLOW_FILES_FIRST = ("test_train.py", "test_melody_train_dpd.py", "test_train_multihost.py", "test_docs.py",
                    "test_codec_train_resume.py", "test_released_families.py", "test_export.py",
                    "test_codec_train.py", "test_codec_vae.py", "test_serve.py", "test_plan.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FILES_FIRST)))   # stable: files keep their order
