"""MAGNeT.from_pretrained + generate against audiocraft's own MAGNeT on the same exported folder.

The folder is built by audiocraft's builders from an xp.cfg and saved as audiocraft exports it
(``pipeline_reference``); the reference loads it with ``MAGNeT.get_pretrained(folder)``, we load it
with ``MAGNeT.from_pretrained(folder)``. Greedy decoding must give identical tokens and audio within
1e-3 (float32, highest matmul precision).
"""
from __future__ import annotations

import os

import jax
import numpy as np
import pytest

import reference
from pipeline_reference import (RefPipelineShape, build_redirect_folder, conversion_cache, exported_folder,
                                hf_codec_folder, reference_generate, reference_magnet)
from text_fixtures import t5_folder
from magnet_jax.models import MAGNeT, Generation

AUDIO_ATOL = 1e-3
SHAPE = RefPipelineShape()
TEXTS = ["calm piano", "an epic orchestral soundtrack with a choir and brass, 120 BPM", None]
STEPS = [6, 3, 3, 3]


@pytest.fixture(scope="module")
def folder():
    reference.require("audiocraft.models.magnet")
    return exported_folder()


@pytest.fixture(scope="module")
def cache():
    return conversion_cache()


@pytest.fixture(scope="module")
def ours(folder, cache):
    return MAGNeT.from_pretrained(folder, text_encoder=t5_folder("t5"), cache_dir=cache, mesh=None)


@pytest.fixture(scope="module")
def ref(folder):
    return reference_magnet(folder, t5_folder("t5"))


def _compare(ours_out, ref_tokens, ref_audio):
    np.testing.assert_array_equal(ours_out.tokens, ref_tokens)
    err = np.abs(ours_out.audio - ref_audio).max()
    assert ours_out.audio.shape == ref_audio.shape
    assert err <= AUDIO_ATOL, f"audio max abs error {err}"
    print(f"tokens identical {ref_tokens.shape}, audio max abs error {err:.2e}")
    return err


def test_from_pretrained_reads_everything_from_xp_cfg(ours, cache):
    assert ours.sample_rate == SHAPE.sample_rate and ours.frame_rate == SHAPE.lm.frame_rate
    assert ours.duration == SHAPE.lm.segment_duration
    assert ours.lm_cfg.dim == SHAPE.lm.dim and ours.lm_cfg.card == SHAPE.lm.card
    assert ours.conditioner.encoder.width == 64
    assert ours.checkpoint_dir.parent == cache and (ours.checkpoint_dir / "magnet.json").is_file()


def test_generate_matches_audiocraft(ours, ref):
    """Greedy text-to-audio: a short, a long and a missing description batched together."""
    want_tokens, want_audio = reference_generate(ref, TEXTS, use_sampling=False, decoding_steps=STEPS)
    with jax.default_matmul_precision("highest"):
        got = ours.generate(TEXTS, use_sampling=False, decoding_steps=STEPS)
    _compare(got, want_tokens, want_audio)
    assert got.tokens.shape == (3, 4, 48) and got.audio.shape == (3, 1, 48 * SHAPE.hop)
    assert got.sample_rate == SHAPE.sample_rate


def test_unconditional_matches_audiocraft(ours, ref):
    """No text, 'stride1' spans and 'prod' scoring with a constant temperature."""
    params = dict(use_sampling=False, decoding_steps=[4, 2, 2, 2], span_arrangement="stride1",
                  span_scoring="prod", anneal_temp=False, temperature=2.0)
    want_tokens, want_audio = reference_generate(ref, None, num_samples=2, **params)
    with jax.default_matmul_precision("highest"):
        got = ours.generate_unconditional(2, **params)
    _compare(got, want_tokens, want_audio)


def test_continuation_matches_audiocraft(ours, ref):
    """Audio prompts encoded by the codec, their tokens pinned while the rest is decoded."""
    rng = np.random.default_rng(0)
    prompt = (0.3 * rng.standard_normal((2, 1, 700))).astype(np.float32)   # 11 frames of 64 samples
    texts = ["calm piano", None]
    want_tokens, want_audio = reference_generate(ref, texts, prompt=prompt, prompt_sample_rate=SHAPE.sample_rate,
                                                 use_sampling=False, decoding_steps=STEPS)
    with jax.default_matmul_precision("highest"):
        got = ours.generate_continuation(prompt, SHAPE.sample_rate, texts, use_sampling=False,
                                         decoding_steps=STEPS)
        prompt_codes = np.asarray(ours.codec.encode(prompt))
    _compare(got, want_tokens, want_audio)
    np.testing.assert_array_equal(got.tokens[:, :, :11], prompt_codes)


