"""The autoregressive twin of the shipped default MAGNeT, for the paper's rescoring / Hybrid-MAGNeT
ablation (``scripts/ablation_rescore_hybrid.py``).

Same tokens (the default model's codec: 16 kHz, 4 x 256 codes at 50 Hz, 5-s segments of the corpus
without the held-out attribute combinations), RoPE, the same MiniLM text conditioning and dropouts
as ``configs/default_model.py``; the family differs: a causal transformer over audiocraft's delay
pattern (delays 0-3) instead of masked spans. Smaller than the default (dim 128, 3 layers against
256 and 4; 1000 steps against 4000) so that training and the 18 evaluations of the ablation fit a
session on the 2-core machine; an autoregressive step also trains on every position of every
codebook at once, where MAGNeT's trains one stage's masked positions. A larger twin is one
override away (``lm.dim=256 lm.num_layers=4 lm.ffn_dim=1024 train.steps=4000``):

    magnet-jax train --config configs/ablation_musicgen.py --workdir runs/ablation_musicgen \\
        data.dir=runs/default_tokens/magnet_tokens/1.0.0
    magnet-jax export --lm-workdir runs/ablation_musicgen --codec-workdir magnet_jax/assets/default_model \\
        --out runs/ablation_musicgen_model

Any field can be overridden on the command line (``train.steps=4000``).
"""
from magnet_jax.lm.musicgen import MusicGenConfig
from magnet_jax.train.config import DataConfig, FinetuneConfig, MeshConfig, TextConfig, TrainConfig
from magnet_jax.train.optim import OptimConfig


def get_config(variant: str = ""):
    if variant:
        raise ValueError(f"configs/ablation_musicgen.py has no variants (got {variant!r}); use key=value overrides")
    return {
        "lm": MusicGenConfig(dim=128, num_heads=4, num_layers=3, ffn_dim=512, n_q=4, card=256,
                             delays=(0, 1, 2, 3), frame_rate=50, segment_duration=5.0,
                             positional_embedding="rope"),
        "train": TrainConfig(steps=1000, batch_size=8, log_every=25, eval_every=500, eval_batches=8,
                             jit_init=False, checkpoint_every=200, keep_checkpoints=2),
        "optim": OptimConfig(optimizer="adamw", lr=1e-3, beta1=0.9, beta2=0.95, weight_decay=0.1,
                             schedule="cosine", warmup=100, max_norm=1.0, ema_decay=0.99, ema_every=1),
        "mesh": MeshConfig(data=-1, fsdp=1, tensor=1),
        "data": DataConfig(dir="runs/default_tokens/magnet_tokens/1.0.0"),
        "text": TextConfig(encoder="minilm", max_tokens=48, word_dropout=0.1, cfg_dropout=0.2),
        "finetune": FinetuneConfig(),
    }
