"""Load released EnCodec weights: audiocraft ``compression_state_dict.bin`` and Hugging Face folders.

Two checkpoint families carry the same network under different key names:

- audiocraft exports (``{'best_state': state_dict, 'xp.cfg': yaml, ...}``), keys like
  ``encoder.model.3.conv.conv.weight_g``, ``decoder.model.4.convtr.convtr.weight_v``,
  ``quantizer.vq.layers.0._codebook.embed``; or the redirect ``{'pretrained': 'facebook/encodec_32khz'}``
  that MusicGen and MAGNeT ship, which means "the Hugging Face transformers EncodecModel";
- transformers ``EncodecModel`` folders (``config.json`` + ``model.safetensors`` or
  ``pytorch_model.bin``), keys like ``encoder.layers.3.conv.weight_g`` (or, when re-saved by recent
  transformers, ``...conv.parametrizations.weight.original0``), ``quantizer.layers.0.codebook.embed``.

Both are read into an ``Encodec`` built from the checkpoint's own config (never hard-coded).
Every key is accounted for: a missing, unexpected or mis-shaped key raises ``CheckpointError``
listing all of them, so no layer is ever left at its random initialisation. The codebooks'
training statistics (``inited``, ``cluster_size``, ``embed_avg``) are consumed and dropped.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from magnet_jax import torch_pickle, xp_cfg as xp_cfg_module
from magnet_jax.codec.config import EncodecConfig
from magnet_jax.codec.encodec import Encodec
from magnet_jax.codec.seanet import torch_layer_indices

Flavor = Literal["audiocraft", "hf"]
CODEBOOK_STATISTICS = ("inited", "cluster_size", "embed_avg")
_MAX_LISTED = 12


class CheckpointError(ValueError):
    """A checkpoint does not match the architecture its config describes."""


# ----------------------------------------------------------------------------------------------
# configs
# ----------------------------------------------------------------------------------------------
# audiocraft SEANetEncoder/Decoder constructor defaults: a key missing from xp.cfg means these.
_SEANET_DEFAULTS: dict[str, Any] = dict(
    channels=1, dimension=128, n_filters=32, n_residual_layers=3, ratios=[8, 5, 4, 2],
    activation="ELU", activation_params={"alpha": 1.0}, norm="none", norm_params={}, kernel_size=7,
    last_kernel_size=7, residual_kernel_size=3, dilation_base=2, causal=False, pad_mode="reflect",
    true_skip=True, compress=2, lstm=0, disable_norm_outer_blocks=0)
_DECODER_ONLY = ("trim_right_ratio", "final_activation", "final_activation_params")

# transformers EncodecConfig defaults (facebook/encodec_24khz): a key missing from config.json means these.
_HF_DEFAULTS: dict[str, Any] = dict(
    target_bandwidths=[1.5, 3.0, 6.0, 12.0, 24.0], sampling_rate=24000, audio_channels=1, normalize=False,
    chunk_length_s=None, overlap=None, hidden_size=128, num_filters=32, num_residual_layers=1,
    upsampling_ratios=[8, 5, 4, 2], norm_type="weight_norm", kernel_size=7, last_kernel_size=7,
    residual_kernel_size=3, dilation_growth_rate=2, use_causal_conv=True, pad_mode="reflect", compress=2,
    num_lstm_layers=2, trim_right_ratio=1.0, codebook_size=1024, codebook_dim=None, use_conv_shortcut=True)

def config_from_audiocraft(xp_cfg: str | Mapping) -> EncodecConfig:
    """EncodecConfig from an audiocraft ``xp.cfg`` (the YAML string in the export, or a dict)."""
    try:
        raw = xp_cfg_module.parse(xp_cfg)
    except xp_cfg_module.XpCfgError as err:
        raise CheckpointError(str(err)) from err
    if raw.get("compression_model", "encodec") != "encodec":
        raise CheckpointError(f"compression_model={raw['compression_model']!r}: only 'encodec' checkpoints are supported")
    for section in ("encodec", "seanet", "rvq"):
        if section not in raw:
            raise CheckpointError(f"xp.cfg has no '{section}' section; is this an EnCodec checkpoint?")
    # resolve only what we read: a training config's other sections may use resolvers (${oc.env:...})
    try:
        cfg = {section: xp_cfg_module.setting(raw, section) for section in ("encodec", "seanet", "rvq")}
    except xp_cfg_module.XpCfgError as err:
        raise CheckpointError(str(err)) from err
    enc = cfg["encodec"]
    if enc.get("autoencoder", "seanet") != "seanet" or enc.get("quantizer", "rvq") != "rvq":
        raise CheckpointError(f"encodec.autoencoder={enc.get('autoencoder')!r}, encodec.quantizer="
                              f"{enc.get('quantizer')!r}: only 'seanet' with 'rvq' is supported")
    if enc.get("renormalize", False) or enc.get("renorm", False):
        raise CheckpointError("encodec.renormalize=true (per-clip volume scaling) is not supported")

    seanet = {**_SEANET_DEFAULTS, **{k: v for k, v in cfg["seanet"].items() if k not in ("encoder", "decoder")}}
    enc_over = dict(cfg["seanet"].get("encoder") or {})
    dec_over = {k: v for k, v in (cfg["seanet"].get("decoder") or {}).items() if k not in _DECODER_ONLY}
    dec_only = {k: v for k, v in (cfg["seanet"].get("decoder") or {}).items() if k in _DECODER_ONLY}
    enc_args, dec_args = {**seanet, **enc_over}, {**seanet, **dec_over}
    differing = sorted(k for k in set(enc_args) | set(dec_args) if enc_args.get(k) != dec_args.get(k))
    if differing:
        raise CheckpointError(f"xp.cfg gives the SEANet encoder and decoder different {differing}; "
                              f"only symmetric codecs are supported")
    if seanet["activation"] != "ELU":
        raise CheckpointError(f"seanet.activation={seanet['activation']!r}: only 'ELU' is supported")
    if dec_only.get("final_activation_params"):
        raise CheckpointError("seanet.decoder.final_activation_params is not supported")
    channels = int(enc.get("channels", seanet["channels"]))
    if channels != int(seanet["channels"]):
        raise CheckpointError(f"encodec.channels={channels} but seanet.channels={seanet['channels']}")
    return EncodecConfig(
        sample_rate=int(enc["sample_rate"]), channels=channels, dimension=int(seanet["dimension"]),
        n_filters=int(seanet["n_filters"]), ratios=tuple(seanet["ratios"]),
        n_residual_layers=int(seanet["n_residual_layers"]), kernel_size=int(seanet["kernel_size"]),
        last_kernel_size=int(seanet["last_kernel_size"]), residual_kernel_size=int(seanet["residual_kernel_size"]),
        dilation_base=int(seanet["dilation_base"]), compress=int(seanet["compress"]),
        true_skip=bool(seanet["true_skip"]), causal=bool(seanet["causal"]), pad_mode=str(seanet["pad_mode"]),
        norm=str(seanet["norm"]), lstm=int(seanet["lstm"]),
        elu_alpha=float((seanet["activation_params"] or {}).get("alpha", 1.0)),
        disable_norm_outer_blocks=int(seanet["disable_norm_outer_blocks"]),
        trim_right_ratio=float(dec_only.get("trim_right_ratio", 1.0)),
        final_activation=dec_only.get("final_activation"),
        n_q=int(cfg["rvq"].get("n_q", 8)), bins=int(cfg["rvq"].get("bins", 1024)))


def config_from_hf(config: Mapping) -> EncodecConfig:
    """EncodecConfig from a transformers ``EncodecModel`` ``config.json`` dict."""
    model_type = config.get("model_type", "encodec")
    if model_type != "encodec":
        raise CheckpointError(f"config.json has model_type={model_type!r}; expected 'encodec'")
    c = {**_HF_DEFAULTS, **config}
    if c["normalize"]:
        raise CheckpointError("config.json has normalize=true (per-chunk volume scaling, the 48 kHz model); "
                              "not supported")
    if c["chunk_length_s"] is not None:
        raise CheckpointError("config.json sets chunk_length_s (chunked 48 kHz model); not supported: use "
                              "magnet_jax.codec.runner's chunked mode on an unchunked codec instead")
    if c["norm_type"] != "weight_norm":
        raise CheckpointError(f"norm_type={c['norm_type']!r}: only 'weight_norm' is supported")
    codebook_dim = c["codebook_dim"] if c["codebook_dim"] is not None else c["hidden_size"]
    if codebook_dim != c["hidden_size"]:
        raise CheckpointError(f"codebook_dim={codebook_dim} differs from hidden_size={c['hidden_size']}")
    hop = math.prod(c["upsampling_ratios"])
    frame_rate = math.ceil(c["sampling_rate"] / hop)
    n_q = int(1000 * c["target_bandwidths"][-1] // (frame_rate * math.ceil(math.log2(c["codebook_size"]))))
    return EncodecConfig(
        sample_rate=int(c["sampling_rate"]), channels=int(c["audio_channels"]), dimension=int(c["hidden_size"]),
        n_filters=int(c["num_filters"]), ratios=tuple(c["upsampling_ratios"]),
        n_residual_layers=int(c["num_residual_layers"]), kernel_size=int(c["kernel_size"]),
        last_kernel_size=int(c["last_kernel_size"]), residual_kernel_size=int(c["residual_kernel_size"]),
        dilation_base=int(c["dilation_growth_rate"]), compress=int(c["compress"]),
        true_skip=not c["use_conv_shortcut"], causal=bool(c["use_causal_conv"]), pad_mode=str(c["pad_mode"]),
        norm="weight_norm", lstm=int(c["num_lstm_layers"]), trim_right_ratio=float(c["trim_right_ratio"]),
        n_q=n_q, bins=int(c["codebook_size"]))


# ----------------------------------------------------------------------------------------------
# key names
# ----------------------------------------------------------------------------------------------
def _conv_bases(cfg: EncodecConfig, flavor: Flavor) -> dict[str, str]:
    """Our module path -> the reference's module path, for every conv and LSTM."""
    seq = "model" if flavor == "audiocraft" else "layers"
    conv = ".conv.conv" if flavor == "audiocraft" else ".conv"
    convtr = ".convtr.convtr" if flavor == "audiocraft" else ".conv"
    out: dict[str, str] = {}
    for side, idx in torch_layer_indices(cfg).items():
        out[f"{side}.conv_in"] = f"{side}.{seq}.{idx['conv_in']}{conv}"
        out[f"{side}.conv_out"] = f"{side}.{seq}.{idx['conv_out']}{conv}"
        if idx["lstm"] is not None:
            out[f"{side}.lstm"] = f"{side}.{seq}.{idx['lstm']}.lstm"
        for b, block in enumerate(idx["blocks"]):
            sample = "downsample" if side == "encoder" else "upsample"
            out[f"{side}.blocks.{b}.{sample}"] = (f"{side}.{seq}.{block['sample']}"
                                                  + (conv if side == "encoder" else convtr))
            for r, res in enumerate(block["residuals"]):
                base = f"{side}.{seq}.{res}"
                out[f"{side}.blocks.{b}.residuals.{r}.conv1"] = f"{base}.block.1{conv}"
                out[f"{side}.blocks.{b}.residuals.{r}.conv2"] = f"{base}.block.3{conv}"
                out[f"{side}.blocks.{b}.residuals.{r}.shortcut"] = f"{base}.shortcut{conv}"
    for k in range(cfg.n_q):
        out[f"quantizer.layers.{k}"] = (f"quantizer.vq.layers.{k}._codebook" if flavor == "audiocraft"
                                        else f"quantizer.layers.{k}.codebook")
    return out


