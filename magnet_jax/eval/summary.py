"""``magnet-jax eval-summary``: pool several ``magnet-jax eval`` reports (seeds) into one table.

One run of 42 prompts is a small sample: a 10-point difference in accuracy is within noise.
Pooling the runs of several seeds (each ``report.json`` keeps every prompt's analyses) gives
one accuracy per attribute over all generations, the exact chance and a permutation p-value
pooled over the runs (``significance``), the ceilings over all the real clips, and the
music-likeness of all generations against the range of all real clips. The README's
adherence table is this command's ``summary.md``.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

from magnet_jax.eval import analysers as A
from magnet_jax.eval import report as R
from magnet_jax.eval.significance import PERMUTATIONS, pooled_accuracy

_FIELDS = tuple(f.name for f in dataclasses.fields(A.Analysis))
_REQUIRED = tuple(f.name for f in dataclasses.fields(A.Analysis) if f.default is dataclasses.MISSING)


class SummaryError(ValueError):
    """A report folder that cannot be pooled: the message names it and what is missing."""


def _analysis(row: dict, where: str) -> A.Analysis:
    missing = [f for f in _REQUIRED if f not in row]
    if missing:
        raise SummaryError(f"{where} lacks {missing}: not a report.json written by `magnet-jax eval`")
    return A.Analysis(**{f: row[f] for f in _FIELDS if f in row})      # older reports lack newer measures


def load_run(folder: str | Path) -> dict[str, Any]:
    """The prompts' attributes and the generated / real / through-codec analyses of one report."""
    path = Path(folder) / "report.json"
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        raise SummaryError(f"{path} does not exist: pass folders written by `magnet-jax eval --out`") from None
    except json.JSONDecodeError as err:
        raise SummaryError(f"{path} is not valid JSON ({err})") from None
    rows = report.get("prompts")
    if not rows:
        raise SummaryError(f"{path} has no per-prompt rows: not a report.json written by `magnet-jax eval`")
    coded = [r.get("real_through_codec") for r in rows]
    return {"folder": str(folder), "model": report.get("model", ""), "seed": report.get("seed"),
            "accuracy": report.get("accuracy", {}),
            "prompts_file": report.get("prompts_file", ""),
            "attributes": [r["attributes"] for r in rows],
            "generated": [_analysis(r["generated"], f"{path} prompt {i}") for i, r in enumerate(rows)],
            "real": [_analysis(r["real"], f"{path} prompt {i}") for i, r in enumerate(rows)],
            # reports written before the per-prompt through-codec analyses were kept lack them
            "real_through_codec": (None if any(c is None for c in coded)
                                   else [_analysis(c, f"{path} prompt {i}") for i, c in enumerate(coded)])}


CEILING_FIELD = {"real": "ceiling", "real_through_codec": "ceiling_through_codec"}   # analyses -> report row


def _pooled(runs: Sequence[dict], key: str) -> list:
    """One run field (``attributes``, ``generated``, ``real``, ...) over all runs, in order."""
    return [x for r in runs for x in r[key]]


def _pooled_ceiling(runs: Sequence[dict], key: str) -> dict[str, float | None]:
    """Per row, the accuracy of the ``key`` analyses over all runs. Reports that kept only each
    run's figure (not the per-prompt analyses) pool it weighted by prompt count; None if absent."""
    if all(r[key] is not None for r in runs):
        return {row: v["accuracy"] for row, v in R.accuracy(_pooled(runs, "attributes"), _pooled(runs, key)).items()}
    out: dict[str, float | None] = {}
    for row in R.RULES:
        figures = [(r["accuracy"].get(row, {}).get(CEILING_FIELD[key]), r["accuracy"].get(row, {}).get("n"))
                   for r in runs]
        known = all(value is not None and n for value, n in figures)
        out[row] = sum(v * n for v, n in figures) / sum(n for _, n in figures) if known else None
    return out


def summarise(folders: Sequence[str | Path], permutations: int = PERMUTATIONS, seed: int = 0) -> dict[str, Any]:
    """The pooled table (same row layout as a report's ``accuracy``) plus each run's generated accuracy."""
    if not folders:
        raise SummaryError("no report folders given")
    runs = [load_run(f) for f in folders]
    if any(len(r["attributes"]) < 2 for r in runs):
        raise SummaryError("every report needs at least 2 prompts (chance scores each generation against the others)")
    tested = pooled_accuracy([(r["attributes"], r["generated"]) for r in runs], permutations, seed)
    ceiling, coded = _pooled_ceiling(runs, "real"), _pooled_ceiling(runs, "real_through_codec")
    accuracy = {row: {"label": R.RULES[row][0], **tested[row], "ceiling": ceiling[row],
                      "ceiling_through_codec": coded[row]} for row in R.RULES}
    per_run = [{"folder": r["folder"], "seed": r["seed"],
                "generated": {row: v["accuracy"] for row, v in R.accuracy(r["attributes"], r["generated"]).items()}}
               for r in runs]
    models = sorted({r["model"] for r in runs})
    confusions = R.confusions(_pooled(runs, "attributes"), _pooled(runs, "generated"))
    music = R.music_likeness(_pooled(runs, "generated"), _pooled(runs, "real"))
    return {"model": ", ".join(models), "runs": per_run, "confusions": confusions, "music_likeness": music,
            "num_generations": sum(len(r["attributes"]) for r in runs),
            "permutations": permutations, "permutation_seed": seed, "accuracy": accuracy}


def markdown(summary: dict[str, Any]) -> str:
    seeds = ", ".join(str(r["seed"]) for r in summary["runs"])
    lines = [f"# Prompt adherence pooled over {len(summary['runs'])} runs: {summary['model']}", "",
             f"{summary['num_generations']} generations (seeds {seeds}); p-values from "
             f"{summary['permutations']} derangements per run.", ""]
    return "\n".join(lines + R.accuracy_lines(summary) + R.confusion_lines(summary["confusions"])
                     + R.music_lines(summary))


def write(summary: dict[str, Any], out: str | Path) -> dict[str, str]:
    """summary.json, summary.md and summary.png (the accuracy bars) into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "summary.json", "markdown": out / "summary.md", "plot": out / "summary.png"}
    files["json"].write_text(json.dumps(R.finite(summary), indent=1, allow_nan=False) + "\n")
    files["markdown"].write_text(markdown(summary) + "\n")
    R.plot_accuracy(summary, files["plot"])
    return {k: str(v) for k, v in files.items()}
