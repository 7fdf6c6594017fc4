"""Several models (or ways of sampling one) evaluated on the same prompts and seeds, pooled, timed
and put side by side: one table (JSON + markdown) and one PNG.

Why a module: the rescoring / Hybrid-MAGNeT ablation (``scripts/ablation_rescore_hybrid.py``) and
the MeLoDy-vs-MAGNeT comparison (``scripts/compare_melody_magnet.py``) ask the same question of
different models: which attributes does each follow above chance, how steady is its beat, and
what does it cost. ``models`` maps a name to anything ``magnet_jax.eval.runner.evaluate`` takes
(a ``generate(captions, seed=, batch_size=, progress=)`` returning a ``Generation``, and a codec).
The first model is the baseline the latencies are relative to.

    pooled = evaluate_all(models, prompts, out, seeds=[0, 1, 2], batch_size=8)
    latency = latencies(models, captions, rounds=2, kept=out / "ablation.json")
    rows = table(pooled, latency, paired=vs_baseline(out, list(models), seeds))
    write(rows, meta, out, "table", title)          # table.json, table.md, table.png
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from magnet_jax.eval import report as R
from magnet_jax.eval import summary as S

ATTRIBUTES = ("instrument", "key", "mode", "tempo", "tempo_octave", "pattern", "drums")
DIFFERENCE_P = 0.05            # the table's "vs baseline" column: paired two-sided p below this


def evaluate_all(models: Mapping[str, Any], prompts: Sequence, out: Path, seeds: Sequence[int],
                 batch_size: int) -> dict[str, dict]:
    """Every model x seed through ``evaluate`` into ``out/NAME/seedS`` (skipped where its
    report.json exists: a killed run resumes), then each model's seeds pooled into
    ``out/NAME/pooled`` (``eval-summary``); returns the pooled summaries by name."""
    from magnet_jax.eval.runner import evaluate
    pooled, reference = {}, {}         # the real clips' analyses, once per seed and codec
    for name, model in models.items():
        folders = []
        for seed in seeds:
            folder = out / name / f"seed{seed}"
            if not (folder / "report.json").exists():
                print(f"[compare] {name} seed {seed}", flush=True)
                evaluate(model, prompts, folder, seed=seed, batch_size=batch_size, prompts_file="heldout",
                         reference_cache=reference)
            folders.append(folder)
        summary = S.summarise(folders)
        S.write(summary, out / name / "pooled")
        pooled[name] = summary
    return pooled


def latencies(models: Mapping[str, Any], captions: list[str], rounds: int, kept: Path) -> dict[str, float]:
    """Seconds per compiled batch of ``captions`` per model: the fastest of ``rounds`` rounds
    interleaved over the models (one warm-up call first, so no compilation is timed). ``rounds``
    0 times nothing and returns the latencies of the earlier table ``kept`` (so more seeds can be
    evaluated on a busy machine and the timing done once when it is quiet)."""
    if rounds == 0:
        return kept_latencies(kept, list(models))
    best = {name: float("inf") for name in models}
    for r in range(rounds + 1):
        for name, model in models.items():
            t0 = time.perf_counter()
            model.generate(captions, seed=0, batch_size=len(captions))
            if r:                                       # round 0 warms up
                best[name] = min(best[name], time.perf_counter() - t0)
    return best


def kept_latencies(path: Path, names: list[str]) -> dict[str, float]:
    """The latency of every model in ``names`` from an earlier table (JSON with ``variants``)."""
    if not path.is_file():
        raise SystemExit(f"--latency-rounds 0 keeps earlier latencies, but {path} does not exist: "
                         f"run with --latency-rounds 1 or more once")
    rows = json.loads(path.read_text())["variants"]
    missing = [n for n in names if n not in rows]
    if missing:
        raise SystemExit(f"{path} has no latency for {', '.join(missing)}: run with --latency-rounds 1 or more")
    return {n: rows[n]["latency_s"] for n in names}


def outcomes(folders: Sequence[Path]) -> dict[str, list[bool | None]]:
    """Per attribute, whether each generation of these report folders (in order) follows its
    prompt (None where the prompt does not state the attribute)."""
    rows = [row for folder in folders
            for row in json.loads((Path(folder) / "report.json").read_text())["prompts"]]
    return {a: [row["generated_correct"].get(a) for row in rows] for a in ATTRIBUTES}


def vs_baseline(out: Path, names: Sequence[str], seeds: Sequence[int]) -> dict[str, dict[str, dict]]:
    """Each model against the first on the same prompts and seeds, per attribute: the paired
    exact sign test (``significance.paired_sign_test``) of ``out/NAME/seedS`` reports."""
    from magnet_jax.eval.significance import paired_sign_test
    folders = {name: [out / name / f"seed{seed}" for seed in seeds] for name in names}
    base = outcomes(folders[names[0]])
    return {name: {a: paired_sign_test(base[a], got[a]) for a in ATTRIBUTES}
            for name in names[1:] for got in [outcomes(folders[name])]}


def table(pooled: Mapping[str, dict], latency: Mapping[str, float],
          extra: Mapping[str, Mapping[str, Any]] | None = None,
          paired: Mapping[str, Mapping[str, dict]] | None = None) -> dict[str, dict]:
    """One row per model: pooled accuracy, chance, p-value per attribute, the attributes above
    chance, music-likeness, latency and latency relative to the first model; ``extra``: more
    fields per model (e.g. forward passes per clip); ``paired``: ``vs_baseline``'s tests."""
    baseline = next(iter(pooled))
    rows = {}
    for name, summary in pooled.items():
        acc = summary["accuracy"]
        rows[name] = {
            "accuracy": {a: {k: acc[a][k] for k in ("generated", "chance", "p_value", "n")} for a in ATTRIBUTES},
            "above_chance": [a for a in ATTRIBUTES if acc[a]["p_value"] is not None
                             and acc[a]["p_value"] < R.ABOVE_CHANCE_P],
            "music_likeness": summary["music_likeness"],
            "latency_s": latency[name], "latency_vs_baseline": latency[name] / latency[baseline],
            "num_generations": summary["num_generations"], **dict((extra or {}).get(name, {}))}
        if paired and name in paired:
            rows[name]["vs_baseline"] = dict(paired[name])
    return rows


