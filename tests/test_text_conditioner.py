"""The text conditioner against audiocraft's T5Conditioner + ConditioningProvider, and its
dropout, cache, bucketing, precomputed-states, sharding and error behaviour."""
from __future__ import annotations

import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import reference
from text_fixtures import t5_folder
from magnet_jax.text import (OUTPUT_PROJ_PREFIX, BertConfig, BertEncoder, Conditioner, T5Config,
                             T5Encoder, TextConditioner, TextEncoder, TextSettings, bucket,
                             cfg_dropout, collate_hidden, load_output_proj, text_settings_from_xp,
                             word_dropout)
from magnet_jax.train.sharding import LOGICAL_AXIS_RULES, make_mesh

DIM = 32  # LM model dim of the test conditioner
PROMPTS = ["A cheerful pop song with acoustic guitar and upbeat drums.",
           "calm piano",
           None,                      # no description: the null condition
           "",                        # empty description: also null (mask zeroed)
           " ",                       # not empty: tokenizes to </s> with mask 1
           "naïve café — 120 BPM, 4/4 ✓ techno track with rolling bassline and hi-hats"]


def _audiocraft_t5_conditioner(folder, word_dropout_p: float = 0.0):
    """audiocraft's T5Conditioner with its from_pretrained loaders pointed at a local folder
    (it only accepts hub names, and no hub is reachable here)."""
    conditioners = reference.require("audiocraft.modules.conditioners")
    import torch
    from transformers import T5EncoderModel, T5Tokenizer

    class Local:
        def __init__(self, cls):
            self.cls = cls

        def from_pretrained(self, name, *args, **kwargs):
            return self.cls.from_pretrained(folder)

    saved = conditioners.T5Tokenizer, conditioners.T5EncoderModel
    saved_dim = conditioners.T5Conditioner.MODELS_DIMS["t5-small"]
    conditioners.T5Tokenizer, conditioners.T5EncoderModel = Local(T5Tokenizer), Local(T5EncoderModel)
    conditioners.T5Conditioner.MODELS_DIMS["t5-small"] = 64
    try:
        torch.manual_seed(0)
        t5c = conditioners.T5Conditioner("t5-small", output_dim=DIM, finetune=False, device="cpu",
                                         word_dropout=word_dropout_p)
    finally:
        conditioners.T5Tokenizer, conditioners.T5EncoderModel = saved
        conditioners.T5Conditioner.MODELS_DIMS["t5-small"] = saved_dim
    with torch.no_grad():  # a non-trivial bias so the mask multiplication is visible
        t5c.output_proj.bias.normal_()
    provider = conditioners.ConditioningProvider({"description": t5c}).eval()
    return conditioners, provider


def _ours_from(provider, **encoder_kwargs) -> Conditioner:
    encoder = TextEncoder.t5(t5_folder("t5"), **encoder_kwargs)
    conditioner = TextConditioner(encoder.width, DIM, nnx.Rngs(1))
    sd = {f"condition_provider.{k}": v.numpy() for k, v in provider.state_dict().items()}
    assert load_output_proj(conditioner, sd) == {f"{OUTPUT_PROJ_PREFIX}.weight",
                                                 f"{OUTPUT_PROJ_PREFIX}.bias"}
    return Conditioner(encoder, conditioner)


def test_conditions_with_null_match_audiocraft():
    """cond and null halves equal audiocraft's provider output for conditions + null_conditions
    tokenized together (as MagnetLMModel.generate does), masks included (max abs err <= 1e-4)."""
    conditioners, provider = _audiocraft_t5_conditioner(t5_folder("t5"))
    import torch
    attrs = [conditioners.ConditioningAttributes(text={"description": p}) for p in PROMPTS]
    null_attrs = conditioners.ClassifierFreeGuidanceDropout(p=1.0)(attrs)
    with torch.no_grad():
        want, want_mask = provider(provider.tokenize(attrs + null_attrs))["description"]
    want, want_mask = want.numpy(), want_mask.numpy()

    ours = _ours_from(provider)
    with jax.default_matmul_precision("highest"):
        cond, null = ours.encode_with_null(PROMPTS)
        both = ours.encode(PROMPTS + [None] * len(PROMPTS))
    B = len(PROMPTS)
    assert cond.shape == null.shape == (B, want.shape[1], DIM)
    np.testing.assert_array_equal(np.asarray(both.mask), want_mask)
    err = max(np.abs(np.asarray(cond) - want[:B]).max(), np.abs(np.asarray(null) - want[B:]).max())
    assert err <= 1e-4, f"max abs error {err}"
    assert not np.asarray(null).any() and not want[B:].any()   # null is exactly zero
    assert not np.asarray(cond)[2:4].any()                     # None and "" are null too
    assert np.abs(np.asarray(cond)[4]).max() > 0.1             # " " is not null

    # the same through the released-checkpoint path: xp.cfg settings + condition_provider keys
    sd = {f"condition_provider.{k}": v.numpy() for k, v in provider.state_dict().items()}
    released = Conditioner.from_audiocraft(XP, sd, DIM, encoder_path=t5_folder("t5"))
    with jax.default_matmul_precision("highest"):
        cond2, _ = released.encode_with_null(PROMPTS)
    np.testing.assert_allclose(np.asarray(cond2), np.asarray(cond), atol=1e-6)


