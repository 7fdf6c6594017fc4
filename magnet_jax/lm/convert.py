"""Load audiocraft LM checkpoints (``state_dict.bin``) into ``MagnetLM`` or ``MusicGenLM``.

A released folder's ``state_dict.bin`` is a torch pickle ``{'best_state': {...}, 'xp.cfg': YAML,
'version', 'exported'}`` with fp16 weights. ``xp.cfg`` is the authority on every hyperparameter,
so the model config is read from it, never assumed. Every LM key must be consumed and every
parameter filled: the classic failure of ports is a Q/K/V projection silently left at random
init. ``condition_provider.*`` keys belong to the text conditioner and are handed back to the
caller untouched.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import numpy as np
from flax import nnx

from magnet_jax import torch_pickle, xp_cfg
from magnet_jax.lm.config import POSITIONAL_EMBEDDINGS, LMConfig, TokenLMConfig
from magnet_jax.lm.musicgen import MusicGenConfig, MusicGenLM
from magnet_jax.modules.embedding import rope_frequencies
from magnet_jax.lm.model import CodebookLM, MagnetLM

CONDITION_PREFIX = "condition_provider."


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model: names what is missing, unexpected or mis-shaped."""


# -- reading files --------------------------------------------------------------------------
def read_torch_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """An audiocraft export or a state dict, read with weights_only (no code runs from the file)."""
    try:
        return dict(torch_pickle.load_mapping(path, "an audiocraft checkpoint (state_dict.bin)"))
    except torch_pickle.TorchFileError as err:
        raise CheckpointError(str(err)) from err


def split_checkpoint(pkg: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict | None]:
    """(state dict as float32 numpy, parsed xp.cfg or None) from an export or a bare state dict."""
    if "best_state" in pkg:
        state, xp = pkg["best_state"], pkg.get("xp.cfg")
        if isinstance(state, Mapping) and "model" in state and not any(k.startswith("emb.") for k in state):
            state = state["model"]  # a solver checkpoint rather than an export
    else:
        state, xp = pkg, None
    arrays = {k: v.float().numpy() if hasattr(v, "float") else np.asarray(v, np.float32)
              for k, v in state.items()}
    return arrays, parse_xp_cfg(xp) if xp is not None else None


def xp_cfg_of(path: str | os.PathLike) -> dict:
    """The parsed xp.cfg of a checkpoint file."""
    _, xp = split_checkpoint(read_torch_checkpoint(path))
    if xp is None:
        raise CheckpointError(f"{path} has no 'xp.cfg'")
    return xp


def parse_xp_cfg(xp: str | Mapping) -> dict:
    try:
        return xp_cfg.parse(xp)
    except xp_cfg.XpCfgError as err:
        raise CheckpointError(str(err)) from err


# -- config ----------------------------------------------------------------------------------
def _get(tree: Mapping, dotted: str, default: Any = None) -> Any:
    try:
        return xp_cfg.setting(tree, dotted, default)
    except xp_cfg.XpCfgError as err:
        raise CheckpointError(str(err)) from err


# Options of audiocraft's transformer that the released checkpoints never use and we do not
# implement: (xp.cfg key, audiocraft's value when the key is absent, the value we support). The
# absent-key values are the constructor defaults of LMModel (lm.py: norm_first False, bias_proj
# True), StreamingTransformer(Layer) (transformer.py: bias_ff / bias_attn True, activation relu
# through nn.TransformerEncoderLayer) and ConditionFuser: a key missing from a hand-written xp.cfg
# means what audiocraft would build, not what we would like.
_SUPPORTED = (
    ("transformer_lm.norm_first", False, True), ("transformer_lm.bias_ff", True, False),
    ("transformer_lm.bias_attn", True, False), ("transformer_lm.bias_proj", True, False),
    ("transformer_lm.layer_scale", None, None), ("transformer_lm.xpos", False, False),
    ("transformer_lm.qk_layer_norm", False, False), ("transformer_lm.qk_layer_norm_cross", False, False),
    ("transformer_lm.kv_repeat", 1, 1), ("transformer_lm.norm", "layer_norm", "layer_norm"),
    ("transformer_lm.activation", "relu", "gelu"), ("fuser.cross_attention_pos_emb", False, False),
)
MAGNET_LM = "transformer_lm_magnet"   # xp.cfg lm_model of MAGNeT (builders.get_lm_model)
MUSICGEN_LM = "transformer_lm"        # ... of MusicGen (and AudioGen: the same LMModel)
# per family: its lm_model, its codebook pattern, whether its attention is causal
_FAMILIES = {"magnet": (MAGNET_LM, "parallel", False), "musicgen": (MUSICGEN_LM, "delay", True)}


