"""Codec train-step throughput (audio seconds per second) on CPU: our jitted step vs audiocraft.

The reference step is audiocraft's ``CompressionSolver.run_step`` written out for the same
architecture: ``EncodecModel`` (SEANet encoder/decoder + ``ResidualVectorQuantizer`` with EMA,
quantizer dropout) in train mode, ``AdversarialLoss.train_adv`` on a ``MultiScaleSTFTDiscriminator``
(its Adam step), then the generator's adv + feat + l1 + msspec losses through audiocraft's
``Balancer``, the commitment penalty's backward, and the generator's Adam step.

Glue (documented, bench-only): torchaudio cannot load here, so ``torchaudio.transforms.Spectrogram``
in msstftd.py and ``MelSpectrogram`` in specloss.py are replaced by torch.stft-based stand-ins
with the same definitions (tests/test_codec_train_parity.py checks they agree with ours).

    python bench/bench_codec_train.py [--steps 5] [--batch 8] [--seconds 1.0] [--out bench/results/codec_train_cpu.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import numpy as np  # noqa: E402


def _jax_step(config: dict, audio: np.ndarray, steps: int) -> dict:
    import jax
    from magnet_jax.codec.training.step import build_trainer
    from magnet_jax.train import sharding
    mesh = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
    trainer = build_trainer(config, mesh)
    with jax.set_mesh(mesh):
        state = trainer.init_state()
        x = jax.numpy.asarray(audio)
        t = time.perf_counter()
        state, m = trainer.train_step(state, x, np.float32(0))
        jax.block_until_ready(m)
        compile_s = time.perf_counter() - t
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            state, m = trainer.train_step(state, x, np.float32(0))
            jax.block_until_ready(m)
            times.append(time.perf_counter() - t)
    return {"first_step_s": compile_s, "step_s": float(np.median(times))}


def _torch_step(config: dict, audio: np.ndarray, steps: int) -> dict:
    import reference
    reference.install_stubs()
    import torch
    from test_codec_train_parity import _TorchMelSpectrogram, _TorchSpectrogram
    from audiocraft.adversarial import losses as adv_losses
    from audiocraft.adversarial.discriminators import msstftd
    from audiocraft.losses import balancer as bal
    from audiocraft.losses import specloss
    from audiocraft.models.encodec import EncodecModel
    from audiocraft.modules.seanet import SEANetDecoder, SEANetEncoder
    from audiocraft.quantization.vq import ResidualVectorQuantizer
    msstftd.torchaudio = types.SimpleNamespace(transforms=types.SimpleNamespace(Spectrogram=_TorchSpectrogram))
    specloss.MelSpectrogram = _TorchMelSpectrogram

    cc, dc, lc, qc = config["codec"], config["disc"], config["losses"], config["quantizer"]
    seanet = dict(channels=cc.channels, dimension=cc.dimension, n_filters=cc.n_filters, ratios=list(cc.ratios),
                  n_residual_layers=cc.n_residual_layers, lstm=cc.lstm, pad_mode=cc.pad_mode, true_skip=cc.true_skip)
    rvq = ResidualVectorQuantizer(dimension=cc.dimension, n_q=cc.n_q, q_dropout=qc.q_dropout, bins=cc.bins,
                                  decay=qc.decay, kmeans_init=qc.kmeans_init, kmeans_iters=qc.kmeans_iters,
                                  threshold_ema_dead_code=int(qc.threshold_ema_dead_code))
    model = EncodecModel(SEANetEncoder(**seanet), SEANetDecoder(**seanet), rvq, frame_rate=int(cc.frame_rate),
                         sample_rate=cc.sample_rate, channels=cc.channels).train()
    disc = msstftd.MultiScaleSTFTDiscriminator(filters=dc.filters, n_ffts=list(dc.n_ffts),
                                               hop_lengths=list(dc.hop_lengths), win_lengths=list(dc.win_lengths),
                                               activation_params={"negative_slope": dc.negative_slope})
    adam = lambda p: torch.optim.Adam(p, lr=3e-4, betas=(0.5, 0.9))  # noqa: E731
    adversary = adv_losses.AdversarialLoss(disc, adam(disc.parameters()), adv_losses.hinge_loss,
                                           adv_losses.hinge_real_loss, adv_losses.hinge_fake_loss,
                                           adv_losses.FeatureMatchingLoss(torch.nn.L1Loss()))
    msspec = specloss.MultiScaleMelSpectrogramLoss(cc.sample_rate, lc.msspec_range_start, lc.msspec_range_end,
                                                   lc.msspec_n_mels, lc.msspec_f_min, None, lc.msspec_normalized,
                                                   lc.msspec_alphas)
    balancer = bal.Balancer(lc.balanced(), total_norm=lc.balancer_total_norm, ema_decay=lc.balancer_ema_decay)
    opt = adam(model.parameters())
    x = torch.tensor(audio)

    def step():
        qres = model(x)
        y = qres.x
        adversary.train_adv(y, x)
        losses = {}
        adv, feat = adversary(y, x)
        losses.update(adv=adv, feat=feat, l1=torch.nn.functional.l1_loss(y, x), msspec=msspec(y, x))
        qres.penalty.backward(retain_graph=True)
        balancer.backward({k: losses[k] for k in lc.balanced()}, y)
        opt.step()
        opt.zero_grad()

    torch.set_num_threads(os.cpu_count() or 1)
    t = time.perf_counter()
    step()
    first = time.perf_counter() - t
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return {"first_step_s": first, "step_s": float(np.median(times))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/codec_tiny.py")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args()
    from magnet_jax.config_loader import load_config
    # the full adversarial recipe (audiocraft's weights, without DAC's log-mel loss, which
    # audiocraft lacks), whatever the config trains with: the comparison is EncodecModel +
    # MultiScaleSTFTDiscriminator step against ours
    config = load_config(args.config, [f"train.batch_size={args.batch}", "losses.adv=4", "losses.feat=4",
                                       "losses.l1=0.1", "losses.msspec=2", "losses.log_mel=0"])
    cc = config["codec"]
    n = int(args.seconds * cc.sample_rate)
    audio = (0.3 * np.random.default_rng(0).normal(size=(args.batch, cc.channels, n))).astype(np.float32)
    jax_r = _jax_step(config, audio, args.steps)
    torch_r = _torch_step(config, audio, args.steps)
    audio_s = args.batch * args.seconds
    result = {"bench": "codec_train_step", "config": args.config, "batch": args.batch, "seconds_per_clip": args.seconds,
              "timed_steps": args.steps, "cpu_count": os.cpu_count(),
              "load_avg_1m": os.getloadavg()[0],
              "jax": {**jax_r, "audio_seconds_per_s": audio_s / jax_r["step_s"]},
              "torch_audiocraft": {**torch_r, "audio_seconds_per_s": audio_s / torch_r["step_s"]},
              "ratio_jax_over_torch": torch_r["step_s"] / jax_r["step_s"]}
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
