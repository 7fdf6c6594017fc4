"""``magnet-jax train``, ``magnet-jax ablate-span`` and ``magnet-jax plan``.

    magnet-jax train --config configs/tiny_lm.py --workdir runs/tiny [key=value ...]
    magnet-jax train lm.num_layers=4 --config configs/tiny_lm.py --workdir runs/tiny4   # anywhere
    magnet-jax train --config configs/magnet_small.py --workdir gs://.../small data.dir=... \\
        --coordinator 10.0.0.1:1234 --num-processes 4 --process-id 0     # or --distributed on TPU
    magnet-jax train --config configs/magnet_small.py --workdir runs/ft \\
        finetune.init_from=converted/magnet-small finetune.freeze=emb,layers:0-11
    magnet-jax ablate-span --config configs/tiny_lm.py --workdir runs/span --span-lens 1,2,3,5,10
    magnet-jax plan --config configs/magnet_medium.py --devices 64 --device-kind v5e --mesh data=8,fsdp=8

Re-running ``train`` with the same ``--workdir`` resumes from its latest checkpoint. Exit codes: 0
done, 2 bad input, 3 failed run (non-finite loss), 75 preempted (SIGTERM / SIGINT: the step was
saved; rerun the same command to resume).
"""
from __future__ import annotations

import argparse
import json
import sys

from magnet_jax.cli import EXIT_FAILED, EXIT_OK, EXIT_PREEMPTED, UserError


def add_distributed_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("multi-host (or MAGNET_JAX_COORDINATOR / _NUM_PROCESSES / _PROCESS_ID)")
    g.add_argument("--coordinator", help="HOST:PORT of process 0")
    g.add_argument("--num-processes", type=int)
    g.add_argument("--process-id", type=int)
    g.add_argument("--local-devices", help="comma-separated local device ids for this process")
    g.add_argument("--distributed", action="store_true",
                   help="let JAX detect the cluster (TPU pod slices, SLURM, Open MPI)")


