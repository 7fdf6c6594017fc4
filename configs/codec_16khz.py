"""Audio-MAGNeT / AudioGen codec: audiocraft-native 16 kHz mono, hop 320 (50 Hz), 4 codebooks x 2048,
non-causal, constant padding.

Random weights with this architecture (smoke test, timing); released weights come with --checkpoint,
whose own config then wins:

    magnet-jax codec-encode --config configs/codec_16khz.py in.wav out/codes.npz
    magnet-jax codec-encode --checkpoint CHECKPOINT in.wav out/codes.npz
    magnet-jax codec-decode --checkpoint CHECKPOINT out/codes.npz out/decoded.wav
"""
from magnet_jax.codec import codec_config


def get_config(variant: str = ""):
    if variant:
        raise ValueError(f"configs/codec_16khz.py has no variants (got {variant!r}); use key=value overrides")
    return {"codec": codec_config("encodec_16khz"), "seed": 0}
