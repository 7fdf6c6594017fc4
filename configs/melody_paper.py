"""MeLoDy at the paper's size (arXiv 2305.15719, section 5.1), as far as this project can build it.

Where the figures come from: the paper's setup section could not be read from this machine (only
its abstract is reachable); the figures below are those of a review that paraphrases section 5.1,
and should be checked against the paper before a paid run. Taken from it:

- Audio VAE-GAN: 24 kHz mono, hop 96 (250 Hz latents), latent width 16; the decoder's widest
  layer 768 channels (the paper's decoder is HiFi-GAN-like with multi-period and multi-resolution
  discriminators, 100.1M parameters).
- Semantic tokens: k-means with 1024 centroids over 25 Hz frames of a self-supervised model
  (Wav2Vec2-Conformer, 199.5M), 10-s targets.
- Semantic LM: a 429.5M LLaMA (prefix-conditioned on 12 MuLan tokens).
- DPD: hidden size 768, 8 blocks (296.6M parameters), segments of K = 64 frames, M = 4 chunks;
  cross-attention dropped for 10 % of training rows; sampling with CFG 2.5.

What differs here, and why:

- The VAE is this project's SEANet VAE (``codec.bottleneck='vae'``, symmetric encoder/decoder, the
  MS-STFT discriminator of EnCodec): n_filters 48 makes its widest layer 768 on both sides
  (27.2M parameters). Our semantic tokenizer's built-in extractor (what ``fit-semantic`` fits) is
  log-mel + chroma; a local Hugging Face folder of a self-supervised model (MERT, wav2vec2,
  Wav2Vec2-Conformer) plugs in through ``TransformersExtractor`` (magnet_jax/melody/semantic.py).
- The semantic LM is MusicGen's LM with one codebook, conditioned by cross-attention on the
  project's text encoders (no MuLan here): width 1024, 16 heads, 26 layers, 438.5M parameters
  (width, heads and layers are not in the source we read; 26 layers come within 2.1 % of 429.5M).
- The DPD's segments do not overlap (the paper's, as in dual-path RNNs, overlap by half: 80
  segments of 64 over 2500 frames), so a window is 2560 frames, 10.24 s, a multiple of
  lcm(64, M); each block is one within-segment and one across-segment layer with a cross-attention
  in front: 134.2M parameters at width 768 and 8 blocks (the paper's 296.6M has more inside a
  block than the source says).
- Optimiser, batch and steps are not in the source: the LM takes configs/musicgen_small.py's
  (audiocraft's MusicGen recipe), the VAE-GAN EnCodec's (Adam 3e-4, betas 0.5 / 0.9, the loss
  balancer, adversarial and feature losses on), the DPD AdamW 1e-4 with cosine decay; 20 sampler
  steps are ours too. Mark them yours when you report results.

Variants, as in configs/melody_tiny.py: ``codec`` (train-codec), ``semantic_lm`` (train),
``dpd`` (train-dpd), and the default one (the model configs, for the Python API and for ``plan``
style size checks):

    magnet-jax train-codec --config configs/melody_paper.py:codec --workdir runs/melody_vae data.dir=/data/music24k
    magnet-jax fit-semantic /data/music24k --out runs/semantic.npz --num-tokens 1024
    magnet-jax tokenize /data/music24k --out runs/semantic_tokens/magnet_tokens/1.0.0 \\
        --semantic-tokenizer runs/semantic.npz --text-encoder t5 --segment-duration 10
    magnet-jax train --config configs/melody_paper.py:semantic_lm --workdir runs/melody_lm \\
        data.dir=runs/semantic_tokens/magnet_tokens/1.0.0 text.path=/models/t5-base
    magnet-jax train-dpd --config configs/melody_paper.py:dpd --workdir runs/melody_dpd \\
        melody.vae=runs/melody_vae melody.semantic_tokenizer=runs/semantic.npz melody.latent_scale=STD \\
        data.dir=/data/music24k
"""
import dataclasses

