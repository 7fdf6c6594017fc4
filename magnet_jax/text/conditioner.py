"""The text conditioner: tokenize -> encode -> output_proj -> multiply by the mask.

Split in two because the two halves live in different places:

- `TextConditioner` (an NNX module, trained with the LM): `output_proj`, a Linear
  (text width -> LM dim, with bias), then multiplication by the mask so padded and null
  positions are exact zeros. It maps 1:1 to audiocraft's
  `condition_provider.conditioners.description.output_proj.{weight,bias}`
  (`load_output_proj` converts them). It runs inside the LM's jitted step.
- `Conditioner` (host side, for sampling and on-the-fly training): a frozen `TextEncoder`
  plus a `TextConditioner`. `encode_with_null` builds the CFG pair the way the reference
  does: conditional and null texts in ONE list, padded together to the longest, so both
  halves have the same S (padding length changes MAGNeT's cross-attention, so it matters).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from magnet_jax import xp_cfg
from magnet_jax.text.dropout import RandomSource, cfg_dropout
from magnet_jax.text.encoder import TextEncoder, check_descriptions, collate_hidden
from magnet_jax.text.layers import param, uniform

OUTPUT_PROJ_PREFIX = "condition_provider.conditioners.description.output_proj"


class Condition(NamedTuple):
    """A batch of text conditions: cond [B, S, D] (already times the mask) and mask [B, S]."""
    cond: jax.Array
    mask: jax.Array


class OutputProjection(nnx.Module):
    """Linear(text_width -> dim) with bias; kernel [in, out] = torch weight transposed.

    Initialised like torch's nn.Linear (uniform +-1/sqrt(in) for weight and bias), which is
    what a from-scratch audiocraft run starts from.
    """

    def __init__(self, in_features: int, out_features: int, rngs: nnx.Rngs):
        bound = 1.0 / math.sqrt(in_features)
        self.kernel = param(uniform(rngs, (in_features, out_features), bound), ("cond_embed", "embed"))
        self.bias = param(uniform(rngs, (out_features,), bound), ("embed",))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.kernel[...] + self.bias[...]


class TextConditioner(nnx.Module):
    """Encoder states [B, S, text_width] and mask [B, S] -> cond [B, S, dim], zero where masked."""

    def __init__(self, text_width: int, dim: int, rngs: nnx.Rngs):
        self.output_proj = OutputProjection(text_width, dim, rngs)

    def __call__(self, hidden: jax.Array, mask: jax.Array) -> jax.Array:
        cond = self.output_proj(hidden.astype(self.output_proj.kernel[...].dtype))
        return cond * mask[..., None].astype(cond.dtype)


def output_proj_from_torch(state_dict: Mapping[str, np.ndarray],
                           prefix: str = OUTPUT_PROJ_PREFIX) -> dict[str, np.ndarray]:
    """audiocraft's `{prefix}.weight` [out, in] and `{prefix}.bias` [out] -> our kernel / bias."""
    keys = (f"{prefix}.weight", f"{prefix}.bias")
    missing = [k for k in keys if k not in state_dict]
    if missing:
        raise KeyError(f"checkpoint lacks {missing}; is this a text-conditioned audiocraft LM? "
                       f"(keys under a different attribute need prefix=...)")
    weight, bias = (np.asarray(state_dict[k], dtype=np.float32) for k in keys)
    if weight.ndim != 2 or bias.shape != (weight.shape[0],):
        raise ValueError(f"output_proj weight {weight.shape} / bias {bias.shape} are not a Linear's")
    return {"kernel": weight.T, "bias": bias}


def load_output_proj(conditioner: TextConditioner, state_dict: Mapping[str, np.ndarray],
                     prefix: str = OUTPUT_PROJ_PREFIX) -> set[str]:
    """Copy audiocraft's output_proj into `conditioner`; returns the consumed keys."""
    params = output_proj_from_torch(state_dict, prefix)
    proj = conditioner.output_proj
    for name, value in params.items():
        target = getattr(proj, name)
        if tuple(target[...].shape) != value.shape:
            raise ValueError(f"{prefix}: checkpoint {name} {value.shape} does not fit this "
                             f"conditioner's {tuple(target[...].shape)} (text width, LM dim)")
        target.set_value(jnp.asarray(value, target[...].dtype))
    return {f"{prefix}.weight", f"{prefix}.bias"}


@dataclass(frozen=True)
class TextSettings:
    """The text-conditioning settings of an audiocraft experiment (its `xp.cfg`).

    encoder: the T5 hub name ("t5-base" for music MAGNeT, "t5-large" for audio MAGNeT).
    word_dropout: T5Conditioner's per-word drop probability (training).
    cfg_dropout: classifier_free_guidance.training_dropout (0.3 music, 0.1 audio).
    attribute_dropout: attribute_dropout.text.<attribute> (a second whole-batch drop).
    """
    attribute: str
    encoder: str
    word_dropout: float
    cfg_dropout: float
    attribute_dropout: float


