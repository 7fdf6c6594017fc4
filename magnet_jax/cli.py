"""The ``magnet-jax`` command: one verb per capability, each registered by its own module.

Each verb module exposes ``register(subparsers)`` which adds its parser and sets ``func`` to a
callable taking the parsed args and returning an exit code. Errors a user can fix are raised as
``UserError`` and printed as one clear line, without a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, Iterable

# module path for each group of verbs; a module listed here must exist.
VERB_MODULES: tuple[str, ...] = (
    "magnet_jax.lm.cli",        # sample, convert-lm
    "data_pipelines.cli",       # synth-corpus, tokenize
    "magnet_jax.codec.cli",     # codec-encode, codec-decode
    "magnet_jax.pipeline_cli",  # generate, convert, export
    "magnet_jax.train.cli",     # train, ablate-span
    "magnet_jax.codec.training.cli",  # train-codec, eval-codec
    "magnet_jax.eval.cli",      # eval, probe-captions
)


# Exit codes, documented in the README's "Reliability" section for schedulers and scripts.
EXIT_OK = 0          # done
EXIT_BAD_INPUT = 2   # the input is wrong (a flag, a file, a config): fix it and rerun
EXIT_FAILED = 3      # the run itself failed (non-finite loss, no intact checkpoint, ...)
EXIT_PREEMPTED = 75  # SIGTERM / SIGINT: state saved, rerun the same command to resume (sysexits EX_TEMPFAIL)


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit code 2 (EXIT_BAD_INPUT)."""


def build_parser(registers: Iterable[Callable] | None = None) -> argparse.ArgumentParser:
    """The parser for the given verb registrations (default: every module in VERB_MODULES)."""
    if registers is None:
        registers = [importlib.import_module(name).register for name in VERB_MODULES]
    parser = argparse.ArgumentParser(prog="magnet-jax", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="verb", required=True)
    for register in registers:
        register(subparsers)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args`` that accepts ``key=value`` overrides anywhere after the verb, for the
    verbs that take them (an ``overrides`` positional): argparse alone gives the positional only
    its first run of tokens and calls the rest "unrecognized"."""
    from magnet_jax.config_loader import is_override
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all(is_override(t) for t in extra):
        args.overrides = list(args.overrides or []) + extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def run(registers: Iterable[Callable] | None = None, argv: list[str] | None = None) -> int:
    """Parse argv, run the chosen verb, and print a UserError as one line (exit code 2).

    A verb module can run on its own with ``run([register], argv)``.
    """
    args = parse_args(build_parser(registers), argv)
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"magnet-jax {args.verb}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


def main(argv: list[str] | None = None) -> int:
    return run(None, argv)


if __name__ == "__main__":
    # import ourselves by name: verb modules raise magnet_jax.cli.UserError, not __main__.UserError
    from magnet_jax.cli import main as _main
    sys.exit(_main())
