"""Mesh construction and the one table that maps logical axis names to mesh axes.

Model code names logical axes only (``embed``, ``heads``, ``mlp``, ``vocab``, ``batch``,
``length``...). This module is the single place that decides how those names land on the
physical mesh axes ``data``, ``fsdp`` and ``tensor`` (the MaxText convention). Change the
table here and every parameter, activation and batch follows.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES: tuple[str, ...] = ("data", "fsdp", "tensor")

# logical axis name -> mesh axis (or tuple of mesh axes, or None for replicated).
LOGICAL_AXIS_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),   # the batch splits over every data-parallel axis
    ("layers", None),              # the stacked-layers axis that lax.scan runs over
    ("length", None),              # sequence positions stay whole (band mask, span scores)
    ("cond_length", None),         # text-condition positions
    ("codebooks", None),           # the n_q streams
    ("embed", "fsdp"),             # model dim: ZeRO-3 style parameter sharding
    ("heads", "tensor"),           # attention heads: Megatron tensor parallelism
    ("kv", None),                  # per-head dim
    ("qkv", None),                 # the packed q|k|v axis of in_proj
    ("mlp", "tensor"),             # FFN hidden
    ("vocab", "tensor"),           # output heads' card axis
    ("emb_vocab", None),           # embedding tables' card+1 rows (2049: not divisible)
    ("cond_embed", None),          # text encoder width feeding output_proj
    ("rel_buckets", None),         # T5 relative-position buckets
    ("channels", None),            # codec channels
    ("time", None),                # codec samples / frames
    # activations get their own names so a parameter rule (embed -> fsdp) never collides
    # with the batch axis that already uses fsdp.
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Build a (data, fsdp, tensor) mesh; one size may be -1 to take the remaining devices.

    Axis types are Auto (``jax.make_mesh`` defaults to Explicit on recent JAX), so shardings
    propagate through ``jax.jit`` the way pjit did.
    """
    devices = list(devices if devices is not None else jax.devices())
    sizes = [data, fsdp, tensor]
    if sum(s == -1 for s in sizes) > 1:
        raise ValueError(f"mesh sizes {dict(zip(MESH_AXES, sizes))}: at most one axis may be -1")
    if any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh sizes {dict(zip(MESH_AXES, sizes))}: sizes must be positive or -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices cannot be split into mesh "
                             f"{dict(zip(MESH_AXES, sizes))}: {len(devices)} is not a multiple of {known}")
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
                         f"but {len(devices)} are available; pick sizes whose product is {len(devices)}")
    grid = np.asarray(devices).reshape(sizes)
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def logical_to_spec(names: Iterable[str | None],
                    rules: Sequence[tuple[str, Any]] = LOGICAL_AXIS_RULES) -> PartitionSpec:
    """Translate logical axis names to a PartitionSpec with the rules table."""
    table = dict(rules)
    out = []
    for name in names:
        if name is None:
            out.append(None)
        elif name not in table:
            raise KeyError(f"logical axis {name!r} has no rule in LOGICAL_AXIS_RULES; add one")
        else:
            out.append(table[name])
    return PartitionSpec(*out)


def logical_sharding(mesh: Mesh, *names: str | None) -> NamedSharding:
    """NamedSharding for an array whose axes carry the given logical names."""
    return NamedSharding(mesh, logical_to_spec(names))


def constrain(x: jax.Array, *names: str | None) -> jax.Array:
    """Pin an activation's layout by logical names (MaxText's logical constraint).

    A no-op unless a mesh is set (``jax.set_mesh``), so model code can name its activations
    unconditionally and still run on one device.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is None or mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_spec(names))


def state_shardings(state: nnx.State, mesh: Mesh) -> Any:
    """NamedShardings for every variable of an NNX state, from its ``out_sharding`` names."""
    with nnx.logical_axis_rules(LOGICAL_AXIS_RULES):
        specs = nnx.get_partition_spec(state)
    return jax.tree.map(lambda s: NamedSharding(mesh, s), specs,
                        is_leaf=lambda x: isinstance(x, PartitionSpec))


def batch_axis_size(mesh: Mesh) -> int:
    """How many ways the batch axis is split on this mesh."""
    axes = dict(LOGICAL_AXIS_RULES)["batch"]
    axes = axes if isinstance(axes, tuple) else (axes,)
    return math.prod(mesh.shape[a] for a in axes if a is not None)


def check_batch_divides(batch: int, mesh: Mesh) -> None:
    """Raise a clear error when the mesh's data axes do not divide the batch."""
    n = batch_axis_size(mesh)
    if batch % n:
        raise ValueError(f"batch size {batch} is not divisible by the mesh's data-parallel size {n} "
                         f"(mesh {dict(mesh.shape)}); use a batch that is a multiple of {n} "
                         f"or a mesh with fewer data/fsdp devices")
