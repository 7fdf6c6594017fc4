"""MAGNeT small (32 kHz music): the released facebook/magnet-small-10secs recipe.

audiocraft ``solver=magnet/magnet_32khz`` + ``conditioner=text2music``, model scale small:
dim 1024, 16 heads, 24 layers, FFN 4096, 4 x 2048 codebooks at 50 Hz, 10 s segments (500
frames), span_len 3, subcodes_context 5. D-Adapt Adam (lr 1, betas 0.9/0.95, weight decay 0.1),
cosine schedule with 4000 warmup over 500 epochs x 2000 updates, gradient clipping 1.0, EMA 0.99
every 10 updates, batch 192 clips, T5-base text (word dropout 0.3, CFG dropout 0.3), audiocraft's
metadata text augmentation (merge 0.25, drop description 0.5, drop other 0.5). bfloat16 compute
with float32 master weights (the reference used fp16 autocast).

    magnet-jax train --config configs/magnet_small.py --workdir runs/small \\
        data.dir=/data/tokens/magnet_tokens/1.0.0 text.path=/models/t5-base
    magnet-jax train --config configs/magnet_small.py:30secs --workdir runs/small30 data.dir=... text.path=...
    # fine-tune the released weights, first half of the layers frozen:
    magnet-jax train --config configs/magnet_small.py --workdir runs/ft data.dir=... text.path=... \\
        finetune.init_from=/models/magnet-small-10secs/state_dict.bin finetune.freeze=emb,layers:0-11 \\
        optim.optimizer=adamw optim.lr=1e-5 optim.schedule=constant train.steps=10000

On a pod slice: add ``--distributed`` (TPU) or ``--coordinator H:P --num-processes N --process-id I``.
"""
from magnet_jax.lm.config import LMConfig
from magnet_jax.train.config import DataConfig, FinetuneConfig, MeshConfig, TextConfig, TrainConfig
from magnet_jax.train.optim import OptimConfig


def get_config(variant: str = ""):
    seconds = {"": 10.0, "10secs": 10.0, "30secs": 30.0}
    if variant not in seconds:
        raise ValueError(f"unknown variant {variant!r} of configs/magnet_small.py (have: 10secs, 30secs)")
    return {
        "lm": LMConfig(dim=1024, num_heads=16, num_layers=24, ffn_dim=4096, n_q=4, card=2048,
                       subcodes_context=5, span_len=3, frame_rate=50, segment_duration=seconds[variant],
                       compute_dtype="bfloat16"),
        "train": TrainConfig(steps=500 * 2000, batch_size=192, log_every=100, eval_every=2000,
                             eval_batches=16, checkpoint_every=2000, keep_checkpoints=3),
        "optim": OptimConfig(optimizer="dadam", lr=1.0, beta1=0.9, beta2=0.95, eps=1e-8,
                             weight_decay=0.1, schedule="cosine", warmup=4000, lr_min_ratio=0.0,
                             max_norm=1.0, ema_decay=0.99, ema_every=10),
        "mesh": MeshConfig(data=-1, fsdp=1, tensor=1),
        "data": DataConfig(dir="", merge_text_p=0.25, drop_desc_p=0.5, drop_other_p=0.5, worker_count=8),
        "text": TextConfig(encoder="t5", path="t5-base", max_tokens=64, word_dropout=0.3, cfg_dropout=0.3),
        "finetune": FinetuneConfig(),
    }
