"""``magnet-jax sample`` and ``magnet-jax convert-lm``: the LM on its own (tokens, not audio)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("sample", help="sample MAGNeT tokens with the compiled sampler",
                              description="Sample codec tokens from a MAGNeT LM (random weights from "
                                          "--config, or --checkpoint) and report compile and run time.")
    p.add_argument("--config", required=True, help="configs/NAME.py[:variant]")
    p.add_argument("--checkpoint", help="audiocraft state_dict.bin or a converted LM directory")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--unconditional", action="store_true", help="no text condition (no CFG)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides anywhere after the verb, e.g. sampler.top_p=0.8")
    p.set_defaults(func=run_sample)

    c = subparsers.add_parser("convert-lm", help="convert an audiocraft LM state_dict.bin to orbax",
                              description="Read an audiocraft MAGNeT state_dict.bin (config from its "
                                          "xp.cfg) and write orbax params + lm_config.json.")
    c.add_argument("--checkpoint", required=True, help="state_dict.bin, or the folder holding it")
    c.add_argument("--config", help="configs/NAME.py[:variant] whose lm section gives the shape of a bare "
                                    "state dict (one without xp.cfg)")
    c.add_argument("--out", required=True, help="output directory")
    c.set_defaults(func=run_convert)


def _load_model(config: dict, checkpoint: str | None):
    from flax import nnx
    from magnet_jax.cli import UserError
    from magnet_jax.lm.model import MagnetLM
    if checkpoint is None:
        return MagnetLM(config["lm"], rngs=nnx.Rngs(config.get("seed", 0)))
    path = Path(checkpoint)
    if path.is_dir():
        from magnet_jax.lm.checkpoint import load_lm
        return load_lm(path)
    if not path.is_file():
        raise UserError(f"--checkpoint {checkpoint} does not exist")
    from magnet_jax.lm.convert import load_audiocraft_lm
    return load_audiocraft_lm(path)[1]


def run_sample(args) -> int:
    import jax
    from tqdm import tqdm
    from magnet_jax.cli import UserError
    from magnet_jax.config_loader import load_config
    from magnet_jax.lm.sampler import MagnetSampler

    try:
        config = load_config(args.config, args.overrides)
    except (FileNotFoundError, KeyError, ValueError, TypeError) as err:
        raise UserError(str(err).strip('"')) from None
    model = _load_model(config, args.checkpoint)
    cfg, sampler_cfg = model.cfg, config["sampler"]
    sampler = MagnetSampler(model)
    n, bs = int(config.get("num_samples", 1)), int(config.get("batch_size", 1))
    if n < 1 or bs < 1:
        raise UserError(f"num_samples={n} and batch_size={bs} must both be >= 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from magnet_jax.seeds import seed_key
    key = seed_key(int(config.get("seed", 0)))
    tokens, times = [], []
    for start in tqdm(range(0, n, bs), desc="sampling", unit="batch"):
        key, k_cond, k_sample = jax.random.split(key, 3)
        cond = None
        if not args.unconditional and cfg.cross_attention:
            # a random stand-in for a projected text condition: exercises CFG at full cost
            cond = jax.random.normal(k_cond, (bs, int(config.get("text_tokens", 8)), cfg.dim))
        try:
            t0 = time.perf_counter()
            codes = np.asarray(sampler.generate(k_sample, cond=cond, num_samples=bs, config=sampler_cfg))
            times.append(time.perf_counter() - t0)
        except ValueError as err:
            raise UserError(str(err)) from err
        tokens.append(codes)
    codes = np.concatenate(tokens)[:n]
    np.save(out / "tokens.npy", codes)
    report = {"config": args.config, "overrides": args.overrides, "checkpoint": args.checkpoint,
              "lm": dataclasses.asdict(cfg), "sampler": dataclasses.asdict(sampler_cfg),
              "unconditional": args.unconditional, "shape": list(codes.shape),
              "first_call_s (compile + run)": times[0], "later_calls_s": times[1:]}
    (out / "sample.json").write_text(json.dumps(report, indent=2))
    _plot_tokens(codes[0], out / "tokens.png")
    print(json.dumps({"tokens": str(out / "tokens.npy"), "shape": list(codes.shape),
                      "first_call_s": round(times[0], 3)}))
    return 0


def _plot_tokens(codes: np.ndarray, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(10, 2.5))
    ax.imshow(codes, aspect="auto", interpolation="nearest", cmap="viridis")
    ax.set_xlabel("frame")
    ax.set_ylabel("codebook")
    ax.set_title("sampled tokens (first sample)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_convert(args) -> int:
    from magnet_jax.cli import UserError, writable_folder
    from magnet_jax.lm.checkpoint import save_lm
    from magnet_jax.lm.convert import CheckpointError, load_audiocraft_lm
    path = Path(args.checkpoint)
    if path.is_dir() and (path / "state_dict.bin").is_file():
        path = path / "state_dict.bin"
    elif path.is_dir():
        raise UserError(f"--checkpoint {path} is a folder without state_dict.bin: pass the checkpoint file")
    elif not path.exists():
        raise UserError(f"--checkpoint {path} does not exist")
    cfg = None
    if args.config:
        from magnet_jax.config_loader import load_config
        try:
            cfg = load_config(args.config)["lm"]
        except (FileNotFoundError, KeyError, ValueError, TypeError, SyntaxError) as err:
            raise UserError(f"--config {args.config}: {err}") from None
    writable_folder(args.out)
    try:
        cfg, model, cond_keys = load_audiocraft_lm(path, cfg=cfg)
    except CheckpointError as err:
        raise UserError(str(err)) from err
    out = save_lm(model, args.out)
    print(json.dumps({"out": str(out), "lm": dataclasses.asdict(cfg),
                      "condition_keys_left_for_the_conditioner": sorted(cond_keys)}))
    return 0
