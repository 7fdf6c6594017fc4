"""CLAP and PaSST embedders (magnet_jax/eval/torch_embedders.py) against their reference packages.

Each model is built by its own package with seeded random weights (nothing is downloaded),
saved in the released checkpoint's file layout, loaded through our loader, and compared with
the embedding the package computes itself: ``CLAP_Module.get_audio_embedding_from_data`` on the
full CLAP model (audio and text towers), ``hear21passt.base.get_scene_embeddings`` on a
``PasstBasicWrapper`` assembled here. Like the other parity tests these fail under
MAGNET_JAX_REQUIRE_REFERENCE=1 (CI) when a package cannot be imported, and skip otherwise.
"""
from __future__ import annotations

import copy
import json
import sys

import numpy as np
import pytest

import reference
from magnet_jax.eval import torch_embedders as te

TOL = 2e-5


def _require(import_fn, pip: str):
    return reference.require_import(import_fn, "reference package", pip)


@pytest.fixture(scope="module")
def real_laion_clap():
    """conftest puts a stub laion_clap into sys.modules (audiocraft's optional import): set it
    aside for this module so the real package imports, then put it back."""
    reference.require("torch")                      # installs the stubs first, if not yet there
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k == "laion_clap" or k.startswith("laion_clap.")}
    real = {k: m for k, m in saved.items() if te._is_real(m)}
    sys.modules.update(real)
    try:
        yield
    finally:
        for k in [k for k in sys.modules if k == "laion_clap" or k.startswith("laion_clap.")]:
            del sys.modules[k]
        sys.modules.update(saved)


