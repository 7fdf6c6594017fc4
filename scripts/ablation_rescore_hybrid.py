"""The paper's question on our own data: does an autoregressive model fix what parallel decoding misses?

Runs ``magnet-jax eval`` (the held-out prompts, seeds 0-2, pooled as ``eval-summary`` pools them) for
six ways of making the same 5-s clips, all from one process so that the latencies compare:

    magnet        the shipped default MAGNeT, plain
    rescore_0.3   MAGNeT + rescoring by the MusicGen, w = 0.3  (w p_rescorer + (1 - w) p_MAGNeT)
    rescore_0.7   MAGNeT + rescoring, w = 0.7 (the paper's default as far as we know)
    hybrid_1s     Hybrid-MAGNeT: the MusicGen writes the first 1 s, MAGNeT the rest
    hybrid_2s     the same with a 2-s prefix
    musicgen      the MusicGen alone (5 s)

The MusicGen is ``configs/ablation_musicgen.py`` trained on the shipped model's tokens (the
recipe is ``scripts/ablation_rescore_hybrid.sh``). Writes into ``--out``: one eval report folder per
variant and seed, one pooled summary folder per variant, ``ablation.json`` (every variant's pooled
accuracy, chance and permutation p-value per attribute, beat steadiness and the other
music-likeness measures, latency), ``ablation.md`` (the table) and ``ablation.png``.

Latency: one compiled batch of ``--batch-size`` held-out prompts per variant, timed after the
evaluations (so nothing compiles inside the timing), ``--latency-rounds`` rounds interleaved over the
variants, the fastest round kept; reported as seconds per batch and relative to plain MAGNeT.
``--latency-rounds 0`` times nothing and keeps the latencies of the ``ablation.json`` already in
``--out`` (so more seeds can be evaluated on a busy machine and the timing done once when it is
quiet, or the other way round).

    python scripts/ablation_rescore_hybrid.py --musicgen runs/ablation_musicgen_model --out runs/ablation
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from magnet_jax.eval import comparison as C      # noqa: E402


class Variant:
    """What ``magnet_jax.eval.runner.evaluate`` needs of a model (generate, codec, decode, ...),
    with ``generate`` made by one of the ablation's recipes; the rest is the MAGNeT's (all
    variants share its codec, so the ceilings and Fréchet latents are the same)."""

    def __init__(self, name: str, magnet, make: Callable[..., Any], before: Callable[[], None]):
        self.name, self._magnet, self._make, self._before = name, magnet, make, before

    def __getattr__(self, attr: str):
        return getattr(self._magnet, attr)

    def generate(self, captions, **kwargs):
        self._before()
        return self._make(captions, **kwargs)


def variants(magnet, musicgen, weights: list[float], prefixes: list[float]) -> dict[str, Variant]:
    """plain MAGNeT, rescoring at each weight, Hybrid at each prefix, the MusicGen alone; each
    variant sets (or clears) MAGNeT's rescorer before it generates, so the order does not matter."""
    from magnet_jax.models.hybrid import HybridMAGNeT
    hybrid = HybridMAGNeT(magnet, musicgen)
    seconds = magnet.output_frames(magnet.sampler_config({})) / magnet.frame_rate

    def rescore(weight: float | None) -> Callable[[], None]:
        return lambda: magnet.set_rescorer(musicgen, weight=weight) if weight is not None else magnet.set_rescorer(None)

    def hybrid_make(prefix: float):
        return lambda captions, **kw: hybrid.generate(captions, prefix_seconds=prefix, **kw)

    out = {"magnet": Variant("magnet", magnet, magnet.generate, rescore(None))}
    out.update({f"rescore_{w:g}": Variant(f"rescore_{w:g}", magnet, magnet.generate, rescore(w)) for w in weights})
    out.update({f"hybrid_{p:g}s": Variant(f"hybrid_{p:g}s", magnet, hybrid_make(p), rescore(None)) for p in prefixes})
    out["musicgen"] = Variant("musicgen", magnet, lambda c, **kw: musicgen.generate(c, duration=seconds, **kw),
                              rescore(None))
    return out


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def ablation(magnet, musicgen, out: Path, *, prompts, seeds: list[int], batch_size: int = 8,
             weights: list[float] = (0.3, 0.7), prefixes: list[float] = (1.0, 2.0),
             latency_rounds: int = 2) -> dict[str, Any]:
    """Every variant evaluated, pooled and timed; writes ablation.json / .md / .png into ``out``
    and returns what ablation.json holds."""
    from bench_latency import cpu_model
    out.mkdir(parents=True, exist_ok=True)
    models = variants(magnet, musicgen, list(weights), list(prefixes))
    pooled = C.evaluate_all(models, prompts, out, seeds, batch_size)
    latency = C.latencies(models, [q.caption for q in prompts[:batch_size]], latency_rounds, out / "ablation.json")
    meta = {"seeds": seeds, "batch_size": batch_size, "cpu": cpu_model(),
            "latency": "kept from the earlier ablation.json" if latency_rounds == 0 else
                       f"timed in this run, best of {latency_rounds} round(s)",
            "num_generations": pooled["magnet"]["num_generations"],
            "magnet": getattr(magnet, "name", ""), "musicgen": getattr(musicgen, "name", "")}
    rows = C.table(pooled, latency, paired=C.vs_baseline(out, list(models), seeds))
    return C.write(rows, meta, out, "ablation",
                   "rescoring and Hybrid-MAGNeT on the synthetic corpus (seeds pooled)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_args(p)
    p.add_argument("--musicgen", required=True, help="the exported MusicGen folder (configs/ablation_musicgen.py)")
    p.add_argument("--rescore-weights", default="0.3,0.7", help="w of each rescoring variant")
    p.add_argument("--hybrid-prefixes", default="1,2", help="seconds of each Hybrid-MAGNeT variant's AR prefix")
    args = p.parse_args(argv)
    from magnet_jax.eval.prompts import heldout_prompts
    from magnet_jax.models import MAGNeT, MusicGen
    magnet, musicgen = MAGNeT.from_pretrained(args.magnet), MusicGen.from_pretrained(args.musicgen)
    result = ablation(magnet, musicgen, Path(args.out), prompts=heldout_prompts()[:args.num_prompts],
                      seeds=args.seeds, batch_size=args.batch_size,
                      weights=_floats(args.rescore_weights), prefixes=_floats(args.hybrid_prefixes),
                      latency_rounds=args.latency_rounds)
    print(C.markdown(result["variants"], result["meta"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