def text_settings_from_xp(xp: Mapping[str, Any]) -> TextSettings:
    """Read the text conditioner's settings from a parsed `xp.cfg` (a nested dict), as audiocraft's
    ``builders.get_conditioner_provider`` reads ``conditioners`` and ``classifier_free_guidance``."""
    conditioners = dict(xp_cfg.setting(xp, "conditioners") or {})
    conditioners.pop("args", None)
    if len(conditioners) != 1:
        raise ValueError(f"expected exactly one text conditioner in xp.cfg, found "
                         f"{sorted(conditioners)}; only single-attribute text conditioning is ported")
    attribute, spec = next(iter(conditioners.items()))
    if spec.get("model") != "t5":
        raise ValueError(f"conditioner {attribute!r} is {spec.get('model')!r}; only 't5' is ported")
    t5 = spec["t5"]
    if t5.get("normalize_text"):
        raise ValueError("xp.cfg asks for normalize_text (spacy lemmatisation), which is not ported")
    if t5.get("finetune"):
        raise ValueError("xp.cfg fine-tunes T5 with the LM; the port keeps the encoder frozen")
    return TextSettings(
        attribute=str(attribute), encoder=str(t5["name"]),
        word_dropout=float(t5.get("word_dropout", 0.0)),
        cfg_dropout=float(xp_cfg.setting(xp, "classifier_free_guidance.training_dropout", 0.0)),
        attribute_dropout=float((xp_cfg.setting(xp, "attribute_dropout.text") or {}).get(attribute, 0.0)))


class Conditioner:
    """Descriptions -> conditions for the LM: frozen encoder (host + jit) and the trained projection."""

    def __init__(self, encoder: TextEncoder, conditioner: TextConditioner):
        width = conditioner.output_proj.kernel[...].shape[0]
        if width != encoder.width:
            raise ValueError(f"output_proj expects text width {width}, the encoder gives {encoder.width}")
        self.encoder = encoder
        self.conditioner = conditioner
        graphdef, _ = nnx.split(conditioner)
        self._project = jax.jit(lambda st, h, m: nnx.merge(graphdef, st)(h, m))

    @classmethod
    def create(cls, encoder: TextEncoder, dim: int, seed: int = 0) -> "Conditioner":
        """A conditioner with a freshly initialised output_proj (training from scratch)."""
        return cls(encoder, TextConditioner(encoder.width, dim, nnx.Rngs(seed)))

    @classmethod
    def from_audiocraft(cls, xp: Mapping[str, Any], condition_state: Mapping[str, np.ndarray],
                        dim: int, encoder_path: str | os.PathLike | None = None,
                        **kwargs) -> "Conditioner":
        """The conditioner of a released checkpoint: T5 named by xp.cfg (or `encoder_path`, a
        local copy of it) and output_proj from the checkpoint's `condition_provider.*` keys."""
        settings = text_settings_from_xp(xp)
        encoder = TextEncoder.t5(encoder_path or settings.encoder, **kwargs)
        conditioner = TextConditioner(encoder.width, dim, nnx.Rngs(0))
        prefix = f"condition_provider.conditioners.{settings.attribute}.output_proj"
        load_output_proj(conditioner, condition_state, prefix)
        return cls(encoder, conditioner)

    @classmethod
    def t5(cls, name_or_path: str | os.PathLike, dim: int, seed: int = 0, **kwargs) -> "Conditioner":
        return cls.create(TextEncoder.t5(name_or_path, **kwargs), dim, seed)

    @classmethod
    def minilm(cls, dim: int, path: str | os.PathLike | None = None, seed: int = 0,
               **kwargs) -> "Conditioner":
        return cls.create(TextEncoder.minilm(path, **kwargs), dim, seed)

    @property
    def dim(self) -> int:
        return self.conditioner.output_proj.kernel[...].shape[1]

    def states(self, descriptions: Sequence[str | None], *, cfg_dropout_p: float = 0.0,
               attribute_dropout_p: float = 0.0, word_dropout_p: float = 0.0,
               rng: RandomSource | None = None,
               pad_to: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Encoder states and mask for a batch, padded to its longest (host numpy).

        For training: CFG dropout (one draw for the batch), attribute dropout (another
        whole-batch draw), then word dropout, the order audiocraft's LM / T5Conditioner apply
        them (`TextSettings` holds a checkpoint's values). Feed the result to
        `TextConditioner` inside the train step, or use `project`.
        """
        if (cfg_dropout_p > 0 or attribute_dropout_p > 0 or word_dropout_p > 0) and rng is None:
            raise ValueError("dropout needs an rng (random.Random or numpy Generator)")
        texts = check_descriptions(descriptions)
        for p in (cfg_dropout_p, attribute_dropout_p):
            if p > 0:
                texts = cfg_dropout(texts, p, rng)
        rows = self.encoder.hidden_states(texts, word_dropout_p=word_dropout_p, rng=rng)
        return collate_hidden(rows, self.encoder.null_length, self.encoder.width, pad_to)

    def project(self, hidden: np.ndarray | jax.Array, mask: np.ndarray | jax.Array) -> Condition:
        """output_proj and mask (jitted) for collated states, e.g. precomputed ones."""
        mask = jnp.asarray(mask)
        return Condition(self._project(nnx.state(self.conditioner), jnp.asarray(hidden), mask), mask)

    def encode(self, descriptions: Sequence[str | None]) -> Condition:
        """Conditions for a batch of descriptions (None or "" is the null condition)."""
        return self.project(*self.states(descriptions))

    def encode_with_null(self, descriptions: Sequence[str | None]) -> tuple[jax.Array, jax.Array]:
        """(cond, null), each [B, S, D], tokenized together as audiocraft's CFG does.

        The null half is the empty text with its mask zeroed, so it is exactly 0; its mask
        is all zeros and the conditional mask is `encode(...)`'s, cut to the same S.
        """
        descriptions = check_descriptions(descriptions)
        both = self.encode(descriptions + [None] * len(descriptions)).cond
        return both[:len(descriptions)], both[len(descriptions):]
