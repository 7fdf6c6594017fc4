"""Codec-training losses and the MS-STFT discriminator against audiocraft on the same weights.

audiocraft builds ``MultiScaleMelSpectrogramLoss`` on ``torchaudio.transforms.MelSpectrogram`` and
``DiscriminatorSTFT`` on ``torchaudio.transforms.Spectrogram``; torchaudio cannot load here
(tests/reference.py stubs it). The comparisons below patch those two names, inside the
reference modules only, with small torch stand-ins built from ``torch.stft``
(center=False, periodic Hann window, window normalisation ``/ sqrt(sum w^2)`` when
``normalized``, power 2 for the mel) and librosa's HTK mel filters with ``norm=None`` (the
definition of torchaudio's ``melscale_fbanks(..., norm=None, mel_scale='htk')``). Everything else
(padding, pad_for_conv1d, log floors, alphas, normalisation, convs, weight norm, LeakyReLU,
feature maps, hinge losses) is audiocraft's own code.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference
from magnet_jax.codec.training import losses as L
from magnet_jax.codec.training.config import DiscriminatorConfig, LossConfig
from magnet_jax.codec.training.discriminator import MultiScaleSTFTDiscriminator
from magnet_jax.codec.training.spectral import mel_filterbank


class _TorchSpectrogram:
    """torchaudio.transforms.Spectrogram(center=False, power=None or 2, window normalisation) via torch.stft."""

    def __init__(self, n_fft, hop_length, win_length=None, window_fn=None, normalized=False, power=None, **_):
        import torch
        self.n_fft, self.hop, self.normalized, self.power = n_fft, int(hop_length), normalized, power
        self.window = torch.hann_window(win_length or n_fft)

    def to(self, device):
        return self

    def __call__(self, x):
        import torch
        shape = x.shape
        spec = torch.stft(x.reshape(-1, shape[-1]), self.n_fft, self.hop, window=self.window, center=False,
                          return_complex=True)
        spec = spec.reshape(*shape[:-1], *spec.shape[-2:])
        if self.normalized:
            spec = spec / self.window.pow(2).sum().sqrt()
        return spec if self.power is None else spec.abs().pow(self.power)


class _TorchMelSpectrogram(_TorchSpectrogram):
    def __init__(self, sample_rate, n_fft, n_mels, f_min=0.0, f_max=None, **kw):
        import librosa
        import torch
        super().__init__(n_fft, power=2.0, **kw)
        fb = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=f_min,
                                 fmax=f_max or sample_rate // 2, htk=True, norm=None)
        self.fb = torch.tensor(fb.T, dtype=torch.float32)

    def __call__(self, x):
        spec = super().__call__(x)
        return (spec.transpose(-1, -2) @ self.fb).transpose(-1, -2)


def test_mel_filterbank_is_torchaudios_htk_definition():
    import librosa
    for n_fft, n_mels, sr, fmin in ((512, 64, 16000, 64.0), (128, 16, 8000, 0.0), (2048, 80, 32000, 0.0)):
        ours = mel_filterbank(n_fft, n_mels, sr, fmin, None)
        ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=sr // 2, htk=True, norm=None).T
        np.testing.assert_allclose(ours, ref, atol=2e-6)


@pytest.mark.parametrize("normalized,alphas", [(True, False), (False, True)])
def test_multi_scale_mel_matches_audiocraft(monkeypatch, normalized, alphas):
    torch = reference.require("torch")
    specloss = reference.require("audiocraft.losses.specloss")
    monkeypatch.setattr(specloss, "MelSpectrogram", _TorchMelSpectrogram)
    sr = 16000
    ref = specloss.MultiScaleMelSpectrogramLoss(sr, range_start=6, range_end=10, n_mels=32, f_min=64.0,
                                                normalized=normalized, alphas=alphas)
    rng = np.random.default_rng(0)
    x = (0.3 * rng.normal(size=(2, 1, 4000))).astype(np.float32)
    y = (x + 0.05 * rng.normal(size=x.shape)).astype(np.float32)
    want = float(ref(torch.tensor(y), torch.tensor(x)))
    cfg = LossConfig(msspec_range_start=6, msspec_range_end=10, msspec_n_mels=32, msspec_f_min=64.0,
                     msspec_normalized=normalized, msspec_alphas=alphas)
    with jax.default_matmul_precision("highest"):
        got = float(L.multi_scale_mel(jnp.asarray(y), jnp.asarray(x), sr, cfg))
    np.testing.assert_allclose(got, want, rtol=1e-4)


def _copy_discriminator(ref_disc, ours) -> dict:
    """audiocraft MultiScaleSTFTDiscriminator state_dict -> our pure-dict params."""
    from flax import nnx
    params = nnx.to_pure_dict(nnx.state(ours, nnx.Param))
    sd = {k: v.detach().numpy() for k, v in ref_disc.state_dict().items()}
    for d, sub in params["discriminators"].items():
        for i, conv in sub["convs"].items():
            for name in conv:
                conv[name] = jnp.asarray(sd[f"discriminators.{d}.convs.{i}.conv.{name}"])
        for name in sub["conv_post"]:
            sub["conv_post"][name] = jnp.asarray(sd[f"discriminators.{d}.conv_post.conv.{name}"])
    return params


def test_discriminator_and_adversarial_losses_match_audiocraft(monkeypatch):
    torch = reference.require("torch")
    msstftd = reference.require("audiocraft.adversarial.discriminators.msstftd")
    adv = reference.require("audiocraft.adversarial.losses")
    import types
    monkeypatch.setattr(msstftd, "torchaudio", types.SimpleNamespace(
        transforms=types.SimpleNamespace(Spectrogram=_TorchSpectrogram)))
    from flax import nnx
    torch.manual_seed(0)
    cfg = DiscriminatorConfig(filters=4, n_ffts=(256, 128), hop_lengths=(64, 32), win_lengths=(256, 128),
                              negative_slope=0.3)
    ref = msstftd.MultiScaleSTFTDiscriminator(filters=4, n_ffts=[256, 128], hop_lengths=[64, 32],
                                              win_lengths=[256, 128], activation_params={"negative_slope": 0.3})
    ours = MultiScaleSTFTDiscriminator(cfg, 1, rngs=nnx.Rngs(0))
    graphdef, _ = nnx.split(ours)
    model = nnx.merge(graphdef, _copy_discriminator(ref, ours))
    rng = np.random.default_rng(1)
    real = (0.3 * rng.normal(size=(2, 1, 2000))).astype(np.float32)
    fake = (0.3 * rng.normal(size=(2, 1, 2000))).astype(np.float32)
    with torch.no_grad():
        ref_logits, ref_fmaps = ref(torch.tensor(fake))
        ref_real_logits, ref_real_fmaps = ref(torch.tensor(real))
    with jax.default_matmul_precision("highest"):
        logits, fmaps = model(jnp.asarray(fake))
        real_logits, real_fmaps = model(jnp.asarray(real))
    for a, b in zip(logits, ref_logits):           # ours NHWC [B, T, F, 1]; torch [B, 1, T, F]
        np.testing.assert_allclose(np.asarray(a)[..., 0], b.numpy()[:, 0], rtol=1e-4, atol=1e-5)
    for fa, fb in zip(fmaps, ref_fmaps):
        for a, b in zip(fa, fb):
            np.testing.assert_allclose(np.asarray(a), b.permute(0, 2, 3, 1).numpy(), rtol=1e-4, atol=1e-5)
    # losses on these logits / feature maps
    want_d = sum(adv.hinge_fake_loss(f) + adv.hinge_real_loss(r) for f, r in zip(ref_logits, ref_real_logits)) / 2
    np.testing.assert_allclose(float(L.discriminator_loss(logits, real_logits, "hinge")), float(want_d), rtol=1e-4)
    want_g = sum(adv.hinge_loss(f) for f in ref_logits) / 2
    np.testing.assert_allclose(float(L.generator_adv_loss(logits, "hinge")), float(want_g), rtol=1e-4)
    feat = adv.FeatureMatchingLoss(torch.nn.L1Loss())
    want_f = sum(feat(a, b) for a, b in zip(ref_fmaps, ref_real_fmaps)) / 2
    np.testing.assert_allclose(float(L.feature_matching(fmaps, real_fmaps)), float(want_f), rtol=1e-4)


def test_sisnr_matches_audiocraft():
    torch = reference.require("torch")
    sisnr = reference.require("audiocraft.losses.sisnr")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 1, 1600)).astype(np.float32)
    y = (0.7 * x + 0.2 * rng.normal(size=x.shape)).astype(np.float32)
    # one segment spanning the clip (segment=None trips an assert in audiocraft 1.3.0)
    want = float(sisnr.SISNR(sample_rate=16000, segment=0.1, overlap=0.0)(torch.tensor(y), torch.tensor(x)))
    got = -float(jnp.mean(L.sisnr(jnp.asarray(y), jnp.asarray(x))))
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_balancer_matches_audiocraft():
    torch = reference.require("torch")
    balancer = reference.require("audiocraft.losses.balancer")
    rng = np.random.default_rng(3)
    weights = {"a": 2.0, "b": 1.0, "c": 0.5}
    ref = balancer.Balancer(weights, total_norm=1.0, ema_decay=0.9, per_batch_item=True)
    st = L.balancer_init(3)
    for step in range(3):
        x = torch.tensor(rng.normal(size=(2, 1, 64)).astype(np.float32), requires_grad=True)
        scale = [1.0, 5.0, 0.1]
        losses = {n: s * (x ** (i + 1)).mean() for i, (n, s) in enumerate(zip(weights, scale))}
        grads = np.stack([torch.autograd.grad(losses[n], [x], retain_graph=True)[0].numpy() for n in weights])
        values = np.array([float(v) for v in losses.values()], np.float32)
        eff_ref = float(ref.backward(losses, x))
        out, eff, st, _ = L.balance(jnp.asarray(grads), jnp.asarray(values), jnp.asarray(list(weights.values())),
                                    st, total_norm=1.0, ema_decay=0.9, per_batch_item=True)
        np.testing.assert_allclose(np.asarray(out), x.grad.numpy(), rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(float(eff), eff_ref, rtol=1e-4)