def model_kind(xp: Mapping) -> str:
    """'magnet' or 'musicgen', from xp.cfg's lm_model (builders.get_lm_model picks the class by it)."""
    lm_model = _get(xp, "lm_model", MAGNET_LM)
    for kind, (name, _, _) in _FAMILIES.items():
        if lm_model == name:
            return kind
    raise CheckpointError(f"xp.cfg lm_model={lm_model!r}: neither MAGNeT ({MAGNET_LM!r}) nor MusicGen "
                          f"({MUSICGEN_LM!r}); this is not a checkpoint magnet-jax loads")


def _unsupported(xp: Mapping, kind: str) -> list[str]:
    """Every xp.cfg choice this implementation would compute differently from audiocraft."""
    lm_model, modeling_want, causal_want = _FAMILIES[kind]
    problems = [f"{key}={_get(xp, key, default)!r} (supported: {want!r})"
                for key, default, want in _SUPPORTED if _get(xp, key, default) != want]
    lm_model_here = _get(xp, "lm_model", MAGNET_LM)
    if lm_model_here != lm_model:
        problems.append(f"lm_model={lm_model_here!r}: a {'MusicGen / AudioGen (autoregressive)' if lm_model_here == MUSICGEN_LM else 'different'} "
                        f"LM; this loader reads {lm_model!r} checkpoints")
    causal = bool(_get(xp, "transformer_lm.causal", False))
    if causal != causal_want:
        problems.append(f"transformer_lm.causal={causal} (supported: {causal_want})")
    modeling = _get(xp, "codebooks_pattern.modeling", "parallel")
    if modeling != modeling_want:
        problems.append(f"codebooks_pattern.modeling={modeling!r} (supported: {modeling_want!r})")
    if kind == "musicgen":
        if _get(xp, "codebooks_pattern.delay.flatten_first", 0) or _get(xp, "codebooks_pattern.delay.empty_initial", 0):
            problems.append("codebooks_pattern.delay.flatten_first / empty_initial (only 0 is supported)")
        if _get(xp, "transformer_lm.past_context") is not None:
            problems.append(f"transformer_lm.past_context={_get(xp, 'transformer_lm.past_context')!r} (only unlimited)")
    positional = _get(xp, "transformer_lm.positional_embedding", "sin")
    if positional not in POSITIONAL_EMBEDDINGS:
        problems.append(f"transformer_lm.positional_embedding={positional!r} (supported: {POSITIONAL_EMBEDDINGS})")
    fuse_other = [m for m in ("sum", "prepend", "input_interpolate") if _get(xp, f"fuser.{m}")]
    if fuse_other:
        melody = " (musicgen-melody's chroma conditioner is not ported)" if "self_wav" in str(_get(xp, "fuser.prepend")) else ""
        problems.append(f"fuser methods {fuse_other}{melody} (only cross-attention text conditioning is supported)")
    return problems


