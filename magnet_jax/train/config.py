"""The training run's typed configuration: one frozen dataclass per section.

A config file (``configs/*.py``) returns ``{"lm": LMConfig, "train": TrainConfig,
"optim": OptimConfig, "mesh": MeshConfig, "data": DataConfig, "text": TextConfig,
"finetune": FinetuneConfig}``; ``key=value`` overrides reach every field
(``train.steps=200``, ``mesh.fsdp=4``, ``optim.optimizer=adamw``). ``check_config`` names a
missing or unknown section and impossible combinations before anything is built.

The ``lm`` section's type is the model family a run trains (``LM_FAMILIES``): an ``LMConfig``
trains MAGNeT, a ``MusicGenConfig`` MusicGen (``train.loop.objective`` picks the loss from it).
A run's config.json records it as ``lm.family``.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from magnet_jax.config_loader import check_finite
from magnet_jax.lm.config import LMConfig, TokenLMConfig
from magnet_jax.lm.musicgen import MusicGenConfig
from magnet_jax.train.optim import OptimConfig

SECTIONS = ("lm", "train", "optim", "mesh", "data", "text", "finetune")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 1_000_000          # optimizer steps (audiocraft: epochs x updates_per_epoch)
    batch_size: int = 192           # global batch (clips), split over processes and the mesh
    grad_accum: int = 1             # micro-batches per step (batch_size / grad_accum each)
    seed: int = 0
    remat: bool = False             # rematerialise each layer in the backward pass
    band_attention: bool = True     # MAGNeT stages > 0 compute only the +-subcodes_context band
                                    # of self-attention (a lax.cond on the drawn stage); False:
                                    # T x T scores under an additive band bias, as audiocraft
    jit_init: bool = True           # create parameters in a jitted program, already sharded
                                    # (False: eagerly on the host, then placed; no compile)
    log_every: int = 10
    eval_every: int = 1000          # validation every this many steps (and at the end); 0 = never
    eval_batches: int = 8           # validation batches per pass
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    async_checkpoint: bool = True
    max_nonfinite: int = 10         # stop after this many non-finite steps in a row
    inject_nan_steps: tuple[int, ...] = ()   # fault injection (tests): poison these steps' loss
    peak_tflops: float = 0.0        # per-device peak for MFU; 0 = from the device kind if known
    progress: bool = True
    eval_ema: bool = True           # validate with the EMA weights (audiocraft's valid stage)
    stage_weights: tuple[float, ...] = ()   # relative odds of training each stage (codebook) in a
                                    # step; () = uniform, as MAGNeT. (2, 1, 1, 1) spends 40 % of
                                    # the steps on the first codebook, the one that carries pitch
                                    # and timbre, when steps are scarce

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError(f"train: steps, batch_size and grad_accum must be >= 1 "
                             f"(got {self.steps}, {self.batch_size}, {self.grad_accum})")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"train.batch_size {self.batch_size} is not divisible by "
                             f"train.grad_accum {self.grad_accum}")
        if self.log_every < 1 or self.checkpoint_every < 1 or self.keep_checkpoints < 1:
            raise ValueError("train: log_every, checkpoint_every and keep_checkpoints must be >= 1")
        if self.max_nonfinite < 1:
            raise ValueError(f"train.max_nonfinite must be >= 1, got {self.max_nonfinite}")
        if self.eval_every < 0 or self.eval_batches < 1:
            raise ValueError(f"train.eval_every must be >= 0 (0 = never) and train.eval_batches >= 1, "
                             f"got {self.eval_every}, {self.eval_batches}")
        if any(s < 1 for s in self.inject_nan_steps):
            raise ValueError(f"train.inject_nan_steps {self.inject_nan_steps}: steps count from 1")
        if not 0.0 <= self.peak_tflops < float("inf"):
            raise ValueError(f"train.peak_tflops must be >= 0 (0 = from the device kind), got {self.peak_tflops}")
        if self.stage_weights and (min(self.stage_weights) < 0 or sum(self.stage_weights) <= 0):
            raise ValueError(f"train.stage_weights {self.stage_weights}: need weights >= 0 with a positive sum "
                             f"(or none at all for MAGNeT's uniform stages)")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Device mesh sizes; one may be -1 to take the remaining devices."""
    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    devices: int = 0                # use the first N devices only (0 = all; single-process runs)

    def __post_init__(self) -> None:
        sizes = {"data": self.data, "fsdp": self.fsdp, "tensor": self.tensor}
        for name, size in sizes.items():
            if size < 1 and size != -1:
                raise ValueError(f"mesh.{name} must be >= 1, or -1 for the remaining devices, got {size}")
        if list(sizes.values()).count(-1) > 1:
            raise ValueError(f"mesh: only one of data, fsdp, tensor may be -1, got {sizes}")
        if self.devices < 0:
            raise ValueError(f"mesh.devices must be >= 0 (0 = all), got {self.devices}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Tokenized data (``magnet-jax tokenize --out DIR``) read by data_pipelines.loader."""
    dir: str = ""
    train_split: str = "train"
    valid_split: str = "valid"      # '' = no validation
    worker_count: int = 0           # grain worker processes
    prefetch: int = 4               # batches read + text-encoded ahead by a host thread (0 = off)
    merge_text_p: float = 0.0       # audiocraft MusicDataset text augmentation
    drop_desc_p: float = 0.0
    drop_other_p: float = 0.0

    def __post_init__(self) -> None:
        if self.worker_count < 0 or self.prefetch < 0:
            raise ValueError(f"data.worker_count and data.prefetch must be >= 0, got "
                             f"{self.worker_count}, {self.prefetch}")
        for name in ("merge_text_p", "drop_desc_p", "drop_other_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"data.{name} must be in [0, 1], got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """The frozen text encoder and the dropouts; output_proj is trained with the LM."""
    encoder: str = "minilm"         # none | minilm | t5
    path: str = ""                  # t5: folder or hub name; minilm: optional folder
    max_tokens: int = 64            # conditions padded (longer ones cut) to this length
    word_dropout: float = 0.3
    cfg_dropout: float = 0.3        # one draw per batch nulls the whole batch's text
    attribute_dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.encoder not in ("none", "minilm", "t5"):
            raise ValueError(f"text.encoder {self.encoder!r}: use none, minilm or t5")
        if self.max_tokens < 1:
            raise ValueError(f"text.max_tokens must be >= 1, got {self.max_tokens}")
        for name in ("word_dropout", "cfg_dropout", "attribute_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"text.{name} must be in [0, 1], got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """Start from released weights: a converted LM folder (``magnet-jax convert-lm``) or an
    audiocraft ``state_dict.bin``; ``freeze`` is a comma-separated list of parts kept fixed:
    emb, linears, out_norm, text, layers (all) or layers:A-B (inclusive) / layers:I."""
    init_from: str = ""
    freeze: str = ""


def default_config(lm: TokenLMConfig) -> dict[str, Any]:
    return {"lm": lm, "train": TrainConfig(), "optim": OptimConfig(), "mesh": MeshConfig(),
            "data": DataConfig(), "text": TextConfig(), "finetune": FinetuneConfig()}


LM_FAMILIES: dict[str, type[TokenLMConfig]] = {"magnet": LMConfig, "musicgen": MusicGenConfig}
FAMILY_KEY = "family"           # config.json's lm.family (absent in runs from before MusicGen: MAGNeT)


def lm_family(lm: TokenLMConfig) -> str:
    """The family name of an lm section: 'magnet' or 'musicgen'."""
    for name, kind in LM_FAMILIES.items():
        if type(lm) is kind:
            return name
    raise ValueError(f"config['lm'] is a {type(lm).__name__}; a training config's lm is one of "
                     f"{', '.join(k.__name__ for k in LM_FAMILIES.values())}")


SECTION_TYPES: dict[str, type] = {"lm": TokenLMConfig, "train": TrainConfig, "optim": OptimConfig, "mesh": MeshConfig,
                                  "data": DataConfig, "text": TextConfig, "finetune": FinetuneConfig}


def check_config(config: dict[str, Any]) -> dict[str, Any]:
    """Every section present with its type, nothing unknown."""
    types = SECTION_TYPES
    unknown = sorted(set(config) - set(SECTIONS))
    missing = sorted(set(SECTIONS) - set(config))
    if unknown or missing:
        raise ValueError(f"training config: unknown sections {unknown}, missing sections {missing} "
                         f"(a training config has {list(SECTIONS)})")
    lm_family(config["lm"])          # the lm section: one of LM_FAMILIES (not just any TokenLMConfig)
    for name, kind in types.items():
        if not isinstance(config[name], kind):
            raise ValueError(f"config[{name!r}] is a {type(config[name]).__name__}, expected {kind.__name__}")
    for name in SECTIONS:
        check_finite(config[name], name)
    check_schedule(config["optim"], config["train"].steps, "optim")
    weights, n_q = config["train"].stage_weights, config["lm"].n_q
    if weights and lm_family(config["lm"]) != "magnet":
        raise ValueError("train.stage_weights weighs MAGNeT's stages; MusicGen trains every codebook in every "
                         "step: leave it empty")
    if weights and len(weights) != n_q:
        raise ValueError(f"train.stage_weights has {len(weights)} entries but the LM has {n_q} codebooks; "
                         f"give one weight per stage (e.g. train.stage_weights={','.join(['1'] * n_q)})")
    return config


def check_schedule(oc: OptimConfig, steps: int, section: str) -> None:
    """The learning-rate schedule fits the run: checked before a workdir is written, so a bad
    warmup is one line, not a failure after the run folder already holds this config."""
    if oc.schedule == "cosine" and (oc.total_steps or steps) <= oc.warmup:
        length = f"{section}.total_steps {oc.total_steps}" if oc.total_steps else f"train.steps {steps}"
        raise ValueError(f"{section}.warmup {oc.warmup} must be below the cosine schedule's length ({length}); "
                         f"lower {section}.warmup or raise {'the length' if oc.total_steps else 'train.steps'}")
    if oc.schedule == "inverse_sqrt" and oc.warmup < 1:
        raise ValueError(f"{section}.schedule=inverse_sqrt needs {section}.warmup >= 1 (its rate is "
                         f"lr * sqrt(warmup / step): 0 with warmup 0)")


def to_json(config: dict[str, Any]) -> dict[str, Any]:
    """Every section as JSON; the lm section says its family first."""
    out = {k: dataclasses.asdict(v) for k, v in config.items()}
    if "lm" in config:
        out["lm"] = {FAMILY_KEY: lm_family(config["lm"]), **out["lm"]}
    return out


def lm_from_json(data: dict[str, Any]) -> TokenLMConfig:
    """The lm section of a config.json (``to_json``) as its family's config."""
    from magnet_jax.config_loader import sections_from_json
    data = dict(data)
    family = data.pop(FAMILY_KEY, "magnet")
    if family not in LM_FAMILIES:
        raise ValueError(f"config.json names lm.family {family!r}; this version trains {sorted(LM_FAMILIES)}")
    return sections_from_json({"lm": data}, {"lm": LM_FAMILIES[family]})["lm"]


def from_json(data: dict[str, Any]) -> dict[str, Any]:
    """A run's config back from its config.json (``to_json``)."""
    from magnet_jax.config_loader import sections_from_json
    if "lm" not in data:
        raise ValueError("saved config has no section 'lm'")
    rest = sections_from_json({k: v for k, v in data.items() if k != "lm"},
                              {k: v for k, v in SECTION_TYPES.items() if k != "lm"})
    return check_config({"lm": lm_from_json(data["lm"]), **rest})
