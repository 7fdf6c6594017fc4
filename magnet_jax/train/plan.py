"""``magnet-jax plan``: will this config fit, and how fast will it run, on N accelerators?

The real train step (``loop.build_trainer``: the same state, shardings and jitted step that
``magnet-jax train`` runs) and the real sampler (``MagnetSampler``) are lowered for a mesh of N
virtual CPU devices with abstract inputs (``jax.ShapeDtypeStruct`` carrying each shard's
sharding; no array the size of the model is ever allocated) and compiled. From the compiled
programs, per device:

    memory       parameters / optimizer state / EMA / batch: the shard of each input leaf under
                 its sharding (their sum is checked against XLA's argument size); activations
                 and temporaries: XLA's ``temp_size_in_bytes``; peak: arguments + outputs -
                 donated aliases + temporaries (every buffer XLA assigned, as if all live at once)
    FLOPs        counted in the optimised HLO with loop trip counts (``train/hlo.py``), next to
                 the closed-form count (``lm/flops.py``, ``train/metrics.py``) and XLA's own
                 ``cost_analysis()`` (which counts each loop body once)
    collectives  bytes of every all-reduce / all-gather / reduce-scatter / all-to-all /
                 collective-permute, times its trip count, and the bytes each device sends
    time         per op, max(FLOPs / peak, bytes / HBM bandwidth) (a roofline), summed; plus
                 each collective's bytes over the link its replica group spans (NVLink / ICI
                 inside a node or slice, the network between nodes); MFU = closed-form FLOPs /
                 (time x peak). Reported without overlap (compute + collectives, an upper bound)
                 and with full overlap (the larger of the two)

The device figures (``DEVICES``) are the vendors' published numbers, each with its source.
What a CPU compile cannot show: XLA's GPU / TPU compilers fuse and schedule differently (their
temporaries differ), CPU keeps FSDP's gradient reduction as an all-reduce plus a slice where
GPU / TPU rewrite it as a reduce-scatter (half the bytes), and real collectives overlap with
compute to a degree in between the two times given. The plan is a prediction, labelled so.

XLA reads ``--xla_force_host_platform_device_count`` once, when JAX starts, so the command runs
the compile in a subprocess (``python -m magnet_jax.train.plan``); ``plan()`` itself runs in any
process that already has at least N devices (the tests use the conftest's 8).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

GiB = 1024 ** 3
MESH_AXES = ("data", "fsdp", "tensor")


@dataclasses.dataclass(frozen=True)
class Device:
    """One accelerator's published figures (dense, no sparsity)."""
    name: str
    peak_bf16: float          # FLOP/s, bfloat16 matmuls
    peak_f32: float           # FLOP/s of a float32 matmul at JAX's default precision
    hbm_bytes: float          # memory per device, as published
    hbm_bw: float             # bytes/s
    link_bw: float            # bytes/s per device per direction inside a node (NVLink) or slice (ICI)
    node_size: int            # devices that link_bw joins (a GPU server; a TPU pod)
    network_bw: float | None  # bytes/s per device between nodes (None: no figure published)
    usable: float             # fraction of memory a JAX process gets by default
    sources: tuple[str, ...]


_JAX_GPU_MEMORY = ("JAX preallocates 75% of GPU memory by default (XLA_PYTHON_CLIENT_MEM_FRACTION): "
                   "https://docs.jax.dev/en/latest/gpu_memory_allocation.html")
_JAX_PRECISION = ("float32 matmuls at JAX's default precision run as one bfloat16 pass on TPU and as "
                  "TF32 on NVIDIA GPUs: https://docs.jax.dev/en/latest/_autosummary/jax.lax.Precision.html")

