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
from configs.default_model import get_config as default_model_config
from magnet_jax.lm.musicgen import MusicGenConfig
from magnet_jax.train.config import TrainConfig


def get_config(variant: str = ""):
    if variant:
        raise ValueError(f"configs/ablation_musicgen.py has no variants (got {variant!r}); use key=value overrides")
    config = default_model_config()        # optimizer, data, text conditioning and dropouts as the default's
    config["lm"] = MusicGenConfig(dim=128, num_heads=4, num_layers=3, ffn_dim=512, n_q=4, card=256,
                                  delays=(0, 1, 2, 3), frame_rate=50, segment_duration=5.0,
                                  positional_embedding="rope")
    config["train"] = TrainConfig(steps=1000, batch_size=8, log_every=25, eval_every=500, eval_batches=8,
                                  jit_init=False, checkpoint_every=200, keep_checkpoints=2)
    return config
