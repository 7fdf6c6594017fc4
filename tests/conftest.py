"""Test-session setup that must happen before JAX or audiocraft is imported.

- 8 virtual CPU devices, so sharding tests can build (8,1,1), (2,2,2), (1,2,4) meshes.
- Stub modules for torchaudio / spacy / laion_clap (see tests/reference.py).
"""
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, os.path.dirname(__file__))
import reference  # noqa: E402

reference.install_stubs()