DEVICES: dict[str, Device] = {
    "v5e": Device(
        "TPU v5e", 197e12, 197e12, 16 * GiB, 819e9, 51.2e12 / 256, 256, 2 * 100e9 / 8 / 8, 1.0,
        ("197 TFLOP/s bf16, 16 GiB HBM at 819 GB/s, all-reduce bandwidth 51.2 TB/s per 256-chip pod "
         "(200 GB/s per chip), 2 x 100 Gbps NIC per 8-chip host (3.1 GB/s per chip between pods): "
         "https://cloud.google.com/tpu/docs/v5e", _JAX_PRECISION)),
    "v4": Device(
        "TPU v4", 275e12, 275e12, 32 * GiB, 1200e9, 1.1e15 / 4096, 4096, None, 1.0,
        ("275 TFLOP/s bf16, 32 GiB HBM at 1200 GB/s, all-reduce bandwidth 1.1 PB/s per 4096-chip pod "
         "(269 GB/s per chip): https://cloud.google.com/tpu/docs/v4", _JAX_PRECISION)),
    "a100": Device(
        "NVIDIA A100 SXM 80GB", 312e12, 156e12, 80e9, 2039e9, 600e9 / 2, 8, 200e9 / 8, 0.75,
        ("312 TFLOP/s bf16, 156 TFLOP/s TF32, 80 GB HBM2e at 2039 GB/s, NVLink 600 GB/s (both "
         "directions): https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
         "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf",
         "DGX A100: 8 GPUs per node, one 200 Gb/s HDR InfiniBand port per GPU: "
         "https://docs.nvidia.com/dgx/dgxa100-user-guide/introduction-to-dgxa100.html",
         _JAX_PRECISION, _JAX_GPU_MEMORY)),
    "h100": Device(
        "NVIDIA H100 SXM", 989e12, 494.5e12, 80e9, 3.35e12, 900e9 / 2, 8, 400e9 / 8, 0.75,
        ("989 TFLOP/s bf16 and 494.5 TF32 dense (the datasheet's 1979 / 989 are with sparsity), "
         "80 GB HBM3 at 3.35 TB/s, NVLink 900 GB/s (both directions): "
         "https://www.nvidia.com/en-us/data-center/h100/",
         "DGX H100: 8 GPUs per node, one 400 Gb/s ConnectX-7 port per GPU: "
         "https://docs.nvidia.com/dgx/dgxh100-user-guide/introduction-to-dgxh100.html",
         _JAX_PRECISION, _JAX_GPU_MEMORY)),
    "h200": Device(
        "NVIDIA H200 SXM", 989e12, 494.5e12, 141e9, 4.8e12, 900e9 / 2, 8, 400e9 / 8, 0.75,
        ("989 TFLOP/s bf16 and 494.5 TF32 dense (1979 / 989 with sparsity), 141 GB HBM3e at "
         "4.8 TB/s, NVLink 900 GB/s (both directions): https://www.nvidia.com/en-us/data-center/h200/",
         "DGX H200: 8 GPUs per node, one 400 Gb/s ConnectX-7 port per GPU: "
         "https://docs.nvidia.com/dgx/dgxh200-user-guide/introduction-to-dgxh200.html",
         _JAX_PRECISION, _JAX_GPU_MEMORY)),
}


@dataclasses.dataclass(frozen=True)
class EncoderShape:
    """What the train step needs from the frozen text encoder: its width. Planning reads no
    encoder weights (a T5 need not be on the machine)."""
    width: int


# hidden width of the text encoders the configs name (d_model of T5, hidden_size of MiniLM)
TEXT_WIDTHS = {"minilm": 384, "t5-small": 512, "t5-base": 768, "t5-large": 1024, "t5-3b": 1024, "t5-11b": 1024}


def text_width(txc) -> int | None:
    """The encoder width for the config's text section, without loading the encoder."""
    if txc.encoder == "none":
        return None
    config = Path(txc.path) / "config.json" if txc.path else None
    if config is not None and config.is_file():
        data = json.loads(config.read_text())
        return int(data.get("d_model") or data["hidden_size"])
    name = "minilm" if txc.encoder == "minilm" else Path(txc.path).name.replace("google-", "").replace("_", "-")
    if name not in TEXT_WIDTHS:
        raise ValueError(f"text.path {txc.path!r}: cannot tell the encoder's width; use a folder with a "
                         f"config.json or one of {sorted(k for k in TEXT_WIDTHS if k.startswith('t5'))}")
    return TEXT_WIDTHS[name]


# ---------------------------------------------------------------- configuration