def test_continuation_resamples_and_mixes_down(ours):
    """A stereo prompt at twice the codec's rate is resampled (soxr) and mixed to mono first, and
    one prompt with two descriptions is continued once per description; the pinned tokens are the
    codec's codes of exactly that converted prompt. (Shapes as the parity test: no new compile.)"""
    import soxr
    rng = np.random.default_rng(1)
    stereo = (0.3 * rng.standard_normal((2, 1400))).astype(np.float32)   # [C, N] at 6144 Hz
    with jax.default_matmul_precision("highest"):
        got = ours.generate_continuation(stereo, 2 * SHAPE.sample_rate, ["calm piano", None],
                                         use_sampling=False, decoding_steps=STEPS)
    mono = soxr.resample(stereo.T, 2 * SHAPE.sample_rate, SHAPE.sample_rate).T.mean(0, keepdims=True)
    codes = np.asarray(ours.codec.encode(mono[None].astype(np.float32)))
    assert codes.shape[-1] == 11
    np.testing.assert_array_equal(got.tokens[:, :, :11], np.repeat(codes, 2, axis=0))
    assert got.audio.shape == (2, 1, 48 * SHAPE.hop)


def test_fixed_size_batches_and_sharding_change_nothing(ours):
    """Three prompts of one token length in batches of 2 (the last padded by repeating its
    prompt) give the rows of a one-batch run; on a 2-device mesh too. Sampling is seeded."""
    from flax import nnx
    from magnet_jax.train.sharding import make_mesh
    texts = ["jazzy piano chords", "dark techno track", "heavy metal riff"]
    lengths = set(ours.conditioner.encoder.tokenize(texts).lengths.tolist())
    assert len(lengths) == 1, "the prompts must tokenize to one length (text padding changes MAGNeT)"
    params = dict(use_sampling=False, decoding_steps=[2, 1, 1, 1])
    mesh = make_mesh(data=2, devices=jax.devices()[:2])
    sharded_model = MAGNeT(nnx.merge(ours.sampler.graphdef, ours.sampler.state), ours.codec.model,
                           ours.conditioner, mesh=mesh)
    with jax.default_matmul_precision("highest"):
        batched = ours.generate(texts, batch_size=2, **params)
        whole = ours.generate(texts, **params)
        sharded = sharded_model.generate(texts, batch_size=2, **params)
    np.testing.assert_array_equal(batched.tokens, whole.tokens)
    np.testing.assert_array_equal(sharded.tokens, whole.tokens)
    np.testing.assert_allclose(sharded.audio, whole.audio, atol=1e-5)

    sampled = [ours.generate(texts, batch_size=2, seed=s, decoding_steps=[2, 1, 1, 1]).tokens
               for s in (7, 7, 8)]
    np.testing.assert_array_equal(sampled[0], sampled[1])
    assert (sampled[0] != sampled[2]).any()


def test_bad_api_inputs_are_clear_errors(ours):
    """Each refused before any compile, with a message that names the problem (a 1 s prompt is
    exactly the 48 frames the model generates, so nothing would be left to generate)."""
    from magnet_jax.models import PipelineError
    cases = [
        (lambda: ours.generate([]), "no descriptions given"),
        (lambda: ours.generate(["a", 3]), "must be strings or None"),
        (lambda: ours.generate(["a"], duration=10), "generates 1 s segments only"),
        (lambda: ours.generate(["a"], decoding_steps=[2, 1]), "has 2 entries"),
        (lambda: ours.generate(["a"], topp=0.5), "unknown sampler parameter(s) ['topp']"),
        (lambda: ours.generate(["a"], batch_size=0), "batch_size=0"),
        (lambda: ours.generate_unconditional(0), "at least one sample"),
        (lambda: ours.generate_continuation(np.zeros((1, 48 * SHAPE.hop)), SHAPE.sample_rate, ["a"]),
         "not shorter than"),
        (lambda: ours.generate_continuation(np.zeros((2, 1, 100)), SHAPE.sample_rate, ["a", "b", "c"]),
         "2 prompt audios but 3 descriptions"),
    ]
    for call, message in cases:
        with pytest.raises(PipelineError) as err:
            call()
        assert message in str(err.value), (message, str(err.value))


