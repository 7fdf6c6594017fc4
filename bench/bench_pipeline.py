"""End-to-end text -> audio: our MAGNeT.from_pretrained + generate against audiocraft's
MAGNeT.get_pretrained + generate, on the same exported folder, in one run. Prints JSON and writes
bench/results/pipeline_<platform>.json.

Bench configuration (the sampler benchmark's LM, with a codec and a text encoder around it):
LM dim 512, 8 heads, 8 layers, card 2048, 48 Hz x 10 s = 480 frames, decoding steps
[20, 10, 10, 10], audiocraft's default sampling (temperature 3 annealed, top-p 0.9, CFG 10 -> 1);
EnCodec with the 32 kHz model's SEANet (64 filters, ratios 8,5,4,4, 2-layer LSTM) run at 30720 Hz so
its frame rate is 48 (the reference's custom-attention band mask needs T divisible by 24); a random
T5 of t5-base's shape (768 wide, 12 layers). Random weights, saved as audiocraft exports them
(tests/pipeline_reference.py). Batches 1 and 8, eight distinct prompts.

Timed per batch: descriptions in, audio array out (text encoding, every decoding step, codec
decode; our prompt cache is cleared before every call). Ours: the first call (compile + run) and the best of ``--repeats`` later calls; the
reference: the best of ``--repeats`` calls. Loading: the first from_pretrained (conversion
included) and a cached one.

    python bench/bench_pipeline.py                                   # the full configuration
    python bench/bench_pipeline.py --layers 2 --dim 128 --seconds 2 --t5 small --batches 1,2 --repeats 1
    python bench/bench_pipeline.py --skip-reference --dtype bfloat16    # ours only (accelerators)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("MAGNET_JAX_REQUIRE_REFERENCE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPTS = ["80s synth pop with a driving bassline", "calm solo piano, slow and sparse",
           "epic orchestral soundtrack with choir and brass", "lo-fi hip hop beat with vinyl crackle",
           "traditional irish folk tune on fiddle and tin whistle", "heavy metal riff with double bass drum",
           "smooth jazz saxophone solo over a walking bass", "ambient electronic pads, no drums"]
T5_BASE = dict(d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12,
               relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="relu")


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def build_folder(args, root: Path):
    """The exported reference folder and its T5 folder (audiocraft's own builders, random weights)."""
    from lm_reference import RefLMShape
    from pipeline_reference import RefPipelineShape, build_reference_folder
    from text_fixtures import T5_SMALL, make_t5_folder, train_spiece
    shape = RefPipelineShape(
        lm=RefLMShape(dim=args.dim, num_heads=args.heads, num_layers=args.layers, card=args.card,
                      frame_rate=48, segment_duration=args.seconds),
        sample_rate=30720, ratios=(8, 5, 4, 4), n_filters=64, codec_dim=128, lstm=2)
    spiece = train_spiece(root / "spiece.model")
    t5 = make_t5_folder(root / "t5", spiece, T5_BASE if args.t5 == "base" else T5_SMALL)
    return shape, build_reference_folder(root / "export", t5, shape), t5


def bench_ours(args, folder: Path, t5: Path, cache: Path, params: dict) -> dict:
    from magnet_jax.models import MAGNeT
    load_first = _timed(lambda: MAGNeT.from_pretrained(folder, text_encoder=t5, cache_dir=cache))
    t0 = time.perf_counter()
    model = MAGNeT.from_pretrained(folder, text_encoder=t5, cache_dir=cache, compute_dtype=args.dtype)
    load_cached = time.perf_counter() - t0
    out = {"load_with_conversion_s": round(load_first, 3), "load_cached_s": round(load_cached, 3),
           "batches": {}}
    def run(prompts, seed):
        model.conditioner.encoder.clear_cache()   # re-encode the text every call, as the reference does
        return _timed(lambda: model.generate(prompts, seed=seed, **params))

    for b in args.batches:
        prompts = PROMPTS[:b]
        first = run(prompts, 0)
        best = min(run(prompts, i + 1) for i in range(args.repeats))
        out["batches"][b] = {"compile_plus_first_run_s": round(first, 3), "s": round(best, 3)}
    return out


def bench_reference(args, folder: Path, t5: Path, params: dict) -> dict:
    import torch
    from pipeline_reference import reference_magnet
    t0 = time.perf_counter()
    model = reference_magnet(folder, t5)
    out = {"load_s": round(time.perf_counter() - t0, 3), "batches": {}}
    model.set_generation_params(**params)
    for b in args.batches:
        prompts = PROMPTS[:b]

        def run():
            with torch.no_grad():
                model.generate(prompts)
        out["batches"][b] = {"s": round(min(_timed(run) for _ in range(args.repeats)), 3)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--card", type=int, default=2048)
    ap.add_argument("--seconds", type=int, default=10, help="segment duration (48 frames per second)")
    ap.add_argument("--t5", choices=("base", "small"), default="base", help="random T5 shape")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--steps", default="20,10,10,10")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    ap.add_argument("--skip-reference", action="store_true")
    args = ap.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    if max(args.batches) > len(PROMPTS):
        ap.error(f"batches up to {len(PROMPTS)} (one distinct prompt per row)")
    params = {"decoding_steps": [int(s) for s in args.steps.split(",")]}   # the rest: audiocraft's defaults

    import jax
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        shape, folder, t5 = build_folder(args, root)
        build_s = time.perf_counter() - t0
        ours = bench_ours(args, folder, t5, root / "cache", params)
        ref = None if args.skip_reference else bench_reference(args, folder, t5, params)

    device = jax.devices()[0]
    rows = []
    for b in args.batches:
        o = ours["batches"][b]
        r = None if ref is None else ref["batches"][b]["s"]
        rows.append({"batch": b, "ours_compile_plus_first_run_s": o["compile_plus_first_run_s"], "ours_s": o["s"],
                     "reference_s": r, "ratio_ours_over_reference": None if r is None else round(o["s"] / r, 3),
                     "ours_audio_seconds_per_second": round(b * args.seconds / o["s"], 3),
                     "reference_audio_seconds_per_second": None if r is None else round(b * args.seconds / r, 3)})
    result = {
        "benchmark": "pipeline_text_to_audio",
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "host": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "config": {"lm": {"dim": args.dim, "heads": args.heads, "layers": args.layers, "card": args.card,
                          "frames": shape.lm.T, "compute_dtype": args.dtype},
                   "codec": {"sample_rate": shape.sample_rate, "ratios": list(shape.ratios), "n_filters": 64,
                             "lstm": 2},
                   "text_encoder": f"random T5, {args.t5} shape", "sampler": params | {"sampling": "default"},
                   "repeats": args.repeats},
        "results": rows,
        "ours_load": {k: v for k, v in ours.items() if k != "batches"},
        "reference_load_s": None if ref is None else ref["load_s"],
        "fixture_build_s": round(build_s, 3),
    }
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results" / f"pipeline_{device.platform}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
