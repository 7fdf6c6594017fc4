"""The model that ships inside the package (``magnet_jax/assets/default_model``): it is there, it is
small, it loads and generates offline in a fresh interpreter without torch, and
``magnet-jax generate`` uses it when no ``--model`` is given.
"""
import json

import numpy as np
from offline_cli import generate_offline

from magnet_jax.models import sources
from magnet_jax.export import folder_size_mb

FOLDER = sources.DEFAULT_MODEL_DIR
MAX_MB = 40.0


def test_the_default_model_ships_small_with_its_card():
    assert sources.DEFAULT_MODEL == str(FOLDER), f"no model in {FOLDER} (scripts/train_default_model.sh makes it)"
    assert folder_size_mb(FOLDER) <= MAX_MB
    meta = json.loads((FOLDER / "magnet.json").read_text())
    card = (FOLDER / "MODEL_CARD.md").read_text()
    assert meta["text"]["encoder"] == "minilm"
    assert f"{meta['trained']['lm_step']} steps" in card      # the card describes this checkpoint


def test_generate_without_a_model_uses_it_offline_and_without_torch(tmp_path):
    """A fresh interpreter (nothing imported by other tests), the hub switched off: the CLI must
    read only the packaged folder and the MiniLM package."""
    audio, rate = generate_offline(["--prompt", "a plucked string melody in A minor with drums", "--seed", "3"],
                                   tmp_path)
    meta = json.loads((FOLDER / "magnet.json").read_text())
    assert rate == meta["codec"]["sample_rate"]
    assert abs(len(audio) / rate - meta["lm"]["segment_duration"]) < 0.1
    settings = json.loads((tmp_path / "generate.json").read_text())
    assert str(FOLDER) in json.dumps(settings)


def test_its_codec_loads_for_tokenizing(tmp_path):
    """``load_codec`` (what ``tokenize --codec-weights`` calls) takes the packaged folder, so new
    data can be tokenized for fine-tuning the shipped LM. The weights are the trained ones: a
    synthetic clip through the codec keeps its pitch classes (chroma cosine above 0.8; the codec's
    card measures 0.90 with 4 codebooks), which a codec of random weights does not."""
    import jax.numpy as jnp

    from data_pipelines import synth
    from magnet_jax.models import load_codec_weights as load_codec
    from magnet_jax.eval.analysers import chroma_cosine

    cfg, codec = load_codec(FOLDER)
    meta = json.loads((FOLDER / "magnet.json").read_text())
    loaded = json.loads(json.dumps(cfg.__dict__, default=list))
    assert {k: loaded[k] for k in meta["codec"]} == meta["codec"]
    # fields added after the folder was packaged (the VAE bottleneck) take their RVQ defaults
    assert {k: v for k, v in loaded.items() if k not in meta["codec"]} == {"bottleneck": "rvq", "latent_dim": 0}
    _, audio, _, _ = synth.make_clip(seed=7, index=0, duration=5.0, sample_rate=cfg.sample_rate)
    codes = codec.encode(jnp.asarray(audio, jnp.float32)[None, None])
    assert codes.shape == (1, cfg.n_q, 5 * int(cfg.frame_rate))
    decoded = np.asarray(codec.decode(codes))[0, 0]
    assert chroma_cosine(audio, decoded, cfg.sample_rate) > 0.8