from configs import melody_tiny
from configs.musicgen_small import get_config as musicgen_small_config
from magnet_jax.codec import codec_config
from magnet_jax.codec.training.config import CodecDataConfig, CodecEvalConfig, DiscriminatorConfig, LossConfig
from magnet_jax.melody.dpd import DPDConfig
from magnet_jax.melody.sampler import DiffusionSamplerConfig
from magnet_jax.melody.semantic_lm import semantic_lm_config
from magnet_jax.train.config import DataConfig, MeshConfig
from magnet_jax.train.optim import OptimConfig

NUM_TOKENS = 1024            # k-means centroids
SEMANTIC_HZ = 25
LATENT_DIM = 16
WINDOW_SECONDS = 10.24       # 2560 VAE frames at 250 Hz: 40 segments of 64, 4 chunks of 640


def vae_codec():
    return codec_config("encodec_24khz", n_filters=48, ratios=(4, 4, 3, 2), dimension=128, causal=False,
                        true_skip=True, bottleneck="vae", latent_dim=LATENT_DIM)


def dpd() -> DPDConfig:
    return DPDConfig(latent_dim=LATENT_DIM, dim=768, num_heads=12, ffn_dim=4 * 768, num_blocks=8,
                     segment_length=64, semantic_vocab=NUM_TOKENS, num_chunks=4, cond_dropout=0.1)


def semantic_lm():
    return semantic_lm_config(NUM_TOKENS, frame_rate=SEMANTIC_HZ, segment_duration=10.0, dim=1024,
                              num_heads=16, num_layers=26, cross_attention=True)


def get_config(variant: str = ""):
    if variant == "codec":
        config = melody_tiny.get_config("codec")
        config["codec"] = vae_codec()
        config["train"] = dataclasses.replace(config["train"], steps=200 * 2000, batch_size=64, log_every=100,
                                              eval_every=10000, checkpoint_every=5000)
        config["optim"] = config["disc_optim"]                      # EnCodec's Adam 3e-4, betas 0.5 / 0.9
        config["data"] = CodecDataConfig(dir="", segment_duration=1.0, valid_percent=1.0)
        config["losses"] = LossConfig(kl=0.01)                      # EnCodec's weights, adversarial on
        config["disc"] = DiscriminatorConfig()
        config["eval"] = CodecEvalConfig(clips=64, duration=10.0, batch_size=8)
        return config
    if variant == "semantic_lm":
        config = musicgen_small_config()
        config["lm"] = semantic_lm().replace(compute_dtype="bfloat16")
        config["data"] = DataConfig(dir="", worker_count=8)
        config["text"] = dataclasses.replace(config["text"], cfg_dropout=0.1)
        return config
    if variant == "dpd":
        config = melody_tiny.get_config("dpd")
        config["dpd"] = dpd()
        config["data"] = CodecDataConfig(dir="", segment_duration=WINDOW_SECONDS, valid_percent=0.0)
        config["train"] = dataclasses.replace(config["train"], steps=500_000, batch_size=96, log_every=100,
                                              checkpoint_every=5000, keep_checkpoints=3)
        config["optim"] = OptimConfig(optimizer="adamw", lr=1e-4, beta1=0.9, beta2=0.99, weight_decay=0.0,
                                      schedule="cosine", warmup=5000, max_norm=1.0, ema_decay=0.999)
        config["mesh"] = MeshConfig(data=-1, fsdp=1, tensor=1)
        return config
    if variant:
        raise ValueError(f"unknown variant {variant!r} of configs/melody_paper.py (have: codec, semantic_lm, dpd)")
    return {
        "codec": vae_codec(),
        "dpd": dpd(),
        "semantic_lm": semantic_lm(),
        "tokenizer": {"sample_rate": 24000, "hop_length": 24000 // SEMANTIC_HZ, "n_fft": 4096, "n_mels": 64,
                      "num_tokens": NUM_TOKENS},
        "diffusion": DiffusionSamplerConfig(num_steps=20, cfg_scale=2.5, chunkwise=True),
        "semantic_sampling": melody_tiny.get_config()["semantic_sampling"],
    }
