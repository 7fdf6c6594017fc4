"""Train-step throughput and MFU, ours against audiocraft's MagnetLMModel, in one run.

Bench configuration: dim 512, 8 heads, 8 layers, FFN 2048, card 2048, T = 480 (48 Hz x 10 s),
batch --batch, a text condition of S tokens (width 24, projected by the trained output_proj on
both sides: audiocraft's LUTConditioner). One step = MAGNeT masking of a random stage, forward,
masked cross-entropy, backward, gradient clipping 1.0, AdamW. Ours is the jitted, donated step of
``magnet-jax train`` (float32 here; ``--dtype bfloat16`` for accelerators); the reference runs
audiocraft's custom attention (the path that applies the real band mask), float32, on the
same CPU threads. tokens/s counts B x n_q x T codes per step. FLOP formula:
``magnet_jax/train/metrics.py`` (3 x forward, one head); MFU divides by the measured jitted
matmul peak on CPU (the best of one measurement per round, interleaved with the steps), or the
device's bf16 peak on accelerators. Prints JSON and writes
bench/results/train_<device>.json.

    python bench/bench_train.py [--batch 2] [--steps 2] [--remat] [--layers 8] [--dim 512] [--no-reference]
        [--attention-impl einsum|xla|cudnn] [--also-no-band] [--also-attention-impl xla]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def ours(args, S: int, W: int, band: bool = True, attention_impl: str | None = None) -> dict:
    """Build and compile ours; returns a dict with ``step(stage)`` (one timed step on that stage:
    the step counter is set to a step whose drawn stage it is) and what the result records."""
    import jax
    import numpy as np

    from magnet_jax.lm.config import LMConfig
    from magnet_jax.lm.objective import loss_stage
    from magnet_jax.train.config import default_config
    from magnet_jax.train.loop import build_trainer, initial_state
    from magnet_jax.train.metrics import device_peak_flops, train_step_flops
    from magnet_jax.train.optim import OptimConfig
    from magnet_jax.train.config import TrainConfig, TextConfig
    lm = LMConfig(dim=args.dim, num_heads=args.heads, num_layers=args.layers, ffn_dim=4 * args.dim,
                  card=2048, frame_rate=48, segment_duration=10.0, compute_dtype=args.dtype,
                  attention_impl=attention_impl or args.attention_impl)
    cfg = default_config(lm)
    cfg["train"] = TrainConfig(steps=1000, batch_size=args.batch, jit_init=True, progress=False, remat=args.remat,
                               band_attention=band)
    cfg["optim"] = OptimConfig(optimizer="adamw", lr=1e-4, schedule="constant", max_norm=1.0, ema_decay=0.0)
    cfg["text"] = TextConfig(encoder="none", cfg_dropout=0.3, max_tokens=S)

    class _Width:          # build_trainer only reads the frozen encoder's width
        width = W
    tr = build_trainer(cfg, encoder=_Width())
    st = {"state": initial_state(tr)}
    rng = np.random.default_rng(0)
    T = lm.sequence_len
    batch = {"codes": rng.integers(0, lm.card, (args.batch, lm.n_q, T)).astype(np.int32),
             "padding_mask": np.ones((args.batch, T), bool),
             "text_hidden": rng.normal(size=(args.batch, S, W)).astype(np.float32),
             "text_mask": np.ones((args.batch, S), np.int32)}
    batch = jax.device_put(batch)
    # a step number per stage: the step key is fold_in(rng, step) and the stage its first draw
    base = jax.random.wrap_key_data(st["state"]["rng"])
    step_of = {}
    for n in range(1000):
        s = int(loss_stage(jax.random.fold_in(base, n), lm.n_q))
        step_of.setdefault(s, n)
        if len(step_of) == lm.n_q:
            break

    def step(stage: int) -> float:
        state = dict(st["state"])
        state["step"] = jax.device_put(np.int32(step_of[stage]), state["step"].sharding)
        with jax.set_mesh(tr.mesh):
            t0 = time.perf_counter()
            state, m = tr.train_step(state, batch, np.float32(0))
            jax.block_until_ready(m)
            dt = time.perf_counter() - t0
        st["state"], st["loss"] = state, float(np.mean(np.asarray(m["loss"])))
        assert int(np.asarray(m["stage"])[0]) == stage
        return dt

    t0 = time.perf_counter()
    for s in range(lm.n_q):     # every stage's branch compiles in the first call
        step(s)
        if s == 0:
            compile_s = time.perf_counter() - t0
    flops = train_step_flops(lm, args.batch, T, S, W)
    peak = device_peak_flops()
    return {"step": step, "n_q": lm.n_q, "tokens": args.batch * lm.n_q * T, "flops": flops, "peak": peak,
            "compile_s": compile_s, "st": st, "device": jax.devices()[0].device_kind,
            "devices": jax.device_count()}


def reference(args, S: int, W: int) -> dict:
    import lm_reference
    import numpy as np
    import torch

    from magnet_jax.lm.config import LMConfig
    from magnet_jax.lm.objective import span_count_lut
    from magnet_jax.train.metrics import train_step_flops
    shape = lm_reference.RefLMShape(dim=args.dim, num_heads=args.heads, num_layers=args.layers, card=2048,
                                    frame_rate=48, segment_duration=10, text_dim=W)
    lm = lm_reference.build_reference_lm(shape).train()
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    B, K, T = args.batch, shape.n_q, shape.T
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, shape.card, (B, K, T), generator=g)
    tokens = torch.randint(0, shape.text_bins, (B, S), generator=g)
    lut = torch.tensor(span_count_lut(T, shape.span_len))
    provider = lm.condition_provider.conditioners["description"]

    def step():
        stage = int(torch.randint(0, K, (1,), generator=g))
        probs = torch.cos(torch.rand(B, generator=g) * math.pi / 2)
        counts = lut[(probs * 100).round().long()].clamp(min=1)
        ranks = torch.rand(B, T, generator=g).argsort(-1).argsort(-1)
        starts = ranks < counts[:, None]
        mask = starts.clone()
        for s in range(1, shape.span_len):
            mask[:, s:] |= starts[:, :-s]
        inputs = codes.clone()
        inputs[:, stage][mask] = shape.card
        inputs[:, stage + 1:] = shape.card
        cond = provider.output_proj(provider.embed(tokens))          # the trained projection
        logits = lm(inputs, [], {"description": (cond, torch.ones(B, S))}, stage=stage)  # [B, K, T, card]
        logits = logits[:, stage][mask]
        loss = torch.nn.functional.cross_entropy(logits, codes[:, stage][mask])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        opt.step()
        return float(loss.detach())
    step()

    def timed() -> float:
        t0 = time.perf_counter()
        step()
        return time.perf_counter() - t0
    cfg = LMConfig(dim=args.dim, num_heads=args.heads, num_layers=args.layers, ffn_dim=4 * args.dim, card=2048)
    ref_flops = train_step_flops(cfg, B, T, S, W) + 3 * 2 * B * T * args.dim * 2048 * (K - 1)  # all n_q heads
    return {"step": timed, "flops_executed": ref_flops, "torch_threads": torch.get_num_threads()}


def matmul_peak_jax(repeats: int = 5) -> float:
    import jax
    import jax.numpy as jnp
    best = 0.0
    for (m, k, n) in [(960, 512, 2048), (2048, 2048, 2048)]:
        a, b = jnp.ones((m, k), jnp.float32), jnp.ones((k, n), jnp.float32)
        f = jax.jit(lambda x, y: x @ y)
        f(a, b).block_until_ready()
        for _ in range(repeats):
            t0 = time.perf_counter()
            f(a, b).block_until_ready()
            best = max(best, 2 * m * k * n / (time.perf_counter() - t0))
    return best / jax.device_count()


def cpu_model() -> str:
    """The CPU's model name (lscpu's 'Model name', else /proc/cpuinfo, else platform)."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2, help="interleaved rounds (n_q steps of ours and of the reference each)")
    ap.add_argument("--remat", action="store_true")
    ap.add_argument("--also-no-band", action="store_true",
                    help="also time ours with train.band_attention=False (T x T scores, additive band bias)")
    ap.add_argument("--attention-impl", default="einsum", choices=("einsum", "xla", "cudnn"),
                    help="lm.attention_impl of ours")
    ap.add_argument("--also-attention-impl", default=None, choices=("einsum", "xla", "cudnn"),
                    help="also time ours with this lm.attention_impl")
    ap.add_argument("--text-tokens", type=int, default=8)
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    W = 24
    mine = ours(args, args.text_tokens, W)
    ref = None if args.no_reference else reference(args, args.text_tokens, W)
    # interleaved rounds: each round times ours on every stage and the reference as often, so a
    # shared machine's load falls on both alike
    extra = {}                  # other variants of ours, timed in the same rounds
    if args.also_no_band:
        extra["ours_band_attention_off"] = ours(args, args.text_tokens, W, band=False)
    if args.also_attention_impl:
        extra[f"ours_attention_{args.also_attention_impl}"] = ours(args, args.text_tokens, W,
                                                                   attention_impl=args.also_attention_impl)
    by_stage = {s: [] for s in range(mine["n_q"])}
    extra_stage = {name: {s: [] for s in range(mine["n_q"])} for name in extra}
    ref_times = []
    cpu_peaks = []
    pairs = []
    for _ in range(args.steps):
        if not mine["peak"]:     # the jitted matmul peak, measured in every round: best seen
            cpu_peaks.append(matmul_peak_jax())
        for s in range(mine["n_q"]):
            by_stage[s].append(mine["step"](s))
            for name, variant in extra.items():
                extra_stage[name][s].append(variant["step"](s))
            if ref is not None:
                ref_times.append(ref["step"]())
                pairs.append((s, ref_times[-1] / by_stage[s][-1]))   # adjacent in time: same load
    if not mine["peak"]:
        import jax
        mine["peak"] = max(cpu_peaks) * jax.device_count()
    stage_s = {s: min(ts) for s, ts in by_stage.items()}
    step_s = sum(stage_s.values()) / len(stage_s)     # expected step time under the uniform stage draw
    extra_out = {}
    for name, times in extra_stage.items():
        v_s = sum(min(ts) for ts in times.values()) / len(times)
        extra_out[name] = {"step_s": round(v_s, 4), "step_s_by_stage": {str(s): round(min(ts), 4) for s, ts in times.items()},
                           "tokens_per_s": round(mine["tokens"] / v_s, 2), "mfu": round(mine["flops"] / v_s / mine["peak"], 4)}
    ours_out = {"step_s": step_s, "step_s_by_stage": {str(s): round(v, 4) for s, v in stage_s.items()},
                "compile_plus_first_step_s": mine["compile_s"], "flops": mine["flops"],
                "tokens_per_s": mine["tokens"] / step_s, "mfu": mine["flops"] / step_s / mine["peak"],
                "peak_gflops": mine["peak"] / 1e9, "loss": mine["st"]["loss"], "device": mine["device"],
                "devices": mine["devices"], "remat": args.remat, "attention_impl": args.attention_impl,
                "peak_gflops_per_round": [round(p / 1e9, 2) for p in cpu_peaks]}
    ref_out = None
    if ref is not None:
        ref_s = min(ref_times)
        ref_out = {"step_s": ref_s, "step_s_median": statistics.median(ref_times),
                   "tokens_per_s": mine["tokens"] / ref_s, "flops_executed": ref["flops_executed"],
                   "torch_threads": ref["torch_threads"]}
    result = {
        "bench": "train_step", "shape": {"dim": args.dim, "heads": args.heads, "layers": args.layers,
                                         "card": 2048, "T": 480, "batch": args.batch, "text_tokens": args.text_tokens,
                                         "dtype": args.dtype},
        "machine": platform.machine(), "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
        "timing": f"{args.steps} interleaved rounds; ours: min per stage, step_s = mean over the n_q stages "
                  f"(the uniform stage draw); reference: min over its steps (random stages); "
                  f"CPU peak: best jitted matmul of one measurement per round",
        "ours": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in ours_out.items()},
        **extra_out,
        "reference": None if ref_out is None else {k: (round(v, 4) if isinstance(v, float) else v) for k, v in ref_out.items()},
        "speedup_tokens_per_s": None if ref_out is None else round(ours_out["tokens_per_s"] / ref_out["tokens_per_s"], 3),
        # robust to a load that changes during the run: each ours step against the reference step
        # right after it; the median per stage, then their mean (the uniform stage draw)
        "speedup_paired": None if not pairs else round(sum(
            statistics.median([r for st, r in pairs if st == s]) for s in range(mine["n_q"])) / mine["n_q"], 3),
        "speedup_paired_by_stage": None if not pairs else {
            str(s): round(statistics.median([r for st, r in pairs if st == s]), 3) for s in range(mine["n_q"])},
        "flop_formula": "magnet_jax/train/metrics.py: 3 x forward_flops(rows=B, heads=1) + text output_proj",
    }
    print(json.dumps(result, indent=1))
    kind = "cpu" if ours_out["device"].lower().startswith("cpu") else mine["device"].lower().replace(" ", "_")
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"train_{kind}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
