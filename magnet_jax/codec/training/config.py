"""Typed configuration of a codec training run (``magnet-jax train-codec``).

A config file returns a dict of these sections; ``key=value`` overrides reach every field
(``losses.adv=0``, ``quantizer.q_dropout=false``, ``codec.n_filters=16``). The sections shared
with LM training are the same classes: ``train`` (``TrainConfig``: steps, batch, logging,
checkpoints), ``optim`` and ``disc_optim`` (``OptimConfig``: optimizer, schedule, clipping,
weight EMA), ``mesh`` (``MeshConfig``).

Defaults follow audiocraft's compression solver (``config/solver/compression/default.yaml`` and
``encodec_*``): losses adv 4, feat 4, l1 0.1, msspec 2 through the balancer; MS-STFT
discriminator with 32 filters and LeakyReLU(0.3); hinge adversarial loss, L1 feature matching;
RVQ with EMA decay 0.99, k-means init (50 iterations), dead-code threshold 2, quantizer dropout.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from magnet_jax.codec.config import EncodecConfig
from magnet_jax.config_loader import check_finite, check_sections
from magnet_jax.train.config import MeshConfig, TrainConfig, check_schedule
from magnet_jax.train.optim import OptimConfig

SECTIONS = ("codec", "train", "optim", "disc_optim", "mesh", "data", "losses", "disc", "quantizer", "eval")
ADV_LOSSES = ("hinge", "mse")
# the generator's output losses, in the order the balancer stacks them
OUTPUT_LOSSES = ("l1", "msspec", "adv", "feat", "sisnr", "log_mel", "pitch")


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Loss weights (0 switches a loss off) and the multi-scale mel loss's settings."""
    l1: float = 0.1                 # waveform L1
    msspec: float = 2.0             # multi-scale mel (L1 on linear mel + MSE on log mel)
    adv: float = 4.0                # generator adversarial loss
    feat: float = 4.0               # discriminator feature matching (L1)
    sisnr: float = 0.0              # negative SI-SNR as a loss
    log_mel: float = 0.0            # DAC's multi-scale L1 on log mel magnitudes (see losses.log_mel)
    pitch: float = 0.0              # L1 on log magnitudes of a long STFT below pitch_f_max (losses.pitch)
    commitment: float = 1.0         # RVQ commitment, added outside the balancer (audiocraft's penalty)
    kl: float = 0.01                # VAE codecs (codec.bottleneck='vae'): KL weight, outside the balancer
    balancer: bool = True           # EnCodec's gradient-norm loss balancer
    balancer_total_norm: float = 1.0
    balancer_ema_decay: float = 0.999
    balancer_per_batch_item: bool = True
    adv_loss: str = "hinge"         # hinge | mse
    adv_every: int = 1              # discriminator update with probability 1 / adv_every
    msspec_range_start: int = 6     # FFT sizes 2**start .. 2**(end-1)
    msspec_range_end: int = 11
    msspec_n_mels: int = 64
    msspec_f_min: float = 64.0
    msspec_f_max: float = 0.0       # 0 = Nyquist
    msspec_normalized: bool = True
    msspec_alphas: bool = False
    log_mel_windows: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048)   # DAC's scales
    log_mel_n_mels: tuple[int, ...] = (5, 10, 20, 40, 80, 160, 320)
    pitch_window: int = 8192        # 0.5 s at 16 kHz: Hann main lobe +-3.9 Hz (a semitone at 65 Hz)
    pitch_f_max: float = 1000.0
    pitch_range_db: float = 40.0    # magnitudes this far under the target's loudest bin count as silence

    def __post_init__(self) -> None:
        for name in OUTPUT_LOSSES + ("commitment", "kl"):
            if getattr(self, name) < 0:
                raise ValueError(f"losses.{name} must be >= 0, got {getattr(self, name)}")
        if self.adv_loss not in ADV_LOSSES:
            raise ValueError(f"losses.adv_loss {self.adv_loss!r}: use one of {ADV_LOSSES}")
        if self.adv_every < 1:
            raise ValueError(f"losses.adv_every must be >= 1, got {self.adv_every}")
        if not 1 <= self.msspec_range_start < self.msspec_range_end:
            raise ValueError(f"losses.msspec_range_start/end: need 1 <= start < end, got "
                             f"{self.msspec_range_start}, {self.msspec_range_end}")
        if len(self.log_mel_windows) != len(self.log_mel_n_mels) or not self.log_mel_windows:
            raise ValueError(f"losses.log_mel_windows and log_mel_n_mels need one entry per scale, got "
                             f"{self.log_mel_windows} and {self.log_mel_n_mels}")
        if self.pitch and (self.pitch_window < 2 or self.pitch_f_max <= 0 or self.pitch_range_db <= 0):
            raise ValueError(f"losses.pitch needs pitch_window >= 2, pitch_f_max > 0 and pitch_range_db > 0, got "
                             f"{self.pitch_window}, {self.pitch_f_max}, {self.pitch_range_db}")
        if self.balancer and not 0.0 <= self.balancer_ema_decay <= 1.0:
            raise ValueError(f"losses.balancer_ema_decay must be in [0, 1], got {self.balancer_ema_decay}")

    def balanced(self) -> dict[str, float]:
        """The losses of the generator's output and their weights (only those with weight > 0)."""
        return {n: float(getattr(self, n)) for n in OUTPUT_LOSSES if getattr(self, n) > 0}