_LSTM_LEAF = re.compile(r"^(.*)\.layers\.(\d+)\.(weight_ih|weight_hh|bias_ih|bias_hh)$")


def reference_key(path: str, bases: Mapping[str, str]) -> str:
    """The reference's key for one of our parameter paths, e.g. ``encoder.conv_in.weight_g``."""
    lstm = _LSTM_LEAF.match(path)
    if lstm and lstm.group(1) in bases:
        return f"{bases[lstm.group(1)]}.{lstm.group(3)}_l{lstm.group(2)}"
    module, leaf = path.rsplit(".", 1)
    if module not in bases:
        raise KeyError(f"no reference key for parameter {path}")
    return f"{bases[module]}.{leaf}"


def normalize_key(key: str) -> str:
    """Map torch's parametrization names (recent transformers saves) to weight_g / weight_v."""
    return (key.replace(".parametrizations.weight.original0", ".weight_g")
               .replace(".parametrizations.weight.original1", ".weight_v"))


def _listed(items: Iterable[str]) -> str:
    items = sorted(items)
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f", ... ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    return np.asarray(value)


def model_from_state_dict(cfg: EncodecConfig, state_dict: Mapping[str, Any], flavor: Flavor,
                          dtype: jnp.dtype = jnp.float32) -> Encodec:
    """Build an ``Encodec`` for ``cfg`` holding exactly the weights of a reference ``state_dict``."""
    abstract = nnx.eval_shape(lambda: Encodec(cfg, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    bases = _conv_bases(cfg, flavor)
    given = {normalize_key(k): v for k, v in state_dict.items()}
    expected = {}
    for path, var in nnx.to_flat_state(state):
        expected[reference_key(".".join(str(p) for p in path), bases)] = (path, var)
    statistics = {f"{bases[f'quantizer.layers.{k}']}.{s}" for k in range(cfg.n_q) for s in CODEBOOK_STATISTICS}

    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected) - statistics)
    misshaped = []
    for key, (_, var) in expected.items():
        if key in given and tuple(np.shape(given[key])) != tuple(var.shape):
            misshaped.append(f"{key}: checkpoint {tuple(np.shape(given[key]))}, model {tuple(var.shape)}")
    if missing or unexpected or misshaped:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {_listed(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {_listed(unexpected)}")
        if misshaped:
            parts.append(f"{len(misshaped)} with the wrong shape: {_listed(misshaped)}")
        raise CheckpointError(f"{flavor} checkpoint does not match its config ({cfg}): " + "; ".join(parts)
                              + ". Check that the weights and the config come from the same model.")

    flat = []
    for key, (path, var) in expected.items():
        flat.append((path, var.replace(jnp.asarray(_to_numpy(given[key]), dtype=dtype))))
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


# ----------------------------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------------------------
def _torch_load(path: Path) -> Any:
    try:
        return torch_pickle.load_mapping(path, "a torch checkpoint")
    except torch_pickle.TorchFileError as err:
        raise CheckpointError(str(err)) from err


def load_hf_encodec(folder: str | os.PathLike, dtype: jnp.dtype = jnp.float32) -> tuple[EncodecConfig, Encodec]:
    """Load a transformers ``EncodecModel`` folder (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json; pass a Hugging Face EncodecModel folder "
                                f"(e.g. from `huggingface-cli download facebook/encodec_32khz --local-dir DIR`)")
    cfg = config_from_hf(json.loads((folder / "config.json").read_text()))
    if (folder / "model.safetensors").is_file():
        from safetensors.numpy import load_file
        state_dict = load_file(str(folder / "model.safetensors"))
    elif (folder / "pytorch_model.bin").is_file():
        state_dict = _torch_load(folder / "pytorch_model.bin")
    else:
        raise FileNotFoundError(f"{folder} has config.json but neither model.safetensors nor pytorch_model.bin")
    return cfg, model_from_state_dict(cfg, state_dict, "hf", dtype)


def _find_hf_snapshot(name: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached / no hub library: the caller explains
        return None


def load_audiocraft_codec(path: str | os.PathLike, *, hf_folder: str | os.PathLike | None = None,
                          dtype: jnp.dtype = jnp.float32) -> tuple[EncodecConfig, Encodec]:
    """Load audiocraft's ``compression_state_dict.bin`` (a file, or a folder holding one).

    A native export is built from its ``xp.cfg``. The redirect ``{'pretrained': 'facebook/encodec_32khz'}``
    (what the released MusicGen / MAGNeT folders hold) is loaded from ``hf_folder``, or from the local
    Hugging Face cache when that model was downloaded before.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "compression_state_dict.bin"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; pass compression_state_dict.bin or its folder, "
                                f"a train-codec workdir or a converted model folder (magnet.json)")
    pkg = _torch_load(path)
    if not isinstance(pkg, Mapping):
        raise CheckpointError(f"{path} holds a {type(pkg).__name__}, not an audiocraft export dict")
    if "pretrained" in pkg:
        name = str(pkg["pretrained"])
        if name.startswith("dac_"):
            raise CheckpointError(f"{path} points to the DAC codec {name!r}, which is not EnCodec")
        folder = Path(hf_folder) if hf_folder is not None else _find_hf_snapshot(name)
        if folder is None:
            raise FileNotFoundError(
                f"{path} points to the Hugging Face model {name!r}, which is not in the local cache; download "
                f"it (`huggingface-cli download {name} --local-dir DIR`) and pass hf_folder=DIR")
        return load_hf_encodec(folder, dtype)
    missing = [k for k in ("best_state", "xp.cfg") if k not in pkg]
    if missing:
        raise CheckpointError(f"{path} lacks {missing}: expected an audiocraft export "
                              f"({{'best_state', 'xp.cfg', ...}}) or a {{'pretrained': name}} redirect; "
                              f"found keys {sorted(pkg)}")
    cfg = config_from_audiocraft(pkg["xp.cfg"])
    state = pkg["best_state"]
    if isinstance(state, Mapping) and "model" in state and not any("." in k for k in state):
        state = state["model"]  # an unexported training checkpoint's best_state
    return cfg, model_from_state_dict(cfg, state, "audiocraft", dtype)


def load_codec(path: str | os.PathLike, **kwargs: Any) -> tuple[EncodecConfig, Encodec]:
    """Load any codec-level kind: a train-codec workdir (config.json + checkpoints/), a Hugging Face
    folder (has config.json) or an audiocraft export. (A converted model folder's codec is read by
    ``magnet_jax.models.load_codec_weights``, which also takes everything this takes.)"""
    path = Path(path)
    if path.is_dir() and (path / "checkpoints").is_dir() and (path / "config.json").is_file():
        from magnet_jax.codec.training.evaluation_run import trained_codec
        return trained_codec(path)
    if path.is_dir() and (path / "config.json").is_file() and not (path / "compression_state_dict.bin").is_file():
        return load_hf_encodec(path, kwargs.get("dtype", jnp.float32))
    return load_audiocraft_codec(path, **kwargs)
