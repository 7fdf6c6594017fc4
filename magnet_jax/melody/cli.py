"""``magnet-jax train-dpd``: MeLoDy's dual-path diffusion (see ``magnet_jax.melody.training``).

    magnet-jax train-dpd --config configs/melody_tiny.py:dpd --workdir runs/melody_dpd \\
        melody.vae=runs/melody_vae melody.semantic_tokenizer=data/semantic.npz data.dir=data/synth16k

Re-running with the same ``--workdir`` resumes from its latest intact checkpoint; after SIGTERM /
SIGINT it saves and exits 75 (preempted), after too many non-finite steps it exits 3.
"""
from __future__ import annotations

import argparse
import json
import sys

from magnet_jax.cli import EXIT_FAILED, UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train-dpd", help="train MeLoDy's dual-path diffusion on VAE latents + semantic tokens",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    from magnet_jax.train.cli import add_run_args
    add_run_args(p, "configs/NAME.py[:variant] (e.g. configs/melody_tiny.py:dpd)", "losses.png",
                 "train.steps=100 melody.vae=DIR")
    p.set_defaults(func=run_train_dpd)


def run_train_dpd(args: argparse.Namespace) -> int:
    from magnet_jax.melody.training import check_config, train_dpd
    from magnet_jax.models import PipelineError
    from magnet_jax.train.checkpointing import CheckpointMismatch, NoIntactCheckpoint
    from magnet_jax.train.cli import exit_code, load_checked_config
    from magnet_jax.train.loop import NonFiniteError
    config = load_checked_config(args.config, args.overrides, check_config)
    try:
        summary = train_dpd(config, args.workdir)
    except (CheckpointMismatch, FileNotFoundError, ValueError, PipelineError) as err:
        raise UserError(str(err)) from None
    except (NonFiniteError, NoIntactCheckpoint) as err:
        print(f"magnet-jax train-dpd: {err}", file=sys.stderr)
        return EXIT_FAILED
    summary.pop("state", None)
    print(json.dumps(summary, default=str))
    return exit_code(summary)
