"""VGGish embedder (magnet_jax.eval.vggish) against torchvggish 0.2 on random weights.

The reference side is torchvggish's own ``vggish_input.waveform_to_examples`` and its ``VGG``
module (built with random init; ``hub`` downloads are patched to fail, so nothing touches the
network), saved with ``torch.save`` and read back by our ``load``.
"""
from __future__ import annotations

import numpy as np
import pytest

import reference
from magnet_jax.eval import vggish
from magnet_jax.eval.frechet import Embedder

SR = vggish.SAMPLE_RATE
ATOL = 1e-4                     # relative to the embedding scale (max |embedding|)


def _audio(seconds: float, seed: int) -> np.ndarray:
    """A C major chord plus noise, float32 at 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    chord = sum(np.sin(2 * np.pi * f * t) for f in (261.63, 329.63, 392.0)) / 3
    return (0.5 * chord + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def tv():
    """The torchvggish package, with its weight downloads disabled."""
    ref = reference.require("torchvggish")

    def _no_download(*args, **kwargs):
        raise RuntimeError("the test must not download torchvggish weights")
    ref.torchvggish.hub.load_state_dict_from_url = _no_download
    return ref


@pytest.fixture(scope="module")
def torch_model(tv):
    import torch
    torch.manual_seed(0)
    model = tv.torchvggish.VGG(tv.torchvggish.make_layers(), postprocess=False).eval()
    with torch.no_grad():      # He init keeps activations at the input's scale through 9 layers
        for p in model.parameters():
            if p.ndim > 1:
                p.normal_(0.0, (2.0 / p[0].numel()) ** 0.5)
            else:
                p.uniform_(-0.1, 0.1)
    return model


@pytest.fixture(scope="module")
def weights(torch_model, tmp_path_factory):
    import torch
    path = tmp_path_factory.mktemp("vggish") / "vggish-random.pth"
    torch.save(torch_model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def clips():
    return np.stack([_audio(2.5, seed=0), _audio(2.5, seed=1)])    # 2 examples each


def _reference(tv, model, clips, drop_final_relu: bool):
    """torchvggish: examples per clip, then the model (minus its last ReLU, as FAD tools do)."""
    import torch
    examples = [tv.vggish_input.waveform_to_examples(c, SR, return_tensor=True) for c in clips]
    x = torch.cat(examples).detach()
    with torch.no_grad():
        if drop_final_relu:
            features = model.features(x).permute(0, 2, 3, 1).reshape(len(x), -1)   # NCHW -> NHWC
            emb = model.embeddings[:-1](features)
        else:
            emb = model(x)
    return x[:, 0].numpy(), emb.numpy()


def test_front_end_matches_waveform_to_examples(tv, clips):
    ours = vggish.clips_to_examples(clips)
    theirs = np.concatenate([tv.vggish_input.waveform_to_examples(c, SR, return_tensor=False) for c in clips])
    assert ours.shape == (4, 96, 64) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs.astype(np.float32), rtol=0, atol=1e-5)


@pytest.mark.parametrize("final_relu", [False, True])
def test_embeddings_match_torchvggish(tv, torch_model, weights, clips, final_relu):
    embedder = vggish.load(str(weights), final_relu=final_relu, batch_size=3)   # 4 examples: 2 chunks, padded
    assert isinstance(embedder, Embedder) and embedder.name == "vggish" and embedder.sample_rate == 16000
    examples, want = _reference(tv, torch_model, clips, drop_final_relu=not final_relu)
    np.testing.assert_allclose(embedder.examples(clips), examples, rtol=0, atol=1e-5)
    got = embedder(clips)
    assert got.shape == (4, 128) and got.dtype == np.float32
    scale = np.abs(want).max()
    assert scale > 0.1 and want.std(axis=0).mean() > 0.01 * scale, scale   # input-dependent rows
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL * scale)
    if not final_relu:
        assert (got < 0).any()          # the pre-activation embedding, as FAD uses it


def _random_pca(embeddings: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A whitening-like PCA that maps these embeddings to about unit scale, so that most values
    land inside the [-2, 2] clip and the quantization is exercised."""
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.standard_normal((128, 128)))
    spread = embeddings.std() + 1e-3
    return (rotation / spread).astype(np.float32), embeddings.mean(axis=0).astype(np.float32)


def _torch_postprocessor(tv, vectors, means):
    import torch
    pproc = tv.torchvggish.Postprocessor.__new__(tv.torchvggish.Postprocessor)   # no download
    pproc._pca_matrix = torch.as_tensor(vectors).float()
    pproc._pca_means = torch.as_tensor(means.reshape(-1, 1)).float()
    return pproc


