"""T5 encoder and tokenizer parity with transformers on random-weight folders, plus loader errors."""
from __future__ import annotations

import json
import shutil

import jax
import numpy as np
import pytest

import reference
from text_fixtures import HARD_STRINGS, t5_folder
from magnet_jax.text import ModelFilesError, load_t5, load_tokenizer, resolve_model_folder
from magnet_jax.text.t5 import relative_position_bucket



@pytest.mark.parametrize("buckets,distance", [(32, 128), (16, 40), (64, 256), (10, 50)])
def test_relative_position_bucket_matches_transformers(buckets, distance):
    """Every relative position in [-3000, 3000] lands in transformers' bucket, boundaries included."""
    reference.require("transformers")
    import torch
    from transformers.models.t5.modeling_t5 import T5Attention
    rel = np.arange(-3000, 3001)
    want = T5Attention._relative_position_bucket(torch.tensor(rel), True, buckets, distance).numpy()
    np.testing.assert_array_equal(relative_position_bucket(rel, buckets, distance), want)


@pytest.mark.parametrize("variant", ["t5", "flan"])
def test_t5_token_ids_match_hf_tokenizer(variant):
    """Ids and mask equal transformers' T5Tokenizer on hard strings, one by one and padded."""
    reference.require("transformers")
    from transformers import T5Tokenizer
    folder = t5_folder(variant)
    ours = load_tokenizer(folder, "<pad>")
    theirs = T5Tokenizer.from_pretrained(folder)
    for text in HARD_STRINGS:
        assert ours.encode(text) == theirs(text)["input_ids"], repr(text)
    batch = ours(HARD_STRINGS)
    want = theirs(HARD_STRINGS, padding=True, return_tensors="np")
    np.testing.assert_array_equal(batch.ids, want["input_ids"])
    np.testing.assert_array_equal(batch.mask, want["attention_mask"])


@pytest.mark.parametrize("variant", ["t5", "flan"])
def test_t5_hidden_states_match_transformers(variant):
    """Last hidden state equals T5EncoderModel's at every real token (max abs err <= 1e-4)."""
    reference.require("transformers")
    import torch
    from transformers import T5EncoderModel, T5Tokenizer
    folder = t5_folder(variant)
    model, _ = load_t5(folder)
    assert model.config.is_gated == (variant == "flan")
    batch = load_tokenizer(folder, "<pad>")(HARD_STRINGS)
    inputs = T5Tokenizer.from_pretrained(folder)(HARD_STRINGS, padding=True, return_tensors="pt")
    with torch.no_grad():
        want = T5EncoderModel.from_pretrained(folder).eval()(**inputs).last_hidden_state.numpy()
    with jax.default_matmul_precision("highest"):
        got = np.asarray(jax.jit(lambda i, m: model(i, m))(batch.ids, batch.mask))
    real = batch.mask.astype(bool)
    err = np.abs(got - want)[real].max()
    assert err <= 1e-4, f"{variant}: max abs error {err}"
    assert np.abs(want[real]).max() > 0.5  # the comparison is not between near-zero tensors


def test_missing_files_are_listed_with_where_to_put_them(tmp_path):
    folder = tmp_path / "t5-local"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(ModelFilesError) as err:
        load_t5(folder)
    msg = str(err.value)
    assert f"{folder}/model.safetensors" in msg and f"{folder}/tokenizer.json" in msg
    assert "config.json" not in msg.split("missing:")[1].split("(save")[0]


def test_hub_name_offline_says_which_files_to_place(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hc
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelFilesError) as err:
        resolve_model_folder("magnet-jax-test/no-such-t5")
    msg = str(err.value)
    for name in ("config.json", "model.safetensors", "spiece.model", "tokenizer.json"):
        assert name in msg
    assert "huggingface.co/magnet-jax-test/no-such-t5" in msg


def test_wrong_local_path_is_not_sent_to_the_hub(tmp_path):
    with pytest.raises(ModelFilesError, match="does not exist"):
        resolve_model_folder(tmp_path / "nowhere" / "t5")


def test_non_t5_config_and_unused_weights_are_rejected(tmp_path):
    src = t5_folder("t5")
    bad = tmp_path / "bert-config"
    shutil.copytree(src, bad)
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "model_type": "bert"}))
    with pytest.raises(ValueError, match="not a T5"):
        load_t5(bad)
    # a config with fewer layers than the weights: the extra block must not be silently dropped
    short = tmp_path / "short"
    shutil.copytree(src, short)
    (short / "config.json").write_text(json.dumps({**cfg, "num_layers": cfg["num_layers"] - 1}))
    with pytest.raises(ValueError, match="not used"):
        load_t5(short)