def _span_len(xp: Mapping) -> int:
    """masking.span_len, as loaders.load_lm_model_magnet sets it on the model (the composed
    transformer_lm.span_len is a -1 placeholder); a hand-written config may give only the latter."""
    span_len = _get(xp, "masking.span_len", _get(xp, "transformer_lm.span_len", 3))
    if span_len is None or int(span_len) < 1:
        raise CheckpointError(f"xp.cfg gives no usable span length (masking.span_len={_get(xp, 'masking.span_len')!r}, "
                              f"transformer_lm.span_len={_get(xp, 'transformer_lm.span_len')!r}): set masking.span_len")
    return int(span_len)


def _token_lm_fields(xp: Mapping, kind: str, frame_rate: int | None) -> dict[str, Any]:
    """The settings every codebook LM shares, derived as audiocraft's builders derive them (see
    ``lm_config_from_xp``); refuses by name what we do not implement."""
    problems = _unsupported(xp, kind)
    if problems:
        raise CheckpointError("xp.cfg uses options this implementation does not support: " + "; ".join(problems))
    lm = _get(xp, "transformer_lm", {})
    missing = [k for k in ("dim", "num_heads", "num_layers", "n_q", "card") if k not in lm]
    if missing:
        raise CheckpointError(f"xp.cfg lacks transformer_lm.{missing}: not an audiocraft LM config")
    fuser_cross = _get(xp, "fuser.cross", []) or []
    return dict(
        dim=int(lm["dim"]), num_heads=int(lm["num_heads"]), num_layers=int(lm["num_layers"]),
        ffn_dim=int(lm.get("hidden_scale", 4) * lm["dim"]), n_q=int(lm["n_q"]), card=int(lm["card"]),
        frame_rate=int(frame_rate or lm.get("compression_model_framerate", 50)),
        segment_duration=float(_get(xp, "dataset.segment_duration", 10)),
        cross_attention=bool(lm.get("cross_attention", False)) or len(fuser_cross) > 0,
        positional_embedding=str(lm.get("positional_embedding", "sin")),
        max_period=float(lm.get("max_period", 10_000.0)),
        positional_scale=float(lm.get("positional_scale", 1.0)))


def lm_config_from_xp(xp: Mapping, frame_rate: int | None = None, **overrides) -> LMConfig:
    """LMConfig from a MAGNeT checkpoint's xp.cfg, each setting derived as audiocraft 1.3.0 derives
    it when it loads the checkpoint (``MAGNeT.get_pretrained`` -> ``loaders.load_lm_model_magnet`` ->
    ``builders.get_lm_model`` -> ``MagnetLMModel`` / ``LMModel`` / ``StreamingTransformer``):

    - dim, num_heads, num_layers, n_q, card: ``transformer_lm.*`` (builders.py:90, the kwargs);
    - ffn_dim = int(hidden_scale * dim) (lm.py:168; hidden_scale defaults to 4);
    - cross_attention: ``transformer_lm.cross_attention`` OR any condition in ``fuser.cross``
      (builders.py:99 "enforce cross-att programmatically"; the composed MAGNeT configs say false
      and list ``description`` there);
    - segment_duration: ``dataset.segment_duration`` (loaders.py:134, replacing the composed 0);
    - span_len: ``masking.span_len`` (loaders.py:135, replacing the composed -1);
    - frame_rate: the codec's frame rate (loaders.py:133; ``frame_rate`` here), else
      ``transformer_lm.compression_model_framerate``;
    - subcodes_context: ``transformer_lm.subcodes_context`` (MagnetLMModel default 5);
    - positional_embedding / max_period / positional_scale: ``transformer_lm.*`` (StreamingTransformer
      defaults sin / 10000 / 1.0); RoPE frequencies come from the checkpoint's buffers
      (``with_checkpoint_rope``), not from this config;
    - the codebook pattern: ``codebooks_pattern.modeling`` must be 'parallel' (builders.py:108;
      the delay / unroll keys the composed config also holds are not read by it);
    - text conditioning: ``conditioners`` and ``classifier_free_guidance`` (``text_settings_from_xp``);
    - options that do not change the math of an exported model in float32: dropout,
      attention_dropout, emb_lr, weight_init / depthwise_init / zero_bias_init, checkpointing,
      custom / memory_efficient (same attention, another kernel), attention_as_float32,
      two_step_cfg (MAGNeT refuses it at generation), past_context (causal models only).
    ``frame_rate`` overrides the codec frame rate.
    """
    model_kind(xp)
    fields = _token_lm_fields(xp, "magnet", frame_rate)
    lm = _get(xp, "transformer_lm", {})
    cfg = LMConfig(**fields, subcodes_context=int(lm.get("subcodes_context", 5)), span_len=_span_len(xp))
    return cfg.replace(**overrides) if overrides else cfg


