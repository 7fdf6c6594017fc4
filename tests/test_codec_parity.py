"""EnCodec parity with the reference: audiocraft's EncodecModel and transformers' EncodecModel.

Every reference model here is built by the reference's own code from a config (audiocraft's
``builders.get_compression_model`` on an ``xp.cfg``, transformers' ``EncodecModel`` on a config),
given random weights (random codebooks, weight-norm scales away from ``||v||``), saved in the
released file formats, and loaded with our converters. Codes must be identical and decoded audio
within 1e-4 (float32, highest matmul precision).
"""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import reference
from magnet_jax.codec import EncodecConfig, codec_config
from magnet_jax.codec.convert import (CheckpointError, config_from_audiocraft, config_from_hf, load_audiocraft_codec,
                                      load_codec, load_hf_encodec, model_from_state_dict)
from magnet_jax.codec.runner import CodecRunner

ATOL = 1e-4

# facebook/encodec_32khz's config.json (the codec MusicGen / MAGNeT redirect to).
HF_ENCODEC_32KHZ = {
    "architectures": ["EncodecModel"], "audio_channels": 1, "chunk_length_s": None, "codebook_dim": 128,
    "codebook_size": 2048, "compress": 2, "dilation_growth_rate": 2, "hidden_size": 128, "kernel_size": 7,
    "last_kernel_size": 7, "model_type": "encodec", "norm_type": "weight_norm", "normalize": False,
    "num_filters": 64, "num_lstm_layers": 2, "num_residual_layers": 1, "overlap": None, "pad_mode": "reflect",
    "residual_kernel_size": 3, "sampling_rate": 32000, "target_bandwidths": [2.2], "trim_right_ratio": 1.0,
    "upsampling_ratios": [8, 5, 4, 4], "use_causal_conv": False, "use_conv_shortcut": False,
}


def xp_cfg_yaml(cfg: EncodecConfig) -> str:
    """An audiocraft xp.cfg for ``cfg``, with the interpolations real exports contain."""
    final = "null" if cfg.final_activation is None else cfg.final_activation
    return f"""
device: cpu
dtype: float32
sample_rate: {cfg.sample_rate}
channels: {cfg.channels}
compression_model: encodec
encodec:
  autoencoder: seanet
  quantizer: rvq
  sample_rate: ${{sample_rate}}
  channels: ${{channels}}
  causal: {str(cfg.causal).lower()}
  renormalize: false
seanet:
  dimension: {cfg.dimension}
  channels: ${{channels}}
  causal: ${{encodec.causal}}
  n_filters: {cfg.n_filters}
  n_residual_layers: {cfg.n_residual_layers}
  ratios: {list(cfg.ratios)}
  activation: ELU
  activation_params: {{alpha: {cfg.elu_alpha}}}
  norm: {cfg.norm}
  norm_params: {{}}
  kernel_size: {cfg.kernel_size}
  residual_kernel_size: {cfg.residual_kernel_size}
  last_kernel_size: {cfg.last_kernel_size}
  dilation_base: {cfg.dilation_base}
  pad_mode: {cfg.pad_mode}
  true_skip: {str(cfg.true_skip).lower()}
  compress: {cfg.compress}
  lstm: {cfg.lstm}
  disable_norm_outer_blocks: {cfg.disable_norm_outer_blocks}
  decoder:
    trim_right_ratio: {cfg.trim_right_ratio}
    final_activation: {final}
    final_activation_params: null
  encoder: {{}}
rvq:
  n_q: {cfg.n_q}
  q_dropout: false
  bins: {cfg.bins}
  decay: 0.99
  kmeans_init: true
  kmeans_iters: 50
  threshold_ema_dead_code: 2
  orthogonal_reg_weight: 0.0
  orthogonal_reg_active_codes_only: false
no_quant: {{}}
"""


def randomize_(model, codebooks) -> None:
    """Random codebooks (kmeans init leaves them zero) and weight-norm scales away from ||v||."""
    import torch
    with torch.no_grad():
        for embed in codebooks:
            embed.normal_()
        for name, p in model.named_parameters():
            if name.endswith(("weight_g", "original0")):
                p.mul_(torch.empty_like(p).uniform_(0.5, 1.5))


def audiocraft_export(cfg: EncodecConfig, path, seed: int = 0):
    """Build audiocraft's EncodecModel from an xp.cfg, randomize it, save a native export at ``path``."""
    torch = reference.require("torch")
    builders = reference.require("audiocraft.models.builders")
    from omegaconf import OmegaConf
    torch.manual_seed(seed)
    yaml_text = xp_cfg_yaml(cfg)
    model = builders.get_compression_model(OmegaConf.create(yaml_text)).eval()
    randomize_(model, [layer._codebook.embed for layer in model.quantizer.vq.layers])
    torch.save({"best_state": model.state_dict(), "xp.cfg": yaml_text, "version": "1.3.0", "exported": True}, path)
    return model