# The text part of a released MAGNeT music xp.cfg.
XP = {"conditioners": {"description": {"model": "t5", "t5": {
          "name": "t5-base", "finetune": False, "word_dropout": 0.3, "normalize_text": False}}},
      "classifier_free_guidance": {"training_dropout": 0.3, "inference_coef": 3.0},
      "attribute_dropout": {}}


def test_text_settings_from_xp():
    settings = text_settings_from_xp(XP)
    assert settings == TextSettings("description", "t5-base", 0.3, 0.3, 0.0)
    lut = {**XP, "conditioners": {"description": {"model": "lut", "lut": {}}}}
    with pytest.raises(ValueError, match="only 't5'"):
        text_settings_from_xp(lut)
    spacy = {**XP, "conditioners": {"description": {"model": "t5", "t5": {
        **XP["conditioners"]["description"]["t5"], "normalize_text": True}}}}
    with pytest.raises(ValueError, match="normalize_text"):
        text_settings_from_xp(spacy)


def test_word_dropout_matches_audiocraft_tokenize():
    """Seeded the same way, our word dropout drops the words audiocraft's T5Conditioner drops,
    giving the same ids and masks (empty-after-dropout rows masked)."""
    conditioners, provider = _audiocraft_t5_conditioner(t5_folder("t5"), word_dropout_p=0.5)
    t5c = provider.conditioners["description"].train()
    texts = ["one two three four five six", "solo", "", "a b c d e f g h i j k l", "x y"]
    random.seed(1234)
    want = t5c.tokenize(list(texts))
    entries = word_dropout(texts, 0.5, random.Random(1234))
    ours = _ours_from(provider).encoder
    tokens = ours.tokenize(entries)
    mask = tokens.mask * np.array([[e != ""] for e in entries])
    np.testing.assert_array_equal(tokens.ids, want["input_ids"].numpy())
    np.testing.assert_array_equal(mask, want["attention_mask"].numpy())
    assert entries != texts  # p = 0.5 did drop something with this seed


def test_cfg_dropout_nulls_whole_batch_once():
    texts = ["a", "b", None]
    assert cfg_dropout(texts, 1.0, random.Random(0)) == [None] * 3
    assert cfg_dropout(texts, 0.0, random.Random(0)) == texts
    rng = np.random.default_rng(0)
    dropped = sum(cfg_dropout(texts, 0.3, rng)[0] is None for _ in range(4000))
    assert abs(dropped / 4000 - 0.3) < 0.03
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        cfg_dropout(texts, 1.5, rng)


def test_training_states_apply_cfg_then_word_dropout():
    conditioner = Conditioner.create(TextEncoder.t5(t5_folder("t5")), DIM)
    hidden, mask = conditioner.states(["calm piano", "loud drums"], cfg_dropout_p=1.0,
                                      rng=random.Random(0))
    assert hidden.shape == (2, 1, 64) and not mask.any() and not hidden.any()
    hidden, mask = conditioner.states(["calm piano", "x"], word_dropout_p=1.0, rng=random.Random(0))
    assert not mask.any()  # every word dropped -> "" -> null
    with pytest.raises(ValueError, match="rng"):
        conditioner.states(["calm piano"], word_dropout_p=0.1)


def test_precomputed_states_give_the_same_conditions():
    """States stored per prompt (as the data pipeline does) collate to the on-the-fly result."""
    conditioner = Conditioner.create(TextEncoder.t5(t5_folder("t5"), cache_size=0), DIM)
    stored = conditioner.encoder.hidden_states(PROMPTS)        # what the pipeline writes
    assert stored[2] is None and stored[3] is None
    with jax.default_matmul_precision("highest"):
        direct = conditioner.encode(PROMPTS)
        again = conditioner.project(*collate_hidden(stored, conditioner.encoder.null_length))
    np.testing.assert_allclose(np.asarray(again.cond), np.asarray(direct.cond), atol=1e-6)
    hidden, mask = collate_hidden([None, None], width=64)
    assert hidden.shape == (2, 1, 64) and not mask.any()
    padded, pmask = collate_hidden(stored, pad_to=40)
    assert padded.shape[1] == 40 and (pmask.sum(1) == mask_sums(stored)).all()
    with pytest.raises(ValueError, match="shorter"):
        collate_hidden(stored, pad_to=2)
    with pytest.raises(ValueError, match="width"):
        collate_hidden([None])


def mask_sums(rows):
    return np.array([0 if r is None else r.shape[0] for r in rows])


def test_cache_skips_the_encoder_for_repeated_prompts():
    encoder = TextEncoder.t5(t5_folder("t5"), cache_size=2)
    calls = []
    forward = encoder.forward
    encoder.forward = lambda tokens: calls.append(tokens.ids.shape[0]) or forward(tokens)
    first = encoder.hidden_states(["calm piano", "calm piano", "loud drums"])
    assert calls == [2]                                      # duplicates encoded once
    second = encoder.hidden_states(["loud drums", "calm piano"])
    assert calls == [2]                                      # all cached
    np.testing.assert_array_equal(second[0], first[2])
    encoder.hidden_states(["new one"])             # evicts the least recently used: loud drums
    encoder.hidden_states(["calm piano"])
    assert calls == [2, 1]
    encoder.hidden_states(["loud drums"])
    assert calls == [2, 1, 1] and len(encoder._cache) == 2