def plan_config(config: dict, devices: int, mesh: dict[str, int] | None = None) -> dict:
    """The training config to plan: ``mesh`` sizes applied, the first ``devices`` devices used,
    nothing read from disk (no ``finetune.init_from``: only shapes matter)."""
    import jax
    from magnet_jax.train.config import check_config
    config = dict(check_config(config))
    mc = config["mesh"]
    sizes = {a: getattr(mc, a) for a in MESH_AXES} | dict(mesh or {})
    used = 0 if jax.device_count() == devices else devices
    if jax.device_count() < devices:
        raise ValueError(f"this process has {jax.device_count()} devices, the plan wants {devices}")
    config["mesh"] = dataclasses.replace(mc, devices=used, **sizes)
    config["finetune"] = dataclasses.replace(config["finetune"], init_from="")
    return config


def parse_mesh(text: str | None) -> dict[str, int]:
    """``data=8,fsdp=4,tensor=1`` -> sizes (an axis left out keeps the config's size)."""
    sizes: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        axis, eq, value = part.partition("=")
        if not eq or axis.strip() not in MESH_AXES:
            raise ValueError(f"--mesh {text!r}: expected data=N,fsdp=N,tensor=N (any of them; -1 = the rest)")
        try:
            sizes[axis.strip()] = int(value)
        except ValueError:
            raise ValueError(f"--mesh {text!r}: {value!r} is not an integer") from None
    return sizes


# ---------------------------------------------------------------- compiling

def _shard_bytes(struct) -> int:
    shape = struct.sharding.shard_shape(struct.shape)
    return math.prod(shape) * struct.dtype.itemsize


def _tree_bytes(tree) -> int:
    import jax
    return sum(_shard_bytes(x) for x in jax.tree.leaves(tree))


def _memory(compiled, inputs: dict[str, Any]) -> dict[str, int]:
    """Per-device bytes: each input group's shards, and XLA's buffer sizes."""
    stats = compiled.memory_analysis()
    out = {name: _tree_bytes(tree) for name, tree in inputs.items()}
    out.update(arguments=stats.argument_size_in_bytes, outputs=stats.output_size_in_bytes,
               aliased=stats.alias_size_in_bytes, activations_and_temporaries=stats.temp_size_in_bytes)
    out["peak"] = out["arguments"] + out["outputs"] - out["aliased"] + out["activations_and_temporaries"]
    return out


def _compile(fn, mesh, args) -> tuple[Any, float]:
    import jax
    t0 = time.perf_counter()
    with jax.set_mesh(mesh):
        compiled = fn.lower(*args).compile()
    return compiled, time.perf_counter() - t0


def _xla_flops(compiled) -> float | None:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"]) if cost and "flops" in cost else None


