"""MeLoDy against MAGNeT on equal terms: the same held-out prompts, seeds, clip length, analysers.

Runs ``magnet-jax eval`` (seeds pooled as ``eval-summary`` pools them) for the shipped MAGNeT and a
MeLoDy model folder (``scripts/train_melody_tiny.sh`` trains one on the same synthetic corpus), both
making clips of MAGNeT's length (MeLoDy past its window by multi-chunk continuation), from one
process so that the latencies compare. Writes into ``--out``: one eval report folder per model and
seed, one pooled summary per model, and ``comparison.json`` / ``.md`` / ``.png``: accuracy, chance
and permutation p-value per attribute, beat steadiness, forward passes per clip (MAGNeT: one per
decoding step plus the codec decoder; MeLoDy: one semantic LM pass per token, the DPD's steps per
window and chunk, the VAE decoder) and latency of one compiled batch relative to MAGNeT.

    python scripts/compare_melody_magnet.py --melody runs/melody/model --out runs/melody/compare
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from magnet_jax.eval import comparison as C      # noqa: E402


class AtDuration:
    """A model whose ``generate`` always makes ``duration``-second clips (what ``evaluate`` calls);
    everything else is the model's own."""

    def __init__(self, model, duration: float, **params: Any):
        self._model, self._duration, self._params = model, duration, params

    def __getattr__(self, attr: str):
        return getattr(self._model, attr)

    def generate(self, captions, **kwargs):
        return self._model.generate(captions, duration=self._duration, **self._params, **kwargs)


def magnet_forward_passes(magnet) -> dict[str, int]:
    """One LM pass per decoding step (CFG's rows share it) and one codec decode per batch."""
    steps = sum(magnet.generation_params.for_codebooks(magnet.lm_cfg.n_q).decoding_steps)
    return {"lm": steps, "codec_decoder": 1, "total": steps + 1}


def compare(magnet, melody, out: Path, *, prompts, seeds: list[int], batch_size: int = 8,
            diffusion_steps: int | None = None, latency_rounds: int = 2) -> dict[str, Any]:
    """Both models evaluated, pooled and timed on MAGNeT's clip length; writes comparison.json /
    .md / .png into ``out`` and returns what comparison.json holds."""
    from bench_latency import cpu_model
    out.mkdir(parents=True, exist_ok=True)
    seconds = magnet.output_frames(magnet.sampler_config({})) / magnet.frame_rate
    extra = {} if diffusion_steps is None else {"diffusion_steps": diffusion_steps}
    models = {"magnet": magnet, "melody": AtDuration(melody, seconds, **extra)}
    pooled = C.evaluate_all(models, prompts, out, seeds, batch_size)
    latency = C.latencies(models, [q.caption for q in prompts[:batch_size]], latency_rounds, out / "comparison.json")
    passes = {"magnet": magnet_forward_passes(magnet), "melody": melody.forward_passes(seconds, diffusion_steps)}
    rows = C.table(pooled, latency, {n: {"forward_passes": p["total"], "forward_passes_by_part": p}
                                     for n, p in passes.items()}, paired=C.vs_baseline(out, list(models), seeds))
    meta = {"seeds": seeds, "batch_size": batch_size, "cpu": cpu_model(), "clip_s": seconds,
            "latency": "kept from the earlier comparison.json" if latency_rounds == 0 else
                       f"timed in this run, best of {latency_rounds} round(s)",
            "num_generations": pooled["magnet"]["num_generations"],
            "magnet": getattr(magnet, "name", ""), "melody": getattr(melody, "name", ""),
            "diffusion_steps": diffusion_steps or melody.diffusion_config.num_steps}
    return C.write(rows, meta, out, "comparison", "MeLoDy against MAGNeT on the synthetic corpus (seeds pooled)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_args(p)
    p.add_argument("--melody", required=True, help="a MeLoDy model folder (magnet-jax export-melody)")
    p.add_argument("--diffusion-steps", type=int, default=None, help="default: the MeLoDy folder's")
    args = p.parse_args(argv)
    from magnet_jax.eval.prompts import heldout_prompts
    from magnet_jax.models import MAGNeT, load_model
    result = compare(MAGNeT.from_pretrained(args.magnet), load_model(args.melody), Path(args.out),
                     prompts=heldout_prompts()[:args.num_prompts], seeds=args.seeds,
                     batch_size=args.batch_size, diffusion_steps=args.diffusion_steps,
                     latency_rounds=args.latency_rounds)
    print(C.markdown(result["variants"], result["meta"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
