"""Which words of a caption does a trained LM read? Held-out cross-entropy with edited captions.

``magnet-jax eval`` says *whether* generations follow a prompt's attribute; this says *why not*
when they do not. For every batch of the valid split, the LM's masked cross-entropy per stage is
computed with the true captions and again with each caption edited in one attribute (same codes,
same masks). An attribute the LM has learned to read costs cross-entropy when it is changed to
a wrong value; one it ignores costs nothing. Edits (for the synthetic corpus's captions):

- ``mode``: major <-> minor, and the mood words that go with it (bright <-> melancholic, cheerful <-> dark, happy <-> sad);
- ``bpm``: every 2-3 digit number moved by 40 BPM (up below 112, down from 112), and the tempo
  word (slow / medium / fast) swapped;
- ``instrument``: each instrument name replaced by another one of the corpus;
- ``tonic``: the key's tonic moved up a fourth (C major -> F major);
- ``empty``: no caption at all (the unconditional branch of classifier-free guidance).

The delta of ``empty`` is how much the text helps at all; the others, how much of it comes from
each attribute. Measured on the default model (``README``): instrument and tonic cost 0.6 and
0.2 nats on the first codebook, mode 0.01-0.02, bpm nothing.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from data_pipelines.synth import _MOOD, INSTRUMENTS, PITCH_CLASSES
from magnet_jax.seeds import seed_key

_OTHER_MODE = {"major": "minor", "minor": "major"}
_OTHER_MOOD = {a: b for m, o in _OTHER_MODE.items() for a, b in zip(_MOOD[m], _MOOD[o])}
_OTHER_TEMPO = {"slow": "fast", "medium": "slow", "fast": "slow"}
BPM_SHIFT = 40


def _swap_words(caption: str, table: dict[str, str]) -> str:
    """Replace whole words found in ``table`` (keeping a leading capital)."""
    pattern = r"\b(" + "|".join(sorted(table, key=len, reverse=True)) + r")\b"

    def one(m: re.Match) -> str:
        word = m.group(0)
        new = table[word.lower()]
        return new.capitalize() if word[0].isupper() else new
    return re.sub(pattern, one, caption, flags=re.IGNORECASE)


def flip_mode(caption: str) -> str:
    return _swap_words(caption, {**_OTHER_MODE, **_OTHER_MOOD})


def shift_bpm(caption: str) -> str:
    moved = re.sub(r"\b\d{2,3}\b", lambda m: str(int(m.group(0)) + (BPM_SHIFT if int(m.group(0)) < 112
                                                                   else -BPM_SHIFT)), caption)
    return _swap_words(moved, _OTHER_TEMPO)


def swap_instrument(caption: str) -> str:
    pattern = "|".join(sorted(INSTRUMENTS, key=len, reverse=True))
    return re.sub(pattern, lambda m: INSTRUMENTS[(INSTRUMENTS.index(m.group(0)) + 2) % len(INSTRUMENTS)],
                  caption)


def shift_tonic(caption: str) -> str:
    return re.sub(r"\b([A-G]#?) (major|minor)\b",
                  lambda m: f"{PITCH_CLASSES[(PITCH_CLASSES.index(m.group(1)) + 5) % 12]} {m.group(2)}", caption)


EDITS: dict[str, Callable[[str], str]] = {
    "mode": flip_mode, "bpm": shift_bpm, "instrument": swap_instrument, "tonic": shift_tonic,
    "empty": lambda caption: "",
}


def edited_cross_entropy(trainer, params: dict, data, batches: int, seed: int = 0,
                         edits: dict[str, Callable[[str], str]] = EDITS,
                         mask_rate: float | None = None) -> dict[str, Any]:
    """Mean per-stage cross-entropy over ``batches`` valid batches for the true captions
    (``"true"``) and each edit; the delta is edited minus true (positive: the edit hurts).

    ``mask_rate`` fixes the mask rate of every sample (default: the training cosine draw). At
    1.0 (nearly) all of the stage's codes are hidden, so the caption is the LM's only clue: the delta is
    then what the LM has learned from that attribute, not diluted by what the context reveals."""
    import jax

    from magnet_jax.train.data import text_states
    from magnet_jax.train.loop import make_eval_step
    eval_step = trainer.eval_step if mask_rate is None else jax.jit(
        make_eval_step(trainer.graphdef, trainer.config, True, mask_rate=mask_rate))
    runs = {"true": (lambda caption: caption), **edits}
    ce: dict[str, list[np.ndarray]] = {name: [] for name in runs}
    examples: dict[str, str] = {}
    key = seed_key(seed)
    for i in range(batches):
        batch = data.host_batch(i)
        captions = list(batch.pop("descriptions"))
        for name, edit in runs.items():
            texts = [edit(c) for c in captions]
            examples.setdefault(name, texts[0])
            hidden, mask = text_states(trainer.encoder, texts, trainer.config["text"], None, False)
            loss, _ = eval_step(params, data.to_global({**batch, "text_hidden": hidden, "text_mask": mask}),
                                        jax.random.fold_in(key, i))       # same masks for every edit
            ce[name].append(np.asarray(loss))
    mean = {name: np.mean(v, axis=0) for name, v in ce.items()}
    return {"batches": batches, "mask_rate": mask_rate, "examples": examples,
            "cross_entropy": {n: [round(float(x), 5) for x in v] for n, v in mean.items()},
            "delta": {n: [round(float(x), 5) for x in v - mean["true"]] for n, v in mean.items() if n != "true"}}


def probe(workdir: str | Path, data_dir: str | None = None, batches: int = 8, seed: int = 0,
          step: int | None = None, mask_rate: float | None = None) -> dict[str, Any]:
    """``edited_cross_entropy`` for a ``magnet-jax train`` workdir (its EMA weights) on the valid
    split of its dataset, or of ``data_dir``."""
    from magnet_jax.export import restore_lm_params
    from magnet_jax.train.config import from_json
    from magnet_jax.train.data import Batches
    from magnet_jax.train.loop import build_trainer
    saved, params, step = restore_lm_params(workdir, step)
    config = from_json(saved)
    if data_dir:
        config["data"] = type(config["data"])(**{**vars(config["data"]), "dir": data_dir})
    if config["text"].encoder == "none":
        raise ValueError(f"{workdir} holds an unconditional LM: there are no captions to edit")
    trainer = build_trainer(config)
    data = Batches(config["data"], config["text"], trainer.encoder, trainer.mesh,
                   batch_size=config["train"].batch_size, frames=config["lm"].sequence_len, seed=seed,
                   split=config["data"].valid_split, train=False)
    try:
        result = edited_cross_entropy(trainer, params, data, batches, seed, mask_rate=mask_rate)
    finally:
        data.close()
    return {"workdir": str(workdir), "step": step, "data": config["data"].dir, **result}


def plot(report: dict[str, Any], path: Path) -> Path:
    """Bars: the cross-entropy each edit adds, per stage."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(report["delta"])
    deltas = np.array([report["delta"][n] for n in names])            # [edits, stages]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / deltas.shape[1]
    for s in range(deltas.shape[1]):
        ax.bar(np.arange(len(names)) + s * width, deltas[:, s], width, label=f"stage {s}")
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names)
    ax.set_ylabel("cross-entropy added (nats)")
    rate = report.get("mask_rate")
    ax.set_title(f"caption edits, step {report['step']}" + ("" if rate is None else f", mask rate {rate:g}"))
    ax.axhline(0, color="black", linewidth=0.5)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write(report: dict[str, Any], out: str | Path) -> dict[str, str]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "caption_probe.json").write_text(json.dumps(report, indent=1))
    plot(report, out / "caption_probe.png")
    return {"json": str(out / "caption_probe.json"), "png": str(out / "caption_probe.png")}
