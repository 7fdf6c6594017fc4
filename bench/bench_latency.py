"""Latency and throughput against batch size, MAGNeT against MusicGen, ours against audiocraft's, in
one run: the paper's latency / throughput figure (arXiv 2401.04577) on this machine.

All four LMs have the same transformer (--dim, --heads, --layers, card 2048, 4 codebooks, random
weights, float32) and generate the same clip (--seconds at 50 frames/s) from a text condition with
classifier-free guidance, with each family's default sampler: MAGNeT decoding steps [20, 10, 10,
10] (top-p 0.9, annealed temperature 3, CFG 10 -> 1), MusicGen top-k 250, temperature 1, CFG 3,
one step per pattern step with a KV cache (T + 3 steps). The references are audiocraft's
MagnetLMModel.generate and LMModel.generate (MusicGen) built by audiocraft's builders from the
composed magnet-small-10secs / musicgen-small configs with the scale keys set as above (a LUT text
conditioner stands in for T5, whose cost is the same for both families and measured by
bench_text.py). Times are LM token generation (the codec decode is the same for both families:
bench_codec.py); ours exclude compilation (reported apart). Writes bench/results/latency_<device>.json
and latency_<device>.png (latency left, throughput right, log batch axis).

    python bench/bench_latency.py                                   # dim 512, 8 layers, 10 s, batches 1..16
    python bench/bench_latency.py --dim 128 --layers 2 --seconds 2 --batches 1,2 --repeats 1   # smoke
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("MAGNET_JAX_REQUIRE_REFERENCE", "1")

FAMILIES = ("MAGNeT", "MusicGen")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def composed_configs(args) -> dict:
    """The two families' xp.cfg, composed from audiocraft's tree with this run's scale keys and a
    LUT text conditioner (n_bins 64, dim 32)."""
    from omegaconf import OmegaConf
    from audiocraft_configs import MAGNET_FAMILIES, MUSICGEN_FAMILIES, family_xp
    scale = [f"transformer_lm.dim={args.dim}", f"transformer_lm.num_heads={args.heads}",
             f"transformer_lm.num_layers={args.layers}", f"dataset.segment_duration={args.seconds:g}",
             "conditioners.description.model=lut", "+conditioners.description.lut={n_bins:64,dim:32,tokenizer:noop}"]
    return {"MAGNeT": OmegaConf.to_container(family_xp(MAGNET_FAMILIES["facebook/magnet-small-10secs"], scale)),
            "MusicGen": OmegaConf.to_container(family_xp(MUSICGEN_FAMILIES["facebook/musicgen-small"], scale))}


def reference_lms(xps: dict):
    """audiocraft's MagnetLMModel and LMModel from the composed configs (CPU, float32), both with
    their released ``memory_efficient: true``: MusicGen on torch's SDPA (audiocraft's CPU path),
    MAGNeT on the xformers path its loader selects, whose CUDA kernel is replaced here by the same
    math (tests/reference.py; torch's SDPA would drop MAGNeT's band mask)."""
    import reference
    from omegaconf import OmegaConf
    builders = reference.require("audiocraft.models.builders")
    out = {}
    for family, xp in xps.items():
        cfg = OmegaConf.create(xp)
        cfg.device, cfg.dtype = "cpu", "float32"
        if family == "MAGNeT":
            cfg.transformer_lm.update(compression_model_framerate=50, segment_duration=cfg.dataset.segment_duration,
                                      span_len=cfg.masking.span_len)
        out[family] = builders.get_lm_model(cfg).eval()
    return out


def reference_runner(family: str, lm, batch: int, frames: int):
    import torch
    import reference
    conditioners = reference.require("audiocraft.modules.conditioners")
    attrs = [conditioners.ConditioningAttributes(text={"description": f"prompt {i}"}) for i in range(batch)]
    if family == "MAGNeT":
        kw = dict(use_sampling=True, temp=3.0, top_k=0, top_p=0.9, decoding_steps=[20, 10, 10, 10])
    else:
        kw = dict(use_sampling=True, temp=1.0, top_k=250, top_p=0.0, cfg_coef=3.0)

    transformer = reference.require("audiocraft.modules.transformer")
    backend = "xformers" if family == "MAGNeT" else "torch"     # what each family's loader runs

    def run():
        transformer.set_efficient_attention_backend(backend)
        with torch.no_grad():
            lm.generate(None, attrs, max_gen_len=frames, **kw)
    return run


def our_runner(family: str, xp: dict, batch: int, frames: int):
    """(compile + first call seconds, a timed call) of our compiled sampler on random weights."""
    import jax
    import numpy as np
    from flax import nnx
    from magnet_jax.lm.ar_sampler import MusicGenSampler
    from magnet_jax.lm.convert import lm_config_from_xp, musicgen_config_from_xp
    from magnet_jax.lm.model import MagnetLM
    from magnet_jax.lm.musicgen import MusicGenLM
    from magnet_jax.lm.sampler import MagnetSampler
    cond = np.random.default_rng(0).standard_normal((batch, 2, int(xp["transformer_lm"]["dim"]))).astype(np.float32)
    if family == "MAGNeT":
        cfg = lm_config_from_xp(xp, frame_rate=50)
        sampler = MagnetSampler(MagnetLM(cfg, rngs=nnx.Rngs(0)))
        call = lambda i: sampler.generate(jax.random.key(i), cond=cond, length=frames)   # noqa: E731
    else:
        cfg = musicgen_config_from_xp(xp, frame_rate=50)
        sampler = MusicGenSampler(MusicGenLM(cfg, rngs=nnx.Rngs(0)))
        call = lambda i: sampler.generate(jax.random.key(i), frames=frames, cond=cond)   # noqa: E731
    t0 = time.perf_counter()
    call(0).block_until_ready()
    first = time.perf_counter() - t0
    counter = iter(range(1, 1_000_000))
    return first, lambda: call(next(counter)).block_until_ready()


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (lat, thr) = plt.subplots(1, 2, figsize=(11, 4))
    styles = {("MAGNeT", "ours"): ("C0", "-o"), ("MusicGen", "ours"): ("C1", "-o"),
              ("MAGNeT", "audiocraft"): ("C0", "--s"), ("MusicGen", "audiocraft"): ("C1", "--s")}
    for (family, impl), (color, style) in styles.items():
        rows = [r for r in result["rows"] if r["family"] == family and r["impl"] == impl]
        if not rows:
            continue
        b = [r["batch"] for r in rows]
        lat.plot(b, [r["latency_s"] for r in rows], style, color=color, label=f"{family} ({impl})")
        thr.plot(b, [r["samples_per_s"] for r in rows], style, color=color, label=f"{family} ({impl})")
    for ax, label in ((lat, "latency (s per batch)"), (thr, "throughput (samples / s)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    lat.set_yscale("log")
    lat.legend(fontsize=8)
    s = result["shape"]
    fig.suptitle(f"{s['seconds']} s clips, dim {s['dim']}, {s['layers']} layers, {result['host']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batches", default="1,2,4,8,16")
    ap.add_argument("--reference-batches", default=None, help="batches for audiocraft (default: --batches)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/latency_<device>.json)")
    args = ap.parse_args()
    import jax
    from tqdm import tqdm
    frames = int(round(args.seconds * 50))
    batches = [int(b) for b in args.batches.split(",")]
    ref_batches = [] if args.skip_reference else [int(b) for b in (args.reference_batches or args.batches).split(",")]
    xps = composed_configs(args)
    refs = reference_lms(xps) if ref_batches else {}
    rows = []
    jobs = [(f, "ours", b) for b in batches for f in FAMILIES] + [(f, "audiocraft", b) for b in ref_batches for f in FAMILIES]
    for family, impl, batch in tqdm(jobs, desc="latency", unit="run"):
        if impl == "ours":
            first, run = our_runner(family, xps[family], batch, frames)
        else:
            first, run = None, reference_runner(family, refs[family], batch, frames)
        latency = _best(run, args.repeats)
        rows.append({"family": family, "impl": impl, "batch": batch, "latency_s": round(latency, 3),
                     "samples_per_s": round(batch / latency, 3),
                     "compile_plus_first_s": None if first is None else round(first, 3)})
    device = jax.devices()[0]
    by = {(r["family"], r["impl"], r["batch"]): r["latency_s"] for r in rows}
    ratios = {"musicgen_ours_over_audiocraft_batch1": _ratio(by, ("MusicGen", "ours", 1), ("MusicGen", "audiocraft", 1)),
              "magnet_ours_over_audiocraft_batch1": _ratio(by, ("MAGNeT", "ours", 1), ("MAGNeT", "audiocraft", 1)),
              "ar_over_nar_latency_batch1_ours": _ratio(by, ("MusicGen", "ours", 1), ("MAGNeT", "ours", 1)),
              "ar_over_nar_latency_batch1_audiocraft": _ratio(by, ("MusicGen", "audiocraft", 1),
                                                              ("MAGNeT", "audiocraft", 1)),
              "paper_ar_over_nar_latency_small_batch": "about 10 (A100)"}
    result = {"benchmark": "latency_vs_batch", "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
              "host": f"{cpu_model()}, {os.cpu_count()} cores",
              "shape": {"dim": args.dim, "heads": args.heads, "layers": args.layers, "card": 2048, "n_q": 4,
                        "seconds": args.seconds, "frames": frames, "magnet_decoding_steps": [20, 10, 10, 10],
                        "musicgen_steps": frames + 3},
              "rows": rows, "ratios": ratios}
    print(json.dumps(result, indent=2))
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"latency_{device.platform}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    plot(result, out.with_suffix(".png"))


def _ratio(by: dict, num: tuple, den: tuple) -> float | None:
    return round(by[num] / by[den], 3) if num in by and den in by else None


if __name__ == "__main__":
    main()