def test_missing_names_and_files_are_clear_errors(tmp_path, monkeypatch):
    import shutil
    from magnet_jax.models import ModelNotFoundError, cache_folder, locate, sources
    monkeypatch.setattr(sources, "DEFAULT_MODEL", None)          # as if the shipped folder were gone
    with pytest.raises(ModelNotFoundError, match="no model given and the default model is missing"):
        MAGNeT.from_pretrained(None)
    with pytest.raises(ModelNotFoundError, match="unknown model 'facebook/magnet-large'.*magnet-small-10secs.*melody-tiny"):
        MAGNeT.from_pretrained("facebook/magnet-large")
    monkeypatch.setitem(sources.SHIPPED_MODELS, "melody-tiny", tmp_path / "not_installed")
    with pytest.raises(ModelNotFoundError, match="'melody-tiny' ships inside magnet-jax at .*not_installed, which is missing"):
        locate("melody-tiny")
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty_hub_cache"))
    with pytest.raises(ModelNotFoundError, match="could not get state_dict.bin of facebook/magnet-small-10secs"):
        MAGNeT.from_pretrained("facebook/magnet-small-10secs")
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(exported_folder() / "state_dict.bin", half)
    with pytest.raises(ModelNotFoundError, match=f"{half} is missing compression_state_dict.bin"):
        MAGNeT.from_pretrained(half)
    with pytest.raises(ModelNotFoundError, match="is a file; pass the folder"):
        MAGNeT.from_pretrained(half / "state_dict.bin")

    # the conversion cache is keyed by the files: a rewritten checkpoint is converted again
    shutil.copy(exported_folder() / "compression_state_dict.bin", half)
    before = cache_folder(locate(half), tmp_path)
    stat = (half / "state_dict.bin").stat()
    os.utime(half / "state_dict.bin", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cache_folder(locate(half), tmp_path) != before


def test_codec_redirect_matches_audiocraft(ours, folder, cache, tmp_path, monkeypatch):
    """The released layout: compression_state_dict.bin = {'pretrained': 'facebook/encodec_32khz'},
    i.e. a transformers EncodecModel. Offline and uncached it is a clear error naming the model and
    the codec= option; with a local copy, greedy generation equals audiocraft's. (The LM file is the
    one `ours` loaded, so its compiled sampler gives the tokens; the redirect model decodes them.)"""
    import huggingface_hub.constants
    from flax import nnx
    from magnet_jax.models import ModelNotFoundError
    hf = hf_codec_folder(tmp_path / "encodec_32khz")
    redirect = build_redirect_folder(tmp_path / "released_layout", folder)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty_hub_cache"))
    with pytest.raises(ModelNotFoundError, match="redirects to the Hugging Face model 'facebook/encodec_32khz'.*codec=DIR"):
        MAGNeT.from_pretrained(redirect, text_encoder=t5_folder("t5"), cache_dir=cache)
    released = MAGNeT.from_pretrained(redirect, text_encoder=t5_folder("t5"), codec=hf, cache_dir=cache, mesh=None)
    assert released.codec_cfg.pad_mode == "reflect" and released.frame_rate == SHAPE.lm.frame_rate
    jax.tree.map(np.testing.assert_array_equal, nnx.to_pure_dict(released.sampler.state),
                 nnx.to_pure_dict(ours.sampler.state))
    ref = reference_magnet(redirect, t5_folder("t5"), hf_codec=hf)
    want_tokens, want_audio = reference_generate(ref, TEXTS, use_sampling=False, decoding_steps=STEPS)
    with jax.default_matmul_precision("highest"):
        tokens = ours.generate(TEXTS, use_sampling=False, decoding_steps=STEPS).tokens
        got = Generation(released.decode(tokens), tokens, released.sample_rate)
    _compare(got, want_tokens, want_audio)
