"""Random-weight MAGNeT checkpoint folders saved exactly as audiocraft exports them, and the
reference's own ``MAGNeT.get_pretrained`` on them.

A folder holds ``state_dict.bin`` (``{'best_state': fp16 LM state, 'xp.cfg': YAML, ...}``, the
LM built by audiocraft's ``builders.get_lm_model`` from that very xp.cfg) and
``compression_state_dict.bin`` (a native EnCodec export built by ``builders.get_compression_model``).
Both xp.cfg are composed from audiocraft's own config tree (``audiocraft_configs``: magnet-small-
10secs and the 32 kHz EnCodec solver) with this file's shape keys changed, so every other key is
what a released file holds (``cross_attention: false``, ``memory_efficient: true``, ...).
The text encoder is a local random T5 (``text_fixtures.t5_folder``): audiocraft's T5Conditioner only
accepts hub names, so while building and loading the reference its T5 loaders are pointed at the
folder (``local_t5``) and the xp.cfg names ``t5-small`` (its width patched to the folder's).

Shapes are tiny so parity tests run in seconds: LM dim 64, 2 layers, card 64; SEANet with 4
filters, ratios (8, 8) at 3072 Hz, i.e. 48 frames per second, and a 1 s segment (T = 48).
"""
from __future__ import annotations

import contextlib
import functools
import dataclasses
from pathlib import Path

import reference
from lm_reference import RefLMShape, xp_cfg as lm_xp_cfg

T5_NAME = "t5-small"   # the hub name written into xp.cfg; its loaders are redirected to a folder


@dataclasses.dataclass(frozen=True)
class RefPipelineShape:
    lm: RefLMShape = RefLMShape(dim=64, num_heads=4, num_layers=2, card=64, frame_rate=48,
                                segment_duration=1)
    sample_rate: int = 3072
    ratios: tuple[int, ...] = (8, 8)
    n_filters: int = 4
    codec_dim: int = 16
    lstm: int = 2

    @property
    def hop(self) -> int:
        out = 1
        for r in self.ratios:
            out *= r
        return out


def codec_xp(shape: RefPipelineShape):
    """A native EnCodec xp.cfg composed from audiocraft's tree (``solver=compression/
    encodec_musicgen_32khz``, constant padding as audiocraft's own exports), with this shape's keys."""
    from audiocraft_configs import compose
    return compose("compression/encodec_musicgen_32khz", "internal/music_400k_32khz", [
        f"sample_rate={shape.sample_rate}", f"seanet.dimension={shape.codec_dim}", f"seanet.n_filters={shape.n_filters}",
        f"seanet.ratios=[{','.join(map(str, shape.ratios))}]", f"seanet.lstm={shape.lstm}",
        f"rvq.n_q={shape.lm.n_q}", f"rvq.bins={shape.lm.card}"])


def lm_xp(shape: RefPipelineShape) -> dict:
    """magnet-small-10secs' composed xp.cfg with this shape's keys and a T5 named ``t5-small``
    (pointed at a local folder by ``local_t5``); every other key is what a released file holds."""
    xp = lm_xp_cfg(shape.lm)
    xp["sample_rate"] = shape.sample_rate
    xp["conditioners"] = {"description": {"model": "t5", "t5": {
        "name": T5_NAME, "finetune": False, "word_dropout": 0.3, "normalize_text": False}}}
    return xp


@contextlib.contextmanager
def local_t5(folder: Path, name: str = T5_NAME):
    """Point audiocraft's T5Conditioner at a local T5 folder for the duration of the block: the
    hub ``name`` xp.cfg gives loads ``folder``, whose width (d_model, from its config.json)
    becomes the width the conditioner's output_proj expects for that name."""
    import json
    conditioners = reference.require("audiocraft.modules.conditioners")
    width = json.loads((Path(folder) / "config.json").read_text())["d_model"]
    from transformers import T5EncoderModel, T5Tokenizer

    class Local:
        def __init__(self, cls):
            self.cls = cls

        def from_pretrained(self, asked, *args, **kwargs):
            assert asked == name, (asked, name)
            return self.cls.from_pretrained(str(folder))

    saved = conditioners.T5Tokenizer, conditioners.T5EncoderModel
    saved_dim = conditioners.T5Conditioner.MODELS_DIMS[name]
    conditioners.T5Tokenizer, conditioners.T5EncoderModel = Local(T5Tokenizer), Local(T5EncoderModel)
    conditioners.T5Conditioner.MODELS_DIMS[name] = width
    try:
        yield
    finally:
        conditioners.T5Tokenizer, conditioners.T5EncoderModel = saved
        conditioners.T5Conditioner.MODELS_DIMS[name] = saved_dim


