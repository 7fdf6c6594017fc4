"""The token LMs' hyperparameters, as frozen dataclasses.

``TokenLMConfig`` holds what every codebook LM here shares (the transformer, the codebook tables,
positions, dtype): MAGNeT's ``LMConfig`` adds its restricted context and span length, MusicGen's
``MusicGenConfig`` (``magnet_jax.lm.musicgen``) its codebook delays. Field names follow
audiocraft's ``transformer_lm`` config (dim, num_heads, num_layers, n_q, card, subcodes_context,
span_len) so that a released checkpoint's ``xp.cfg`` maps onto them 1:1
(see ``magnet_jax.lm.convert.lm_config_from_xp``).
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from magnet_jax.modules.attention import ATTENTION_IMPLS

POSITIONAL_EMBEDDINGS = ("sin", "rope", "sin_rope")


@dataclasses.dataclass(frozen=True)
class TokenLMConfig:
    """K codebook embeddings (card + 1 rows), a pre-norm transformer, K heads of card logits."""
    dim: int = 1024                 # transformer width D
    num_heads: int = 16
    num_layers: int = 24
    ffn_dim: int = 4096             # hidden_scale * dim in audiocraft
    n_q: int = 4                    # codebooks (= stages)
    card: int = 2048                # codebook size; the extra token id is `card`
    frame_rate: int = 50            # codec frames per second
    segment_duration: float = 10.0  # seconds; sequence length T = frame_rate * segment_duration
    positional_embedding: str = "sin"  # "sin" (MAGNeT), "rope" or "sin_rope" (audiocraft's options)
    max_period: float = 10_000.0    # of the sinusoidal embedding and of RoPE's frequencies
    positional_scale: float = 1.0   # scales the sinusoid; for RoPE, blends the rotation with 1
    rope_frequencies: tuple[float, ...] | None = None  # RoPE's head_dim/2 pair frequencies as a
                                    # checkpoint saved them (fp16-rounded); None: from max_period
    sin_scale: float | None = None  # the sinusoid's own scale with "sin_rope" (None: positional_scale)
    norm_eps: float = 1e-5
    cross_attention: bool = True    # text conditioning by cross-attention
    compute_dtype: str = "float32"  # "float32" or "bfloat16"; params are always float32
    attention_impl: str = "einsum"  # full attention: "einsum" (ours, the parity path), or "xla" /
                                    # "cudnn" through jax.nn.dot_product_attention (cuDNN flash
                                    # attention on GPU); the stages > 0 band is always ours

    def __post_init__(self) -> None:
        if self.rope_frequencies is not None:   # JSON gives a list: keep the config hashable
            object.__setattr__(self, "rope_frequencies", tuple(float(f) for f in self.rope_frequencies))
        self._check_ranges()
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if (self.dim // 2) < 2:
            raise ValueError(f"dim {self.dim} is too small for the sinusoidal embedding")
        if self.positional_embedding not in POSITIONAL_EMBEDDINGS:
            raise ValueError(f"positional_embedding {self.positional_embedding!r}: use one of {POSITIONAL_EMBEDDINGS}")
        if self.uses_rope and self.head_dim % 2:
            raise ValueError(f"RoPE rotates pairs of channels: head_dim {self.head_dim} must be even")
        if self.rope_frequencies is not None and (not self.uses_rope or len(self.rope_frequencies) != self.head_dim // 2):
            raise ValueError(f"rope_frequencies has {len(self.rope_frequencies)} entries: it is for a RoPE model "
                             f"(positional_embedding {self.positional_embedding!r}) with head_dim/2 = "
                             f"{self.head_dim // 2} pairs")
        if self.sin_scale is not None and self.positional_embedding != "sin_rope":
            raise ValueError(f"sin_scale={self.sin_scale} sets the sinusoid's scale apart from RoPE's; with "
                             f"positional_embedding={self.positional_embedding!r} use positional_scale")
        if self.compute_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"compute_dtype {self.compute_dtype!r}: use 'float32' or 'bfloat16'")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention_impl {self.attention_impl!r}: use one of {ATTENTION_IMPLS}")
        if self.n_q < 1 or self.card < 2:
            raise ValueError(f"n_q={self.n_q}, card={self.card}: need n_q >= 1 and card >= 2")

    def _check_ranges(self) -> None:
        """Sizes >= 1 and finite scales, checked first: a 0 or -1 would otherwise surface as a
        ZeroDivisionError here or a shape error deep inside JAX."""
        from magnet_jax.config_loader import check_finite
        check_finite(self, "lm")
        for name in ("dim", "num_heads", "num_layers", "ffn_dim", "n_q", "frame_rate"):
            if getattr(self, name) < 1:
                raise ValueError(f"lm.{name} must be >= 1, got {getattr(self, name)}")
        self._check_family()
        if self.segment_duration <= 0 or self.sequence_len < 1:
            raise ValueError(f"lm.segment_duration {self.segment_duration} gives {self.sequence_len} frames at "
                             f"lm.frame_rate {self.frame_rate}; need at least one frame")
        if self.max_period <= 0 or self.norm_eps <= 0:
            raise ValueError(f"lm.max_period and lm.norm_eps must be > 0, got {self.max_period}, {self.norm_eps}")

    def _check_family(self) -> None:
        """The checks of a family's own fields (a subclass's)."""

    @property
    def mask_id(self) -> int:
        """The extra token (one more embedding row): MAGNeT's mask, MusicGen's not-yet-generated."""
        return self.card

    @property
    def uses_sin(self) -> bool:
        """The sinusoid is added to the input embeddings ("sin", "sin_rope")."""
        return self.positional_embedding in ("sin", "sin_rope")

    @property
    def sinusoid_scale(self) -> float:
        """What multiplies the added sinusoid. audiocraft has one ``positional_scale`` for both the
        sinusoid and RoPE's blend; ``sin_scale`` (ours, "sin_rope" only) parts them. Why: the
        sinusoid's entries are of order 1 while the codebook embeddings start at std 1/sqrt(dim), so
        at scale 1 the positions swamp the tokens and a small model learns slowly (dim 256: first
        codebook cross-entropy 4.64 after 900 steps against 2.88 with RoPE alone); a small
        ``sin_scale`` gives absolute positions without taking RoPE's rotation down with it."""
        return self.positional_scale if self.sin_scale is None else self.sin_scale

    @property
    def uses_rope(self) -> bool:
        """Self-attention queries and keys are rotated ("rope", "sin_rope")."""
        return self.positional_embedding in ("rope", "sin_rope")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def sequence_len(self) -> int:
        """T: frames in one generated segment."""
        return int(self.frame_rate * self.segment_duration)

    @property
    def dtype(self) -> jnp.dtype:
        return jnp.dtype(self.compute_dtype)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class LMConfig(TokenLMConfig):
    """MAGNeT: every codebook decoded in parallel, a stage per codebook."""
    subcodes_context: int = 5       # band half-width for stages > 0; -1 = unrestricted
    span_len: int = 3               # masking span length L (training and decoding)

    def _check_family(self) -> None:
        if self.span_len < 1:
            raise ValueError(f"lm.span_len must be >= 1, got {self.span_len}")
        if self.subcodes_context < -1:
            raise ValueError(f"lm.subcodes_context must be >= 0, or -1 for unrestricted, got {self.subcodes_context}")