def reference_codec(model, audio: np.ndarray, n_q: int | None = None):
    import torch
    with torch.no_grad():
        if n_q is not None:
            model.set_num_codebooks(n_q)
        codes, scale = model.encode(torch.from_numpy(audio))
        assert scale is None
        out = model.decode(codes)
        model.set_num_codebooks(model.total_codebooks)
    return codes.numpy(), out.numpy()


def random_audio(batch: int, channels: int, samples: int, seed: int = 0) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal((batch, channels, samples))).astype(np.float32)


def ours(runner_or_model, audio: np.ndarray, n_q: int | None = None):
    with jax.default_matmul_precision("highest"):
        codes = runner_or_model.encode(jnp.asarray(audio), n_q)
        out = runner_or_model.decode(codes)
    return np.asarray(codes), np.asarray(out)


def assert_parity(ref_codes, ref_audio, codes, audio) -> float:
    assert codes.shape == ref_codes.shape, (codes.shape, ref_codes.shape)
    np.testing.assert_array_equal(codes, ref_codes)
    assert audio.shape == ref_audio.shape, (audio.shape, ref_audio.shape)
    err = float(np.abs(audio - ref_audio).max())
    assert err <= ATOL, f"decoded audio max abs error {err:.3g} > {ATOL}"
    return err


# ----------------------------------------------------------------------------------------------
# released architectures, through the released file formats
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def audiocraft_32khz(tmp_path_factory):
    cfg = codec_config("encodec_32khz", pad_mode="constant")  # audiocraft-native 32 kHz export
    path = tmp_path_factory.mktemp("ac32") / "compression_state_dict.bin"
    ref = audiocraft_export(cfg, path)
    loaded_cfg, model = load_audiocraft_codec(path.parent)
    assert loaded_cfg == cfg
    return ref, CodecRunner(model), path


def test_audiocraft_32khz_parity(audiocraft_32khz):
    ref, runner, _ = audiocraft_32khz
    audio = random_audio(2, 1, 16001)  # 0.5 s + 1 sample: the last frame is partial
    ref_codes, ref_audio = reference_codec(ref, audio)
    codes, out = ours(runner, audio)
    assert codes.shape == (2, 4, 26) and out.shape == (2, 1, 26 * 640)
    err = assert_parity(ref_codes, ref_audio, codes, out)
    print(f"audiocraft 32 kHz: codes identical, max abs audio error {err:.2e}")


def test_audiocraft_loader_reads_same_file(audiocraft_32khz):
    """audiocraft's own loader rebuilds the same model from our test export: the file is a faithful export."""
    loaders = reference.require("audiocraft.models.loaders")
    ref, _, path = audiocraft_32khz
    reloaded = loaders.load_compression_model(str(path), device="cpu").state_dict()
    for key, value in ref.state_dict().items():
        assert (reloaded[key] == value).all(), key


def test_audiocraft_16khz_parity(tmp_path):
    cfg = codec_config("encodec_16khz")
    ref = audiocraft_export(cfg, tmp_path / "compression_state_dict.bin", seed=1)
    loaded_cfg, model = load_audiocraft_codec(tmp_path / "compression_state_dict.bin")
    assert loaded_cfg == cfg
    audio = random_audio(2, 1, 8123, seed=1)
    ref_codes, ref_audio = reference_codec(ref, audio)
    codes, out = ours(CodecRunner(model), audio)
    assert codes.shape == (2, 4, 26)
    err = assert_parity(ref_codes, ref_audio, codes, out)
    print(f"audiocraft 16 kHz: codes identical, max abs audio error {err:.2e}")


# Small architectures that exercise every SEANet option the reference has, fast enough to run eagerly.
SMALL = dict(dimension=16, n_filters=4, ratios=(4, 3, 2), n_q=3, bins=64, sample_rate=8000)
OPTION_SETS = {
    "stereo_causal_reflect_convskip": dict(channels=2, causal=True, pad_mode="reflect", true_skip=False),
    "noncausal_constant_nolstm_tanh": dict(pad_mode="constant", lstm=0, final_activation="Tanh"),
    "norm_none_two_residuals_dilation3": dict(norm="none", n_residual_layers=2, dilation_base=3, compress=4,
                                              residual_kernel_size=5, kernel_size=5, last_kernel_size=3, lstm=1),
    "causal_trim_half_outer_norm_off": dict(causal=True, trim_right_ratio=0.5, disable_norm_outer_blocks=2,
                                            elu_alpha=0.5, pad_mode="constant"),
}


