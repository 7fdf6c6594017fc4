"""A MeLoDy model folder (``MeLoDy.save`` / ``load_model``) and ``magnet-jax generate --model DIR``
on it: text through MiniLM + the projection, the DPD, the VAE decoder; its flags, its refusals,
and a damaged file named before anything is read.

Tiny random components (``test_melody_pipeline``'s shapes: a 1 kHz codec, a 16-wide DPD and
semantic LM), a real MiniLM (the packaged all-MiniLM-L6-v2)."""
import dataclasses
import json

import numpy as np
import pytest
import soundfile
from flax import nnx

from magnet_jax.cli import run
from magnet_jax.codec.encodec import Encodec
from magnet_jax.config_loader import load_config
from magnet_jax.melody.dpd import DPD
from magnet_jax.melody.sampler import DiffusionSamplerConfig
from magnet_jax.melody.semantic_lm import semantic_lm
from magnet_jax.models import PipelineError, load_model
from magnet_jax.models.melody import MeLoDy
from magnet_jax.text import Conditioner
from magnet_jax.text.conditioner import TextSettings

SETTINGS = TextSettings(attribute="description", encoder="minilm", word_dropout=0.0, cfg_dropout=0.1,
                        attribute_dropout=0.0)


def tiny_melody(text: bool) -> MeLoDy:
    cfg = load_config("configs/melody_tiny.py")
    codec_cfg = cfg["codec"].replace(n_filters=2, ratios=(2, 2), lstm=0, sample_rate=1000)
    dpd_cfg = dataclasses.replace(cfg["dpd"], dim=16, num_heads=2, ffn_dim=32, num_blocks=1)
    lm_cfg = cfg["semantic_lm"].replace(dim=16, num_heads=2, num_layers=1, ffn_dim=32, cross_attention=text,
                                        segment_duration=0.16)
    conditioner = Conditioner.minilm(16, seed=3) if text else None
    return MeLoDy(semantic_lm(lm_cfg, rngs=nnx.Rngs(1)), DPD(dpd_cfg, rngs=nnx.Rngs(0)),
                  Encodec(codec_cfg, rngs=nnx.Rngs(2)), latent_scale=0.5, conditioner=conditioner,
                  text_settings=SETTINGS if text else None,
                  diffusion=DiffusionSamplerConfig(num_steps=2, cfg_scale=2.5), window_seconds=0.16)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = tiny_melody(text=True)
    folder = model.save(tmp_path_factory.mktemp("melody") / "model", source="test")
    return model, folder


def test_a_saved_folder_loads_as_melody_and_generates_what_the_model_in_memory_does(saved):
    model, folder = saved
    meta = json.loads((folder / "magnet.json").read_text())
    assert meta["kind"] == "melody" and (folder / "dpd").is_dir() and (folder / "integrity.json").is_file()
    loaded = load_model(str(folder))
    assert isinstance(loaded, MeLoDy) and loaded.window_seconds == 0.16 and loaded.latent_scale == 0.5
    captions = ["an organ arpeggio in D minor", "fast drums"]
    want = model.generate(captions, seed=4, top_k=0)
    got = loaded.generate(captions, seed=4, top_k=0)
    np.testing.assert_array_equal(got.tokens, want.tokens)
    np.testing.assert_array_equal(got.audio, want.audio)
    assert got.audio.shape == (2, 1, 160) and got.sample_rate == 1000
    # the text reaches the clip: another caption, other semantic tokens or audio
    other = loaded.generate(["a quiet piano", "fast drums"], seed=4, top_k=0)
    assert not np.array_equal(other.audio[0], got.audio[0])
    # fixed-size batches: the first batch of two is the call above; the padded second batch
    # returns its one real row
    batched = loaded.generate([*captions, "a quiet piano"], seed=4, top_k=0, batch_size=2)
    assert batched.audio.shape == (3, 1, 160) and batched.tokens.shape == (3, 1, 4)
    np.testing.assert_array_equal(batched.audio[:2], got.audio)


