"""MusicGen / MAGNeT codec: Hugging Face facebook/encodec_32khz (what their compression_state_dict.bin
redirects to). 32 kHz mono, hop 640 (50 Hz), 4 codebooks x 2048, non-causal, reflect padding.
An audiocraft-native 32 kHz export uses constant padding: add codec.pad_mode=constant.

Random weights with this architecture (smoke test, timing); released weights come with --checkpoint,
whose own config then wins:

    magnet-jax codec-encode --config configs/codec_32khz.py in.wav out/codes.npz
    magnet-jax codec-encode --checkpoint CHECKPOINT in.wav out/codes.npz
    magnet-jax codec-decode --checkpoint CHECKPOINT out/codes.npz out/decoded.wav
"""
from magnet_jax.codec import codec_config


def get_config(variant: str = ""):
    if variant:
        raise ValueError(f"configs/codec_32khz.py has no variants (got {variant!r}); use key=value overrides")
    return {"codec": codec_config("encodec_32khz"), "seed": 0}