@dataclasses.dataclass(frozen=True)
class DiscriminatorConfig:
    """audiocraft ``MultiScaleSTFTDiscriminator`` (msstftd section); ``filters=0`` disables it."""
    filters: int = 32
    max_filters: int = 1024
    filters_scale: int = 1
    n_ffts: tuple[int, ...] = (1024, 2048, 512, 256, 128)
    hop_lengths: tuple[int, ...] = (256, 512, 128, 64, 32)
    win_lengths: tuple[int, ...] = (1024, 2048, 512, 256, 128)
    kernel_size: tuple[int, ...] = (3, 9)
    stride: tuple[int, ...] = (1, 2)
    dilations: tuple[int, ...] = (1, 2, 4)
    negative_slope: float = 0.3
    normalized: bool = True

    def __post_init__(self) -> None:
        if not len(self.n_ffts) == len(self.hop_lengths) == len(self.win_lengths) >= 1:
            raise ValueError(f"disc: n_ffts, hop_lengths and win_lengths need the same length >= 1 "
                             f"(got {self.n_ffts}, {self.hop_lengths}, {self.win_lengths})")
        if any(w != n for w, n in zip(self.win_lengths, self.n_ffts)):
            raise ValueError("disc.win_lengths must equal disc.n_ffts (windows shorter than the FFT "
                             "are not implemented)")
        if len(self.kernel_size) != 2 or len(self.stride) != 2:
            raise ValueError(f"disc.kernel_size and disc.stride are (time, freq) pairs, got "
                             f"{self.kernel_size}, {self.stride}")
        if self.filters < 0:
            raise ValueError(f"disc.filters must be >= 0, got {self.filters}")


@dataclasses.dataclass(frozen=True)
class QuantizerTrainConfig:
    """How the RVQ codebooks learn (audiocraft ``rvq`` section)."""
    decay: float = 0.99             # EMA decay of cluster sizes and sums
    epsilon: float = 1e-5           # Laplace smoothing of cluster sizes
    kmeans_init: bool = True        # codebooks from k-means on the first batches' residuals
    kmeans_iters: int = 50
    kmeans_batches: int = 1         # how many of the first training batches k-means sees
    threshold_ema_dead_code: float = 2.0   # codes whose EMA cluster size falls below are replaced
    q_dropout: bool = True          # train with n_q ~ U{1..n_q} per batch (variable bandwidth)

    def __post_init__(self) -> None:
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"quantizer.decay must be in [0, 1), got {self.decay}")
        if self.kmeans_iters < 0 or self.kmeans_batches < 1 or self.threshold_ema_dead_code < 0:
            raise ValueError("quantizer: kmeans_iters >= 0, kmeans_batches >= 1 and "
                             "threshold_ema_dead_code >= 0 are required")