def musicgen_config_from_xp(xp: Mapping, frame_rate: int | None = None, **overrides) -> MusicGenConfig:
    """MusicGenConfig from a MusicGen checkpoint's xp.cfg (``MusicGen.get_pretrained`` ->
    ``loaders.load_lm_model`` -> ``builders.get_lm_model`` -> ``LMModel``): the shared settings as
    for MAGNeT (``lm_config_from_xp``; segment_duration here is the trained length, audiocraft's
    ``max_duration``), and the delays of ``codebooks_pattern.delay.delays`` (builders.py:108,
    ``DelayedPatternProvider``; [0, 1, 2, 3], or [0, 0, 1, 1, 2, 2, 3, 3] for stereo), causal
    attention without a past_context limit. ``two_step_cfg`` is a generation setting. Melody's
    prepended chroma and text conditions are refused by name."""
    model_kind(xp)
    fields = _token_lm_fields(xp, "musicgen", frame_rate)
    delays = _get(xp, "codebooks_pattern.delay.delays", list(range(fields["n_q"])))
    cfg = MusicGenConfig(**fields, delays=tuple(int(d) for d in delays))
    return cfg.replace(**overrides) if overrides else cfg


def config_from_xp(xp: Mapping, frame_rate: int | None = None) -> TokenLMConfig:
    """The LM config of either family, by xp.cfg's lm_model."""
    return {"magnet": lm_config_from_xp, "musicgen": musicgen_config_from_xp}[model_kind(xp)](xp, frame_rate)


