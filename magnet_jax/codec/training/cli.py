"""``magnet-jax train-codec`` and ``magnet-jax eval-codec``.

    magnet-jax train-codec --config configs/codec_tiny.py --workdir runs/codec_tiny data.dir=data/synth16k
    magnet-jax eval-codec --workdir runs/codec_tiny --out runs/codec_tiny/eval [--clips 24] [--no-music]

Re-running ``train-codec`` with the same ``--workdir`` resumes from its latest checkpoint; after
SIGTERM / SIGINT it saves and exits 75 (preempted), after too many non-finite steps it exits 3.
``eval-codec`` reads the workdir's config.json and latest checkpoint, reconstructs held-out
clips with 1..n_q codebooks and writes ``eval.json`` (SI-SNR, multi-scale mel distance, chroma
cosine per n_q; with a synthetic corpus's labels, key and tempo agreement of originals and
reconstructions) and ``spectrograms.png``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from magnet_jax.cli import EXIT_FAILED, UserError, finite_float


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train-codec", help="train an EnCodec (adversarial, learned RVQ); resumes from --workdir",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    from magnet_jax.train.cli import add_distributed_flags, add_run_args
    add_run_args(p, "configs/NAME.py[:variant] (e.g. configs/codec_tiny.py)", "PNGs", "train.steps=100 data.dir=DIR")
    add_distributed_flags(p)
    p.set_defaults(func=run_train_codec)

    e = subparsers.add_parser("eval-codec", help="held-out SI-SNR, mel distance, chroma, key/tempo per n_q",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("--workdir", required=True, help="a train-codec workdir")
    e.add_argument("--out", required=True, type=Path, help="folder for eval.json and spectrograms.png")
    e.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    e.add_argument("--data", help="audio folder (default: the run's data.dir; its held-out split is used)")
    e.add_argument("--clips", type=int, help="held-out clips (default: eval.clips)")
    e.add_argument("--duration", type=finite_float, help="seconds per clip from its start (default: eval.duration)")
    e.add_argument("--no-music", action="store_true", help="skip key / tempo estimation even with labels")
    e.set_defaults(func=run_eval_codec)


def load_codec_train_config(spec: str, overrides: list[str]) -> dict:
    from magnet_jax.codec.training.config import check_config
    from magnet_jax.train.cli import load_checked_config
    return load_checked_config(spec, overrides, check_config)


def run_train_codec(args: argparse.Namespace) -> int:
    from magnet_jax.train.cli import exit_code, start_distributed
    start_distributed(args)
    config = load_codec_train_config(args.config, args.overrides)
    from magnet_jax.codec.training.loop import train_codec
    from magnet_jax.train.checkpointing import CheckpointMismatch, NoIntactCheckpoint
    from magnet_jax.train.loop import NonFiniteError
    try:
        summary = train_codec(config, args.workdir)
    except (CheckpointMismatch, FileNotFoundError, ValueError) as err:
        raise UserError(str(err)) from None
    except (NonFiniteError, NoIntactCheckpoint) as err:
        print(f"magnet-jax train-codec: {err}", file=sys.stderr)
        return EXIT_FAILED
    summary.pop("state", None)
    import jax
    if jax.process_index() == 0:
        print(json.dumps(summary, default=str))
    return exit_code(summary)


def run_eval_codec(args: argparse.Namespace) -> int:
    from magnet_jax.codec.training.evaluation_run import evaluate_workdir
    try:
        report = evaluate_workdir(args.workdir, args.out, step=args.step, data_dir=args.data, clips=args.clips,
                                  duration=args.duration, music=not args.no_music)
    except (FileNotFoundError, ValueError) as err:
        raise UserError(str(err)) from None
    print(json.dumps(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m magnet_jax.codec.training.cli VERB ...`` (these verbs without the rest of the CLI)."""
    from magnet_jax.cli import run
    return run([register], argv)


if __name__ == "__main__":
    sys.exit(main())
