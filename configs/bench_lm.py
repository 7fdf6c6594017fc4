"""The benchmark-shaped MAGNeT LM: dim 512, 8 heads, 8 layers, card 2048, T = 480 (48 Hz x 10 s),
decoding steps [20, 10, 10, 10] with CFG. Random weights unless --checkpoint is given.

    magnet-jax sample --config configs/bench_lm.py --out out/sample
    magnet-jax sample --config configs/bench_lm.py:greedy --out out/greedy sampler.span_arrangement=stride1
    python bench/bench_sampler.py            # the same shapes against audiocraft
"""
from magnet_jax.lm.config import LMConfig
from magnet_jax.lm.sampler import SamplerConfig


def get_config(variant: str = ""):
    config = {
        "lm": LMConfig(dim=512, num_heads=8, num_layers=8, ffn_dim=2048, n_q=4, card=2048,
                       frame_rate=48, segment_duration=10.0),
        "sampler": SamplerConfig(decoding_steps=(20, 10, 10, 10)),
        "batch_size": 1,
        "num_samples": 1,
        "seed": 0,
        "text_tokens": 8,   # length of the random stand-in text condition (no text encoder here)
    }
    if variant == "greedy":
        config["sampler"] = SamplerConfig(decoding_steps=(20, 10, 10, 10), use_sampling=False)
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of configs/bench_lm.py (have: greedy)")
    return config