def randomize_codec(model) -> None:
    """Random codebooks (kmeans init leaves them zero) and weight-norm scales away from ||v||."""
    import torch
    with torch.no_grad():
        for layer in model.quantizer.vq.layers:
            layer._codebook.embed.normal_()
        for name, p in model.named_parameters():
            if name.endswith("weight_g"):
                p.mul_(torch.empty_like(p).uniform_(0.5, 1.5))


def randomize_lm(lm) -> None:
    """LayerNorm affines and the text projection's bias away from their init, so a port that
    drops them cannot pass."""
    import torch
    with torch.no_grad():
        for name, p in lm.named_parameters():
            if "norm" in name or name.endswith("output_proj.bias"):
                p.add_(0.1 * torch.randn_like(p))


def build_reference_folder(folder: Path, t5: Path, shape: RefPipelineShape = RefPipelineShape(),
                           seed: int = 0) -> Path:
    """Write ``state_dict.bin`` and ``compression_state_dict.bin`` as audiocraft exports them."""
    torch = reference.require("torch")
    builders = reference.require("audiocraft.models.builders")
    from omegaconf import OmegaConf
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    codec_cfg = codec_xp(shape)
    codec_cfg.device = "cpu"
    codec = builders.get_compression_model(codec_cfg).eval()
    randomize_codec(codec)
    codec_cfg.device = "cuda"                   # as the training run recorded it
    torch.save({"best_state": codec.state_dict(), "xp.cfg": OmegaConf.to_yaml(codec_cfg), "version": "1.3.0",
                "exported": True}, folder / "compression_state_dict.bin")

    xp = lm_xp(shape)
    build_cfg = OmegaConf.create(xp)   # what the loader sets before building (loaders.py)
    build_cfg.device, build_cfg.dtype = "cpu", "float32"
    build_cfg.transformer_lm.segment_duration = shape.lm.segment_duration
    build_cfg.transformer_lm.span_len = shape.lm.span_len
    with local_t5(t5):
        lm = builders.get_lm_model(build_cfg).eval()
    randomize_lm(lm)
    state = {k: v.half() for k, v in lm.state_dict().items()}   # released exports are fp16
    torch.save({"best_state": state, "xp.cfg": OmegaConf.to_yaml(OmegaConf.create(xp)),
                "version": "1.3.0", "exported": True}, folder / "state_dict.bin")
    return folder


def reference_magnet(folder: Path, t5: Path, hf_codec: Path | None = None):
    """audiocraft's own ``MAGNeT.get_pretrained(folder)`` (the T5 loaders pointed at ``t5``, and
    a codec redirect's hub name at ``hf_codec``)."""
    magnet = reference.require("audiocraft.models.magnet")
    with local_t5(t5), local_hf_codec(hf_codec):
        return magnet.MAGNeT.get_pretrained(str(folder), device="cpu")


# -- the released layout: compression_state_dict.bin redirects to a transformers EncodecModel ------
REDIRECT_NAME = "facebook/encodec_32khz"


def hf_codec_folder(folder: Path, shape: RefPipelineShape = RefPipelineShape(), seed: int = 1) -> Path:
    """A transformers EncodecModel folder with the shape's codec (random codebooks and scales),
    standing in for facebook/encodec_32khz (what the released folders redirect to)."""
    return hf_encodec_folder(folder, sample_rate=shape.sample_rate, ratios=shape.ratios,
                             num_filters=shape.n_filters, card=shape.lm.card, n_q=shape.lm.n_q,
                             dim=shape.codec_dim, lstm=shape.lstm, seed=seed)


