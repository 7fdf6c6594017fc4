"""Benchmark: EnCodec encode / decode, magnet-jax against audiocraft on the same random weights.

    python bench/bench_codec.py                       # 10 s and 30 s, 32 kHz codec, batch 1
    python bench/bench_codec.py --durations 2 --codec encodec_16khz

Prints one JSON object (also written to bench/results/codec_<backend>.json): for every duration,
audiocraft's time after one warm-up call, ours (after compilation), our compile time (first call minus a run), and the
ratio ours / audiocraft (target <= 0.8). Timings are one run each unless --repeats is raised
(the best is kept). Both sides compute in float32; ours uses JAX's default matmul precision.
Needs the reference installed (bash scripts/install_reference.sh).
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
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def build_reference(cfg, seed: int = 0):
    """audiocraft EncodecModel with the architecture of ``cfg`` and random (non-trivial) weights."""
    import torch
    from audiocraft.models.encodec import EncodecModel
    from audiocraft.modules.seanet import SEANetDecoder, SEANetEncoder
    from audiocraft.quantization.vq import ResidualVectorQuantizer

    torch.manual_seed(seed)
    kw = dict(channels=cfg.channels, dimension=cfg.dimension, n_filters=cfg.n_filters,
              n_residual_layers=cfg.n_residual_layers, ratios=list(cfg.ratios), norm=cfg.norm,
              kernel_size=cfg.kernel_size, last_kernel_size=cfg.last_kernel_size,
              residual_kernel_size=cfg.residual_kernel_size, dilation_base=cfg.dilation_base,
              causal=cfg.causal, pad_mode=cfg.pad_mode, true_skip=cfg.true_skip, compress=cfg.compress,
              lstm=cfg.lstm, disable_norm_outer_blocks=cfg.disable_norm_outer_blocks,
              activation_params={"alpha": cfg.elu_alpha})
    quantizer = ResidualVectorQuantizer(dimension=cfg.dimension, n_q=cfg.n_q, bins=cfg.bins)
    model = EncodecModel(SEANetEncoder(**kw), SEANetDecoder(**kw, trim_right_ratio=cfg.trim_right_ratio),
                         quantizer, frame_rate=int(cfg.frame_rate), sample_rate=cfg.sample_rate,
                         channels=cfg.channels, causal=cfg.causal).eval()
    with torch.no_grad():
        for layer in quantizer.vq.layers:
            layer._codebook.embed.normal_()
        for name, p in model.named_parameters():
            if name.endswith("weight_g"):
                p.mul_(torch.empty_like(p).uniform_(0.5, 1.5))
    return model


def timed(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--codec", default="encodec_32khz")
    parser.add_argument("--durations", type=float, nargs="+", default=[10.0, 30.0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", default=None, help="JSON path (default bench/results/codec_<backend>.json)")
    args = parser.parse_args()

    import reference
    reference.install_stubs()
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    from magnet_jax.codec import codec_config
    from magnet_jax.codec.convert import model_from_state_dict
    from magnet_jax.codec.runner import CodecRunner

    cfg = codec_config(args.codec)
    ref = build_reference(cfg)
    runner = CodecRunner(model_from_state_dict(cfg, ref.state_dict(), "audiocraft"))
    backend = jax.default_backend()
    results = []
    for seconds in args.durations:
        n = int(seconds * cfg.sample_rate)
        x = torch.randn(args.batch, cfg.channels, n, generator=torch.Generator().manual_seed(1)) * 0.3
        with torch.inference_mode():
            ref_first, (ref_codes, _) = timed(lambda: ref.encode(x), 1)  # warm-up: allocator, oneDNN primitives
            ref.decode(ref_codes)
            ref_enc, (ref_codes, _) = timed(lambda: ref.encode(x), args.repeats)
            ref_dec, ref_audio = timed(lambda: ref.decode(ref_codes), args.repeats)
        audio = jnp.asarray(x.numpy())
        first_enc, _ = timed(lambda: runner.encode(audio).block_until_ready(), 1)
        enc, codes = timed(lambda: runner.encode(audio).block_until_ready(), args.repeats)
        first_dec, _ = timed(lambda: runner.decode(codes).block_until_ready(), 1)
        dec, out = timed(lambda: runner.decode(codes).block_until_ready(), args.repeats)
        row = {
            "seconds": seconds, "batch": args.batch,
            "audiocraft_first_encode_s": round(ref_first, 4), "audiocraft_encode_s": round(ref_enc, 4), "ours_encode_s": round(enc, 4),
            "ours_encode_compile_s": round(max(first_enc - enc, 0.0), 3),
            "encode_ratio": round(enc / ref_enc, 3),
            "audiocraft_decode_s": round(ref_dec, 4), "ours_decode_s": round(dec, 4),
            "ours_decode_compile_s": round(max(first_dec - dec, 0.0), 3),
            "decode_ratio": round(dec / ref_dec, 3),
            "codes_equal_fraction": float((np.asarray(codes) == ref_codes.numpy()).mean()),
            "decode_max_abs_diff": float(np.abs(np.asarray(out) - ref_audio.numpy()).max()),
        }
        results.append(row)
    report = {
        "benchmark": "codec", "codec": args.codec, "backend": backend,
        "device": str(jax.devices()[0].device_kind), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
        "jax": jax.__version__, "torch": torch.__version__, "repeats": args.repeats,
        "target_ratio": 0.8, "results": results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"codec_{backend}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