def test_bucketed_shapes_reuse_compiled_programs():
    assert [bucket(n, 8) for n in (1, 8, 9, 13, 17, 25, 100)] == [8, 8, 12, 16, 24, 32, 128]
    assert [bucket(n) for n in (1, 2, 3, 5, 7, 64)] == [1, 2, 3, 6, 8, 64]
    assert bucket(3, multiple=4) == 4 and bucket(5, multiple=4) == 8
    encoder = TextEncoder.t5(t5_folder("t5"), cache_size=0)
    encoder.hidden_states(["calm piano", "loud drums", "a", "b"])  # 4 rows, short: bucket (4, 8)
    size = encoder._forward._cache_size()
    encoder.hidden_states(["x", "y", "z", "w"])                  # 4 rows, short: same program
    assert encoder._forward._cache_size() == size
    encoder.hidden_states(["b"])                                 # (1, 8): one new program
    assert encoder._forward._cache_size() == size + 1


def test_bad_inputs_get_clear_errors():
    conditioner = Conditioner.create(TextEncoder.t5(t5_folder("t5")), DIM)
    with pytest.raises(ValueError, match="no descriptions"):
        conditioner.encode([])
    with pytest.raises(TypeError, match="not a single string"):
        conditioner.encode("calm piano")
    with pytest.raises(TypeError, match="str or None"):
        conditioner.encode(["ok", 3])
    with pytest.raises(KeyError, match="output_proj.weight"):
        load_output_proj(conditioner.conditioner, {})
    bad = {f"{OUTPUT_PROJ_PREFIX}.weight": np.zeros((DIM, 10)),
           f"{OUTPUT_PROJ_PREFIX}.bias": np.zeros((DIM,))}
    with pytest.raises(ValueError, match="does not fit"):
        load_output_proj(conditioner.conditioner, bad)
    with pytest.raises(ValueError, match="text width"):
        Conditioner(TextEncoder.t5(t5_folder("t5")), TextConditioner(384, DIM, nnx.Rngs(0)))


def test_every_parameter_has_logical_axes_from_the_rules_table():
    known = {name for name, _ in LOGICAL_AXIS_RULES}
    modules = [
        nnx.eval_shape(lambda: T5Encoder(T5Config(64, 32, 8, 48, 2, 4), nnx.Rngs(0))),
        nnx.eval_shape(lambda: T5Encoder(T5Config(64, 32, 8, 48, 2, 4, feed_forward_proj="gated-gelu"),
                                         nnx.Rngs(0))),
        nnx.eval_shape(lambda: BertEncoder(BertConfig(64, 32, 2, 4, 48), nnx.Rngs(0))),
        TextConditioner(16, DIM, nnx.Rngs(0)),
    ]
    for module in modules:
        for path, var in nnx.to_flat_state(nnx.state(module, nnx.Param)):
            axes = var.get_metadata().get("out_sharding")
            assert axes is not None and len(axes) == len(var.get_value().shape), path
            assert all(a is None or a in known for a in axes), (path, axes)
            assert var.get_metadata().get("eager_sharding") is False, path


def test_sharded_encoder_matches_single_device():
    """On a (data 2, fsdp 2, tensor 2) mesh of CPU devices: params split by heads/mlp, batch
    split over data x fsdp, same states as unsharded."""
    if jax.device_count() < 8:
        pytest.skip("needs 8 devices (tests/conftest.py sets XLA_FLAGS for 8 CPU devices)")
    mesh = make_mesh(2, 2, 2)
    texts = ["calm piano", "loud drums with a heavy riff", "x", None, "soft strings"]
    plain = TextEncoder.t5(t5_folder("t5"), cache_size=0)
    sharded = TextEncoder.t5(t5_folder("t5"), cache_size=0, mesh=mesh)
    q = sharded._state["blocks"]["q"][...]                 # [layers, d, heads, d_kv]
    assert q.sharding.spec[2] == "tensor"
    with jax.default_matmul_precision("highest"):
        a, b = plain.hidden_states(texts), sharded.hidden_states(texts)
    for x, y in zip(a, b):
        assert (x is None) == (y is None)
        if x is not None:
            np.testing.assert_allclose(x, y, atol=1e-5)


def test_bfloat16_encoder_is_close_to_float32():
    texts = ["calm piano", "loud drums with a heavy riff"]
    f32 = TextEncoder.t5(t5_folder("t5"), cache_size=0).hidden_states(texts)
    bf16 = TextEncoder.t5(t5_folder("t5"), cache_size=0, dtype=jnp.bfloat16).hidden_states(texts)
    for x, y in zip(f32, bf16):
        assert y.dtype == np.float32 and np.abs(x - y).max() < 0.1 * np.abs(x).max()
