"""A tiny MeLoDy (arXiv 2305.15719): 16 kHz VAE-GAN codec (hop 320, 50 Hz, 8-dim latent), a
dual-path diffusion over its latents (dim 64, 2 blocks, segments of 5 frames, M = 4 chunks), a
one-codebook MusicGen LM over 32 k-means semantic tokens of the built-in log-mel + chroma
extractor at 25 Hz. Sized for tests and CPU experiments, not for quality.

The VAE-GAN trains through the codec trainer (the ``codec`` variant is a train-codec config: the
SEANet codec with ``bottleneck='vae'``, the balancer over L1 + mel + log-mel, KL weight 0.01,
3000 steps). As in configs/codec_tiny.py the adversarial and feature-matching losses are off in
this tiny recipe: on 2 CPU cores the MS-STFT discriminator makes a step about 5x slower (4000
steps would take over 3 hours; without it 3000 take about 45 minutes). The discriminator
section stays, so ``losses.adv=4 losses.feat=4`` trains the full VAE-GAN:

    magnet-jax synth-corpus --out data/synth16k --clips 200 --sample-rate 16000
    magnet-jax train-codec --config configs/melody_tiny.py:codec --workdir runs/melody_vae data.dir=data/synth16k

The semantic LM trains with ``magnet-jax train`` (the ``semantic_lm`` variant: a one-codebook
MusicGen over 32 k-means tokens at 25 Hz, MiniLM text conditioning) on tokens that
``fit-semantic`` + ``tokenize --semantic-tokenizer`` write:

    magnet-jax fit-semantic data/synth16k --out data/semantic.npz --num-tokens 32
    magnet-jax tokenize data/synth16k --out data/semantic_tokens/magnet_tokens/1.0.0 \
        --semantic-tokenizer data/semantic.npz --text-encoder minilm --segment-duration 10
    magnet-jax train --config configs/melody_tiny.py:semantic_lm --workdir runs/melody_semantic_lm

The DPD trains with ``magnet-jax train-dpd`` (the ``dpd`` variant) on the frozen VAE's latents
and the semantic tokens of the same crops (1.6 s = 80 latent frames, whole chunks and segments;
4000 steps, about 15 minutes on 2 CPU cores: every step also encodes its crops with the VAE):

    magnet-jax train-dpd --config configs/melody_tiny.py:dpd --workdir runs/melody_dpd \
        melody.vae=runs/melody_vae melody.semantic_tokenizer=data/semantic.npz data.dir=data/synth16k

The default variant gives the model configs for the Python API:

    cfg = get_config()
    dpd = DPD(cfg["dpd"], rngs=nnx.Rngs(0)); lm = semantic_lm(cfg["semantic_lm"], rngs=nnx.Rngs(1))
    codec = Encodec(cfg["codec"], rngs=nnx.Rngs(2))
    MeLoDy(lm, dpd, codec).generate_window(jax.random.key(0), duration=1.0,
                                    diffusion_config=cfg["diffusion"])
"""
import dataclasses

from magnet_jax.codec import codec_config
from magnet_jax.codec.training.config import (CodecDataConfig, CodecEvalConfig, DiscriminatorConfig,
                                              LossConfig, QuantizerTrainConfig)
from magnet_jax.lm.ar_sampler import ARSamplerConfig
from magnet_jax.melody.dpd import DPDConfig
from magnet_jax.melody.training import MelodyPartsConfig
from magnet_jax.melody.sampler import DiffusionSamplerConfig
from magnet_jax.melody.semantic_lm import semantic_lm_config
from configs.codec_oscillators import get_config as codec_oscillators_config
from configs.tiny_musicgen import get_config as tiny_musicgen_config
from magnet_jax.train.config import DataConfig, MeshConfig, TrainConfig
from magnet_jax.train.optim import OptimConfig

NUM_TOKENS = 32
PHASE_BLIND_LATENT = 16


def vae_codec():
    return codec_config("encodec_16khz", n_filters=16, dimension=64, ratios=(5, 4, 4, 4), lstm=1,
                        bottleneck="vae", latent_dim=8)


def phase_blind_vae_config() -> dict:
    """configs/codec_oscillators.py (spectrogram encoder, oscillator-bank decoder) under the Gaussian
    bottleneck, 16-dim latent. Why: the SEANet VAE reads the waveform and its decoder writes one,
    and on 30 held-out clips its reconstructions keep the pitch (chroma cosine 0.954) but lose the
    timbre (``eval-codec``: instrument heard on 23 %, nearly all come back as a sawtooth lead), so a
    MeLoDy on it cannot follow "organ" or "plucked string". The phase-blind decoder keeps it (instrument
    90 %, chroma 0.938 at latent 16; 0.885 at latent 8)."""
    config = codec_oscillators_config()
    config["codec"] = config["codec"].replace(bottleneck="vae", latent_dim=PHASE_BLIND_LATENT)
    config["losses"] = dataclasses.replace(config["losses"], kl=0.01)
    return config


