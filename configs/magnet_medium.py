"""MAGNeT medium (32 kHz music): the released facebook/magnet-medium-10secs recipe.

As configs/magnet_small.py (D-Adapt Adam, cosine 4000 warmup, clip 1.0, EMA 0.99 / 10, batch
192, T5-base, word / CFG dropout 0.3) at model scale medium: dim 1536, 24 heads, 48 layers, FFN
6144 (~1.5B LM parameters). Parameters and optimizer state are sharded FSDP-style over 8 devices
('embed' over the fsdp axis), the rest of the devices split the batch, and each layer is
rematerialised in the backward pass.

    magnet-jax train --config configs/magnet_medium.py --workdir runs/medium \\
        data.dir=/data/tokens/magnet_tokens/1.0.0 text.path=/models/t5-base --distributed
    magnet-jax train --config configs/magnet_medium.py:30secs --workdir runs/medium30 data.dir=... text.path=...
"""
from magnet_jax.lm.config import LMConfig
from magnet_jax.train.config import DataConfig, FinetuneConfig, MeshConfig, TextConfig, TrainConfig
from magnet_jax.train.optim import OptimConfig


def get_config(variant: str = ""):
    seconds = {"": 10.0, "10secs": 10.0, "30secs": 30.0}
    if variant not in seconds:
        raise ValueError(f"unknown variant {variant!r} of configs/magnet_medium.py (have: 10secs, 30secs)")
    return {
        "lm": LMConfig(dim=1536, num_heads=24, num_layers=48, ffn_dim=6144, n_q=4, card=2048,
                       subcodes_context=5, span_len=3, frame_rate=50, segment_duration=seconds[variant],
                       compute_dtype="bfloat16"),
        "train": TrainConfig(steps=500 * 2000, batch_size=192, remat=True, log_every=100,
                             eval_every=2000, eval_batches=16, checkpoint_every=2000, keep_checkpoints=3),
        "optim": OptimConfig(optimizer="dadam", lr=1.0, beta1=0.9, beta2=0.95, eps=1e-8,
                             weight_decay=0.1, schedule="cosine", warmup=4000, lr_min_ratio=0.0,
                             max_norm=1.0, ema_decay=0.99, ema_every=10),
        "mesh": MeshConfig(data=-1, fsdp=8, tensor=1),
        "data": DataConfig(dir="", merge_text_p=0.25, drop_desc_p=0.5, drop_other_p=0.5, worker_count=8),
        "text": TextConfig(encoder="t5", path="t5-base", max_tokens=64, word_dropout=0.3, cfg_dropout=0.3),
        "finetune": FinetuneConfig(),
    }
