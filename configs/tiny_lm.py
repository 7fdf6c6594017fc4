"""A tiny MAGNeT LM (dim 64, 2 layers) that trains on the synthetic corpus on a laptop CPU.

Make the data once (a random-init 32 kHz EnCodec turns the synthetic audio into 4 x 2048 tokens;
the valid split is rendered with another seed, so it is held out), then train:

    magnet-jax synth-corpus --out data/synth --clips 64 --duration 4
    magnet-jax synth-corpus --out data/synth_valid --clips 8 --duration 4 --seed 1
    magnet-jax tokenize data/synth --out data/tokens/magnet_tokens/1.0.0 --segment-duration 2
    magnet-jax tokenize data/synth_valid --out data/tokens/magnet_tokens/1.0.0 --segment-duration 2 --split valid
    magnet-jax train --config configs/tiny_lm.py --workdir runs/tiny
    magnet-jax ablate-span --config configs/tiny_lm.py --workdir runs/span --span-lens 1,2,3,5,10

Variants: ``:unconditional`` (no text encoder, no cross-attention), ``:dadam`` (the music
recipe's optimizer: D-Adapt Adam, cosine warmup). Any field can be overridden, e.g.
``train.steps=100 data.dir=/path/to/tokens mesh.data=-1``.
"""
from magnet_jax.lm.config import LMConfig
from magnet_jax.train.config import DataConfig, FinetuneConfig, MeshConfig, TextConfig, TrainConfig
from magnet_jax.train.optim import OptimConfig


def get_config(variant: str = ""):
    config = {
        "lm": LMConfig(dim=64, num_heads=4, num_layers=2, ffn_dim=256, n_q=4, card=2048,
                       subcodes_context=5, span_len=3, frame_rate=50, segment_duration=2.0),
        "train": TrainConfig(steps=300, batch_size=8, log_every=10, eval_every=100, eval_batches=2, jit_init=False,
                             checkpoint_every=100, keep_checkpoints=2),
        "optim": OptimConfig(optimizer="adamw", lr=3e-3, beta1=0.9, beta2=0.95, weight_decay=0.1,
                             schedule="cosine", warmup=20, max_norm=1.0, ema_decay=0.99, ema_every=10),
        "mesh": MeshConfig(data=-1, fsdp=1, tensor=1),
        "data": DataConfig(dir="data/tokens/magnet_tokens/1.0.0"),
        "text": TextConfig(encoder="minilm", max_tokens=32, word_dropout=0.3, cfg_dropout=0.3),
        "finetune": FinetuneConfig(),
    }
    if variant == "unconditional":
        config["lm"] = config["lm"].replace(cross_attention=False)
        config["text"] = TextConfig(encoder="none", cfg_dropout=0.0, word_dropout=0.0)
    elif variant == "dadam":
        config["optim"] = OptimConfig(optimizer="dadam", lr=1.0, schedule="cosine", warmup=20)
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of configs/tiny_lm.py (have: unconditional, dadam)")
    return config
