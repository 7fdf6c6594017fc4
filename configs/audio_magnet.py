"""Audio-MAGNeT (16 kHz sound effects): the released facebook/audio-magnet-small recipe.

audiocraft ``solver=magnet/audio_magnet_16khz`` + ``conditioner=text2sound``: the small LM
(dim 1024, 16 heads, 24 layers; ``:medium`` for 1536/24/48) over a 16 kHz EnCodec (hop 320,
50 Hz, 4 x 2048), 10 s segments, span_len 3. AdamW lr 5e-4 (betas 0.9/0.95, weight decay 0.1)
with the inverse-sqrt schedule (3000 warmup from 0), 100 epochs x 2000 updates, clipping 1.0,
EMA 0.99 every 10 updates, batch 128 clips (audiocraft: 256 with half of them mixed together;
the mixing augmentation is not ported), T5-large text (1024 wide), CFG dropout 0.1, no word
dropout.

    magnet-jax train --config configs/audio_magnet.py --workdir runs/audio \\
        data.dir=/data/sound_tokens/magnet_tokens/1.0.0 text.path=/models/t5-large
    magnet-jax train --config configs/audio_magnet.py:medium --workdir runs/audio_medium data.dir=... text.path=...
"""
from magnet_jax.lm.config import LMConfig
from magnet_jax.train.config import DataConfig, FinetuneConfig, MeshConfig, TextConfig, TrainConfig
from magnet_jax.train.optim import OptimConfig


def get_config(variant: str = ""):
    scales = {"": (1024, 16, 24, 4096, 1), "small": (1024, 16, 24, 4096, 1),
              "medium": (1536, 24, 48, 6144, 8)}
    if variant not in scales:
        raise ValueError(f"unknown variant {variant!r} of configs/audio_magnet.py (have: small, medium)")
    dim, heads, layers, ffn, fsdp = scales[variant]
    return {
        "lm": LMConfig(dim=dim, num_heads=heads, num_layers=layers, ffn_dim=ffn, n_q=4, card=2048,
                       subcodes_context=5, span_len=3, frame_rate=50, segment_duration=10.0,
                       compute_dtype="bfloat16"),
        "train": TrainConfig(steps=100 * 2000, batch_size=128, remat=fsdp > 1, log_every=100,
                             eval_every=2000, eval_batches=16, checkpoint_every=2000, keep_checkpoints=3),
        "optim": OptimConfig(optimizer="adamw", lr=5e-4, beta1=0.9, beta2=0.95, eps=1e-8,
                             weight_decay=0.1, schedule="inverse_sqrt", warmup=3000, warmup_init_lr=0.0,
                             max_norm=1.0, ema_decay=0.99, ema_every=10),
        "mesh": MeshConfig(data=-1, fsdp=fsdp, tensor=1),
        "data": DataConfig(dir="", worker_count=8),
        "text": TextConfig(encoder="t5", path="t5-large", max_tokens=64, word_dropout=0.0, cfg_dropout=0.1),
        "finetune": FinetuneConfig(),
    }
