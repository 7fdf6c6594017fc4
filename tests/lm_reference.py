"""Build audiocraft MAGNeT LMs on random weights and export them as audiocraft does.

Used by the LM parity tests and the sampler benchmark. The exported xp.cfg is composed from
audiocraft's config tree (``xp_cfg``). The reference model here runs its custom attention
(``memory_efficient=False``), the path that applies the real restricted-context band mask
(its memory-efficient CPU path silently swaps in a causal mask). That path pads the band mask to
a multiple of 8 without slicing, so sequence lengths here are multiples of 24.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

import reference


@dataclasses.dataclass(frozen=True)
class RefLMShape:
    dim: int = 64
    num_heads: int = 4
    num_layers: int = 2
    card: int = 64
    n_q: int = 4
    frame_rate: int = 48
    segment_duration: int = 1
    subcodes_context: int = 5
    span_len: int = 3
    text_bins: int = 97      # LUT conditioner vocabulary (stands in for T5 in LM-only tests)
    text_dim: int = 24
    positional_embedding: str = "sin"   # audiocraft's options: sin, rope, sin_rope

    @property
    def T(self) -> int:
        return self.frame_rate * self.segment_duration


def xp_cfg(shape: RefLMShape) -> dict:
    """magnet-small-10secs' xp.cfg composed from audiocraft's config tree (``audiocraft_configs``),
    with the keys of this shape changed and a LUT text conditioner (what these LM-only tests
    build): every other key is what a released file holds."""
    from omegaconf import OmegaConf
    from audiocraft_configs import MAGNET_FAMILIES, family_xp
    lm = {"dim": shape.dim, "num_heads": shape.num_heads, "num_layers": shape.num_layers, "card": shape.card,
          "n_q": shape.n_q, "subcodes_context": shape.subcodes_context,
          "positional_embedding": shape.positional_embedding, "compression_model_framerate": shape.frame_rate}
    overrides = [f"transformer_lm.{k}={v}" for k, v in lm.items()]
    overrides += [f"masking.span_len={shape.span_len}", f"dataset.segment_duration={shape.segment_duration}",
                  "conditioners.description.model=lut",
                  f"+conditioners.description.lut={{n_bins:{shape.text_bins},dim:{shape.text_dim},tokenizer:noop}}"]
    return OmegaConf.to_container(family_xp(MAGNET_FAMILIES["facebook/magnet-small-10secs"], overrides))


def build_reference_lm(shape: RefLMShape, seed: int = 0):
    """audiocraft MagnetLMModel (float32, CPU, custom attention) with random weights."""
    torch = reference.require("torch")
    lm_magnet = reference.require("audiocraft.models.lm_magnet")
    patterns = reference.require("audiocraft.modules.codebooks_patterns")
    cond = reference.require("audiocraft.modules.conditioners")
    torch.manual_seed(seed)
    provider = cond.ConditioningProvider({"description": cond.LUTConditioner(
        n_bins=shape.text_bins, dim=shape.text_dim, output_dim=shape.dim, tokenizer="noop")})
    lm = lm_magnet.MagnetLMModel(
        pattern_provider=patterns.ParallelPatternProvider(n_q=shape.n_q),
        condition_provider=provider, fuser=cond.ConditionFuser({"cross": ["description"], "prepend": [], "sum": [], "input_interpolate": []}),
        n_q=shape.n_q, card=shape.card, dim=shape.dim, num_heads=shape.num_heads,
        num_layers=shape.num_layers, hidden_scale=4, norm="layer_norm", norm_first=True,
        bias_proj=False, bias_ff=False, bias_attn=False, causal=False, custom=True,
        memory_efficient=False, cross_attention=True, dropout=0.0, activation="gelu",
        weight_init="gaussian", depthwise_init="current", zero_bias_init=True,
        subcodes_context=shape.subcodes_context, compression_model_framerate=shape.frame_rate,
        segment_duration=shape.segment_duration, span_len=shape.span_len,
        positional_embedding=shape.positional_embedding, device="cpu", dtype=torch.float32)
    # Random LayerNorm affine parameters, so a converter that drops them cannot pass.
    with torch.no_grad():
        for name, p in lm.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return lm.eval()


def export_state_dict(lm, shape: RefLMShape, path: Path, half: bool = True) -> Path:
    """Save as audiocraft's export does: {'best_state', 'xp.cfg' (YAML), 'version', 'exported'}."""
    torch = reference.require("torch")
    omegaconf = reference.require("omegaconf")
    state = {k: (v.half() if half else v.clone()) for k, v in lm.state_dict().items()}
    pkg = {"best_state": state, "xp.cfg": omegaconf.OmegaConf.to_yaml(omegaconf.OmegaConf.create(xp_cfg(shape))),
           "version": "1.3.0", "exported": True}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(pkg, path)
    return path


def padded_condition(rng: np.random.Generator, lengths: list[int], dim: int):
    """A text-like condition [B, S, D]: random vectors, zero past each row's length (as the
    conditioner's mask multiply leaves it), plus the all-zero null condition for CFG."""
    S = max(lengths)
    cond = rng.normal(size=(len(lengths), S, dim)).astype(np.float32)
    mask = (np.arange(S)[None] < np.asarray(lengths)[:, None]).astype(np.float32)
    return cond * mask[..., None], mask


def reference_condition(lm, texts: list[str]):
    """The reference's condition tensors for texts + their null conditions, tokenized together.

    Returns (cfg_conditions dict for lm.forward, cond [B, S, D] numpy of the conditional half).
    """
    cond_mod = reference.require("audiocraft.modules.conditioners")
    attrs = [cond_mod.ConditioningAttributes(text={"description": t}) for t in texts]
    nulls = cond_mod.ClassifierFreeGuidanceDropout(p=1.0)(attrs)
    tensors = lm.condition_provider(lm.condition_provider.tokenize(attrs + nulls))
    emb, _mask = tensors["description"]
    emb = emb.detach().numpy()
    B = len(texts)
    assert np.all(emb[B:] == 0), "the null condition should be exactly zero"
    return attrs, tensors, emb[:B]