def train_inputs(trainer) -> tuple[dict, dict, Any]:
    """Abstract (state, batch, poison) of the trainer's step, each leaf with its sharding."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec
    from magnet_jax.train import sharding
    from magnet_jax.train.loop import abstract_with_shardings
    cfg, mesh = trainer.config, trainer.mesh
    B, T, n_q = cfg["train"].batch_size, cfg["lm"].sequence_len, cfg["lm"].n_q

    def arr(shape, dtype, *names):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding.logical_sharding(mesh, *names))
    batch = {"codes": arr((B, n_q, T), jnp.int32, "batch", None, None),
             "padding_mask": arr((B, T), jnp.bool_, "batch", None)}
    if trainer.text_width:
        S = cfg["text"].max_tokens
        batch["text_hidden"] = arr((B, S, trainer.text_width), jnp.float32, "batch", None, None)
        batch["text_mask"] = arr((B, S), jnp.int32, "batch", None)
    poison = jax.ShapeDtypeStruct((), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec()))
    return abstract_with_shardings(trainer), batch, poison


def compile_train_step(config: dict) -> dict:
    """Build the trainer exactly as ``magnet-jax train`` does and compile its step."""
    from magnet_jax.train.loop import build_trainer
    width = text_width(config["text"])
    trainer = build_trainer(config, encoder=EncoderShape(width) if width else None)
    state, batch, poison = train_inputs(trainer)
    compiled, seconds = _compile(trainer.train_step, trainer.mesh, (state, batch, poison))
    groups = {"parameters": state["params"], "optimizer_state": state["opt_state"],
              "ema": {k: v for k, v in state.items() if k in ("ema", "ema_count")},
              "other_state": {k: v for k, v in state.items()
                              if k not in ("params", "opt_state", "ema", "ema_count")},
              "batch": {"batch": batch, "poison": poison}}
    memory = _memory(compiled, groups)
    return {"compiled": compiled, "mesh": trainer.mesh, "compile_s": seconds, "memory": memory,
            "text_width": width}


def compile_sampler(config: dict, mesh, batch: int) -> dict:
    """Compile ``MagnetSampler``'s own program (its ``_function``: every stage and step, CFG on
    when the LM is text-conditioned, one key per row) for ``batch`` generations of the config's
    segment length, with the shardings the sampler gives it on ``mesh``."""
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from magnet_jax.lm.model import MagnetLM
    from magnet_jax.lm.sampler import MagnetSampler, SamplerConfig
    from magnet_jax.train import sharding
    lm = config["lm"]
    sampler_cfg = SamplerConfig().for_codebooks(lm.n_q)
    sampler_cfg.validate(lm.n_q)
    sharding.check_batch_divides(batch, mesh)
    sampler = MagnetSampler(nnx.eval_shape(lambda: MagnetLM(lm, rngs=nnx.Rngs(0))))   # nothing placed
    sampler.mesh = mesh
    has_cond = lm.cross_attention
    fn = sampler._function(sampler_cfg, lm.sequence_len, 0, has_cond, False)
    state_sh = sharding.state_shardings(sampler.state, mesh)
    state = jax.tree.map(lambda v, s: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s), sampler.state, state_sh)
    rows = sharding.logical_sharding(mesh, "batch", None, None)
    S = config["text"].max_tokens
    cond = jax.ShapeDtypeStruct((batch, S, lm.dim), jnp.float32, sharding=rows) if has_cond else None
    prompt = jax.ShapeDtypeStruct((batch, lm.n_q, 0), jnp.int32, sharding=rows)
    keys = jax.ShapeDtypeStruct((batch,), jax.eval_shape(lambda: jax.random.key(0)).dtype,
                                sharding=sharding.logical_sharding(mesh))
    compiled, seconds = _compile(fn, mesh, (state, cond, prompt, keys, None))
    memory = _memory(compiled, {"parameters": state, "inputs": {"cond": cond, "prompt": prompt, "keys": keys}})
    return {"compiled": compiled, "compile_s": seconds, "memory": memory, "config": sampler_cfg,
            "condition_tokens": S if has_cond else 0}


# ---------------------------------------------------------------- predicting

def _spans_nodes(groups, node_size: int) -> bool:
    return any(len({d // node_size for d in g}) > 1 for g in groups)


def collective_summary(program, device: Device) -> tuple[dict, float]:
    """Per kind: ops per step, operand bytes, bytes each device sends, seconds; and the total."""
    kinds: dict[str, dict] = {}
    total = 0.0
    for c in program.collectives:
        across = _spans_nodes(c.groups, device.node_size)
        bw = device.network_bw if (across and device.network_bw) else device.link_bw
        seconds = c.count * c.wire_bytes() / bw
        row = kinds.setdefault(c.kind, {"ops": 0, "operand_bytes": 0, "wire_bytes": 0.0, "seconds": 0.0,
                                        "across_nodes": False, "largest_group": 1})
        row["ops"] += c.count
        row["operand_bytes"] += c.count * c.operand_bytes
        row["wire_bytes"] += c.count * c.wire_bytes()
        row["seconds"] += seconds
        row["across_nodes"] |= across
        row["largest_group"] = max(row["largest_group"], c.group_size)
        total += seconds
    return kinds, total


def predict(program, device: Device, compute_dtype: str, useful_flops: float) -> dict:
    """Step time between two bounds, and MFU against ``useful_flops`` (per device).

    low: the matmuls at peak, collectives fully overlapped with them. high: every op at its
    roofline, max(FLOPs / peak, bytes / HBM bandwidth), with the memory traffic of the CPU
    compile (which keeps float32 copies of bfloat16 tensors and fuses less than GPU / TPU
    compilers, so its bytes overstate theirs), plus the collectives, not overlapped."""
    peak = device.peak_bf16 if compute_dtype == "bfloat16" else device.peak_f32
    matmul = program.flops / peak
    roofline = sum(op.count * max(op.flops / peak, op.bytes / device.hbm_bw) for op in program.ops)
    kinds, comm = collective_summary(program, device)
    low, high = max(matmul, comm), roofline + comm
    return {"peak_flops": peak, "matmul_s": matmul, "roofline_s": roofline, "collective_s": comm,
            "step_low_s": low, "step_high_s": high,
            "mfu_high": useful_flops / (low * peak) if low else None,
            "mfu_low": useful_flops / (high * peak) if high else None,
            "collectives": kinds, "hbm_bytes": program.bytes}


# ---------------------------------------------------------------- fitting

MAX_ADVICE_COMPILES = 4


def advise(peak: int, budget: float, mesh: dict[str, int], remat: bool, dim: int,
           peak_for: Callable[[dict[str, int], bool], int]) -> dict:
    """Whether the train step fits ``budget`` bytes per device and, if not, which mesh axis to
    grow, checked by compiling: ``peak_for(mesh, remat)`` compiles the step on another mesh of
    the same devices and returns its peak bytes.

    fsdp is grown first (its devices taken from data): it divides the parameters, optimizer
    state, EMA and their gradients and leaves each device's batch alone (the batch is split over
    data x fsdp). When even the largest fsdp does not fit, the activations are too big for this
    many devices: remat is tried, and otherwise more devices on the data axis (or gradient
    accumulation) is the answer, with the factor estimated from the shortfall."""
    if peak <= budget:
        return {"fits": True, "need_bytes": peak, "budget_bytes": budget, "grow": None, "advice": None}
    base = {"fits": False, "need_bytes": peak, "budget_bytes": budget}
    fsdp, data, k, tried = mesh["fsdp"], mesh["data"], 2, 0
    candidate = dict(mesh)
    while data % k == 0 and dim % (fsdp * k) == 0 and tried < MAX_ADVICE_COMPILES:
        candidate = dict(mesh, fsdp=fsdp * k, data=data // k)
        need, tried = peak_for(candidate, remat), tried + 1
        if need <= budget:
            return {**base, "grow": {"axis": "fsdp", "mesh": candidate, "checked_bytes": need},
                    "advice": (f"grow mesh.fsdp from {fsdp} to {fsdp * k} (mesh.data {data} -> {data // k}): "
                               f"compiled, it needs {_gib(need)} per device")}
        k *= 2
    if not remat and peak_for(candidate, True) <= budget:
        return {**base, "grow": {"axis": "fsdp", "mesh": candidate, "remat": True},
                "advice": (f"set train.remat=true and mesh.fsdp={candidate['fsdp']} mesh.data={candidate['data']}: "
                           f"compiled, it fits")}
    factor = max(2, 2 ** math.ceil(math.log2(peak / budget)))
    return {**base, "grow": {"axis": "data", "factor": factor},
            "advice": (f"the activations do not fit this many devices even with the state split over "
                       f"fsdp={candidate['fsdp']}: grow mesh.data about {factor}x (more devices, the batch split "
                       f"further), or set train.grad_accum={factor}" + ("" if remat else " or train.remat=true"))}


# ---------------------------------------------------------------- the plan

def _peak_on(config: dict, mesh: dict[str, int], remat: bool) -> int:
    """Peak bytes per device of the train step on another mesh of the same devices."""
    sized = dict(config, mesh=dataclasses.replace(config["mesh"], **mesh),
                 train=dataclasses.replace(config["train"], remat=remat))
    return compile_train_step(sized)["memory"]["peak"]


def plan(config: dict, devices: int, device_kind: str = "h100", mesh: dict[str, int] | None = None,
         memory_budget_gib: float | None = None, sampler: bool = True,
         sampler_batch: int | None = None) -> dict:
    """Compile the train step (and the sampler) of ``config`` on ``devices`` devices and predict
    their memory and time on ``device_kind``; a JSON-able report."""
    from magnet_jax.lm.flops import sampler_flops
    from magnet_jax.lm.sampler import output_length
    from magnet_jax.train import sharding
    from magnet_jax.train.hlo import analyse
    from magnet_jax.train.metrics import train_step_flops
    if device_kind not in DEVICES:
        raise ValueError(f"--device-kind {device_kind!r}: use one of {sorted(DEVICES)}")
    device = DEVICES[device_kind]
    config = plan_config(config, devices, mesh)
    lm, tc = config["lm"], config["train"]
    budget = memory_budget_gib * GiB if memory_budget_gib else device.hbm_bytes * device.usable

    train = compile_train_step(config)
    mesh_obj = train["mesh"]
    mesh_sizes = {a: int(mesh_obj.shape[a]) for a in MESH_AXES}
    program = analyse(train["compiled"].as_text(), devices)
    S = config["text"].max_tokens if train["text_width"] else 0
    useful = train_step_flops(lm, tc.batch_size, lm.sequence_len, S, train["text_width"] or 0) / devices
    report = {
        "devices": devices, "mesh": mesh_sizes, "device": dataclasses.asdict(device),
        "memory_budget_bytes": budget, "compute_dtype": lm.compute_dtype,
        "train": {"global_batch": tc.batch_size, "grad_accum": tc.grad_accum, "remat": tc.remat,
                  "per_device_batch": tc.batch_size / sharding.batch_axis_size(mesh_obj),
                  "compile_s": train["compile_s"], "memory": train["memory"],
                  "flops": {"hlo": program.flops, "closed_form": useful,
                            "hlo_over_closed_form": program.flops / useful if useful else None,
                            "xla_cost_analysis": _xla_flops(train["compiled"])},
                  "time": predict(program, device, lm.compute_dtype, useful),
                  "unknown_trip_counts": program.unknown_trip_counts,
                  **advise(train["memory"]["peak"], budget, mesh_sizes, tc.remat, lm.dim,
                           lambda m, remat: _peak_on(config, m, remat))}}
    if sampler:
        batch = sampler_batch or sharding.batch_axis_size(mesh_obj)
        smp = compile_sampler(config, mesh_obj, batch)
        sprog = analyse(smp["compiled"].as_text(), devices)
        T = output_length(lm, smp["config"], lm.sequence_len)
        cfg_guidance = smp["condition_tokens"] > 0
        s_useful = sampler_flops(lm, batch, T, smp["condition_tokens"], smp["config"].decoding_steps,
                                 cfg_guidance=cfg_guidance) / devices
        report["sampler"] = {
            "batch": batch, "frames": T, "decoding_steps": list(smp["config"].decoding_steps),
            "cfg": cfg_guidance, "compile_s": smp["compile_s"], "memory": smp["memory"],
            "flops": {"hlo": sprog.flops, "closed_form": s_useful,
                      "hlo_over_closed_form": sprog.flops / s_useful if s_useful else None,
                      "xla_cost_analysis": _xla_flops(smp["compiled"])},
            "time": predict(sprog, device, lm.compute_dtype, s_useful),
            "fits": smp["memory"]["peak"] <= budget}
    return report


# ---------------------------------------------------------------- the readable table

def _gib(n: float) -> str:
    return f"{n / GiB:.2f} GiB" if n >= GiB / 100 else f"{n / 2**20:.2f} MiB"


def _seconds(s: float) -> str:
    return f"{s:.3g} s" if s >= 0.01 else f"{s * 1e3:.3g} ms"


def _collectives(time_row: dict) -> str:
    parts = [f"{kind} {_gib(row['wire_bytes'])} x{row['ops']}{' (across nodes)' if row['across_nodes'] else ''}"
             for kind, row in sorted(time_row["collectives"].items())]
    return ", ".join(parts) or "none"


def _column(part: dict, names: list[str]) -> list[str]:
    m, f, t = part["memory"], part["flops"], part["time"]
    ratio = f["hlo_over_closed_form"]
    values = {
        "parameters": _gib(m["parameters"]),
        "optimizer state": _gib(m["optimizer_state"]) if "optimizer_state" in m else "-",
        "EMA": _gib(m["ema"]) if "ema" in m else "-",
        "batch / inputs": _gib(m.get("batch", m.get("inputs", 0))),
        "activations + temporaries": _gib(m["activations_and_temporaries"]),
        "peak (all XLA buffers)": _gib(m["peak"]),
        "FLOPs (HLO, loops counted)": f"{f['hlo']:.3g} = {ratio:.2f}x closed form" if ratio else f"{f['hlo']:.3g}",
        "XLA cost_analysis FLOPs": f"{f['xla_cost_analysis']:.3g} (loop bodies once)" if f["xla_cost_analysis"] else "-",
        "collectives (bytes sent x ops)": _collectives(t),
        "predicted time": (f"{_seconds(t['step_low_s'])} to {_seconds(t['step_high_s'])} (matmuls "
                           f"{_seconds(t['matmul_s'])}, roofline {_seconds(t['roofline_s'])}, collectives "
                           f"{_seconds(t['collective_s'])})"),
        "predicted MFU": f"{t['mfu_low']:.2f} to {t['mfu_high']:.2f}",
        "compile (CPU)": _seconds(part["compile_s"]),
    }
    return [values[name] for name in names]


def format_report(report: dict) -> str:
    """The report as a table: one row per figure, a column for the train step and the sampler."""
    tr, dev = report["train"], report["device"]
    mesh = " ".join(f"{a}={n}" for a, n in report["mesh"].items())
    names = ["parameters", "optimizer state", "EMA", "batch / inputs", "activations + temporaries",
             "peak (all XLA buffers)", "FLOPs (HLO, loops counted)", "XLA cost_analysis FLOPs",
             "collectives (bytes sent x ops)", "predicted time", "predicted MFU", "compile (CPU)"]
    head = [f"train step (batch {tr['global_batch']}, {tr['per_device_batch']:g} per device)"]
    cols = [_column(tr, names)]
    if "sampler" in report:
        sm = report["sampler"]
        head.append(f"sampler (batch {sm['batch']}, {sm['frames']} frames{', CFG' if sm['cfg'] else ''})")
        cols.append(_column(sm, names))
    width = max(len(n) for n in names) + 2
    widths = [max(len(h), *(len(v) for v in col)) + 2 for h, col in zip(head, cols)]
    lines = [f"magnet-jax plan: {report.get('config', 'config')} on {report['devices']} x {dev['name']} "
             f"({report['compute_dtype']}), mesh {mesh}; per device, compiled for virtual CPU devices",
             "per device".ljust(width) + "".join(h.ljust(w) for h, w in zip(head, widths))]
    for i, name in enumerate(names):
        lines.append(name.ljust(width) + "".join(col[i].ljust(w) for col, w in zip(cols, widths)))
    budget = f"{_gib(report['memory_budget_bytes'])} usable per device"
    lines.append("")
    if tr["fits"]:
        lines.append(f"train step: fits ({_gib(tr['need_bytes'])} of {budget})")
    else:
        lines.append(f"train step: DOES NOT FIT ({_gib(tr['need_bytes'])} of {budget}): {tr['advice']}")
    if "sampler" in report:
        sm = report["sampler"]
        lines.append(f"sampler: {'fits' if sm['fits'] else 'DOES NOT FIT'} ({_gib(sm['memory']['peak'])} of {budget})")
    lines.append("Times and MFU are predictions from the published figures (--device-kind), not measurements: "
                 "from the matmuls at peak with collectives overlapped, to every op at its roofline (the CPU "
                 "compile's memory traffic, an overestimate) plus collectives not overlapped.")
    return "\n".join(lines)


# ---------------------------------------------------------------- running it in a subprocess

def run_subprocess(spec: str, overrides: list[str], devices: int, timeout: float | None = None,
                   **kwargs) -> dict:
    """``plan()`` in a fresh Python with ``devices`` virtual CPU devices (the XLA flag must be
    set before JAX starts). A bad input comes back as ValueError with the worker's one line."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=" ".join(flags + [f"--xla_force_host_platform_device_count={devices}"]))
    request = json.dumps({"spec": spec, "overrides": overrides, "devices": devices, **kwargs})
    proc = subprocess.run([sys.executable, "-m", "magnet_jax.train.plan"], input=request, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode == 2:
        raise ValueError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "bad input")
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"the plan's compile process failed (exit {proc.returncode}): {tail[0]}")
    return json.loads(proc.stdout)


def _worker() -> int:
    """stdin: the request as JSON; stdout: the report as JSON; exit 2 on a bad input."""
    request = json.loads(sys.stdin.read())
    from magnet_jax.config_loader import load_config
    from magnet_jax.train.config import check_config
    spec, overrides = request.pop("spec"), request.pop("overrides")
    try:
        config = check_config(load_config(spec, overrides))
        report = {"config": spec, "overrides": overrides, **plan(config, **request)}
    except (FileNotFoundError, KeyError, ValueError) as err:     # a config, mesh or size the user chose
        print(str(err).strip('"'), file=sys.stderr)
        return 2
    print(json.dumps(report, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(_worker())