@dataclasses.dataclass(frozen=True)
class CodecDataConfig:
    """Audio for codec training: a folder of audio files (searched recursively), e.g. a
    ``magnet-jax synth-corpus`` folder. A stable hash of each file's relative path puts
    ``valid_percent`` % of the files in the held-out split."""
    dir: str = ""
    segment_duration: float = 1.0   # seconds per training crop
    valid_percent: float = 10.0
    worker_count: int = 0           # grain worker processes

    def __post_init__(self) -> None:
        if self.segment_duration <= 0:
            raise ValueError(f"data.segment_duration must be positive, got {self.segment_duration}")
        if not 0.0 <= self.valid_percent < 100.0:
            raise ValueError(f"data.valid_percent must be in [0, 100), got {self.valid_percent}")
        if self.worker_count < 0:
            raise ValueError(f"data.worker_count must be >= 0, got {self.worker_count}")


@dataclasses.dataclass(frozen=True)
class CodecEvalConfig:
    """Held-out evaluation in the loop (every ``train.eval_every`` steps) and in ``eval-codec``."""
    clips: int = 8                  # held-out clips per evaluation
    duration: float = 4.0           # seconds of each clip (from its start; 0 = whole clip)
    batch_size: int = 4

    def __post_init__(self) -> None:
        if self.clips < 1 or self.batch_size < 1 or self.duration < 0:
            raise ValueError("eval: clips >= 1, batch_size >= 1 and duration >= 0 are required")


SECTION_TYPES: dict[str, type] = {
    "codec": EncodecConfig, "train": TrainConfig, "optim": OptimConfig, "disc_optim": OptimConfig,
    "mesh": MeshConfig, "data": CodecDataConfig, "losses": LossConfig, "disc": DiscriminatorConfig,
    "quantizer": QuantizerTrainConfig, "eval": CodecEvalConfig}


def check_config(config: dict[str, Any]) -> dict[str, Any]:
    """Every section present with its type; options this trainer does not implement refused."""
    check_sections(config, SECTION_TYPES, "codec training")
    for name in SECTIONS:
        check_finite(config[name], name)
    tc = config["train"]
    check_schedule(config["optim"], tc.steps, "optim")
    check_schedule(config["disc_optim"], tc.steps, "disc_optim")
    if tc.grad_accum != 1 or tc.remat:
        raise ValueError("train-codec does not implement train.grad_accum > 1 or train.remat; "
                         "lower train.batch_size instead")
    if config["codec"].causal:
        raise ValueError("train-codec trains non-causal codecs (codec.causal=false)")
    if config["losses"].adv + config["losses"].feat > 0 and config["disc"].filters == 0:
        raise ValueError("losses.adv / losses.feat need a discriminator: set disc.filters > 0 "
                         "or losses.adv=0 losses.feat=0")
    return config


def to_json(config: dict[str, Any]) -> dict[str, Any]:
    return {k: dataclasses.asdict(v) for k, v in config.items()}


def from_json(data: dict[str, Any]) -> dict[str, Any]:
    """Rebuild the dataclasses written by ``to_json`` (lists become tuples again)."""
    from magnet_jax.config_loader import sections_from_json
    return check_config(sections_from_json(data, SECTION_TYPES))


def load_workdir_config(workdir: str | Path) -> dict[str, Any]:
    path = Path(workdir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{workdir} has no config.json: it is not a train-codec workdir "
                                f"(pass --config to evaluate with an explicit config)")
    return from_json(json.loads(path.read_text()))
