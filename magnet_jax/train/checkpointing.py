"""Orbax checkpoints of the whole run: train state + the grain iterator, asynchronous, last N kept,
each one sealed by a manifest so that damage is found before it is trained on.

    workdir/checkpoints/<step>/state            params, opt_state, ema, step, rng, non-finite counters
    workdir/checkpoints/<step>/data             each process's grain iterator position
    workdir/checkpoints/<step>/integrity.json   every file's size and SHA-256 (``magnet_jax.integrity``)
    workdir/checkpoints/damaged/<step>          a checkpoint found damaged on resume, moved aside (kept)

Restoring takes the *target* shardings (``jax.ShapeDtypeStruct`` with a sharding per leaf), so
a checkpoint written on one mesh restores onto another: orbax reads each device's slice.
Shapes are checked first, so a checkpoint of another model is one clear error.

When the manifest is written: orbax saves asynchronously and finalises a step (renames its
temporary folder into ``<step>``) in a background thread. The manifest is written once that
thread is done: at the next ``save`` (orbax waits for the previous save there anyway), in
``wait`` / ``close``, or at once for a synchronous save. Rotation (keep the newest N) is done
here, not by orbax's ``max_to_keep``, and only right after manifests are written, so a step is
deleted only when N newer steps are sealed: the newest verified checkpoint is never deleted.

Resuming (``restore_latest``) takes the newest step that verifies against its manifest AND whose
restored state is all finite. A damaged or non-finite step is reported in one line and moved to
``checkpoints/damaged/<step>`` (with ``<step>.reason.txt``; never deleted), and the step before
it is tried. When no step is intact, ``NoIntactCheckpoint`` names what was found and nothing is
moved. A finished step without a manifest (the run died between orbax's finalise and the
manifest, or an older magnet-jax wrote it) is not called damaged for that: it is restored, and if
it reads back finite it is sealed then; otherwise it is moved aside like a damaged one.

``PreemptionGuard`` turns SIGTERM / SIGINT into a flag the loop polls after each step: it then
saves the step it just finished, waits for the write, and returns. With several processes the
flag is OR-ed across them, so every process saves the same step.
"""
from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from magnet_jax import integrity

log = logging.getLogger(__name__)

DAMAGED_DIR = "damaged"


class CheckpointMismatch(ValueError):
    """A checkpoint whose arrays do not fit the model being trained."""


class DamagedCheckpoint(ValueError):
    """A checkpoint whose files differ from its manifest, asked for by a reader (export, eval-codec)."""


class NoIntactCheckpoint(RuntimeError):
    """A run has checkpoints but none is intact: nothing to resume from (nothing moved or deleted)."""


