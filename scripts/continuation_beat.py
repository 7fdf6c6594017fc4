"""Does the LM keep a beat it is given? The README's continuation test, reproducible.

For each held-out prompt, the real synthetic clip that ``magnet-jax eval`` renders for it (same
seed, same clip) is cut after ``--prompt-seconds``; the model continues it to its full length with
the prompt's caption (``MAGNeT.generate_continuation``). The beat steadiness
(``analysers.beat_steadiness``) of the part the LM wrote is compared with that of the same stretch
of the real clip, before and after the codec. A model that keeps the beat scores near the codec's
figure; one that writes no beat scores near scattered onsets (about 0.17). Also printed: how often
the first codebook's code changes from one frame to the next, in the continuation and in the
real clip's codes (the LM's stray one-frame codes raise it).

    python scripts/continuation_beat.py --model magnet_jax/assets/default_model --out runs/continuation.json

Why a script and not an eval row: the test conditions on real audio, so it measures the LM alone,
without the prompt's text having to set the tempo; it is a diagnostic for training changes, and
it needs no calibration or chance estimate.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from magnet_jax.eval import analysers as A
from magnet_jax.eval.prompts import heldout_prompts, load_prompts
from magnet_jax.eval.runner import codec_round_trip, render_real
from magnet_jax.models import MAGNeT


def steadiness(clips: np.ndarray, sample_rate: int) -> list[float]:
    """Beat steadiness of each clip ``[N, samples]``."""
    return [A.beat_steadiness(A.Spectra.of(A.to_analysis_rate(c, sample_rate))) for c in clips]


def change_rate(codes: np.ndarray) -> float:
    """Share of frames whose first-codebook code differs from the previous frame's: ``[N, K, T]``."""
    first = codes[:, 0]
    return float(np.mean(first[:, 1:] != first[:, :-1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="model name or folder (default: the shipped model)")
    p.add_argument("--prompts", default=None, help="prompts .jsonl (default: the held-out prompts)")
    p.add_argument("--seed", type=int, default=0, help="as eval's --seed: which real clips, which samples")
    p.add_argument("--limit", type=int, default=None, help="only the first N prompts (a quick check)")
    p.add_argument("--prompt-seconds", type=float, default=2.0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = p.parse_args(argv)

    model = MAGNeT.from_pretrained(args.model)
    prompts = (load_prompts(args.prompts) if args.prompts else heldout_prompts())[:args.limit]
    rate, duration = model.sample_rate, model.lm_cfg.segment_duration
    if not 0 < args.prompt_seconds < duration - 1:
        print(f"--prompt-seconds must leave at least 1 s of the model's {duration:g} s to write", file=sys.stderr)
        return 2
    _, real = render_real(prompts, int(round(duration * rate)), rate, args.seed)
    cut = int(round(args.prompt_seconds * rate))
    continued, codes = [], []
    for start in tqdm(range(0, len(prompts), args.batch_size), desc="continue", unit="batch"):
        batch = slice(start, start + args.batch_size)
        out = model.generate_continuation(real[batch, None, :cut], rate, [q.caption for q in prompts[batch]],
                                          seed=args.seed + start, duration=duration)
        continued.append(out.audio.mean(axis=1)[:, :real.shape[-1]])
        codes.append(out.tokens)
    continued = np.concatenate(continued)
    coded = codec_round_trip(model, real, args.batch_size)
    real_codes = np.asarray(model.codec.encode(real[:, None], n_q=model.lm_cfg.n_q))
    rows = {"real": steadiness(real[:, cut:], rate), "real_through_codec": steadiness(coded[:, cut:], rate),
            "continuation": steadiness(continued[:, cut:], rate)}
    frames = int(round(args.prompt_seconds * model.lm_cfg.frame_rate))
    result = {"model": str(model.name), "prompts": len(prompts), "seed": args.seed,
              "prompt_seconds": args.prompt_seconds,
              "beat_steadiness_of_the_written_part": {k: float(np.mean(v)) for k, v in rows.items()},
              "first_codebook_change_rate": {"continuation": change_rate(np.concatenate(codes)[..., frames:]),
                                             "real_codes": change_rate(real_codes[..., frames:])},
              "per_clip": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "per_clip"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