# (samples, n_q) per option set: together they cover a partial single frame, hop - 1, hop + 1,
# several frames, and every codebook count.
LENGTHS = {
    "stereo_causal_reflect_convskip": [(301, 2)],
    "noncausal_constant_nolstm_tanh": [(23, 1)],
    "norm_none_two_residuals_dilation3": [(25, None)],
    "causal_trim_half_outer_norm_off": [(1, None)],
}


@pytest.mark.parametrize("name", sorted(OPTION_SETS))
def test_audiocraft_options_parity(tmp_path, name):
    cfg = EncodecConfig(**SMALL, **OPTION_SETS[name])
    ref = audiocraft_export(cfg, tmp_path / "c.bin", seed=2)
    loaded_cfg, model = load_audiocraft_codec(tmp_path / "c.bin")
    assert loaded_cfg == cfg
    runner = CodecRunner(model)
    for samples, n_q in LENGTHS[name]:
        audio = random_audio(2, cfg.channels, samples, seed=samples)
        ref_codes, ref_audio = reference_codec(ref, audio, n_q)
        codes, out = ours(runner, audio, n_q)
        assert codes.shape == (2, n_q or cfg.n_q, -(-samples // cfg.hop_length))
        assert out.shape == (2, cfg.channels, codes.shape[-1] * cfg.hop_length)
        assert_parity(ref_codes, ref_audio, codes, out)


# ----------------------------------------------------------------------------------------------
# transformers EncodecModel
# ----------------------------------------------------------------------------------------------
def hf_model(config: dict, seed: int = 0):
    torch = reference.require("torch")
    transformers = reference.require("transformers")
    torch.manual_seed(seed)
    hf_cfg = transformers.EncodecConfig(**{k: v for k, v in config.items() if k not in ("architectures", "model_type")})
    model = transformers.EncodecModel(hf_cfg).eval()
    randomize_(model, [layer.codebook.embed for layer in model.quantizer.layers])
    return model


def hf_reference(model, audio: np.ndarray):
    import torch
    with torch.no_grad():
        enc = model.encode(torch.from_numpy(audio), bandwidth=model.config.target_bandwidths[-1])
        out = model.decode(enc.audio_codes, enc.audio_scales)[0]
    return enc.audio_codes[0].numpy(), out.numpy()


@pytest.fixture(scope="module")
def hf_32khz(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf32")
    model = hf_model(HF_ENCODEC_32KHZ)
    model.save_pretrained(folder)  # config.json + model.safetensors (parametrizations.* names)
    return model, folder


def test_hf_config_is_the_32khz_preset():
    assert config_from_hf(HF_ENCODEC_32KHZ) == codec_config("encodec_32khz")


def test_hf_32khz_parity_safetensors(hf_32khz):
    model, folder = hf_32khz
    assert (folder / "model.safetensors").is_file()
    cfg, ours_model = load_hf_encodec(folder)
    assert cfg == codec_config("encodec_32khz")
    audio = random_audio(2, 1, 12345, seed=5)
    ref_codes, ref_audio = hf_reference(model, audio)
    codes, out = ours(CodecRunner(ours_model), audio)
    err = assert_parity(ref_codes, ref_audio, codes, out)
    print(f"transformers 32 kHz (reflect padding): codes identical, max abs audio error {err:.2e}")


def test_hf_pytorch_bin_with_weight_g_names_and_redirect(hf_32khz, tmp_path):
    """A hub-style folder (pytorch_model.bin, legacy weight_g/weight_v keys) behind audiocraft's redirect."""
    import torch
    model, folder = hf_32khz
    legacy = {k.replace(".parametrizations.weight.original0", ".weight_g")
               .replace(".parametrizations.weight.original1", ".weight_v"): v
              for k, v in model.state_dict().items()}
    assert any(k.endswith("weight_g") for k in legacy)
    hub = tmp_path / "encodec_32khz"
    hub.mkdir()
    (hub / "config.json").write_text(json.dumps(HF_ENCODEC_32KHZ))
    torch.save(legacy, hub / "pytorch_model.bin")
    torch.save({"pretrained": "facebook/encodec_32khz", "exported": True, "version": "1.3.0"},
               tmp_path / "compression_state_dict.bin")
    cfg, ours_model = load_audiocraft_codec(tmp_path, hf_folder=hub)
    assert cfg == codec_config("encodec_32khz") and load_codec(hub)[0] == cfg
    # the same weights as the safetensors load, whose outputs test_hf_32khz_parity_safetensors checks
    _, from_safetensors = load_hf_encodec(folder)
    a, b = nnx.to_flat_state(nnx.state(ours_model)), nnx.to_flat_state(nnx.state(from_safetensors))
    assert [p for p, _ in a] == [p for p, _ in b]
    for (path, x), (_, y) in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x[...]), np.asarray(y[...]), err_msg=str(path))


def test_hf_24khz_architecture_parity(tmp_path):
    """transformers' default config is facebook/encodec_24khz: causal, conv shortcuts, 32 codebooks."""
    model = hf_model({}, seed=4)
    cfg = config_from_hf(model.config.to_dict())
    ours_model = model_from_state_dict(cfg, model.state_dict(), "hf")
    assert cfg == codec_config("encodec_24khz")
    audio = random_audio(1, 1, 4001, seed=7)
    ref_codes, ref_audio = hf_reference(model, audio)
    codes, out = ours(CodecRunner(ours_model), audio)
    assert codes.shape == (1, 32, 13)
    assert_parity(ref_codes, ref_audio, codes, out)


# ----------------------------------------------------------------------------------------------
# converter errors
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_export(tmp_path_factory):
    import torch
    cfg = EncodecConfig(**SMALL)
    path = tmp_path_factory.mktemp("small") / "c.bin"
    audiocraft_export(cfg, path)
    return torch.load(path, weights_only=True)


def _save_and_load(pkg, tmp_path):
    import torch
    torch.save(pkg, tmp_path / "bad.bin")
    return load_audiocraft_codec(tmp_path / "bad.bin")


def test_converter_missing_key(small_export, tmp_path):
    pkg = dict(small_export, best_state=dict(small_export["best_state"]))
    del pkg["best_state"]["encoder.model.0.conv.conv.weight_v"]
    del pkg["best_state"]["decoder.model.1.lstm.weight_hh_l1"]
    with pytest.raises(CheckpointError, match=r"2 missing: decoder\.model\.1\.lstm\.weight_hh_l1, "
                                              r"encoder\.model\.0\.conv\.conv\.weight_v"):
        _save_and_load(pkg, tmp_path)


def test_converter_unexpected_key(small_export, tmp_path):
    import torch
    pkg = dict(small_export, best_state=dict(small_export["best_state"]))
    pkg["best_state"]["encoder.model.99.conv.conv.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"1 unexpected: encoder\.model\.99\.conv\.conv\.weight"):
        _save_and_load(pkg, tmp_path)


def test_converter_misshaped_key(small_export, tmp_path):
    import torch
    pkg = dict(small_export, best_state=dict(small_export["best_state"]))
    pkg["best_state"]["quantizer.vq.layers.1._codebook.embed"] = torch.zeros(65, 16)
    with pytest.raises(CheckpointError, match=r"wrong shape: quantizer\.vq\.layers\.1\._codebook\.embed: "
                                              r"checkpoint \(65, 16\), model \(64, 16\)"):
        _save_and_load(pkg, tmp_path)


def test_converter_bad_packages(small_export, tmp_path):
    with pytest.raises(CheckpointError, match="lacks"):
        _save_and_load({"best_state": small_export["best_state"]}, tmp_path)
    with pytest.raises(CheckpointError, match="renormalize"):
        _save_and_load(dict(small_export, **{"xp.cfg": small_export["xp.cfg"].replace(
            "renormalize: false", "renormalize: true")}), tmp_path)
    with pytest.raises(FileNotFoundError, match="hf_folder=DIR"):
        _save_and_load({"pretrained": "facebook/encodec_32khz"}, tmp_path)
    with pytest.raises(FileNotFoundError, match="compression_state_dict.bin"):
        load_audiocraft_codec(tmp_path / "nowhere")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps(HF_ENCODEC_32KHZ))
    with pytest.raises(FileNotFoundError, match="neither model.safetensors nor pytorch_model.bin"):
        load_hf_encodec(tmp_path / "hf")
    with pytest.raises(CheckpointError, match="normalize=true"):
        config_from_hf(dict(HF_ENCODEC_32KHZ, normalize=True))


def test_xp_cfg_parsing():
    """Only the codec sections are resolved: a training config's other sections may use resolvers."""
    cfg = codec_config("encodec_16khz")
    text = xp_cfg_yaml(cfg) + "dora:\n  dir: ${oc.env:HOME}/xps\nsolver:\n  lr: ${optim.lr}\n"
    assert config_from_audiocraft(text) == cfg
    asym = text.replace("  encoder: {}", "  encoder: {n_filters: 32}")
    with pytest.raises(CheckpointError, match=r"different \['n_filters'\]"):
        config_from_audiocraft(asym)
    with pytest.raises(CheckpointError, match="no 'rvq' section"):
        config_from_audiocraft(text.replace("rvq:", "other:"))
