"""Hybrid-MAGNeT (``magnet_jax.models.hybrid``): the first P seconds by an autoregressive MusicGen,
the rest by MAGNeT continuing those tokens.

- P = 0 is plain MAGNeT (sampling, same seed: the same tokens and audio);
- P = the whole clip is the AR model's own ``generate`` for that duration (sampling, same seed);
- greedy, ``magnet-jax generate --hybrid-prefix --ar-model``: the tokens equal the AR model run
  for P seconds, then MAGNeT continuing those tokens, both by hand through the models' own calls;
- P < 0, P > the clip, a mismatched AR model and bad flag combinations are refused clearly.

Tiny random models on the shipped codec (tests/tiny_models.py), loaded once per module; the
command line gets the same loaded objects (its loader is the real one, memoised), so each
compiled program is built once.
"""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tiny_models as tm
from magnet_jax import pipeline_cli
from magnet_jax.lm.musicgen import MusicGenConfig
from magnet_jax.models import HybridMAGNeT, PipelineError, load_model
from magnet_jax.models.hybrid import MAGNET_STREAM
from magnet_jax.models.magnet import prompt_key
from magnet_jax.pipeline_cli import main as cli_main

TEXTS = ["calm piano", "fast drums"]
CLIP_FRAMES = 15                             # 0.3 s at 50 Hz, 5 spans of 3


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("hybrid")
    folders = {"magnet": tm.magnet_folder(root / "magnet"), "musicgen": tm.musicgen_folder(root / "musicgen")}
    loaded = {str(path): load_model(path, mesh=None) for path in folders.values()}
    return {"magnet": loaded[str(folders["magnet"])], "musicgen": loaded[str(folders["musicgen"])],
            "folders": folders, "loaded": loaded, "root": root}


def test_prefix_zero_is_plain_magnet(models):
    hybrid = HybridMAGNeT(models["magnet"], models["musicgen"])
    want = models["magnet"].generate(TEXTS, seed=5)
    got = hybrid.generate(TEXTS, prefix_seconds=0.0, seed=5)
    np.testing.assert_array_equal(got.tokens, want.tokens)
    np.testing.assert_array_equal(got.audio, want.audio)
    assert got.tokens.shape == (2, 2, CLIP_FRAMES)


def test_prefix_of_the_whole_clip_is_the_ar_models_own_output(models):
    hybrid = HybridMAGNeT(models["magnet"], models["musicgen"])
    assert hybrid.prefix_frames(0.3, models["magnet"].generation_params) == CLIP_FRAMES
    want = models["musicgen"].generate(TEXTS, seed=5, duration=CLIP_FRAMES / tm.FRAME_RATE)
    got = hybrid.generate(TEXTS, prefix_seconds=0.3, seed=5)
    np.testing.assert_array_equal(got.tokens, want.tokens)
    assert got.tokens.shape == (2, 2, CLIP_FRAMES)


def by_hand(models, seconds: float) -> np.ndarray:
    """The AR model for ``seconds`` (its own sampler, its own text condition, greedy), then
    MAGNeT's continuation of those tokens (its prompt path, greedy)."""
    magnet, musicgen = models["magnet"], models["musicgen"]
    frames = int(round(seconds * tm.FRAME_RATE))
    prefix = musicgen.sampler.generate(jax.random.key(0), frames=frames, cond=musicgen.conditions(TEXTS),
                                       config=musicgen.sampler_config({"use_sampling": False}))
    keys = jnp.stack([prompt_key(jax.random.fold_in(jax.random.key(0), MAGNET_STREAM), r) for r in range(2)])
    out = magnet.generate_tokens(keys, TEXTS, prefix, magnet.sampler_config({"use_sampling": False}))
    np.testing.assert_array_equal(np.asarray(out)[..., :frames], np.asarray(prefix))     # the prefix is kept
    return np.asarray(out)


@pytest.fixture
def cli(models, monkeypatch):
    """``magnet-jax generate`` whose loader returns the module's loaded models (the real loader,
    memoised by folder)."""
    real = pipeline_cli.load_model

    def load(args, mesh="auto", compute_dtype="float32"):
        key = str(args.model)
        if key not in models["loaded"]:
            models["loaded"][key] = real(args, mesh=None, compute_dtype=compute_dtype)
        return models["loaded"][key]

    monkeypatch.setattr(pipeline_cli, "load_model", load)

    def run(out, *flags: str) -> int:
        return cli_main(["generate", "--model", str(models["folders"]["magnet"]), "--prompt", *TEXTS,
                         "--out", str(out), *flags])
    return run


def test_greedy_cli_hybrid_equals_the_ar_model_then_magnet_by_hand(models, cli, tmp_path):
    """P = 0.12 s = 6 frames (two whole spans) by the AR model, 9 frames by MAGNeT."""
    assert cli(tmp_path / "out", "--greedy", "--hybrid-prefix", "0.12", "--ar-model",
               str(models["folders"]["musicgen"])) == 0
    tokens = np.load(tmp_path / "out" / "tokens.npy")
    np.testing.assert_array_equal(tokens, by_hand(models, 0.12))
    sidecar = json.loads((tmp_path / "out" / "generate.json").read_text())
    assert sidecar["hybrid"]["prefix_frames"] == 6 and sidecar["hybrid"]["ar_sampler"]["use_sampling"] is False
    assert sidecar["hybrid"]["ar_model"] == str(models["folders"]["musicgen"])


def test_bad_prefixes_and_models_are_refused(models, cli, tmp_path, capsys):
    hybrid = HybridMAGNeT(models["magnet"], models["musicgen"])
    for bad in (-0.1, 0.5, float("nan")):
        with pytest.raises(PipelineError, match=r"must be in \[0, 0.3\] s, the clip length .* \(15 frames\)"):
            hybrid.generate(TEXTS, prefix_seconds=bad)
    other_cfg = MusicGenConfig(**{**tm.MUSICGEN_CFG.__dict__, "n_q": 3, "delays": (0, 1, 2)})
    other = tm.musicgen_folder(models["root"] / "other", other_cfg)
    with pytest.raises(PipelineError, match="does not share .*codebooks 3 vs 2"):
        HybridMAGNeT(models["magnet"], load_model(other, mesh=None))
    cases = [(("--hybrid-prefix", "0.1"), "--hybrid-prefix needs --ar-model"),
             (("--ar-model", str(other)), "--ar-model without --hybrid-prefix"),
             (("--hybrid-prefix", "0.1", "--ar-model", str(other)), "codebooks 3 vs 2"),
             (("--hybrid-prefix", "1.0", "--ar-model", str(models["folders"]["musicgen"])), "must be in [0, 0.3] s")]
    for i, (flags, message) in enumerate(cases):
        assert cli(tmp_path / f"out{i}", *flags) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and err.count("\n") == 0, err