def add_run_args(p: argparse.ArgumentParser, config_help: str, plot: str, example: str) -> None:
    """--config, --workdir and the key=value overrides of a training verb."""
    p.add_argument("--config", required=True, help=config_help)
    p.add_argument("--workdir", required=True, help=f"checkpoints, metrics.jsonl, tensorboard/, {plot}")
    p.add_argument("overrides", nargs="*", metavar="key=value", help=f"e.g. {example}")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train or fine-tune the MAGNeT LM (resumes from --workdir)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(p, "configs/NAME.py[:variant]", "loss.png", "train.steps=100 mesh.fsdp=4")
    add_distributed_flags(p)
    p.set_defaults(func=run_train)

    a = subparsers.add_parser("ablate-span", help="train once per span length; table of validation CE per stage",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("--config", required=True, help="configs/NAME.py[:variant] (e.g. configs/tiny_lm.py)")
    a.add_argument("--workdir", required=True, help="one sub-folder per span length, plus the table")
    a.add_argument("--span-lens", default="1,2,3,5,10", help="comma-separated span lengths (frames)")
    a.add_argument("overrides", nargs="*", metavar="key=value")
    add_distributed_flags(a)
    a.set_defaults(func=run_ablation)
    register_plan(subparsers)


def register_plan(subparsers: argparse._SubParsersAction) -> None:
    from magnet_jax.cli import finite_float
    from magnet_jax.train.plan import DEVICES
    p = subparsers.add_parser(
        "plan", help="compile the train step and sampler for N devices: memory, FLOPs, collectives, "
                     "predicted step time and MFU", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="configs/NAME.py[:variant]")
    p.add_argument("--devices", type=int, required=True, help="number of accelerators (virtual CPU devices)")
    p.add_argument("--mesh", help="data=N,fsdp=N,tensor=N (axes left out keep the config's sizes)")
    p.add_argument("--device-kind", default="h100", choices=sorted(DEVICES))
    p.add_argument("--memory-gib", type=finite_float, help="memory budget per device (default: the device's)")
    p.add_argument("--sampler-batch", type=int, help="generations per sampler call (default: one per data-parallel device)")
    p.add_argument("--no-sampler", action="store_true", help="plan the train step only")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of the table")
    p.add_argument("--out", help="also write the JSON report to this file")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. train.batch_size=256 train.remat=true")
    p.set_defaults(func=run_plan)


def start_distributed(args: argparse.Namespace) -> None:
    from magnet_jax.train.distributed import DistributedArgs, initialize
    local = tuple(int(x) for x in args.local_devices.split(",")) if args.local_devices else None
    try:
        initialize(DistributedArgs(args.coordinator, args.num_processes, args.process_id, local,
                                   args.distributed))
    except ValueError as err:
        raise UserError(str(err)) from None


def load_checked_config(spec: str, overrides: list[str], check) -> dict:
    """Load a config file with overrides and validate it; any problem is one UserError line."""
    from magnet_jax.config_loader import load_config
    try:
        return check(load_config(spec, overrides))
    except (FileNotFoundError, KeyError, ValueError, TypeError, SyntaxError) as err:
        raise UserError(str(err).strip('"')) from None


def load_train_config(spec: str, overrides: list[str]) -> dict:
    from magnet_jax.train.config import check_config
    return load_checked_config(spec, overrides, check_config)


def exit_code(summary: dict) -> int:
    """EXIT_PREEMPTED after a SIGTERM / SIGINT save (a scheduler requeues the same command, which
    resumes), EXIT_OK when the run reached its last step."""
    return EXIT_PREEMPTED if summary.get("preempted") else EXIT_OK


def run_train(args: argparse.Namespace) -> int:
    start_distributed(args)
    config = load_train_config(args.config, args.overrides)
    from magnet_jax.train.checkpointing import CheckpointMismatch, NoIntactCheckpoint
    from magnet_jax.train.loop import NonFiniteError, train
    try:
        summary = train(config, args.workdir)
    except (CheckpointMismatch, FileNotFoundError) as err:
        raise UserError(str(err)) from None
    except ValueError as err:
        raise UserError(str(err)) from None
    except (NonFiniteError, NoIntactCheckpoint) as err:
        print(f"magnet-jax train: {err}", file=sys.stderr)
        return EXIT_FAILED
    summary.pop("state", None)
    import jax
    if jax.process_index() == 0:
        print(json.dumps(summary, default=str))
    return exit_code(summary)


def run_ablation(args: argparse.Namespace) -> int:
    start_distributed(args)
    config = load_train_config(args.config, args.overrides)
    try:
        span_lens = [int(x) for x in args.span_lens.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--span-lens {args.span_lens!r}: expected comma-separated integers, e.g. 1,2,3,5,10") from None
    from magnet_jax.train.ablation import ablate_span
    from magnet_jax.train.checkpointing import CheckpointMismatch
    from magnet_jax.train.loop import NonFiniteError
    try:
        table = ablate_span(config, args.workdir, span_lens)
    except (CheckpointMismatch, FileNotFoundError, ValueError) as err:
        raise UserError(str(err)) from None
    except NonFiniteError as err:
        print(f"magnet-jax ablate-span: {err}", file=sys.stderr)
        return EXIT_FAILED
    import jax
    if jax.process_index() == 0:
        print(json.dumps(table))
    return exit_code(table)


def run_plan(args: argparse.Namespace) -> int:
    """Compile in a subprocess with --devices virtual CPU devices; print the table (or JSON)."""
    from pathlib import Path
    from magnet_jax.train.plan import format_report, parse_mesh, run_subprocess
    if args.devices < 1 or (args.sampler_batch is not None and args.sampler_batch < 1):
        raise UserError(f"--devices {args.devices} and --sampler-batch must be >= 1")
    if args.memory_gib is not None and args.memory_gib <= 0:
        raise UserError(f"--memory-gib {args.memory_gib} must be > 0")
    if args.out:
        from magnet_jax.cli import writable_folder
        if Path(args.out).is_dir():
            raise UserError(f"--out {args.out} is a folder: name the JSON file to write")
        writable_folder(Path(args.out).parent or ".", "--out")
    try:
        mesh = parse_mesh(args.mesh)
        load_train_config(args.config, args.overrides)      # a bad config is one line before compiling
        report = run_subprocess(args.config, args.overrides, args.devices, device_kind=args.device_kind,
                                mesh=mesh, memory_budget_gib=args.memory_gib, sampler=not args.no_sampler,
                                sampler_batch=args.sampler_batch)
    except ValueError as err:
        raise UserError(str(err)) from None
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report) if args.json else format_report(report))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """``python -m magnet_jax.train.cli VERB ...`` (the verbs without the rest of the CLI)."""
    from magnet_jax.cli import run
    return run([register], argv)


if __name__ == "__main__":
    sys.exit(main())
