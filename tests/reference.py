"""Import the reference (audiocraft) for parity tests, with stub modules for what cannot load here.

torchaudio on PyPI is a CUDA build that fails to load on these machines, and spacy / laion_clap
are not needed by anything we compare against. We install stub modules for them before
audiocraft is imported. A stub attribute is a class that raises when *used*, so an accidental
dependency on one shows up as a clear error instead of silently wrong numbers.

With MAGNET_JAX_REQUIRE_REFERENCE=1 (set by .ci/run) a parity test that cannot import the
reference FAILS instead of skipping: a skipped parity test proves nothing.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import os
import sys
import types

import pytest

STUBBED = ("torchaudio", "torchaudio.transforms", "torchaudio.functional", "spacy", "laion_clap")


def _stub_attribute(module: str, name: str) -> type:
    def _raise(*args, **kwargs):
        raise RuntimeError(f"{module}.{name} is a test stub: the reference path used it, "
                           f"which this comparison should not need")
    return type(name, (), {"__init__": _raise, "__call__": _raise})


def install_stubs() -> None:
    """Put stub modules for torchaudio, spacy and laion_clap into sys.modules (idempotent)."""
    for name in STUBBED:
        if name in sys.modules:
            continue
        mod = types.ModuleType(name)
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
        mod.__getattr__ = (lambda n, _m=name: _stub_attribute(_m, n)
                           if not n.startswith("__") else (_ for _ in ()).throw(AttributeError(n)))
        sys.modules[name] = mod
    sys.modules["torchaudio"].transforms = sys.modules["torchaudio.transforms"]
    sys.modules["torchaudio"].functional = sys.modules["torchaudio.functional"]


def reference_required() -> bool:
    return os.environ.get("MAGNET_JAX_REQUIRE_REFERENCE", "") not in ("", "0")


def require(module: str):
    """Import a reference module, or fail (CI) / skip (laptop) with the reason."""
    install_stubs()
    imported = require_import(lambda: importlib.import_module(module), f"reference module {module}",
                              "bash scripts/install_reference.sh")
    if module.startswith("audiocraft"):
        attention_as_math()
    return imported


def _memory_efficient_attention(q, k, v, attn_bias=None, p: float = 0.0, scale=None, op=None):
    """``xformers.ops.memory_efficient_attention``'s math in plain torch, [B, T, H, D] layout:
    softmax(q k^T / sqrt(D) + bias) v, with xformers' LowerTriangularMask as a causal bias."""
    import torch
    from xformers.ops import LowerTriangularMask
    assert p == 0.0, "the reference runs in eval mode"
    q, k, v = (x.transpose(1, 2) for x in (q, k, v))                  # [B, H, T, D]
    w = torch.einsum("bhtd,bhsd->bhts", q, k) * (q.shape[-1] ** -0.5 if scale is None else scale)
    if isinstance(attn_bias, LowerTriangularMask):
        T, S = w.shape[-2:]
        w = w.masked_fill(torch.ones(T, S, dtype=torch.bool).triu(S - T + 1), float("-inf"))
    elif attn_bias is not None:
        w = w + attn_bias
    return torch.einsum("bhts,bhsd->bhtd", torch.softmax(w, dim=-1), v).transpose(1, 2)


def attention_as_math() -> None:
    """Run audiocraft's ``memory_efficient=True`` attention as plain math (idempotent).

    Released MAGNeT and MusicGen configs say ``memory_efficient: true``, and
    ``loaders.load_lm_model_magnet`` switches to the xformers backend, whose CUDA kernels do not
    exist on these machines (and the torch backend replaces MAGNeT's band mask with a causal one).
    For the reference run only, xformers' kernel is replaced by the same computation, so the
    reference loads and runs the configuration a released file holds, unchanged."""
    transformer = sys.modules.get("audiocraft.modules.transformer")
    if transformer is None or getattr(transformer.ops, "_magnet_jax_math", False):
        return
    ops = types.SimpleNamespace(**{n: getattr(transformer.ops, n) for n in dir(transformer.ops)
                                   if not n.startswith("__")})
    ops.memory_efficient_attention = _memory_efficient_attention
    ops._magnet_jax_math = True
    transformer.ops = ops


def require_import(import_fn, what: str, install: str):
    """``import_fn()``, or fail (CI) / skip (laptop) naming ``what`` and the ``install`` command."""
    try:
        return import_fn()
    except Exception as err:  # noqa: BLE001 - any import failure means no reference
        msg = f"{what} cannot be imported ({type(err).__name__}: {err}); install it with `{install}`"
        if reference_required():
            pytest.fail(msg)
        pytest.skip(msg)
