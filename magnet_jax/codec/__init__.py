"""EnCodec in Flax NNX: the audio tokenizer MusicGen and MAGNeT use.

    from magnet_jax.codec import Encodec, EncodecConfig, codec_config
    model = Encodec(codec_config("encodec_32khz"), rngs=nnx.Rngs(0))
    codes = model.encode(audio)      # float32 [B, C, N] -> int32 [B, K, ceil(N / hop)]
    audio = model.decode(codes)      # -> float32 [B, C, T * hop]

Released weights: ``magnet_jax.codec.convert`` (audiocraft exports, Hugging Face folders).
Jitted, sharded and chunked batch processing: ``magnet_jax.codec.runner``.
"""
from magnet_jax.codec.config import PRESETS, EncodecConfig, codec_config
from magnet_jax.codec.encodec import Encodec

__all__ = ["Encodec", "EncodecConfig", "codec_config", "PRESETS"]
