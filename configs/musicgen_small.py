"""MusicGen small (32 kHz music): the released facebook/musicgen-small recipe.

audiocraft ``solver=musicgen/musicgen_base_32khz`` + ``conditioner=text2music`` (its grid adds FSDP
only), model scale small: dim 1024, 16 heads, 24 layers, FFN 4096, sinusoidal positions, causal
self-attention, 4 x 2048 codebooks at 50 Hz in the delay pattern 0, 1, 2, 3, 30 s segments (1500
frames). D-Adapt Adam (lr 1, betas 0.9/0.95, weight decay 0.1, eps 1e-8), cosine schedule with
4000 warmup over 500 epochs x 2000 updates, gradient clipping 1.0, EMA 0.99 every 10 updates,
batch 192 clips, T5-base text (word dropout 0.3, CFG dropout 0.3), audiocraft's metadata text
augmentation (merge 0.25, drop description 0.5, drop other 0.5). bfloat16 compute with float32
master weights (the reference trained fp16 parameters under FSDP).

    magnet-jax train --config configs/musicgen_small.py --workdir runs/musicgen_small \\
        data.dir=/data/tokens/magnet_tokens/1.0.0 text.path=/models/t5-base
    # fine-tune the released weights:
    magnet-jax train --config configs/musicgen_small.py --workdir runs/mg_ft data.dir=... text.path=... \\
        finetune.init_from=/models/musicgen-small/state_dict.bin \\
        optim.optimizer=adamw optim.lr=1e-5 optim.schedule=constant train.steps=10000

The tokens come from the 32 kHz EnCodec (``magnet-jax tokenize --codec encodec_32khz
--codec-weights /models/encodec_32khz --segment-duration 30``); on a pod slice add
``--distributed`` (TPU) or ``--coordinator H:P --num-processes N --process-id I``.
"""
from magnet_jax.lm.musicgen import MusicGenConfig
from magnet_jax.train.config import DataConfig, FinetuneConfig, MeshConfig, TextConfig, TrainConfig
from magnet_jax.train.optim import OptimConfig


def get_config(variant: str = ""):
    if variant:
        raise ValueError(f"configs/musicgen_small.py has no variants (got {variant!r}); override fields instead")
    return {
        "lm": MusicGenConfig(dim=1024, num_heads=16, num_layers=24, ffn_dim=4096, n_q=4, card=2048,
                             delays=(0, 1, 2, 3), frame_rate=50, segment_duration=30.0,
                             positional_embedding="sin", compute_dtype="bfloat16"),
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