def test_generate_cli_writes_the_clips_with_its_melody_flags_and_extends_past_the_window(saved, tmp_path):
    model, folder = saved
    out = tmp_path / "out"
    assert run(None, ["generate", "--model", str(folder), "--prompt", "an organ arpeggio", "--out", str(out),
                      "--seed", "2", "--diffusion-steps", "3", "--diffusion-cfg", "1.5", "--top-k", "0",
                      "--duration", "0.3"]) == 0
    want = model.generate(["an organ arpeggio"], seed=2, duration=0.3, diffusion_steps=3, diffusion_cfg=1.5,
                               top_k=0)
    assert want.audio.shape == (1, 1, 300)          # 0.16 s window + chunks of 0.04 s, cut to 0.3 s
    # by hand: 4 extra chunks (0.16 + 4 x 0.04 = 0.32 s >= 0.3 s), 8 semantic tokens at 25 Hz, 3 DPD
    # steps for the window and for each chunk, one VAE decode
    assert want.tokens.shape == (1, 1, 8)
    assert model.forward_passes(0.3, diffusion_steps=3) == {"semantic_lm": 8, "dpd": 15, "vae_decoder": 1,
                                                            "total": 24}
    assert model.forward_passes() == {"semantic_lm": 4, "dpd": 2, "vae_decoder": 1, "total": 7}
    wav, rate = soundfile.read(out / "000_an_organ_arpeggio.wav", dtype="float32")
    assert rate == 1000
    np.testing.assert_allclose(wav, np.clip(want.audio[0, 0], -1, 1), atol=1.5 / 32767)
    side = json.loads((out / "generate.json").read_text())
    assert side["model_family"] == "MeLoDy" and side["settings"] == {"top_k": 0, "diffusion_steps": 3,
                                                                      "diffusion_cfg": 1.5}


@pytest.mark.parametrize("flags,message", [
    (["--decoding-steps", "4,2,2,2"], "--decoding-steps: not a MeLoDy setting"),
    (["--rescorer", "facebook/musicgen-small"], "--rescorer: not for a MeLoDy model"),
    (["--diffusion-steps", "0"], "num_steps must be a positive int"),
])
def test_flags_melody_does_not_have_are_refused_by_name(saved, tmp_path, capsys, flags, message):
    _, folder = saved
    assert run(None, ["generate", "--model", str(folder), "--prompt", "x", "--out", str(tmp_path), *flags]) != 0
    assert message in capsys.readouterr().err


def test_eval_refuses_a_sampler_flag_melody_does_not_have(saved, tmp_path, capsys):
    """``magnet-jax eval --model MELODY_DIR`` (scored in tests/test_ablation_script.py) checks the
    flags against the family as generate does, before anything is generated."""
    _, folder = saved
    assert run(None, ["eval", "--model", str(folder), "--out", str(tmp_path / "eval"), "--num-prompts", "1",
                      "--decoding-steps", "4,2,2,2"]) != 0
    assert "--decoding-steps: not a MeLoDy setting" in capsys.readouterr().err
    assert not (tmp_path / "eval" / "report.json").exists()


def test_an_unconditional_melody_refuses_a_caption_and_generates_without_one(tmp_path):
    model = tiny_melody(text=False)
    with pytest.raises(PipelineError, match="no text conditioning"):
        model.generate(["a caption it cannot read"])
    folder = model.save(tmp_path / "uncond")
    assert json.loads((folder / "magnet.json").read_text())["text"] is None
    out = load_model(str(folder)).generate(["", ""], seed=1)
    assert out.audio.shape == (2, 1, 160) and np.isfinite(out.audio).all()


def test_a_damaged_dpd_file_is_named_before_anything_loads(saved, tmp_path):
    import shutil
    _, folder = saved
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    victim = max((p for p in (copy / "dpd").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[:-8] + b"damaged!")
    with pytest.raises(PipelineError, match=str(victim.relative_to(copy))):
        load_model(str(copy))


def test_magnet_refuses_the_diffusion_flags(tmp_path, capsys):
    assert run(None, ["generate", "--prompt", "x", "--out", str(tmp_path), "--diffusion-steps", "4"]) != 0
    assert "--diffusion-steps: not a MAGNeT setting" in capsys.readouterr().err