def _perturb(module, seed: int) -> None:
    """Random values in every float parameter and buffer (biases, norms, running stats too)."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, value in module.state_dict().items():
            if not value.is_floating_point():
                continue
            if key.endswith("running_var"):
                value.copy_(0.5 + torch.rand(value.shape, generator=gen))
            else:
                value.add_(0.02 * torch.randn(value.shape, generator=gen))


def _audio(sr: float, seconds: float, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    tones = [0.3 * np.sin(2 * np.pi * (110 + 90 * i) * t) for i in range(n)]
    return np.stack(tones).astype(np.float32) + 0.05 * rng.standard_normal((n, t.size)).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# CLAP
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clap_ref(real_laion_clap, tmp_path_factory):
    """A full laion_clap CLAP (HTSAT-tiny audio; a small offline 'transformer' text tower instead
    of RoBERTa), its CLAP_Module, and its checkpoint in the released layout."""
    import torch
    pk = _require(te._import_laion_clap, te.CLAP_PIP)
    cfg = json.loads((pk.config_dir / "HTSAT-tiny.json").read_text())
    cfg["text_cfg"].update(model_type="transformer", width=64, heads=2, layers=1, vocab_size=100)
    torch.manual_seed(0)
    model = pk.CLAP(**copy.deepcopy(cfg))
    _perturb(model, seed=1)
    model.eval()
    module = pk.CLAP_Module.__new__(pk.CLAP_Module)   # its __init__ fetches RoBERTa from the hub
    torch.nn.Module.__init__(module)
    module.enable_fusion, module.model, module.model_cfg = False, model, cfg
    state = {"module." + k: v for k, v in model.state_dict().items()}
    path = tmp_path_factory.mktemp("clap") / "630k-audioset-best.pt"
    torch.save({"epoch": 45, "name": "random", "state_dict": state}, path)
    return module, state, path


@pytest.fixture(scope="module")
def clap_embedder(clap_ref):
    return te.load_clap(str(clap_ref[2]))


def _clap_reference(module, pieces):
    import torch
    with torch.no_grad():
        return module.get_audio_embedding_from_data(pieces, use_tensor=False)


def test_clap_matches_package_short_clips(clap_ref, clap_embedder):
    module, embedder = clap_ref[0], clap_embedder
    assert (embedder.name, embedder.sample_rate, embedder.amodel) == ("clap", 48000, "HTSAT-tiny")
    audio = _audio(48000, 1.5, 2, seed=0)                   # repeat-padded to 10 s by the package
    ours = embedder(audio)
    ref = _clap_reference(module, audio)
    assert ours.shape == (2, 512) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert np.abs(ours - ref).max() < TOL
    assert np.abs(ours[0] - ours[1]).max() > 1e-3            # the clips differ, so must the rows


def test_clap_long_clip_is_mean_of_windows(clap_ref, clap_embedder):
    module, embedder = clap_ref[0], clap_embedder
    audio = _audio(48000, 10.5, 1, seed=1)
    assert te.ClapEmbedder.windows(audio.shape[1]) == [0, audio.shape[1] - 480000]
    ours = embedder(audio)
    windows = _clap_reference(module, [audio[0, :480000], audio[0, -480000:]])
    mean = windows.mean(axis=0)
    assert np.abs(ours[0] - mean / np.linalg.norm(mean)).max() < TOL


def test_clap_checkpoint_errors(clap_ref, clap_embedder, tmp_path):
    import torch
    state = clap_ref[1]
    with pytest.raises(FileNotFoundError, match="CLAP checkpoint not found"):
        te.load_clap(str(tmp_path / "missing.pt"))
    torch.save({"state_dict": dict(state, **{"module.vision.proj": torch.zeros(3)})}, tmp_path / "unknown.pt")
    with pytest.raises(ValueError, match=r"unknown keys for a CLAP checkpoint: vision\.proj"):
        te.load_clap(str(tmp_path / "unknown.pt"))
    bad = {k: v for k, v in state.items() if k != "module.audio_projection.2.bias"}
    bad["module.audio_branch.bogus.weight"] = torch.zeros(3)
    torch.save({"state_dict": bad}, tmp_path / "bad_audio.pt")
    with pytest.raises(ValueError, match=r"unknown keys: audio_branch\.bogus\.weight; "
                                         r"missing keys: audio_projection\.2\.bias"):
        te.load_clap(str(tmp_path / "bad_audio.pt"))
    fusion = {"module.audio_branch.fusion_model.local_att.0.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match="fusion CLAP checkpoint"):
        te.clap_audio_state({"state_dict": fusion})
    with pytest.raises(ValueError, match="too short"):
        clap_embedder(np.zeros((1, 0), np.float32))
    with pytest.raises(ValueError, match="mono"):
        clap_embedder(np.zeros((1, 2, 100), np.float32))


def test_clap_amodel_from_shapes():
    torch = reference.require("torch")
    def shapes(width, window):
        return {"audio_projection.0.weight": torch.zeros(512, width),
                "audio_branch.spectrogram_extractor.stft.conv_real.weight": torch.zeros(window // 2 + 1, 1, window)}
    assert te.infer_clap_amodel(shapes(768, 1024)) == "HTSAT-tiny"
    assert te.infer_clap_amodel(shapes(1024, 1024)) == "HTSAT-base"       # music_* checkpoints
    assert te.infer_clap_amodel(shapes(2048, 1024)) == "HTSAT-large"
    assert te.infer_clap_amodel(shapes(768, 1536)) == "HTSAT-tiny-win-1536"
    with pytest.raises(ValueError, match="pass amodel="):
        te.infer_clap_amodel(shapes(640, 1024))


# ----------------------------------------------------------------------------------------------
# PaSST
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def passt_ref(tmp_path_factory):
    """hear21passt's PaSST (passt_s_swa_p16_128_ap476, random weights) in a PasstBasicWrapper
    assembled here with hear21passt.base.get_basic_model's mel settings, and its state dict."""
    torch = reference.require("torch")
    pk = _require(te._import_passt, te.PASST_PIP)
    torch.manual_seed(0)
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):
        net = pk.passt.get_model(arch="passt_s_swa_p16_128_ap476", pretrained=False)
        mel = pk.base.AugmentMelSTFT(n_mels=128, sr=32000, win_length=800, hopsize=320, n_fft=1024, freqm=48,
                                     timem=192, htk=False, fmin=0.0, fmax=None, norm=1, fmin_aug_range=10,
                                     fmax_aug_range=2000)
    _perturb(net, seed=2)
    wrapper = pk.base.PasstBasicWrapper(mel=mel, net=net, mode="embed_only")
    wrapper.eval()
    path = tmp_path_factory.mktemp("passt") / "passt-s-f128-p16-s10-ap.476-swa.pt"
    state = net.state_dict()
    torch.save(state, path)
    return pk, wrapper, state, path