def differences(row: Mapping[str, Any], level: float = DIFFERENCE_P) -> str:
    """The attributes where a model is right more (+) or less (-) often than the baseline on the
    same prompts, paired two-sided p below ``level``; "–" for none (and for the baseline)."""
    cells = [f"{'+' if t['only_other'] > t['only_baseline'] else '-'}{a} ({t['p_two_sided']:.2g})"
             for a, t in row.get("vs_baseline", {}).items() if t["p_two_sided"] < level]
    return ", ".join(cells) or "–"


def markdown(rows: Mapping[str, dict], meta: Mapping[str, Any]) -> str:
    """The table: accuracy % (p-value, * above chance) per attribute, beat steadiness (real), the
    forward passes per clip when the rows have them, latency and latency relative to the first row."""
    baseline = next(iter(rows))
    passes = all("forward_passes" in row for row in rows.values())
    head = ("| model | " + " | ".join(ATTRIBUTES) + f" | beat steadiness (real) | differs from {baseline} | "
            + ("forward passes / clip | " if passes else "") + f"latency / batch | vs {baseline} |")
    lines = [f"Held-out prompts x seeds {meta['seeds']} ({meta['num_generations']} generations per model); "
             f"accuracy % (permutation p-value; * = above chance at p < {R.ABOVE_CHANCE_P}); differs: the "
             f"attributes followed more (+) or less (-) often than by {baseline} on the same prompts (paired "
             f"sign test, two-sided p < {DIFFERENCE_P}); latency of one batch of {meta['batch_size']} on "
             f"{meta['cpu']}.", "", head,
             "|" + "---|" * (len(ATTRIBUTES) + 5 + passes)]
    for name, row in rows.items():
        cells = []
        for a in ATTRIBUTES:
            r = row["accuracy"][a]
            star = "*" if a in row["above_chance"] else ""
            cells.append("–" if r["generated"] is None else f"{100 * r['generated']:.0f}{star} ({r['p_value']:.2g})")
        beat = row["music_likeness"].get("beat_steadiness", {})
        cells.append(f"{beat['generated']['mean']:.2f} ({beat['real']['mean']:.2f})" if beat else "–")
        cells.append(differences(row))
        if passes:
            cells.append(str(row["forward_passes"]))
        cells += [f"{row['latency_s']:.2f} s", f"{row['latency_vs_baseline']:.2f}x"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: Mapping[str, dict], path: Path, title: str) -> None:
    """Accuracy per attribute (one bar per model, chance marked) and latency relative to the first."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax, lat) = plt.subplots(1, 2, figsize=(13, 4), gridspec_kw={"width_ratios": [3, 1]})
    x = np.arange(len(ATTRIBUTES))
    width = 0.8 / len(rows)
    for i, (name, row) in enumerate(rows.items()):
        values = [np.nan if row["accuracy"][a]["generated"] is None else 100 * row["accuracy"][a]["generated"]
                  for a in ATTRIBUTES]
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, values, width, label=name)
    chance = [100 * np.mean([r["accuracy"][a]["chance"] or 0 for r in rows.values()]) for a in ATTRIBUTES]
    ax.scatter(x, chance, marker="_", s=400, color="black", label="chance (mean)", zorder=3)
    ax.set_xticks(x, ATTRIBUTES, rotation=20, ha="right")
    ax.set_ylabel("accuracy on held-out prompts (%)")
    ax.legend(fontsize=7, ncol=2)
    names = list(rows)
    lat.barh(names, [rows[n]["latency_vs_baseline"] for n in names], color="tab:gray")
    lat.set_xlabel(f"latency / {names[0]}")
    lat.invert_yaxis()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(rows: Mapping[str, dict], meta: Mapping[str, Any], out: Path, name: str, title: str) -> dict:
    """``out/NAME.json`` (meta + rows), ``NAME.md`` and ``NAME.png``; returns what the JSON holds."""
    result = R.finite({"meta": dict(meta), "variants": dict(rows)})
    (out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"{name}.md").write_text(markdown(rows, meta))
    plot(rows, out / f"{name}.png", title)
    return result


def add_args(p: argparse.ArgumentParser) -> None:
    """The flags every comparison script has: the baseline MAGNeT, the output folder, the seeds,
    the batch size, a prompt subset and the latency rounds."""
    from magnet_jax.models.sources import DEFAULT_MODEL_DIR
    p.add_argument("--magnet", default=str(DEFAULT_MODEL_DIR), help="the MAGNeT (default: the shipped one)")
    p.add_argument("--out", required=True)
    p.add_argument("--seeds", default="0,1,2", type=lambda text: [int(s) for s in text.split(",")])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--num-prompts", type=int, default=None, help="the first N held-out prompts only")
    p.add_argument("--latency-rounds", type=int, default=2, help="0: keep the latencies of the earlier table")
