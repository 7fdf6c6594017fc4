"""Hugging Face facebook/encodec_24khz: 24 kHz mono, hop 320 (75 Hz), 32 codebooks x 1024 (24 kbps),
causal, 1x1-conv shortcuts, reflect padding.

Random weights with this architecture (smoke test, timing); released weights come with --checkpoint,
whose own config then wins:

    magnet-jax codec-encode --config configs/codec_24khz.py in.wav out/codes.npz
    magnet-jax codec-encode --checkpoint CHECKPOINT in.wav out/codes.npz
    magnet-jax codec-decode --checkpoint CHECKPOINT out/codes.npz out/decoded.wav
"""
from magnet_jax.codec import codec_config


def get_config(variant: str = ""):
    if variant:
        raise ValueError(f"configs/codec_24khz.py has no variants (got {variant!r}); use key=value overrides")
    return {"codec": codec_config("encodec_24khz"), "seed": 0}
