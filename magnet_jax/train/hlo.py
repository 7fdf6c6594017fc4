"""What a compiled XLA program does per device, read from its optimised HLO text.

``compiled.cost_analysis()`` counts the body of a ``while`` loop once, whatever its trip count
(measured here: the MAGNeT train step with 1, 2 and 4 scanned layers reports 293, 301 and 305
MFLOP), and the layers of every model here run in a ``lax.scan``. So ``magnet-jax plan`` walks the
HLO itself: every computation reached from the entry, each ``while`` body multiplied by its
``known_trip_count``, and per instruction

- FLOPs of ``dot`` and ``convolution`` (2 x output elements x contracted elements; fusions are
  entered), the same things ``magnet_jax/lm/flops.py`` counts;
- bytes read and written from device memory by each op outside a fusion (its operands and
  output; a ``dynamic-slice`` reads only its slice, an in-place ``dynamic-update-slice`` writes
  only its update, also when fused), for a roofline time per op;
- collectives (all-reduce, all-gather, reduce-scatter, all-to-all, collective-permute, and their
  async ``-start`` forms) with their operand / output bytes and replica groups.

The program text is per device (SPMD-partitioned), so every figure is per device.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re

import numpy as np

DTYPE_BYTES = {"pred": 1, "s2": 1, "u2": 1, "s4": 1, "u4": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2,
               "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8,
               "c64": 8, "c128": 16}
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
# ops that move no data of their own (views, bookkeeping, control flow whose bodies are counted)
_FREE = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast", "after-all", "partition-id",
         "replica-id", "while", "conditional", "call", "opt-barrier", "add-dependency", "domain"}
_ARRAY = re.compile(r"\b(pred|[suf]\d+|bf16|c64|c128|f8e\w+|token)\[([^\]]*)\]")
_HEADER = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->\s*.*\{\s*$")
_INSTR = re.compile(r"^\s*(ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")


@dataclasses.dataclass(frozen=True)
class Instr:
    name: str
    shape: str           # the result shape as printed: "f32[2,3]{1,0}" or a tuple "(s32[], ...)"
    opcode: str
    operands: tuple[str, ...]
    args: str            # the operand list as printed (a parameter's number, a constant's value)
    attrs: str           # everything after the operand list


@dataclasses.dataclass(frozen=True)
class OpCost:
    """One op outside a fusion, executed ``count`` times per program run."""
    name: str
    opcode: str
    flops: float
    bytes: float
    count: int


@dataclasses.dataclass(frozen=True)
class Collective:
    name: str
    kind: str            # one of COLLECTIVES
    operand_bytes: int
    output_bytes: int
    groups: tuple[tuple[int, ...], ...]   # device ids of each replica group (or source/target pairs)
    count: int

    @property
    def group_size(self) -> int:
        return max((len(g) for g in self.groups), default=1)

    def wire_bytes(self) -> float:
        """Bytes each device sends per execution with ring algorithms (NCCL's bus-bandwidth
        factors, nccl-tests doc/PERFORMANCE.md): all-reduce 2(g-1)/g of its buffer, all-gather
        (g-1)/g of its output, reduce-scatter and all-to-all (g-1)/g of their input,
        collective-permute its whole buffer."""
        g = self.group_size
        if self.kind == "collective-permute":
            return float(self.operand_bytes)
        if g <= 1:
            return 0.0
        share = (g - 1) / g
        if self.kind == "all-reduce":
            return 2 * share * self.operand_bytes
        if self.kind == "all-gather":
            return share * self.output_bytes
        return share * self.operand_bytes


@dataclasses.dataclass
class Program:
    ops: list[OpCost]
    collectives: list[Collective]
    unknown_trip_counts: int     # while loops without a known trip count (counted once)

    @property
    def flops(self) -> float:
        return sum(op.flops * op.count for op in self.ops)

    @property
    def bytes(self) -> float:
        return sum(op.bytes * op.count for op in self.ops)


# ---------------------------------------------------------------- parsing

def array_bytes(shape: str) -> int:
    """Bytes of every array in a printed shape (a tuple's elements summed)."""
    total = 0
    for dtype, dims in _ARRAY.findall(shape):
        size = DTYPE_BYTES.get(dtype, 1 if dtype.startswith("f8") else 0)
        total += size * math.prod(_dims(dims))
    return total


def _dims(text: str) -> list[int]:
    return [int(d.replace("<=", "")) for d in text.split(",") if d.strip()]


def _balanced(text: str, start: int) -> int:
    """Index just past the parenthesis group opening at text[start]."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i + 1
    raise ValueError(f"unbalanced parentheses in HLO line: {text[:120]}")


def parse_instruction(line: str) -> Instr | None:
    m = _INSTR.match(line)
    if m is None:
        return None
    name, rest = m.group(2), m.group(3)
    if rest.startswith("("):
        end = _balanced(rest, 0)
        shape, rest = rest[:end], rest[end:].lstrip()
    else:
        shape, _, rest = rest.partition(" ")
    paren = rest.find("(")
    if paren < 0:
        return None
    opcode = rest[:paren].strip()
    end = _balanced(rest, paren)
    args = rest[paren + 1:end - 1]
    return Instr(name, shape, opcode, tuple(re.findall(r"%([\w.\-]+)", args)), args, rest[end:])


def parse_module(text: str) -> tuple[dict[str, list[Instr]], str]:
    """{computation name: instructions} and the entry computation's name."""
    computations: dict[str, list[Instr]] = {}
    entry, current = None, None
    for line in text.splitlines():
        header = _HEADER.match(line)
        if header:
            current = header.group(2)
            computations[current] = []
            if header.group(1):
                entry = current
            continue
        if line.startswith("}"):
            current = None
            continue
        if current is not None:
            instr = parse_instruction(line)
            if instr is not None:
                computations[current].append(instr)
    if entry is None:
        raise ValueError("no ENTRY computation in the HLO text")
    return computations, entry


# ---------------------------------------------------------------- replica groups

def replica_groups(attrs: str, num_devices: int) -> tuple[tuple[int, ...], ...]:
    """The device groups of a collective, in any of XLA's three spellings: explicit
    ``{{0,1},{2,3}}``, iota ``[2,2]<=[4]`` / ``[2,2]<=[2,2]T(1,0)``, and the mesh-axes form
    ``mesh['axis_0'=2,'axis_1'=2] {'axis_1'}``; collective-permute's ``source_target_pairs``.
    No groups at all means one group of every device."""
    m = re.search(r"source_target_pairs=\{(.*?)\}\}", attrs)
    if m:
        return tuple(tuple(int(x) for x in p.split(",")) for p in re.findall(r"\{(\d+,\d+)", m.group(0)))
    m = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", attrs)
    if m:
        axes = re.findall(r"'([^']+)'=(\d+)", m.group(1))
        names, sizes = [a for a, _ in axes], [int(s) for _, s in axes]
        chosen = [names.index(a) for a in re.findall(r"'([^']+)'", m.group(2))]
        return _groups_over(np.arange(math.prod(sizes)).reshape(sizes), chosen)
    m = re.search(r"replica_groups=\[([\d,]+)\]<=\[([\d,]+)\](?:T\(([\d,]+)\))?", attrs)
    if m:
        shape, reshape = _dims(m.group(1)), _dims(m.group(2))
        ids = np.arange(math.prod(reshape)).reshape(reshape)
        if m.group(3):
            ids = ids.transpose(_dims(m.group(3)))
        return tuple(tuple(int(x) for x in row) for row in ids.reshape(shape[0], -1))
    m = re.search(r"replica_groups=\{(\{[\d,\s]*\}(?:,\s*\{[\d,\s]*\})*)\}", attrs)
    if m:
        groups = tuple(tuple(_dims(g)) for g in re.findall(r"\{([\d,\s]*)\}", m.group(1)))
        if any(groups):
            return groups
    return (tuple(range(num_devices)),)


def _groups_over(ids: np.ndarray, axes: list[int]) -> tuple[tuple[int, ...], ...]:
    """Groups of ``ids`` that vary along ``axes`` and agree on every other axis."""
    rest = [a for a in range(ids.ndim) if a not in axes]
    moved = ids.transpose(rest + axes).reshape(-1, math.prod(ids.shape[a] for a in axes) if axes else 1)
    return tuple(tuple(int(x) for x in row) for row in moved)


# ---------------------------------------------------------------- walking the program

def trip_count(attrs: str) -> int | None:
    m = re.search(r'"known_trip_count":\{"n":"(\d+)"\}', attrs)
    return int(m.group(1)) if m else None


def _called(attrs: str, key: str) -> list[str]:
    m = re.search(key + r"=\{([^}]*)\}", attrs)
    if m:
        return re.findall(r"%?([\w.\-]+)", m.group(1))
    m = re.search(key + r"=%?([\w.\-]+)", attrs)
    return [m.group(1)] if m else []


def dot_flops(instr: Instr, shapes: dict[str, str]) -> float:
    """2 x output elements x contracted elements (the lhs's contracting dimensions)."""
    out = math.prod(_first_dims(instr.shape))
    lhs = _first_dims(shapes.get(instr.operands[0], "")) if instr.operands else []
    m = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", instr.attrs)
    contracted = math.prod(lhs[d] for d in _dims(m.group(1))) if (m and lhs) else 1
    return 2.0 * out * contracted


def conv_flops(instr: Instr, shapes: dict[str, str]) -> float:
    """2 x output elements x (kernel elements / output features): each output element takes
    one multiply-add per kernel input feature and spatial tap."""
    out = math.prod(_first_dims(instr.shape))
    kernel = _first_dims(shapes.get(instr.operands[1], "")) if len(instr.operands) > 1 else []
    m = re.search(r"dim_labels=[^_]*_([^-]*)->", instr.attrs)
    if not kernel or not m or "o" not in m.group(1):
        return 0.0
    o = kernel[m.group(1).index("o")]
    return 2.0 * out * math.prod(kernel) / max(o, 1)


def _first_dims(shape: str) -> list[int]:
    m = _ARRAY.search(shape)
    return _dims(m.group(2)) if m else []


class _Walker:
    def __init__(self, computations: dict[str, list[Instr]], num_devices: int):
        self.comps = computations
        self.num_devices = num_devices
        self.unknown_trips = 0

    @functools.lru_cache(maxsize=None)
    def fused_flops(self, name: str) -> float:
        """FLOPs inside a fused (or reducer) computation, nested fusions included."""
        comp = self.comps.get(name, [])
        shapes = {i.name: i.shape for i in comp}
        total = 0.0
        for instr in comp:
            if instr.opcode == "dot":
                total += dot_flops(instr, shapes)
            elif instr.opcode == "convolution":
                total += conv_flops(instr, shapes)
            elif instr.opcode == "fusion":
                total += sum(self.fused_flops(c) for c in _called(instr.attrs, "calls"))
        return total

    @functools.lru_cache(maxsize=None)
    def fusion_bytes(self, name: str, operand_bytes: tuple[int, ...], out_bytes: int) -> float:
        """Memory traffic of a fusion: each parameter read whole, unless it only feeds
        dynamic-slices (then only the slices are read); the output written whole, unless the
        root is an in-place dynamic-update-slice of a parameter (then only the update is
        written, and that parameter is not read). Converts and bitcasts between a parameter
        and its slice or update are looked through: the CPU compiler wraps bfloat16 updates of
        a whole stacked buffer in float32 converts that GPU and TPU compilers do not emit."""
        comp = self.comps.get(name, [])
        if not comp:
            return float(sum(operand_bytes) + out_bytes)
        if _only_views(comp):
            return 0.0
        by_name = {i.name: i for i in comp}
        users: dict[str, list[Instr]] = {}
        for i in comp:
            for o in i.operands:
                users.setdefault(o, []).append(i)
        params = {i.name: int(i.args) for i in comp if i.opcode == "parameter"}
        in_place, written = _in_place_update(comp[-1], by_name, params)
        read = 0.0
        for pname, index in params.items():
            if pname == in_place or index >= len(operand_bytes):
                continue
            sliced = _slice_reads(pname, users, comp[-1].name, by_name[pname].shape)
            read += operand_bytes[index] if sliced is None else sliced
        return read + (out_bytes if written is None else written)

    def op_bytes(self, instr: Instr, shapes: dict[str, str]) -> float:
        out = array_bytes(instr.shape)
        operands = [array_bytes(shapes.get(o, "")) for o in instr.operands]
        if instr.opcode in ("convert", "bitcast-convert"):
            return 0.0      # a view the accelerator compilers fuse into its consumer
        if instr.opcode == "dynamic-slice":
            return 2.0 * out
        if instr.opcode == "dynamic-update-slice":
            return 2.0 * (operands[1] if len(operands) > 1 else out)
        if instr.opcode == "fusion":
            called = _called(instr.attrs, "calls")
            if called:
                return self.fusion_bytes(called[0], tuple(operands), out)
        return float(out + sum(operands))

    @functools.lru_cache(maxsize=None)
    def walk(self, name: str) -> tuple[tuple[OpCost, ...], tuple[Collective, ...]]:
        """Ops and collectives of one non-fused computation, loops unrolled by trip count."""
        comp = self.comps.get(name, [])
        shapes = {i.name: i.shape for i in comp}
        ops: list[OpCost] = []
        colls: list[Collective] = []
        for instr in comp:
            op = instr.opcode
            if op == "while":
                n = trip_count(instr.attrs)
                if n is None:
                    self.unknown_trips += 1
                    n = 1
                for body in _called(instr.attrs, "body"):
                    self._add(ops, colls, body, n)
            elif op == "conditional":
                branches = _called(instr.attrs, "branch_computations") or (
                    _called(instr.attrs, "true_computation") + _called(instr.attrs, "false_computation"))
                if branches:   # the costliest branch: a bound on what one execution takes
                    self._add(ops, colls, max(branches, key=lambda b: sum(o.flops * o.count
                                                                          for o in self.walk(b)[0])), 1)
            elif op in ("call", "async-start"):
                for callee in _called(instr.attrs, "to_apply") + _called(instr.attrs, "calls"):
                    self._add(ops, colls, callee, 1)
            elif _collective_kind(op):
                colls.append(self._collective(instr, shapes))
            elif op.endswith("-done") or op in _FREE:
                continue
            else:
                flops = 0.0
                if op == "dot":
                    flops = dot_flops(instr, shapes)
                elif op == "convolution":
                    flops = conv_flops(instr, shapes)
                elif op == "fusion":
                    flops = sum(self.fused_flops(c) for c in _called(instr.attrs, "calls"))
                ops.append(OpCost(instr.name, op, flops, self.op_bytes(instr, shapes), 1))
        return tuple(ops), tuple(colls)

    def _add(self, ops: list, colls: list, callee: str, times: int) -> None:
        sub_ops, sub_colls = self.walk(callee)
        ops.extend(dataclasses.replace(o, count=o.count * times) for o in sub_ops)
        colls.extend(dataclasses.replace(c, count=c.count * times) for c in sub_colls)

    def _collective(self, instr: Instr, shapes: dict[str, str]) -> Collective:
        kind = _collective_kind(instr.opcode)
        operand = sum(array_bytes(shapes.get(o, "")) for o in instr.operands)
        output = array_bytes(instr.shape)
        if instr.opcode.endswith("-start"):   # the async form's result holds (operands, outputs)
            output = max(output - operand, 0)
        return Collective(instr.name, kind, operand, output,
                          replica_groups(instr.attrs, self.num_devices), 1)


_VIEWS = ("convert", "bitcast", "copy", "reshape")


def _only_views(comp: list[Instr]) -> bool:
    """A fused computation that converts, slices or reshapes one array (scalar index arithmetic
    aside), which the CPU compiler materialises around float32-normalised bfloat16 ops."""
    for i in comp:
        if i.opcode in ("parameter", "constant", "convert", "bitcast", "reshape", "dynamic-slice", "slice"):
            continue
        if _first_dims(i.shape) == [] and "[" in i.shape:     # scalar arithmetic on slice indices
            continue
        return False
    return True


def _in_place_update(root: Instr, by_name: dict[str, Instr], params: dict[str, int]) -> tuple[str | None, float | None]:
    """(parameter updated in place, bytes written) when the fusion's root is a
    dynamic-update-slice of a parameter (through views); (None, None) otherwise."""
    node = root
    while node.opcode in _VIEWS and node.operands and node.operands[0] in by_name:
        node = by_name[node.operands[0]]
    if node.opcode != "dynamic-update-slice" or len(node.operands) < 2:
        return None, None
    base = by_name.get(node.operands[0])
    while base is not None and base.opcode in _VIEWS and base.operands:
        base = by_name.get(base.operands[0])
    if base is None or base.name not in params:
        return None, None
    update = by_name.get(node.operands[1])
    elements = math.prod(_first_dims(update.shape)) if update is not None else 0
    return base.name, float(elements * _itemsize(root.shape))


def _slice_reads(param: str, users: dict[str, list[Instr]], root: str, shape: str) -> float | None:
    """Bytes read from a fusion parameter that only feeds dynamic-slices (through views), at the
    parameter's element size; None when any use reads it whole."""
    total, frontier = 0.0, [param]
    while frontier:
        node = frontier.pop()
        uses = users.get(node, [])
        if node == root or (not uses and node != param):
            return None
        for use in uses:
            if use.opcode in _VIEWS:
                frontier.append(use.name)
            elif use.opcode == "dynamic-slice" and use.operands[0] == node:
                total += math.prod(_first_dims(use.shape)) * _itemsize(shape)
            else:
                return None
    return total


def _itemsize(shape: str) -> int:
    m = _ARRAY.search(shape)
    return DTYPE_BYTES.get(m.group(1), 1) if m else 0


def _collective_kind(opcode: str) -> str | None:
    base = opcode[:-len("-start")] if opcode.endswith("-start") else opcode
    return base if base in COLLECTIVES else None


def analyse(hlo_text: str, num_devices: int) -> Program:
    """The per-device cost of one run of the program in ``hlo_text`` (``compiled.as_text()``)."""
    computations, entry = parse_module(hlo_text)
    walker = _Walker(computations, num_devices)
    ops, colls = walker.walk(entry)
    return Program(list(ops), list(colls), walker.unknown_trips)
