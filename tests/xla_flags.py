"""The suite's XLA flags, in one place, for the test process (tests/conftest.py) and the
subprocesses that set their own device count (CLI runs, docs shell blocks, the two-process tests,
the device-suite smoke run).

Optimisation level 0 (``--xla_backend_optimization_level=0``): compiling dominates the suite's
time (tiny shapes, a new program in most tests), and level 0 skips LLVM's expensive passes.
Measured on the 2-core machine: test_codec_train.py 182 -> 143 s, test_melody_dpd.py +
test_musicgen.py 254 -> 207 s. The same HLO runs, so results are those of the default level within
every test's tolerance, and parity with audiocraft is still checked against its own output;
benchmarks, users and the tests that run exactly as a user does keep the default.
"""
from __future__ import annotations

FAST_COMPILE = "--xla_backend_optimization_level=0"


def xla_flags(devices: int | None = None) -> str:
    """XLA_FLAGS with ``devices`` virtual CPU devices (None: one, as a user or a GPU has) at the
    suite's fast-compiling level."""
    forced = [] if devices is None else [f"--xla_force_host_platform_device_count={devices}"]
    return " ".join([*forced, FAST_COMPILE])
