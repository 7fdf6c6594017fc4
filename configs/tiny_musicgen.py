"""A tiny MusicGen (dim 64, 2 layers, causal, delay pattern 0-3) that trains on the synthetic corpus
on a laptop CPU: the autoregressive twin of configs/tiny_lm.py. Positions by RoPE rather than
musicgen's sinusoid: at this width the sinusoid swamps the codebook embeddings and learning is
slow (see TokenLMConfig.sinusoid_scale; on test_train's pattern corpus, 120 steps end at 1.27 nats
with RoPE against 2.02 with the sinusoid).

Make the data once with the shipped default model's codec (16 kHz, 4 x 256 codes at 50 Hz; the
valid split is rendered with another seed, so it is held out), train, then package the run with
that same codec and generate:

    magnet-jax synth-corpus --out data/synth --clips 64 --duration 4
    magnet-jax synth-corpus --out data/synth_valid --clips 8 --duration 4 --seed 1
    magnet-jax tokenize data/synth --out data/mg_tokens/magnet_tokens/1.0.0 --segment-duration 2 \\
        --codec-weights magnet_jax/assets/default_model
    magnet-jax tokenize data/synth_valid --out data/mg_tokens/magnet_tokens/1.0.0 --segment-duration 2 \\
        --codec-weights magnet_jax/assets/default_model --split valid
    magnet-jax train --config configs/tiny_musicgen.py --workdir runs/tiny_musicgen
    magnet-jax export --lm-workdir runs/tiny_musicgen --codec-workdir magnet_jax/assets/default_model \\
        --out models/tiny_musicgen
    magnet-jax generate --model models/tiny_musicgen --prompt "a bright marimba melody" --duration 2 --out out/

Variants: ``:unconditional`` (no text encoder, no cross-attention). Any field can be overridden, e.g.
``train.steps=100 data.dir=/path/to/tokens lm.card=2048`` (tokens of the 32 kHz EnCodec).
"""
from magnet_jax.lm.musicgen import MusicGenConfig
from magnet_jax.train.config import DataConfig, FinetuneConfig, MeshConfig, TextConfig, TrainConfig
from magnet_jax.train.optim import OptimConfig


def get_config(variant: str = ""):
    config = {
        "lm": MusicGenConfig(dim=64, num_heads=4, num_layers=2, ffn_dim=256, n_q=4, card=256,
                             delays=(0, 1, 2, 3), frame_rate=50, segment_duration=2.0, positional_embedding="rope"),
        "train": TrainConfig(steps=300, batch_size=8, log_every=10, eval_every=100, eval_batches=2, jit_init=False,
                             checkpoint_every=100, keep_checkpoints=2),
        "optim": OptimConfig(optimizer="adamw", lr=3e-3, beta1=0.9, beta2=0.95, weight_decay=0.1,
                             schedule="cosine", warmup=20, max_norm=1.0, ema_decay=0.99, ema_every=10),
        "mesh": MeshConfig(data=-1, fsdp=1, tensor=1),
        "data": DataConfig(dir="data/mg_tokens/magnet_tokens/1.0.0"),
        "text": TextConfig(encoder="minilm", max_tokens=32, word_dropout=0.3, cfg_dropout=0.3),
        "finetune": FinetuneConfig(),
    }
    if variant == "unconditional":
        config["lm"] = config["lm"].replace(cross_attention=False)
        config["text"] = TextConfig(encoder="none", cfg_dropout=0.0, word_dropout=0.0)
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of configs/tiny_musicgen.py (have: unconditional)")
    return config
