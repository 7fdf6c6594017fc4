"""Orbax checkpoints of the whole run: train state + the grain iterator, asynchronous, last N kept.

    workdir/checkpoints/<step>/state   params, opt_state, ema, step, rng, non-finite counters
    workdir/checkpoints/<step>/data    each process's grain iterator position

Restoring takes the *target* shardings (``jax.ShapeDtypeStruct`` with a sharding per leaf), so
a checkpoint written on one mesh restores onto another: orbax reads each device's slice.
Shapes are checked first, so a checkpoint of another model is one clear error.

``PreemptionGuard`` turns SIGTERM / SIGINT into a flag the loop polls after each step: it then
saves the step it just finished, waits for the write, and returns. With several processes the
flag is OR-ed across them, so every process saves the same step.
"""
from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointMismatch(ValueError):
    """A checkpoint whose arrays do not fit the model being trained."""


class Checkpoints:
    def __init__(self, directory: str | Path, keep: int, asynchronous: bool = True):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=asynchronous)
        import grain
        handlers = {"state": ocp.StandardCheckpointHandler(), "data": grain.checkpoint.CheckpointHandler()}
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: dict, data_state: dict | None = None, force: bool = False) -> bool:
        """Save ``state`` and the data position ``data_state`` (an iterator's get_state())."""
        import grain
        items = {"state": ocp.args.StandardSave(state)}
        if data_state is not None:
            items["data"] = grain.checkpoint.CheckpointSave(_Snapshot(data_state))
        return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def check_shapes(self, step: int, abstract_state: dict) -> None:
        meta = self.manager.item_metadata(step)["state"]
        if meta is None:
            raise CheckpointMismatch(f"checkpoint {self.directory / str(step)} has no readable train state")
        want = _flat_shapes(abstract_state)
        have = _flat_shapes(meta)
        missing = sorted(set(want) - set(have))
        unexpected = sorted(set(have) - set(want))
        wrong = [(k, have[k], want[k]) for k in sorted(set(want) & set(have)) if have[k] != want[k]]
        if missing or unexpected or wrong:
            lines = [f"checkpoint {self.directory / str(step)} does not fit this model/optimizer:"]
            lines += [f"  {'/'.join(k)}: checkpoint {h}, expected {w}" for k, h, w in wrong[:8]]
            if missing:
                lines.append(f"  missing: {['/'.join(k) for k in missing[:8]]}")
            if unexpected:
                lines.append(f"  unexpected: {['/'.join(k) for k in unexpected[:8]]}")
            lines.append("  (a different lm.* / optim.optimizer config, or another run's workdir?)")
            raise CheckpointMismatch("\n".join(lines))

    def restore(self, step: int, abstract_state: dict, iterator=None) -> dict:
        """The state at ``step`` laid out as ``abstract_state``'s shardings; sets the iterator."""
        import grain
        self.check_shapes(step, abstract_state)
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(iterator)
        return self.manager.restore(step, args=ocp.args.Composite(**items))["state"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


class _Snapshot:
    """An iterator position frozen at save time (grain's handler writes ``get_state()``)."""

    def __init__(self, state: Any):
        self._text = json.dumps(state, indent=4)

    def get_state(self) -> bytes:
        return self._text.encode()


def _flat_shapes(tree: Any) -> dict[tuple[str, ...], tuple[int, ...]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    out = {}
    for path, leaf in leaves:
        key = tuple(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)
        out[key] = tuple(getattr(leaf, "shape", np.shape(leaf)))
    return out


class PreemptionGuard:
    """Catch SIGTERM / SIGINT while training; ``requested()`` says whether to save and stop."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "PreemptionGuard":
        for sig in self.SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:            # not the main thread: signals cannot be caught here
                pass
        return self

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def requested(self) -> bool:
        flag = self.signum is not None
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            flag = bool(np.any(multihost_utils.process_allgather(np.asarray(flag, np.int32))))
        return flag
