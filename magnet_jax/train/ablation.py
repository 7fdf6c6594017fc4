"""The span-length ablation (MAGNeT paper, span-length table): one training run per span length,
then a table of validation cross-entropy per stage.

Each run is the given config with ``lm.span_len=L`` in ``WORKDIR/span_L`` (so an interrupted
ablation resumes run by run); everything else, seed included, is shared. Validation uses the
held-out split with the EMA weights, each model under its own span masking (the objective it
was trained on), the same batches and the same random draws for every run. Outputs:
``span_table.md``, ``span_table.json`` and ``span_table.png`` in WORKDIR.
"""
from __future__ import annotations

import json
from pathlib import Path

from magnet_jax.train.data import split_exists
from magnet_jax.train.metrics import read_jsonl


def ablate_span(config: dict, workdir: str | Path, span_lens: list[int], *, encoder="load") -> dict:
    if not span_lens or any(L < 1 for L in span_lens):
        raise ValueError(f"span lengths must be positive integers, got {span_lens}")
    if len(set(span_lens)) != len(span_lens):
        raise ValueError(f"span lengths repeat: {span_lens}")
    if not hasattr(config["lm"], "span_len"):
        raise ValueError(f"ablate-span varies MAGNeT's masking span; {type(config['lm']).__name__} masks nothing "
                         f"(use a MAGNeT config such as configs/tiny_lm.py)")
    T = config["lm"].sequence_len
    if max(span_lens) > T:
        raise ValueError(f"span length {max(span_lens)} exceeds the sequence length {T}")
    dc, tc = config["data"], config["train"]
    if not split_exists(dc.dir, dc.valid_split):
        raise ValueError(f"the ablation compares validation cross-entropy, but {dc.dir or 'data.dir'} "
                         f"has no {dc.valid_split!r} split; tokenize a held-out set with --split {dc.valid_split}")
    if not tc.eval_every:
        raise ValueError("train.eval_every=0 turns validation off; the ablation needs it")
    import jax
    from magnet_jax.train.loop import train
    workdir = Path(workdir)
    if encoder == "load":   # one frozen text encoder for every run
        from magnet_jax.train.data import load_text_encoder
        encoder = load_text_encoder(config["text"]) if config["lm"].cross_attention else None
    rows = []
    for L in span_lens:
        run_cfg = dict(config, lm=config["lm"].replace(span_len=L))
        run_dir = workdir / f"span_{L}"
        summary = train(run_cfg, run_dir, encoder=encoder)
        if summary.get("preempted"):    # saved: rerunning the command resumes this span's run
            return {"preempted": str(run_dir), "stopped": summary["stopped"], "rows": rows}
        valid = summary.get("valid") or _last_valid(run_dir)
        if not valid:
            raise ValueError(f"run {run_dir} produced no validation row")
        n_q = config["lm"].n_q
        rows.append({"span_len": L, "steps": summary["step"],
                     **{f"ce_stage{s}": valid[f"ce_stage{s}"] for s in range(n_q)},
                     "ce_mean": valid["ce"],
                     **{f"accuracy_stage{s}": valid[f"accuracy_stage{s}"] for s in range(n_q)},
                     "train_loss_last": summary.get("last_loss")})
    table = {"config": {"lm": {k: v for k, v in vars(config["lm"]).items() if k != "span_len"},
                        "steps": tc.steps, "batch_size": tc.batch_size, "seed": tc.seed,
                        "data": dc.dir, "valid_split": dc.valid_split},
             "metric": "validation cross-entropy (nats) at masked positions, per stage",
             "rows": rows}
    if jax.process_index() == 0:
        (workdir / "span_table.json").write_text(json.dumps(table, indent=1))
        (workdir / "span_table.md").write_text(markdown_table(rows, config["lm"].n_q))
        plot_table(rows, config["lm"].n_q, workdir / "span_table.png")
    return table


def _last_valid(run_dir: Path) -> dict | None:
    rows = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["split"] == "valid"]
    return rows[-1] if rows else None


def markdown_table(rows: list[dict], n_q: int) -> str:
    head = ["span_len"] + [f"CE stage {s}" for s in range(n_q)] + ["CE mean", "steps"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    best = min(rows, key=lambda r: r["ce_mean"])["span_len"]
    for r in rows:
        cells = [f"**{r['span_len']}**" if r["span_len"] == best else str(r["span_len"])]
        cells += [f"{r[f'ce_stage{s}']:.4f}" for s in range(n_q)] + [f"{r['ce_mean']:.4f}", str(r["steps"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_table(rows: list[dict], n_q: int, out: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    xs = [r["span_len"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for s in range(n_q):
        ax.plot(xs, [r[f"ce_stage{s}"] for r in rows], marker="o", label=f"stage {s}")
    ax.plot(xs, [r["ce_mean"] for r in rows], marker="s", color="black", lw=2, label="mean")
    ax.set_xlabel("span length (frames)")
    ax.set_ylabel("validation cross-entropy (nats)")
    ax.set_title("MAGNeT span-length ablation")
    ax.set_xticks(xs)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
