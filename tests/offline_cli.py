"""Run ``magnet-jax generate`` for a shipped model the way a user without network would: a fresh
interpreter (nothing imported by other tests), the hub switched off, and torch never imported."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf


def generate_offline(args: list[str], out: Path) -> tuple[np.ndarray, int]:
    """``magnet-jax generate ARGS --out OUT`` in a subprocess; the one WAV it wrote, checked to be
    finite and not silence, with its sample rate."""
    script = (
        "import sys\n"
        "from magnet_jax.cli import main\n"
        f"code = main(['generate', *{args!r}, '--out', {str(out)!r}])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "sys.exit(code)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    wavs = sorted(Path(out).glob("*.wav"))
    assert len(wavs) == 1
    audio, rate = sf.read(wavs[0])
    assert np.isfinite(audio).all() and np.abs(audio).max() > 1e-3      # not silence
    return audio, rate
