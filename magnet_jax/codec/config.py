"""EnCodec hyperparameters: one typed, frozen config and the presets of the released codecs.

Field names follow audiocraft's ``seanet`` / ``rvq`` config sections (``xp.cfg``), so a native
checkpoint's config maps field for field; the Hugging Face names are translated in
``magnet_jax.codec.convert``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

PAD_MODES = ("constant", "reflect")
NORMS = ("weight_norm", "none")
FINAL_ACTIVATIONS = (None, "Tanh")
ENCODERS = ("seanet", "spectrogram")
DECODERS = ("seanet", "oscillators")
BOTTLENECKS = ("rvq", "vae")


@dataclasses.dataclass(frozen=True)
class EncodecConfig:
    """Architecture of a SEANet autoencoder with a residual vector quantizer.

    ``ratios`` are in decoder (upsampling) order, as in audiocraft; the encoder uses them reversed.
    """

    sample_rate: int = 32000
    channels: int = 1
    dimension: int = 128
    n_filters: int = 64
    ratios: tuple[int, ...] = (8, 5, 4, 4)
    n_residual_layers: int = 1
    kernel_size: int = 7
    last_kernel_size: int = 7
    residual_kernel_size: int = 3
    dilation_base: int = 2
    compress: int = 2
    true_skip: bool = True
    causal: bool = False
    pad_mode: str = "reflect"
    norm: str = "weight_norm"
    lstm: int = 2
    elu_alpha: float = 1.0
    disable_norm_outer_blocks: int = 0
    trim_right_ratio: float = 1.0
    final_activation: str | None = None
    n_q: int = 4
    bins: int = 2048
    # "seanet": the released codecs' waveform encoder; "spectrogram": log STFT magnitudes only
    # (magnet_jax.codec.spectrogram_encoder), for phase-invariant tokens in our own small codecs
    encoder: str = "seanet"
    # "seanet": the released codecs' decoder; "oscillators": gains of a fixed bank of sinusoids and
    # noise bands (magnet_jax.codec.oscillator_decoder), the partner of the spectrogram encoder
    decoder: str = "seanet"
    # the oscillator decoder's grid: 4 = quarter semitones; 1 = equal-tempered semitones only, for
    # equal-tempered material (the spectral losses cannot tell a quarter tone apart in the bass,
    # and a decoder left free to detune spreads each note over two pitch classes)
    oscillators_per_semitone: int = 4
    # "rvq": discrete codes (EnCodec); "vae": a Gaussian bottleneck (magnet_jax.codec.vae), the
    # continuous latent of MeLoDy's audio VAE-GAN, ``latent_dim`` wide (0: ``dimension`` wide)
    bottleneck: str = "rvq"
    latent_dim: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratios", tuple(int(r) for r in self.ratios))
        problems = []
        if self.pad_mode not in PAD_MODES:
            problems.append(f"pad_mode={self.pad_mode!r} (use one of {PAD_MODES})")
        if self.norm not in NORMS:
            problems.append(f"norm={self.norm!r} (use one of {NORMS})")
        if self.encoder not in ENCODERS:
            problems.append(f"encoder={self.encoder!r} (use one of {ENCODERS})")
        if self.decoder not in DECODERS:
            problems.append(f"decoder={self.decoder!r} (use one of {DECODERS})")
        if self.bottleneck not in BOTTLENECKS:
            problems.append(f"bottleneck={self.bottleneck!r} (use one of {BOTTLENECKS})")
        if self.latent_dim < 0:
            problems.append(f"latent_dim={self.latent_dim} (must be >= 0; 0 = dimension)")
        if self.final_activation not in FINAL_ACTIVATIONS:
            problems.append(f"final_activation={self.final_activation!r} (use one of {FINAL_ACTIVATIONS})")
        for name in ("sample_rate", "channels", "dimension", "n_filters", "kernel_size", "last_kernel_size",
                     "residual_kernel_size", "dilation_base", "compress", "n_q", "bins",
                     "oscillators_per_semitone"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name}={getattr(self, name)} (must be >= 1)")
        if not self.ratios or any(r < 1 for r in self.ratios):
            problems.append(f"ratios={self.ratios} (need at least one ratio, all >= 1)")
        if self.n_residual_layers < 0 or self.lstm < 0:
            problems.append("n_residual_layers and lstm must be >= 0")
        if not 0 <= self.disable_norm_outer_blocks <= len(self.ratios) + 2:
            problems.append(f"disable_norm_outer_blocks={self.disable_norm_outer_blocks} "
                            f"(must be within [0, {len(self.ratios) + 2}])")
        if not (self.causal or self.trim_right_ratio == 1.0):
            problems.append("trim_right_ratio != 1.0 needs causal=True")
        if problems:
            raise ValueError("invalid EncodecConfig: " + "; ".join(problems))

    @property
    def hop_length(self) -> int:
        """Audio samples per latent frame (the product of the ratios)."""
        return math.prod(self.ratios)

    @property
    def frame_rate(self) -> float:
        """Latent frames per second."""
        return self.sample_rate / self.hop_length

    @property
    def vae_latent_dim(self) -> int:
        """Width of the VAE latent z (``latent_dim``, or ``dimension`` when it is 0)."""
        return self.latent_dim or self.dimension

    @property
    def eval_n_q(self) -> int:
        """How many codebook counts evaluation sweeps: n_q for RVQ, 1 (no codebooks) for the VAE."""
        return self.n_q if self.bottleneck == "rvq" else 1

    @property
    def bottleneck_width(self) -> int:
        """Channels between the last strided block and the latent conv (where the LSTM runs)."""
        return self.n_filters * 2 ** len(self.ratios)

    @property
    def n_blocks(self) -> int:
        """First and last conv plus one block per ratio (audiocraft's count for norm disabling)."""
        return len(self.ratios) + 2

    def replace(self, **overrides: Any) -> "EncodecConfig":
        """A copy with some fields changed; unknown names are an error."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"EncodecConfig has no field(s) {unknown}; known fields: {sorted(known)}")
        return dataclasses.replace(self, **overrides)


# The released codecs. ``encodec_32khz`` is Hugging Face ``facebook/encodec_32khz``, which is what
# MusicGen and MAGNeT load (their compression_state_dict.bin redirects to it); its conversion uses
# reflect padding, while audiocraft-native 32 kHz exports use ``pad_mode='constant'``.
PRESETS: dict[str, EncodecConfig] = {
    # MusicGen / MAGNeT: 32 kHz mono, hop 640 (50 Hz), 4 codebooks of 2048.
    "encodec_32khz": EncodecConfig(sample_rate=32000, n_filters=64, ratios=(8, 5, 4, 4),
                                   pad_mode="reflect", n_q=4, bins=2048),
    # Audio-MAGNeT / AudioGen: audiocraft-native 16 kHz, hop 320 (50 Hz), 4 x 2048, constant padding.
    "encodec_16khz": EncodecConfig(sample_rate=16000, n_filters=64, ratios=(8, 5, 4, 2),
                                   pad_mode="constant", n_q=4, bins=2048),
    # Hugging Face facebook/encodec_24khz: causal, conv shortcuts, hop 320 (75 Hz), 32 x 1024 (24 kbps).
    "encodec_24khz": EncodecConfig(sample_rate=24000, n_filters=32, ratios=(8, 5, 4, 2), causal=True,
                                   true_skip=False, pad_mode="reflect", n_q=32, bins=1024),
}


def codec_config(name: str, **overrides: Any) -> EncodecConfig:
    """The config of a released codec by name (``encodec_32khz``, ``encodec_16khz``, ``encodec_24khz``).

    Keyword overrides replace fields, e.g. ``codec_config("encodec_32khz", pad_mode="constant")``
    for an audiocraft-native 32 kHz export.
    """
    if name not in PRESETS:
        raise KeyError(f"unknown codec {name!r}; known codecs: {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]
