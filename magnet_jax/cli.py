"""The ``magnet-jax`` command: one verb per capability, each registered by its own module.

Each verb module exposes ``register(subparsers)`` which adds its parser and sets ``func`` to a
callable taking the parsed args and returning an exit code. Errors a user can fix are raised as
``UserError`` and printed as one clear line, without a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import traceback
from pathlib import Path
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
    "magnet_jax.serve.cli",     # serve
    "magnet_jax.melody.cli",    # train-dpd
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


# -- argument types: a bad number is refused by argparse (exit 2) before anything runs -------------
SEED_LIMIT = 2**64


def finite_float(text: str) -> float:
    """A float flag: NaN and infinities are refused (they would silently give constant output)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def seed_value(text: str) -> int:
    """A seed: an integer in [0, 2**64). Seeds from 2**32 on reach JAX through
    ``magnet_jax.seeds.seed_key`` (jax.random.key would drop their high bits)."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"{text!r} is outside [0, 2**64)")
    return value


def writable_folder(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Check, before any long work starts, that ``path`` is or can become a folder this process
    writes into: an existing file or an unwritable place is one UserError naming it. Nothing is
    created (a missing folder is probed through its nearest existing parent)."""
    import tempfile
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{flag} {folder} is a file, not a folder: choose a folder")
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{flag} {folder} cannot be created: {probe} is a file")
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".magnet-jax-write-test-"):
            pass
    except OSError as err:
        raise UserError(f"{flag} {folder} cannot be written ({err.strerror or err} in {probe}): choose a "
                        f"folder you can write to") from None
    return folder


# -- running a verb ------------------------------------------------------------------------------
DEBUG_FLAG, DEBUG_ENV = "--debug", "MAGNET_JAX_DEBUG"


def _root_cause(err: BaseException) -> str:
    """The first line of the innermost cause: what went wrong, without the wrappers around it."""
    while err.__cause__ is not None or (err.__context__ is not None and not err.__suppress_context__):
        err = err.__cause__ or err.__context__
    first = (str(err).strip().splitlines() or [""])[0][:300]
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def run(registers: Iterable[Callable] | None = None, argv: list[str] | None = None) -> int:
    """Parse argv, run the chosen verb, and report its end in one line on stderr: a UserError
    (exit 2), an interruption (130), or any other failure (exit 3, with its root cause).
    ``--debug`` (anywhere) or MAGNET_JAX_DEBUG=1 shows the traceback instead.

    A verb module can run on its own with ``run([register], argv)``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    args = parse_args(build_parser(registers), [a for a in argv if a != DEBUG_FLAG])
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        if debug:
            traceback.print_exc()
        print(f"magnet-jax {args.verb}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"magnet-jax {args.verb}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the one place that turns a crash into one line
        if debug:
            raise
        print(f"magnet-jax {args.verb}: failed: {_root_cause(err)} (rerun with {DEBUG_FLAG}, or "
              f"{DEBUG_ENV}=1, for the traceback)", file=sys.stderr)
        return EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    return run(None, argv)


if __name__ == "__main__":
    # import ourselves by name: verb modules raise magnet_jax.cli.UserError, not __main__.UserError
    from magnet_jax.cli import main as _main
    sys.exit(_main())