@pytest.fixture(scope="module")
def passt_embedder(passt_ref):
    return te.load_passt(str(passt_ref[3]))


def test_passt_matches_package(passt_ref, passt_embedder):
    import torch
    pk, wrapper, embedder = passt_ref[0], passt_ref[1], passt_embedder
    assert (embedder.name, embedder.sample_rate, embedder.variant) == ("passt", 32000, "base")
    audio = _audio(32000, 1.0, 2, seed=3)
    ours = embedder(audio)
    ref = pk.base.get_scene_embeddings(torch.from_numpy(audio), wrapper).numpy()
    assert ours.shape == (2, 768) and ours.dtype == np.float32
    assert np.abs(ours - ref).max() < TOL * max(1.0, np.abs(ref).max())
    assert np.abs(ours[0] - ours[1]).max() > 1e-3


def test_passt_errors(passt_ref, passt_embedder, tmp_path):
    import torch
    state = passt_ref[2]
    with pytest.raises(FileNotFoundError, match="PaSST checkpoint not found"):
        te.load_passt(str(tmp_path / "missing.pt"))
    bad = {k: v for k, v in state.items() if k != "norm.bias"}
    bad["bogus"] = torch.zeros(2)
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"unknown keys: bogus; missing keys: norm\.bias"):
        te.load_passt(str(tmp_path / "bad.pt"))
    torch.save({"a": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a PaSST state dict"):
        te.load_passt(str(tmp_path / "other.pt"))
    assert passt_embedder.min_samples == 4801                    # one 16-frame patch at hop 320
    with pytest.raises(ValueError, match="at least 4801 samples"):
        passt_embedder(np.zeros((1, 4800), np.float32))
    assert passt_embedder(_audio(32000, 1.0, 1, seed=4)[:, :4801]).shape == (1, 768)


def test_kaldi_mel_banks_formula():
    """The copied torchaudio get_mel_banks against Kaldi's formula written out in numpy."""
    reference.require("torch")
    bins, centers = te._kaldi_get_mel_banks(128, 1024, 32000, 0.0, 15000.0, 100.0, -500.0, 1.0)
    mel = lambda f: 1127.0 * np.log1p(np.asarray(f, np.float64) / 700.0)  # noqa: E731
    edges = np.linspace(mel(0.0), mel(15000.0), 130)
    fft_mel = mel(np.arange(512) * 32000 / 1024)
    up = (fft_mel[None] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None])
    down = (edges[2:, None] - fft_mel[None]) / (edges[2:, None] - edges[1:-1, None])
    expected = np.maximum(0.0, np.minimum(up, down))
    assert bins.shape == (128, 512)
    np.testing.assert_allclose(bins.numpy(), expected, atol=1e-4)
    np.testing.assert_allclose(centers.numpy()[:, 0], 700.0 * np.expm1(edges[1:-1] / 1127.0), rtol=1e-5)


def test_eval_embedding_flags_reach_the_loaders(clap_ref, passt_ref):
    """``--embedding clap=PATH`` / ``passt=PATH`` (frechet.load_embedder) build these embedders."""
    from magnet_jax.eval import frechet as F
    assert isinstance(F.load_embedder(f"clap={clap_ref[2]}"), te.ClapEmbedder)
    assert isinstance(F.load_embedder(f"passt={passt_ref[3]}"), te.PasstEmbedder)
