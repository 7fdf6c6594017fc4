"""Training metrics: JSONL rows, TensorBoard event files (tensorboardX), a PNG loss curve.

Every row is ``{"step": int, "split": "train"|"valid", ...numbers}``; TensorBoard gets the same
numbers as ``<split>/<name>`` scalars. Only process 0 writes. After a resume, rows past the
restored step (written after the last checkpoint, before the interruption) are dropped so the
files describe one consistent run.

MFU: training FLOPs per step = 3 x the forward FLOPs of ``magnet_jax.lm.flops.forward_flops``
(the backward pass costs about twice the forward: one matmul for the input gradient and one for
the weight gradient per forward matmul), with rows = batch, one output head (the loss computes
only the active stage's head), every row through cross-attention, plus the text output_proj
(2 B S W D); divided by step time x devices x per-device peak.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jax

# dense bf16 peak per chip (FLOP/s), by jax device_kind prefix
PEAK_FLOPS = {"TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12,
              "TPU v5": 459e12, "TPU v6 lite": 918e12, "TPU v6e": 918e12,
              "NVIDIA H100": 989e12, "NVIDIA H200": 989e12, "NVIDIA A100": 312e12}


def device_peak_flops(override_tflops: float = 0.0) -> float | None:
    if override_tflops > 0:
        return override_tflops * 1e12
    kind = jax.devices()[0].device_kind
    for prefix, peak in sorted(PEAK_FLOPS.items(), key=lambda kv: -len(kv[0])):
        if kind.startswith(prefix):
            return peak
    return None


def train_step_flops(lm_cfg, batch: int, T: int, S: int, text_width: int) -> float:
    """FLOPs of one training step (forward + backward) at global batch ``batch``: MAGNeT's loss
    needs one stage's head, MusicGen's every codebook's (over T steps of the delay pattern)."""
    from magnet_jax.lm.flops import forward_flops
    from magnet_jax.lm.musicgen import MusicGenConfig
    heads = lm_cfg.n_q if isinstance(lm_cfg, MusicGenConfig) else 1
    forward = forward_flops(lm_cfg, rows=batch, T=T, S=S, cross_rows=batch if S else 0, heads=heads)
    forward += 2 * batch * S * text_width * lm_cfg.dim if S else 0
    return 3.0 * forward


class MetricsWriter:
    def __init__(self, workdir: str | Path, resume_step: int | None = None, tensorboard: bool = True):
        self.active = jax.process_index() == 0
        self.path = Path(workdir) / "metrics.jsonl"
        self.tb = None
        if not self.active:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            rows = read_jsonl(self.path)
            keep = [r for r in rows if resume_step is not None and r["step"] <= resume_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in keep))
        self.file = self.path.open("a")
        if tensorboard:
            from tensorboardX import SummaryWriter
            self.tb = SummaryWriter(str(Path(workdir) / "tensorboard"), purge_step=(resume_step + 1) if resume_step else None)

    def write(self, step: int, split: str, values: dict[str, Any]) -> None:
        if not self.active:
            return
        row = {"step": int(step), "split": split}
        row.update({k: _clean(v) for k, v in values.items()})
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in row.items():
                if k not in ("step", "split") and isinstance(v, (int, float)) and v is not None:
                    self.tb.add_scalar(f"{split}/{k}", v, step)

    def close(self) -> None:
        if not self.active:
            return
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def _clean(v):
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else v
    return v


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_losses(jsonl: str | Path, out: str | Path, title: str = "MAGNeT training") -> Path:
    """Train loss (and validation loss per stage when present) against step, as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = read_jsonl(jsonl)
    train = [r for r in rows if r["split"] == "train" and r.get("loss") is not None]
    valid = [r for r in rows if r["split"] == "valid"]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss", lw=1)
    stages = sorted({k for r in valid for k in r if k.startswith(("ce_stage", "ce_codebook"))})
    for k in stages:
        pts = [(r["step"], r[k]) for r in valid if r.get(k) is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=f"valid {k}")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)