def hf_encodec_folder(folder: Path, *, sample_rate: int, ratios: tuple[int, ...], num_filters: int, card: int,
                      n_q: int, dim: int = 128, lstm: int = 2, seed: int = 1) -> Path:
    """A random transformers EncodecModel saved with save_pretrained; the settings not given are
    facebook/encodec_32khz's (non-causal, reflect padding, no conv shortcut, weight norm)."""
    torch = reference.require("torch")
    transformers = reference.require("transformers")
    torch.manual_seed(seed)
    hop = 1
    for r in ratios:
        hop *= r
    bits = card.bit_length() - 1
    config = transformers.EncodecConfig(
        sampling_rate=sample_rate, audio_channels=1, num_filters=num_filters,
        hidden_size=dim, codebook_dim=dim, upsampling_ratios=list(ratios),
        codebook_size=card, target_bandwidths=[n_q * (sample_rate // hop) * bits / 1000],
        num_residual_layers=1, num_lstm_layers=lstm, use_causal_conv=False, use_conv_shortcut=False,
        pad_mode="reflect", norm_type="weight_norm", normalize=False, chunk_length_s=None, overlap=None)
    model = transformers.EncodecModel(config).eval()
    with torch.no_grad():
        for layer in model.quantizer.layers:
            layer.codebook.embed.normal_()
        for name, p in model.named_parameters():
            if name.endswith(("weight_g", "original0")):
                p.mul_(torch.empty_like(p).uniform_(0.5, 1.5))
    model.save_pretrained(folder)
    return folder


def build_redirect_folder(folder: Path, export: Path) -> Path:
    """The export's LM next to a ``{'pretrained': 'facebook/encodec_32khz'}`` codec file."""
    import shutil
    torch = reference.require("torch")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(export / "state_dict.bin", folder / "state_dict.bin")
    torch.save({"pretrained": REDIRECT_NAME, "exported": True, "version": "1.3.0"},
               folder / "compression_state_dict.bin")
    return folder


@contextlib.contextmanager
def local_hf_codec(folder: Path | None):
    """Point audiocraft's HFEncodecModel.from_pretrained at a local folder (no hub here)."""
    if folder is None:
        yield
        return
    encodec = reference.require("audiocraft.models.encodec")
    saved = encodec.HFEncodecModel

    class Local:
        @staticmethod
        def from_pretrained(name, *args, **kwargs):
            assert name == REDIRECT_NAME, name
            return saved.from_pretrained(str(folder))

    encodec.HFEncodecModel = Local
    try:
        yield
    finally:
        encodec.HFEncodecModel = saved


def reference_generate(model, descriptions=None, *, prompt=None, prompt_sample_rate=None,
                       num_samples=None, **params):
    """Tokens and audio (numpy) from the reference's generate / generate_continuation /
    generate_unconditional with the given sampler parameters."""
    import torch
    extra = {k: params.pop(k) for k in ("anneal_temp", "span_scoring") if k in params}
    model.set_generation_params(**params)
    model.generation_params.update(extra)
    with torch.no_grad():
        if prompt is not None:
            audio, tokens = model.generate_continuation(torch.as_tensor(prompt), prompt_sample_rate,
                                                        descriptions, return_tokens=True)
        elif descriptions is None:
            audio, tokens = model.generate_unconditional(num_samples, return_tokens=True)
        else:
            audio, tokens = model.generate(descriptions, return_tokens=True)
    return tokens.numpy(), audio.numpy()


_ROOT: Path | None = None


def _root() -> Path:
    """One temporary folder per test session for the exported model and its conversion cache."""
    global _ROOT
    if _ROOT is None:
        import atexit
        import shutil
        import tempfile
        _ROOT = Path(tempfile.mkdtemp(prefix="magnet_jax_pipeline_"))
        atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)
    return _ROOT


@functools.lru_cache(maxsize=None)
def exported_folder() -> Path:
    """The default-shaped reference export, built once per test session (shared by test files)."""
    from text_fixtures import t5_folder
    return build_reference_folder(_root() / "export", t5_folder("t5"))


def conversion_cache() -> Path:
    """The session's conversion cache (MAGNeT.from_pretrained(..., cache_dir=...))."""
    path = _root() / "cache"
    path.mkdir(exist_ok=True)
    return path
