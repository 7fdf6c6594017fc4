"""Data pipeline benchmark: tokenization throughput and loader rate vs the train step's appetite.

    python bench/bench_data.py                      # small: 8 clips of 10 s; writes bench/results/data_cpu.json
    python bench/bench_data.py --clips 64 --batch 16

1. Tokenization with the 32 kHz EnCodec architecture (random weights: same FLOPs as the released
   codec) over a synthetic MusicCaps-style corpus: audio seconds per wall second for the whole
   job (decode + resample + encode + serialise + write), and the decode-only rate beside it.
2. The grain loader over the result at the bench LM's shapes (configs/bench_lm.py: T = 480
   frames) against the bench LM's training step (loss + gradient, jitted) at the same batch:
   ``loader_headroom`` = loader batches/s / train steps/s; above 1 the loader keeps up.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def bench_tokenize(corpus: Path, out: Path, batch: int) -> dict:
    import numpy as np

    from data_pipelines.audio import AudioSettings, load_clip
    from data_pipelines.encoder import CodecEncoder
    from data_pipelines.manifests import read_manifest
    from data_pipelines.tokenize import TokenizeOptions, tokenize

    t0 = time.perf_counter()
    enc = CodecEncoder.from_name("encodec_32khz", batch, seed=0)
    build_s = time.perf_counter() - t0
    settings = AudioSettings(sample_rate=enc.sample_rate, channels=enc.channels, segment_duration=10.0)
    t0 = time.perf_counter()
    enc(np.zeros((batch, 1, settings.segment_samples), np.float32))
    compile_s = time.perf_counter() - t0
    manifest = read_manifest(corpus)
    t0 = time.perf_counter()
    decoded = sum(load_clip(Path(c.path), settings).shape[-1] for c in manifest.clips) / enc.sample_rate
    decode_rate = decoded / (time.perf_counter() - t0)
    summary = tokenize(manifest, enc, settings, out, TokenizeOptions(clips_per_shard=batch, progress=False))
    return {"codec": "encodec_32khz (random init)", "batch": batch, "clips": summary["clips"],
            "audio_seconds": summary["audio_seconds"], "codec_build_s": round(build_s, 2),
            "encode_compile_s": round(compile_s, 2),
            "tokenize_wall_s": summary["this_run"]["wall_seconds"],
            "tokenize_audio_s_per_s": summary["this_run"]["audio_seconds_per_second"],
            "decode_only_audio_s_per_s": round(decode_rate, 2)}


def bench_loader(directory: Path, batch: int, frames: int, n: int, workers: int) -> float:
    from data_pipelines.loader import LoaderConfig, make_train_loader

    cfg = LoaderConfig(batch_size=batch, frames=frames, seed=0, merge_text_p=0.25, drop_desc_p=0.5,
                       drop_other_p=0.5, worker_count=workers)
    it = make_train_loader(directory, cfg, process_index=0, process_count=1)
    next(it)                                              # start-up (workers, first shard)
    t0 = time.perf_counter()
    for _ in range(n):
        next(it)
    return n / (time.perf_counter() - t0)


def bench_train_step(batch: int, steps: int) -> tuple[float, dict]:
    """Steps/s of the bench LM's loss + gradient (the optimizer update is small beside it)."""
    import jax
    import numpy as np
    from flax import nnx

    from magnet_jax.lm.model import MagnetLM
    from magnet_jax.lm.objective import magnet_loss, span_count_lut

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "configs"))
    import bench_lm

    cfg = bench_lm.get_config()["lm"]
    T = int(cfg.frame_rate * cfg.segment_duration)
    model = MagnetLM(cfg, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    lut = jax.numpy.asarray(span_count_lut(T, cfg.span_len))

    @jax.jit
    def step(state, codes, cond, key):
        def loss(s):
            return magnet_loss(nnx.merge(graphdef, s), codes, cond, key, lut=lut).loss
        return jax.value_and_grad(loss)(state)

    rng = np.random.default_rng(0)
    codes = rng.integers(0, cfg.card, (batch, cfg.n_q, T)).astype(np.int32)
    cond = rng.standard_normal((batch, 8, cfg.dim)).astype(np.float32)
    jax.block_until_ready(step(state, codes, cond, jax.random.key(0)))
    t0 = time.perf_counter()
    for i in range(steps):
        jax.block_until_ready(step(state, codes, cond, jax.random.key(i)))
    return steps / (time.perf_counter() - t0), {"dim": cfg.dim, "layers": cfg.num_layers, "T": T}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8, help="codec batch and training batch")
    ap.add_argument("--loader-batches", type=int, default=30)
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--workers", type=int, default=0, help="grain worker processes for the loader")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "data_cpu.json")
    args = ap.parse_args()

    import jax

    from data_pipelines.synth import write_corpus

    root = Path(tempfile.mkdtemp(prefix="bench_data_"))
    write_corpus(root / "corpus", args.clips, duration=10.0, sample_rate=32000, progress=False)
    result = {"benchmark": "data", "backend": jax.default_backend(), "devices": jax.device_count(),
              "cpu_count": os.cpu_count(), "platform": platform.platform(), "jax": jax.__version__}
    result["tokenize"] = bench_tokenize(root / "corpus", root / "tokens", args.batch)
    steps_per_s, lm = bench_train_step(args.batch, args.train_steps)
    loader_rate = bench_loader(root / "tokens", args.batch, lm["T"], args.loader_batches, args.workers)
    result["loader"] = {"batch": args.batch, "frames": lm["T"], "workers": args.workers,
                        "batches_per_s": round(loader_rate, 2),
                        "train_step": {**lm, "steps_per_s": round(steps_per_s, 4)},
                        "loader_headroom": round(loader_rate / steps_per_s, 1)}
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