def base_dpd(latent_dim: int | None = None) -> DPDConfig:
    """The tiny DPD over latents ``latent_dim`` wide (default: the SEANet VAE's)."""
    return DPDConfig(latent_dim=latent_dim or vae_codec().vae_latent_dim, dim=64, num_heads=4, ffn_dim=256, num_blocks=2, segment_length=5,
                     semantic_vocab=NUM_TOKENS, num_chunks=4, cond_dropout=0.1)


def get_config(variant: str = ""):
    if variant == "codec":
        adam = OptimConfig(optimizer="adamw", lr=3e-4, beta1=0.5, beta2=0.9, weight_decay=0.0,
                           schedule="constant", warmup=0, max_norm=0.0, ema_decay=0.0)
        return {
            "codec": vae_codec(),
            "train": TrainConfig(steps=3000, batch_size=8, log_every=50, eval_every=1000, checkpoint_every=500,
                                 keep_checkpoints=2),
            "optim": dataclasses.replace(adam, lr=1e-3, beta1=0.9, beta2=0.99, schedule="cosine", warmup=100),
            "disc_optim": adam,
            "mesh": MeshConfig(),
            "data": CodecDataConfig(dir="data/synth16k", segment_duration=1.0, valid_percent=10.0),
            "losses": LossConfig(l1=1.0, msspec=1.0, log_mel=1.0, adv=0.0, feat=0.0, kl=0.01,
                                 msspec_range_start=5, msspec_range_end=10),
            "disc": DiscriminatorConfig(filters=8, n_ffts=(512, 256, 128), hop_lengths=(128, 64, 32),
                                        win_lengths=(512, 256, 128)),
            "quantizer": QuantizerTrainConfig(),          # unused by a VAE codec
            "eval": CodecEvalConfig(clips=8, duration=4.0, batch_size=4),
        }
    if variant == "codec_osc":            # the phase-blind VAE the shipped MeLoDy uses
        return phase_blind_vae_config()
    if variant == "semantic_lm":          # configs/tiny_musicgen.py's recipe over semantic tokens
        config = tiny_musicgen_config()
        config["lm"] = semantic_lm_config(NUM_TOKENS, frame_rate=25, segment_duration=10.0, dim=64, num_heads=4,
                                          num_layers=2, cross_attention=True)
        config["train"] = dataclasses.replace(config["train"], steps=2000, log_every=20, eval_every=500,
                                              checkpoint_every=500)
        config["optim"] = dataclasses.replace(config["optim"], warmup=50)
        config["data"] = DataConfig(dir="data/semantic_tokens/magnet_tokens/1.0.0")
        config["text"] = dataclasses.replace(config["text"], cfg_dropout=0.1)
        return config
    if variant in ("dpd", "dpd_osc"):     # train-dpd: set melody.vae and melody.semantic_tokenizer
        return {
            "dpd": base_dpd(PHASE_BLIND_LATENT if variant == "dpd_osc" else None),
            "melody": MelodyPartsConfig(latent_scale=1.0),
            "data": CodecDataConfig(dir="data/synth16k", segment_duration=1.6, valid_percent=0.0),
            "train": TrainConfig(steps=4000, batch_size=8, log_every=50, checkpoint_every=500, keep_checkpoints=2),
            "optim": OptimConfig(optimizer="adamw", lr=1e-3, beta1=0.9, beta2=0.99, weight_decay=0.0,
                                 schedule="cosine", warmup=100, max_norm=1.0, ema_decay=0.0),
            "mesh": MeshConfig(data=-1, fsdp=1, tensor=1),
        }
    if variant:
        raise ValueError(f"unknown variant {variant!r} of configs/melody_tiny.py (have: codec, codec_osc, semantic_lm, dpd, dpd_osc)")
    return {
        "codec": vae_codec(),
        "dpd": base_dpd(),
        "semantic_lm": semantic_lm_config(NUM_TOKENS, frame_rate=25, segment_duration=10.0, dim=64, num_heads=4,
                                          num_layers=2, cross_attention=False),
        "tokenizer": {"sample_rate": 16000, "hop_length": 640, "n_fft": 2048, "n_mels": 32,
                      "num_tokens": NUM_TOKENS},
        "diffusion": DiffusionSamplerConfig(num_steps=20, cfg_scale=2.5, chunkwise=True),
        "semantic_sampling": ARSamplerConfig(top_k=0, temperature=1.0, cfg_coef=1.0),
    }
