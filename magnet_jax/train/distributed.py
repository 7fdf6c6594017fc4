"""Multi-host start-up: ``jax.distributed.initialize`` from flags or the environment.

Precedence: explicit flags (``--coordinator HOST:PORT --num-processes N --process-id I``), then
the environment (``MAGNET_JAX_COORDINATOR`` / ``JAX_COORDINATOR_ADDRESS``,
``MAGNET_JAX_NUM_PROCESSES`` / ``JAX_NUM_PROCESSES``, ``MAGNET_JAX_PROCESS_ID`` /
``JAX_PROCESS_ID``), then ``--distributed`` alone, which lets JAX detect the cluster (TPU pod
slices, SLURM, Open MPI). Without any of these the run is single-process. On CPU the
cross-process collectives use gloo.
"""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class DistributedArgs:
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: tuple[int, ...] | None = None
    auto: bool = False


def _env(*names: str) -> str | None:
    for n in names:
        if os.environ.get(n):
            return os.environ[n]
    return None


def resolve(args: DistributedArgs) -> DistributedArgs | None:
    coordinator = args.coordinator or _env("MAGNET_JAX_COORDINATOR", "JAX_COORDINATOR_ADDRESS")
    num = args.num_processes if args.num_processes is not None else _env("MAGNET_JAX_NUM_PROCESSES", "JAX_NUM_PROCESSES")
    pid = args.process_id if args.process_id is not None else _env("MAGNET_JAX_PROCESS_ID", "JAX_PROCESS_ID")
    if coordinator is None and num is None and pid is None:
        return DistributedArgs(auto=True) if args.auto else None
    if coordinator is None or num is None or pid is None:
        raise ValueError(f"multi-process training needs the coordinator address, the number of "
                         f"processes and this process's id (got coordinator={coordinator}, "
                         f"num_processes={num}, process_id={pid})")
    num, pid = int(num), int(pid)
    if not 0 <= pid < num:
        raise ValueError(f"process id {pid} is not in [0, {num})")
    return DistributedArgs(coordinator, num, pid, args.local_device_ids)


def initialize(args: DistributedArgs) -> bool:
    """Start jax.distributed when asked; True if it was started."""
    import jax
    spec = resolve(args)
    if spec is None:
        return False
    # only the CPU client reads this; asking for the backend first would start it too early
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if spec.auto:
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(coordinator_address=spec.coordinator, num_processes=spec.num_processes,
                                   process_id=spec.process_id,
                                   local_device_ids=list(spec.local_device_ids) if spec.local_device_ids else None)
    return True