def test_postprocess_matches_torchvggish_postprocessor(tv, torch_model, weights, clips, tmp_path):
    import torch
    _, emb = _reference(tv, torch_model, clips, drop_final_relu=False)
    vectors, means = _random_pca(emb)
    pproc = _torch_postprocessor(tv, vectors, means)
    want_exact = pproc.postprocess(torch.as_tensor(emb)).numpy()
    np.testing.assert_array_equal(vggish.PCAQuantizer(vectors, means)(emb), want_exact)
    assert 0 < want_exact.min() and want_exact.max() < 255        # not all clipped

    pca_file = tmp_path / "vggish_pca_params.pth"                   # numpy arrays, as the release
    torch.save({"pca_eigen_vectors": vectors.astype(np.float64), "pca_means": means.astype(np.float64)}, pca_file)
    embedder = vggish.load(str(weights), postprocess=True, final_relu=True, pca_path=str(pca_file))
    got = embedder(clips)
    assert got.shape == (4, 128)
    # 8-bit levels: a value within float error of a rounding edge may land one level off
    assert np.abs(got - want_exact).max() <= 1
    assert (got != want_exact).mean() < 0.01


def test_postprocess_from_pproc_keys_and_folder(weights, tmp_path):
    import torch
    state = torch.load(weights, weights_only=True)
    vectors = torch.eye(128)
    state["pproc.pca_eigen_vectors"], state["pproc.pca_means"] = vectors, torch.zeros(128, 1)
    torch.save(state, tmp_path / "vggish-pproc.pth")
    embedder = vggish.load(str(tmp_path), postprocess=True)               # the folder's only .pth
    assert embedder.pca is not None and np.array_equal(embedder.pca.eigen_vectors, np.eye(128))
    assert vggish.load(str(tmp_path)).pca is None                        # off by default


def _save(tmp_path, state: dict, name: str = "bad.pth") -> str:
    import torch
    path = tmp_path / name
    torch.save({k: torch.as_tensor(v) for k, v in state.items()}, path)
    return str(path)


def _tiny_state(**changes) -> dict:
    state = {k: np.zeros((1,), np.float32) for k in vggish.expected_shapes()}
    state.update(changes)
    return {k: v for k, v in state.items() if v is not None}


def test_unknown_key(tmp_path):
    reference.require("torch")
    path = _save(tmp_path, _tiny_state(**{"classifier.0.weight": np.zeros(3, np.float32)}))
    with pytest.raises(ValueError, match=r"unknown keys \['classifier.0.weight'\]"):
        vggish.load(path)


def test_missing_key(tmp_path):
    reference.require("torch")
    path = _save(tmp_path, _tiny_state(**{"embeddings.4.bias": None}))
    with pytest.raises(ValueError, match=r"missing keys \['embeddings.4.bias'\]"):
        vggish.load(path)


def test_wrong_shape(tmp_path):
    reference.require("torch")
    state = {k: np.zeros(s if k.startswith("features") else (1,), np.float32)
             for k, s in vggish.expected_shapes().items() if not k.startswith("embeddings.0")}
    state |= {"embeddings.0.weight": np.zeros((4096, 12), np.float32), "embeddings.0.bias": np.zeros(4096, np.float32)}
    path = _save(tmp_path, state)
    with pytest.raises(ValueError, match=r"embeddings.0.weight has shape \(4096, 12\), expected \(4096, 12288\)"):
        vggish.load(path)


def test_missing_file_and_ambiguous_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="do not exist"):
        vggish.load(str(tmp_path / "nope.pth"))
    (tmp_path / "a.pth").write_bytes(b"")
    (tmp_path / "b.pth").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="exactly one"):
        vggish.load(str(tmp_path))


def test_postprocess_without_pca_params(weights):
    with pytest.raises(FileNotFoundError, match="pca_path"):
        vggish.load(str(weights), postprocess=True)


def test_too_short_clip(weights):
    embedder = vggish.load(str(weights))
    with pytest.raises(ValueError, match="too short for VGGish.*15600 samples"):
        embedder(np.zeros((2, int(0.96 * SR)), np.float32))
    assert embedder(np.zeros((1, vggish.MIN_SAMPLES), np.float32)).shape == (1, 128)


def test_eval_embedding_flag_reaches_the_port(weights, clips):
    """``--embedding vggish=PATH`` (frechet.load_embedder) builds this embedder; ``embed`` resamples
    32 kHz input to its 16 kHz, so the rows equal those of the 16 kHz clips up to resampling."""
    from magnet_jax.eval import frechet as F
    embedder = F.load_embedder(f"vggish={weights}")
    assert isinstance(embedder, vggish.VGGishEmbedder)
    import soxr
    up = np.stack([soxr.resample(c, SR, 2 * SR) for c in clips])
    rows = F.embed(embedder, up, 2 * SR)
    assert rows.shape == (4, 128)
    np.testing.assert_allclose(rows, embedder(clips), rtol=0, atol=0.05 * np.abs(rows).max())
