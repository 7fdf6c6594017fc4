"""The MeLoDy that ships inside the package (``magnet_jax/assets/default_melody``, the name
``melody-tiny``): it fits the package's size budget beside the default MAGNeT, its card describes
this checkpoint, ``magnet-jax generate --model melody-tiny`` works offline without torch, and its
VAE keeps what the shipped MeLoDy was chosen for (the instrument) against the synthesiser's labels.
"""
import json

import numpy as np
from offline_cli import generate_offline

from magnet_jax.export import folder_size_mb
from magnet_jax.models import sources

FOLDER = sources.SHIPPED_MODELS["melody-tiny"]
MAX_MB = 40.0            # the budget for everything the package ships


def test_it_ships_within_the_budget_beside_the_default_magnet_with_its_card():
    assert (FOLDER / "magnet.json").is_file(), f"no model in {FOLDER} (scripts/train_melody_tiny.sh makes it)"
    assert folder_size_mb(FOLDER) + folder_size_mb(sources.DEFAULT_MODEL_DIR) <= MAX_MB
    meta = json.loads((FOLDER / "magnet.json").read_text())
    assert meta["kind"] == "melody" and meta["codec"]["bottleneck"] == "vae"
    assert meta["codec"]["decoder"] == "oscillators"          # the phase-blind VAE (docs/melody.md)
    card = (FOLDER / "MODEL_CARD.md").read_text()
    dpd_step = meta["source"].split("DPD step ")[1].rstrip(")")
    assert f"{dpd_step} steps" in card                         # the card describes this checkpoint
    assert sources.locate("melody-tiny") == FOLDER


def test_generate_with_melody_tiny_offline_and_without_torch(tmp_path):
    """A fresh interpreter, the hub switched off: the name resolves to the packaged folder and one
    clip of the requested length comes out."""
    audio, rate = generate_offline(["--model", "melody-tiny", "--prompt", "an organ chord progression in D major",
                                    "--duration", "2", "--diffusion-steps", "8", "--seed", "1"], tmp_path)
    meta = json.loads((FOLDER / "magnet.json").read_text())
    assert rate == meta["codec"]["sample_rate"]
    assert abs(len(audio) / rate - 2.0) < 0.05
    assert json.loads((tmp_path / "generate.json").read_text())["model_family"] == "MeLoDy"


def test_serve_refuses_it_in_one_line(capsys):
    """serve batches MAGNeT's sampler only; a MeLoDy is refused by name (it once failed with an
    AttributeError from setting MAGNeT's sampler parameters on it)."""
    from magnet_jax.cli import main
    assert main(["serve", "--model", "melody-tiny", "--port", "0"]) != 0
    err = capsys.readouterr().err
    assert "serve runs MAGNeT models; this checkpoint is a MeLoDy" in err and "AttributeError" not in err


def test_its_vae_keeps_pitch_and_instrument():
    """Five rendered clips, one per instrument, through the shipped VAE (encode, then decode the
    posterior mean): the pitch classes survive (chroma cosine; the card's held-out figure is about
    0.94) and the analysers hear the instrument the synthesiser played on at least four of five
    (the SEANet VAE kept it on 23 % of held-out clips, this one on 90 %)."""
    from data_pipelines.synth import INSTRUMENTS, PATTERNS, ClipAttributes, render_clip
    from magnet_jax.eval.analysers import analyse_batch, chroma_cosine
    from magnet_jax.models.melody import MeLoDy

    model = MeLoDy.from_pretrained()              # melody-tiny
    assert model.checkpoint_dir == FOLDER and model.name == "melody-tiny"
    sr = model.sample_rate
    attrs = [ClipAttributes(instrument=inst, drums=i % 2 == 0, tonic="E", mode="minor", bpm=110,
                            pattern=PATTERNS[i % 3], dynamics="medium", progression=(0, 5, 3, 4))
             for i, inst in enumerate(INSTRUMENTS)]
    audio = np.stack([render_clip(a, 4.0, sr, np.random.default_rng(10 + i)) for i, a in enumerate(attrs)])
    recon = np.asarray(model.reconstruct(audio[:, None].astype(np.float32)))[:, 0]
    assert recon.shape == audio.shape
    assert np.mean([chroma_cosine(a, r, sr) for a, r in zip(audio, recon)]) > 0.9      # the line
    heard = [h.instrument for h in analyse_batch(list(recon), sr)]
    assert sum(h == a.instrument for h, a in zip(heard, attrs)) >= 4, list(zip(heard, INSTRUMENTS))