# -- weights ---------------------------------------------------------------------------------
def _expected_shapes(cfg: TokenLMConfig) -> dict[str, tuple[int, ...]]:
    D, F = cfg.dim, cfg.ffn_dim
    shapes = {f"emb.{k}.weight": (cfg.card + 1, D) for k in range(cfg.n_q)}
    shapes |= {f"linears.{k}.weight": (cfg.card, D) for k in range(cfg.n_q)}
    shapes |= {"out_norm.weight": (D,), "out_norm.bias": (D,)}
    attn = ["self_attn"] + (["cross_attention"] if cfg.cross_attention else [])
    norms = ["norm1", "norm2"] + (["norm_cross"] if cfg.cross_attention else [])
    for i in range(cfg.num_layers):
        p = f"transformer.layers.{i}."
        for a in attn:
            shapes[p + f"{a}.in_proj_weight"] = (3 * D, D)
            shapes[p + f"{a}.out_proj.weight"] = (D, D)
        shapes[p + "linear1.weight"] = (F, D)
        shapes[p + "linear2.weight"] = (D, F)
        for n in norms:
            shapes[p + f"{n}.weight"] = (D,)
            shapes[p + f"{n}.bias"] = (D,)
    shapes |= {k: (cfg.head_dim // 2,) for k in _rope_buffer_keys(cfg)}
    return shapes


def _rope_buffer_keys(cfg: TokenLMConfig) -> list[str]:
    """audiocraft saves RoPE's frequency buffer in the state dict: once on the transformer and
    once per self-attention (all the same tensor)."""
    if not cfg.uses_rope:
        return []
    return ["transformer.rope.frequencies"] + [f"transformer.layers.{i}.self_attn.rope.frequencies"
                                               for i in range(cfg.num_layers)]


def with_checkpoint_rope(state: Mapping[str, np.ndarray], cfg: TokenLMConfig) -> TokenLMConfig:
    """``cfg`` with RoPE's frequencies taken from the checkpoint's saved buffers.

    audiocraft registers them as a buffer, so ``load_state_dict`` replaces the computed ones with
    the file's: an fp16 export rounds them (0.5625 for 0.5623) and the reference rotates with the
    rounded values, so must we (recomputing them gave stage-0 logit differences of 1e-3). They
    must still agree with ``max_period`` to fp16 precision, or the checkpoint was trained with
    another max_period than its config says."""
    keys = _rope_buffer_keys(cfg)
    if not keys:
        return cfg
    saved = [np.asarray(state[k], np.float64) for k in keys]
    if any(not np.array_equal(saved[0], other) for other in saved[1:]):
        raise CheckpointError(f"the RoPE frequency buffers of {keys[0]} and the layers' self_attn.rope differ: "
                              f"the checkpoint is inconsistent")
    want = rope_frequencies(cfg.head_dim, cfg.max_period)
    if not np.allclose(saved[0], want, rtol=1e-3, atol=0):
        raise CheckpointError(f"RoPE frequencies in {keys[0]} (and {len(keys) - 1} more) do not match "
                              f"max_period={cfg.max_period} and head_dim={cfg.head_dim} of the config: "
                              f"set transformer_lm.max_period in xp.cfg (or pass cfg=) to the value it was trained with")
    return cfg.replace(rope_frequencies=tuple(float(np.float32(f)) for f in saved[0]))


def check_keys(state: Mapping[str, np.ndarray], cfg: TokenLMConfig) -> None:
    """Raise one CheckpointError listing every missing, unexpected and mis-shaped key."""
    want = _expected_shapes(cfg)
    lm_keys = {k for k in state if not k.startswith(CONDITION_PREFIX)}
    missing = sorted(set(want) - lm_keys)
    unexpected = sorted(lm_keys - set(want))
    misshaped = sorted(f"{k}: {tuple(state[k].shape)} (expected {want[k]})"
                       for k in lm_keys & set(want) if tuple(state[k].shape) != want[k])
    if missing or unexpected or misshaped:
        def show(xs):
            return ", ".join(xs[:8]) + (f" ... (+{len(xs) - 8} more)" if len(xs) > 8 else "")
        parts = [f"{n} {label}: {show(xs)}" for label, xs, n in
                 (("missing", missing, len(missing)), ("unexpected", unexpected, len(unexpected)),
                  ("mis-shaped", misshaped, len(misshaped))) if xs]
        raise CheckpointError(
            f"checkpoint does not match the LM config (dim={cfg.dim}, heads={cfg.num_heads}, "
            f"layers={cfg.num_layers}, n_q={cfg.n_q}, card={cfg.card}): " + "; ".join(parts))


def to_params(state: Mapping[str, np.ndarray], cfg: TokenLMConfig) -> dict:
    """audiocraft key layout -> our nested parameter dict (pure numpy, float32)."""
    check_keys(state, cfg)
    D, H, Dh, L = cfg.dim, cfg.num_heads, cfg.head_dim, cfg.num_layers

    def layers(fmt: str, fn=lambda w: w) -> np.ndarray:
        return np.stack([fn(state[fmt.format(i)]) for i in range(L)])

    p = "transformer.layers.{}."
    tr = {
        "self_attn": {
            "in_proj": layers(p + "self_attn.in_proj_weight", lambda w: w.T.reshape(D, 3, H, Dh)),
            "out_proj": layers(p + "self_attn.out_proj.weight", lambda w: w.T.reshape(H, Dh, D)),
        },
        "ffn": {"linear1": layers(p + "linear1.weight", np.transpose),
                "linear2": layers(p + "linear2.weight", np.transpose)},
        "norm1": {"weight": layers(p + "norm1.weight"), "bias": layers(p + "norm1.bias")},
        "norm2": {"weight": layers(p + "norm2.weight"), "bias": layers(p + "norm2.bias")},
    }
    if cfg.cross_attention:
        tr["cross_attention"] = {
            "q_proj": layers(p + "cross_attention.in_proj_weight", lambda w: w[:D].T.reshape(D, H, Dh)),
            "kv_proj": layers(p + "cross_attention.in_proj_weight", lambda w: w[D:].T.reshape(D, 2, H, Dh)),
            "out_proj": layers(p + "cross_attention.out_proj.weight", lambda w: w.T.reshape(H, Dh, D)),
        }
        tr["norm_cross"] = {"weight": layers(p + "norm_cross.weight"), "bias": layers(p + "norm_cross.bias")}
    return {
        "emb": np.stack([state[f"emb.{k}.weight"] for k in range(cfg.n_q)]),
        "linears": np.stack([state[f"linears.{k}.weight"].T for k in range(cfg.n_q)]),
        "out_norm": {"weight": state["out_norm.weight"], "bias": state["out_norm.bias"]},
        "transformer": {"layers": tr},
    }


def lm_from_state(state: Mapping[str, np.ndarray], cfg: TokenLMConfig) -> tuple[TokenLMConfig, CodebookLM]:
    """(config completed from the checkpoint, model) for an audiocraft LM state dict."""
    check_keys(state, cfg)
    cfg = with_checkpoint_rope(state, cfg)
    return cfg, build_lm(cfg, to_params(state, cfg))


def model_class(cfg: TokenLMConfig) -> type[CodebookLM]:
    """MagnetLM for an LMConfig, MusicGenLM for a MusicGenConfig."""
    return MusicGenLM if isinstance(cfg, MusicGenConfig) else MagnetLM


def build_lm(cfg: TokenLMConfig, params: Mapping) -> CodebookLM:
    """The config's model holding ``params`` exactly (no random init is ever materialised)."""
    abstract = nnx.eval_shape(lambda: model_class(cfg)(cfg, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    flat_want = dict(nnx.to_flat_state(state))
    flat_have = dict(jax.tree_util.tree_flatten_with_path(params)[0])
    have = {tuple(k.key for k in path): v for path, v in flat_have.items()}
    if set(have) != set(flat_want):
        raise CheckpointError(f"parameter tree mismatch: missing {sorted(set(flat_want) - set(have))}, "
                              f"unexpected {sorted(set(have) - set(flat_want))}")
    for key, var in flat_want.items():
        if tuple(have[key].shape) != tuple(var.shape):
            raise CheckpointError(f"parameter {'/'.join(map(str, key))} has shape {have[key].shape}, "
                                  f"expected {var.shape}")
    nnx.replace_by_pure_dict(state, jax.tree.map(lambda a: jax.numpy.asarray(a, jax.numpy.float32), params))
    return nnx.merge(graphdef, state)


def load_audiocraft_lm(path: str | os.PathLike, frame_rate: int | None = None,
                       cfg: TokenLMConfig | None = None) -> tuple[TokenLMConfig, CodebookLM, dict[str, np.ndarray]]:
    """Read ``state_dict.bin`` -> (config, model, condition_provider keys for the conditioner).

    A bare state dict has no xp.cfg: pass ``cfg`` then.
    """
    state, xp = split_checkpoint(read_torch_checkpoint(path))
    if cfg is None:
        if xp is None:
            raise CheckpointError(f"{path} is a bare state dict without 'xp.cfg', so its shape is unknown: give "
                                  f"the LM config (cfg=LMConfig(...) in Python, --config configs/NAME.py for "
                                  f"convert-lm)")
        cfg = config_from_xp(xp, frame_rate=frame_rate)
    condition = {k: v for k, v in state.items() if k.startswith(CONDITION_PREFIX)}
    cfg, model = lm_from_state(state, cfg)
    return cfg, model, condition