class Checkpoints:
    def __init__(self, directory: str | Path, keep: int, asynchronous: bool = True):
        self.directory = Path(directory).absolute()
        self.keep = keep
        self.asynchronous = asynchronous
        options = ocp.CheckpointManagerOptions(max_to_keep=None, create=True,   # rotation: self._rotate
                                               enable_async_checkpointing=asynchronous)
        import grain
        handlers = {"state": ocp.StandardCheckpointHandler(), "data": grain.checkpoint.CheckpointHandler()}
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)
        self._unsealed: list[int] = []      # saved by us, manifest not written yet

    def step_dir(self, step: int) -> Path:
        return self.directory / str(step)

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: dict, data_state: dict | None = None, force: bool = False) -> bool:
        """Save ``state`` and the data position ``data_state`` (an iterator's get_state())."""
        import grain
        self._seal()
        items = {"state": ocp.args.StandardSave(state)}
        if data_state is not None:
            items["data"] = grain.checkpoint.CheckpointSave(_Snapshot(data_state))
        saved = self.manager.save(step, args=ocp.args.Composite(**items), force=force)
        if saved:
            self._unsealed.append(step)
            if not self.asynchronous:
                self._seal()
        return saved

    def _seal(self) -> None:
        """Wait for the pending save, write the manifest of every step finished since, then rotate."""
        self.manager.wait_until_finished()
        if not self._unsealed:
            return
        if jax.process_index() == 0:
            for step in self._unsealed:
                integrity.write_manifest(self.step_dir(step))
        self._unsealed.clear()
        _sync("magnet_jax_checkpoint_sealed")
        self._rotate()

    def _rotate(self) -> None:
        """Delete the steps older than the ``keep`` newest, never the newest sealed one."""
        steps = self.all_steps()
        sealed = [s for s in steps if integrity.has_manifest(self.step_dir(s))]
        for step in steps[:-self.keep]:
            if sealed and step != sealed[-1]:
                self.manager.delete(step)

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

    def restore_latest(self, abstract_state: dict, iterator=None) -> tuple[int, dict] | None:
        """(step, state) of the newest intact checkpoint, or None when there is none at all.

        Newest first, a step is used when it verifies against its manifest and its state is all
        finite; the newer steps that failed are then moved aside, each reported in one line.
        ``NoIntactCheckpoint`` when every step failed (then nothing is moved). A config that does
        not fit the checkpoints (``CheckpointMismatch``) is the user's error, not damage: raised."""
        rejected: list[tuple[int, str]] = []
        for step in reversed(self.all_steps()):
            reason, state = self._damage(step), None
            if reason is None:
                try:
                    state = self.restore(step, abstract_state, iterator)
                except CheckpointMismatch:
                    raise
                except Exception as err:  # noqa: BLE001 - unreadable: damaged, whatever orbax says
                    reason = f"orbax cannot read it ({root_cause(err)})"
                else:
                    reason = nonfinite_leaf(state)
            if reason is None:
                self._accept(step, rejected)
                return step, state
            rejected.append((step, reason))
        if rejected:
            found = "; ".join(f"step {s}: {r}" for s, r in rejected)
            raise NoIntactCheckpoint(f"no intact checkpoint to resume from in {self.directory} ({found}). Nothing "
                                     f"was moved or deleted: restore the files, or move {self.directory} aside "
                                     f"(or use a new --workdir) to start again")
        return None

    def _damage(self, step: int) -> str | None:
        """What differs from the step's manifest (process 0 reads, every process gets its verdict);
        None when intact or when it has no manifest (``restore_latest`` then tries to read it)."""
        found = integrity.problems(self.step_dir(step)) if jax.process_index() == 0 else None
        damaged = _agree(bool(found))
        if not damaged:
            return None
        return integrity.describe(found) if found else "damaged (see process 0's log)"

    def _accept(self, step: int, rejected: list[tuple[int, str]]) -> None:
        """Resume from ``step``: move the newer failed steps aside, seal ``step`` if it had no manifest."""
        if jax.process_index() == 0:
            for bad, reason in rejected:
                where = self._move_aside(bad, reason)
                log.warning("checkpoint step %d is damaged (%s): moved to %s; resuming from step %d",
                            bad, reason, where, step)
            if not integrity.has_manifest(self.step_dir(step)):
                log.warning("checkpoint step %d had no %s (written by an older magnet-jax, or the run stopped "
                            "before writing it); it restored with finite values, so it is sealed now",
                            step, integrity.MANIFEST_FILE)
                integrity.write_manifest(self.step_dir(step))
        _sync("magnet_jax_checkpoint_accepted")
        self.manager.reload()

    def _move_aside(self, step: int, reason: str) -> Path:
        """``checkpoints/damaged/<step>`` (``<step>.1``, ... when taken) plus ``<step>.reason.txt``."""
        folder = self.directory / DAMAGED_DIR
        folder.mkdir(exist_ok=True)
        target, n = folder / str(step), 0
        while target.exists():
            n += 1
            target = folder / f"{step}.{n}"
        os.replace(self.step_dir(step), target)
        (folder / f"{target.name}.reason.txt").write_text(reason + "\n")
        return target

    def wait(self) -> None:
        self._seal()

    def close(self) -> None:
        try:
            self._seal()
        finally:
            self.manager.close()


def verify_step(step_dir: str | Path, steps: list[int]) -> bool:
    """For readers of a finished run (export, eval-codec): check one checkpoint against its
    manifest; ``DamagedCheckpoint`` names the damaged file. False (with a warning) without one."""
    others = ", ".join(str(s) for s in steps if s != int(Path(step_dir).name)) or "none"
    try:
        return integrity.verify(step_dir, what="checkpoint", remedy=f"Pick another step with --step "
                                                                     f"(this run also has: {others})")
    except integrity.IntegrityError as err:
        raise DamagedCheckpoint(str(err)) from None


def nonfinite_leaf(state: dict) -> str | None:
    """'non-finite values in <leaf>' for the first floating leaf holding NaN or inf, else None."""
    flat = [(path, x) for path, x in jax.tree_util.tree_flatten_with_path(state)[0]
            if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)]
    if not flat:
        return None
    finite = _finite_flags([x for _, x in flat])
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        finite = multihost_utils.process_allgather(finite, tiled=True)
    finite = np.asarray(finite)
    if finite.all():
        return None
    path = flat[int(np.argmin(finite))][0]
    return f"non-finite values in {'/'.join(_key_name(k) for k in path)}"


@jax.jit
def _finite_flags(leaves: list) -> jax.Array:
    """One bool per leaf: all of it finite (one compiled program per state layout, reused)."""
    return jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])


def root_cause(err: BaseException) -> str:
    """The first line of the innermost exception (orbax wraps tensorstore's message twice)."""
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:300]


def _agree(flag: bool) -> bool:
    """Process 0's ``flag`` on every process (one decision for a collective restore)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils
    return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag, np.int32)))


def _sync(name: str) -> None:
    """Every process waits here (process 0 has written or moved files the others will look at)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


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
        key = tuple(_key_name(k) for k in path)
        out[key] = tuple(getattr(leaf, "shape", np.shape(leaf)))
    return out


def _key_name(k: Any) -> str:
    return str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))


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


def save_when_due(ckpt: Checkpoints, guard: PreemptionGuard, step: int, steps: int, every: int, state: dict,
                  data_state: dict | None) -> str | None:
    """The loops' checkpoint rule: save every ``every`` steps and at the last one; on SIGTERM /
    SIGINT save now and return the stop reason (None: keep training)."""
    if step % every == 0 or step == steps:
        ckpt.save(step, state, data_state, force=step == steps)
    if guard.requested() and step < steps:
        ckpt.save(step, state, data_state, force=True)
        return f"signal {guard.signum or 'on another process'}: saved step {step}"
    return None
