"""Scoring analyses against prompts (generated, chance, ceiling) and writing the report files.

Three accuracies per attribute, side by side:

- ``generated``: the analysers on the model's audio vs the prompt that produced it;
- ``chance``: the same generations vs the attributes of *other* prompts, i.e. what a model that
  ignores the text would score on this prompt set's attribute distribution; computed exactly
  (the expectation over derangements), with a permutation p-value for the generated accuracy
  (``significance``);
- ``ceiling``: the analysers on real synthetic clips rendered from the prompts' attributes vs
  those prompts, i.e. what a perfect model can score given the analysers' own errors.

The tempo is scored by ``analysers.tempo_matches``: within 4 % of the prompt's BPM (``tempo``),
and, in a separate row, also forgiving double or half tempo (``tempo ×2/½``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from magnet_jax.eval import analysers as A
from magnet_jax.eval.significance import ABOVE_CHANCE_P, pooled_accuracy

# attribute row -> (label, prompt keys it needs, correct(prompt attributes, analysis))
RULES: dict[str, tuple[str, tuple[str, ...], Callable[[Mapping, A.Analysis], bool]]] = {
    "instrument": ("instrument", ("instrument",), lambda p, a: a.instrument == p["instrument"]),
    "key": ("key (tonic + mode)", ("tonic", "mode"), lambda p, a: (a.tonic, a.mode) == (p["tonic"], p["mode"])),
    "mode": ("mode", ("mode",), lambda p, a: a.mode == p["mode"]),
    "tempo": ("tempo (±4 %)", ("bpm",), lambda p, a: A.tempo_matches(a.bpm, p["bpm"])),
    "tempo_octave": ("tempo (±4 %, ×2/½ ok)", ("bpm",), lambda p, a: A.tempo_matches(a.bpm, p["bpm"], octave=True)),
    "pattern": ("pattern", ("pattern",), lambda p, a: a.pattern == p["pattern"]),
    "drums": ("drums", ("drums",), lambda p, a: a.drums == p["drums"]),
}
MUSIC_MEASURES = A.MUSIC_MEASURES


def correct(attributes: Mapping[str, Any], analysis: A.Analysis) -> dict[str, bool | None]:
    """Per attribute row: did the analysis match the prompt? None where the prompt does not say."""
    return {name: (bool(rule(attributes, analysis)) if all(k in attributes for k in keys) else None)
            for name, (_, keys, rule) in RULES.items()}


def accuracy(attributes: Sequence[Mapping[str, Any]], analyses: Sequence[A.Analysis]) -> dict[str, dict]:
    """Per attribute row: the fraction correct over the prompts that state it, and their count."""
    marks = [correct(p, a) for p, a in zip(attributes, analyses)]
    out = {}
    for name in RULES:
        scored = [m[name] for m in marks if m[name] is not None]
        out[name] = {"accuracy": float(np.mean(scored)) if scored else None, "n": len(scored)}
    return out


def accuracy_table(attributes: Sequence[Mapping[str, Any]], generated: Sequence[A.Analysis],
                   real: Sequence[A.Analysis], real_through_codec: Sequence[A.Analysis] | None = None,
                   seed: int = 0) -> dict[str, dict]:
    """Per attribute row: generated accuracy, exact chance and the permutation p-value of the
    generated accuracy against it (``significance``; ``seed`` draws the permutations), ceiling
    (and the ceiling of the real clips after the model's codec, when given), and how many
    prompts state it."""
    ceil = accuracy(attributes, real)
    coded = accuracy(attributes, real_through_codec) if real_through_codec is not None else None
    tested = pooled_accuracy([(attributes, generated)], seed=seed) if len(attributes) >= 2 else None
    gen = accuracy(attributes, generated)
    return {name: {"label": RULES[name][0], "generated": gen[name]["accuracy"],
                   "chance": tested[name]["chance"] if tested else None,
                   "p_value": tested[name]["p_value"] if tested else None,
                   "ceiling": ceil[name]["accuracy"],
                   "ceiling_through_codec": coded[name]["accuracy"] if coded else None, "n": gen[name]["n"]}
            for name in RULES}


CONFUSED = ("instrument", "mode", "pattern", "drums")


def confusions(attributes: Sequence[Mapping[str, Any]], analyses: Sequence[A.Analysis]) -> dict[str, dict]:
    """Per categorical attribute: ``{asked: {heard: count}}`` over the prompts that state it.

    Why: an accuracy at chance does not say *how* a model fails; the confusions do (a model that
    renders everything in major, or the minor prompts in major and the major ones in minor)."""
    out: dict[str, dict] = {}
    for name in CONFUSED:
        table: dict[str, dict[str, int]] = {}
        for prompt, analysis in zip(attributes, analyses):
            if name in prompt:
                row = table.setdefault(str(prompt[name]), {})
                heard = str(getattr(analysis, name))
                row[heard] = row.get(heard, 0) + 1
        out[name] = table
    return out


def spread(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max())}


def music_likeness(generated: Sequence[A.Analysis], real: Sequence[A.Analysis]) -> dict[str, dict]:
    """Per measure: generated and real spreads, and the share of generations inside the real range.
    A measure that some analyses lack (nan: reports written before it existed) is left out."""
    out = {}
    for name in MUSIC_MEASURES:
        g, r = [getattr(a, name) for a in generated], [getattr(a, name) for a in real]
        if not np.all(np.isfinite(g + r)):
            continue
        lo, hi = min(r), max(r)
        out[name] = {"generated": spread(g), "real": spread(r),
                     "generated_within_real_range": float(np.mean([lo <= x <= hi for x in g]))}
    return out


# ---------------------------------------------------------------- files

def _fmt(x: float | None, pct: bool = True) -> str:
    if x is None:
        return "–"
    return f"{100 * x:.1f} %" if pct else f"{x:.4g}"


def _fmt_p(p: float | None) -> str:
    return "–" if p is None else f"{p:.2g}" + (" (above chance)" if p < ABOVE_CHANCE_P else "")


def markdown(report: Mapping[str, Any]) -> str:
    """report.md: the accuracy table first, then music-likeness, Fréchet distances, chroma cosine."""
    lines = [f"# Prompt adherence: {report['model']}", "",
             f"{report['num_prompts']} prompts from `{report['prompts_file']}`, seed {report['seed']}, "
             f"{report['duration_s']:.2f} s at {report['sample_rate']} Hz.", ""]
    lines += accuracy_lines(report) + confusion_lines(report.get("confusions", {}))
    lines += music_lines(report) + _frechet_lines(report)
    lines += [f"Chroma cosine, each generation vs its real counterpart (a weak measure: any audio in the "
              f"same pitch classes scores high): mean {_fmt(report['chroma_cosine']['mean'], False)}.", ""]
    return "\n".join(lines)


def accuracy_lines(report: Mapping[str, Any]) -> list[str]:
    lines = ["| attribute | generated | chance | p (generated vs chance) | ceiling | ceiling through the codec | prompts |",
             "|---|---|---|---|---|---|---|"]
    for row in report["accuracy"].values():
        lines.append(f"| {row['label']} | {_fmt(row['generated'])} | {_fmt(row['chance'])} | "
                     f"{_fmt_p(row.get('p_value'))} | {_fmt(row['ceiling'])} | "
                     f"{_fmt(row.get('ceiling_through_codec'))} | {row['n']} |")
    return lines + ["", "Chance: the generations scored against the other prompts (the exact mean over "
                    "derangements); p: the share of random derangements scoring at least the generated "
                    f"accuracy (below {ABOVE_CHANCE_P}: above chance). "
                    "Ceiling: the same analysers on real synthetic clips rendered from the prompts' attributes; "
                    "through the codec: those clips encoded and decoded by the model's own codec (the most "
                    "the LM can reach).", ""]


def confusion_lines(tables: Mapping[str, Mapping[str, Mapping[str, int]]]) -> list[str]:
    """One small table per attribute: rows asked, columns heard (generated audio)."""
    lines = ["## Confusions of the generations (rows: asked, columns: heard)", ""] if tables else []
    for name, table in tables.items():
        heard = sorted({h for row in table.values() for h in row})
        lines += [f"| {name} | " + " | ".join(heard) + " |", "|---|" + "---|" * len(heard)]
        lines += [f"| {asked} | " + " | ".join(str(row.get(h, 0)) for h in heard) + " |"
                  for asked, row in sorted(table.items())]
        lines.append("")
    return lines


def music_lines(report: Mapping[str, Any]) -> list[str]:
    lines = ["## Music-likeness", "",
             "| measure | generated mean | real mean | real range | generated in real range |", "|---|---|---|---|---|"]
    for name, m in report["music_likeness"].items():
        lines.append(f"| {name} | {_fmt(m['generated']['mean'], False)} | {_fmt(m['real']['mean'], False)} | "
                     f"{_fmt(m['real']['min'], False)} – {_fmt(m['real']['max'], False)} | "
                     f"{_fmt(m['generated_within_real_range'])} |")
    return lines + [""]


def _frechet_lines(report: Mapping[str, Any]) -> list[str]:
    lines = ["## Fréchet distance (generated vs real)", "",
             "| embedding | distance | embeddings (gen / real) | dim |", "|---|---|---|---|"]
    for name, f in report["frechet"].items():
        distance = _fmt(f["distance"], False) if f["distance"] is not None else f"– ({f.get('error', '')})"
        lines.append(f"| {name} | {distance} | {f['generated_embeddings']} / {f['real_embeddings']} | "
                     f"{f['dimension']} |")
    return lines + ["", "More embeddings: `--embedding vggish=PATH` (or clap=PATH, passt=PATH) with local "
                    "weights, or `--embedding module:function`.", ""]


def plot_accuracy(report: Mapping[str, Any], path: Path) -> Path:
    """Grouped bars per attribute: generated, chance, ceiling."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = list(report["accuracy"].values())
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(10, 4))
    series = (("generated", "tab:blue"), ("chance", "tab:gray"), ("ceiling_through_codec", "tab:olive"),
              ("ceiling", "tab:green"))
    for i, (key, color) in enumerate(series):
        values = [np.nan if r.get(key) is None else 100 * r[key] for r in rows]
        bars = ax.bar(x + (i - 1.5) * 0.2, values, 0.2, label=key.replace("_", " "), color=color)
        ax.bar_label(bars, labels=["" if np.isnan(v) else f"{v:.0f}" for v in values], fontsize=6, padding=1)
    ax.set_xticks(x, [r["label"] for r in rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 110)
    ax.legend(fontsize=8)
    ax.set_title(f"prompt adherence: {report['model']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_music_likeness(values: Mapping[str, Mapping[str, Sequence[float]]], path: Path) -> Path:
    """Box plus strip plot per measure, generated vs real. ``values[measure][group]`` are per clip."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(values), figsize=(4.5 * len(values), 3.6))
    rng = np.random.default_rng(0)                       # jitter only
    for ax, (name, groups) in zip(np.atleast_1d(axes), values.items()):
        labels = list(groups)
        ax.boxplot([groups[g] for g in labels], showfliers=False)
        ax.set_xticks(range(1, len(labels) + 1), labels)
        for i, g in enumerate(labels, 1):
            ax.scatter(i + rng.uniform(-0.12, 0.12, len(groups[g])), groups[g], s=10, alpha=0.6)
        ax.set_title(name, fontsize=10)
        if name == "spectral_flatness":           # spans orders of magnitude (1e-7 .. 0.5)
            ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def finite(x: Any) -> Any:
    """NaN / infinity -> None, so report.json is strict JSON (a silent clip has no chroma)."""
    if isinstance(x, float) and not np.isfinite(x):
        return None
    if isinstance(x, Mapping):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    return x


def write(report: Mapping[str, Any], out: Path, per_clip: Mapping[str, Mapping[str, Sequence[float]]]) -> dict:
    """report.json, report.md, accuracy.png and music_likeness.png into ``out``; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "report.json", "markdown": out / "report.md",
             "accuracy_plot": out / "accuracy.png", "music_likeness_plot": out / "music_likeness.png"}
    files["json"].write_text(json.dumps(finite(report), indent=1, allow_nan=False) + "\n")
    files["markdown"].write_text(markdown(report))
    plot_accuracy(report, files["accuracy_plot"])
    plot_music_likeness(per_clip, files["music_likeness_plot"])
    return {k: str(v) for k, v in files.items()}
