"""``magnet-jax generate`` / ``convert``: files written, parity with audiocraft through the command
line, a second load that never imports torch, and one-line errors for bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import soundfile

import reference
from pipeline_reference import (RefPipelineShape, conversion_cache, exported_folder, reference_generate,
                                reference_magnet)
from text_fixtures import t5_folder
from magnet_jax import models as pipeline
from magnet_jax.models import sources
from magnet_jax.pipeline_cli import main

ROOT = Path(__file__).resolve().parents[1]
SHAPE = RefPipelineShape()
STEPS = "6,3,3,3"


@pytest.fixture(scope="module")
def folder():
    reference.require("audiocraft.models.magnet")
    return exported_folder()


def _converted(folder: Path) -> Path:
    """Make sure the session cache holds this folder's conversion (the first load's job)."""
    files = pipeline.locate(folder)
    target = pipeline.cache_folder(files, conversion_cache())
    if not (target / pipeline.META_FILE).is_file():
        pipeline.convert(files, target, text_encoder=t5_folder("t5"))
    return target


# A Python that cannot import torch: `import torch` raises, so any use of it fails loudly.
NO_TORCH = """
import sys
sys.modules["torch"] = None
from magnet_jax.pipeline_cli import main
rc = main(sys.argv[1:])
assert sys.modules.get("torch") is None, "torch was imported"
sys.exit(rc)
"""


def test_cli_generate_without_torch_writes_every_file_and_matches_audiocraft(folder, tmp_path):
    """Second load (from the cache) in a process where torch cannot be imported; greedy
    continuation of a WAV file for two prompts; tokens identical to audiocraft's
    generate_continuation, WAVs equal to its audio up to 16-bit PCM rounding."""
    _converted(folder)
    rng = np.random.default_rng(3)
    soundfile.write(tmp_path / "intro.wav", 0.3 * rng.standard_normal(700), SHAPE.sample_rate, subtype="PCM_16")
    intro, _ = soundfile.read(tmp_path / "intro.wav", dtype="float32")
    prompts = ["calm piano", "an epic orchestral soundtrack with a choir"]
    out = tmp_path / "out"
    argv = ["generate", "--model", str(folder), "--cache-dir", str(conversion_cache()), "--text-encoder",
            str(t5_folder("t5")), "--prompt", *prompts, "--greedy", "--decoding-steps", STEPS,
            "--continue-from", str(tmp_path / "intro.wav"), "--seed", "5", "--out", str(out)]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, *argv], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "generating" in proc.stderr   # the progress bar

    want_tokens, want_audio = reference_generate(
        reference_magnet(folder, t5_folder("t5")), prompts, prompt=np.stack([intro[None]] * 2),
        prompt_sample_rate=SHAPE.sample_rate, use_sampling=False, decoding_steps=[6, 3, 3, 3])
    np.testing.assert_array_equal(np.load(out / "tokens.npy"), want_tokens)
    sidecar = json.loads((out / "generate.json").read_text())
    assert sidecar["prompts"] == prompts and sidecar["seed"] == 5
    assert sidecar["continue_from"] == str(tmp_path / "intro.wav")
    assert sidecar["sampler"] == {"decoding_steps": [6, 3, 3, 3], "temperature": 3.0, "anneal_temp": True,
                                  "use_sampling": False, "top_k": 0, "top_p": 0.9, "max_cfg_coef": 10.0,
                                  "min_cfg_coef": 1.0, "span_scoring": "max", "span_arrangement": "nonoverlap"}
    assert sidecar["sample_rate"] == SHAPE.sample_rate and sidecar["tokens_shape"] == [2, 4, 48]
    for i, entry in enumerate(sidecar["files"]):
        wav, rate = soundfile.read(out / entry["wav"], dtype="float32")
        assert rate == SHAPE.sample_rate and wav.shape == (48 * SHAPE.hop,)
        np.testing.assert_allclose(wav, np.clip(want_audio[i, 0], -1, 1), atol=1e-3)
        png = (out / entry["spectrogram"]).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_convert_writes_a_folder_that_generate_loads_directly(folder, tmp_path, capsys):
    """`convert` writes orbax LM / codec / text-projection weights + magnet.json; --model accepts the
    folder as is (no second conversion), and its weights are the checkpoint's."""
    from flax import nnx
    from magnet_jax.codec.convert import load_audiocraft_codec
    from magnet_jax.lm.convert import load_audiocraft_lm
    out = tmp_path / "converted"
    assert main(["convert", "--model", str(folder), "--out", str(out), "--text-encoder", str(t5_folder("t5"))]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["out"] == str(out) and report["lm"]["dim"] == SHAPE.lm.dim and report["text_encoder"] == "t5-small"
    assert {p.name for p in out.iterdir()} == {"magnet.json", "lm", "codec", "text", "integrity.json"}
    assert pipeline.locate(out) == out
    model = pipeline.MAGNeT.from_pretrained(out, mesh=None)   # the recorded T5 folder is found
    assert model.checkpoint_dir == out
    _, lm, cond = load_audiocraft_lm(folder / "state_dict.bin", frame_rate=SHAPE.lm.frame_rate)
    _, codec = load_audiocraft_codec(folder)
    for ours, want in ((nnx.merge(model.sampler.graphdef, model.sampler.state), lm), (model.codec.model, codec)):
        jax.tree.map(np.testing.assert_array_equal, nnx.to_pure_dict(nnx.state(ours)),
                     nnx.to_pure_dict(nnx.state(want)))
    np.testing.assert_array_equal(np.asarray(model.conditioner.conditioner.output_proj.bias[...]),
                                  cond["condition_provider.conditioners.description.output_proj.bias"])


def _error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_bad_command_lines_are_one_line_errors(folder, tmp_path, capsys, monkeypatch):
    out = ["--out", str(tmp_path / "out")]
    model = ["--model", str(folder), "--cache-dir", str(conversion_cache()), "--text-encoder", str(t5_folder("t5"))]
    _converted(folder)
    monkeypatch.setattr(sources, "DEFAULT_MODEL", None)          # as if the shipped folder were gone
    assert "no --model given" in _error(["generate", "--prompt", "x", *out], capsys)
    assert "no --model given" in _error(["convert", *out], capsys)
    assert "unknown model 'facebook/magnet-large'" in _error(
        ["generate", "--model", "facebook/magnet-large", "--prompt", "x", *out], capsys)
    (tmp_path / "half").mkdir()
    assert "missing state_dict.bin and compression_state_dict.bin" in _error(
        ["generate", "--model", str(tmp_path / "half"), "--prompt", "x", *out], capsys)
    assert "--prompt number 2 is empty" in _error(["generate", *model, "--prompt", "x", "  ", *out], capsys)
    (tmp_path / "gap.txt").write_text("x\n\ny\n")
    assert "line 2 of --prompts-file" in _error(["generate", *model, "--prompts-file", str(tmp_path / "gap.txt"), *out], capsys)
    assert "--unconditional 0: ask for at least one" in _error(["generate", *model, "--unconditional", "0", *out], capsys)
    (tmp_path / "blank.txt").write_text("\n  \n")
    assert "holds no prompts" in _error(["generate", *model, "--prompts-file", str(tmp_path / "blank.txt"), *out], capsys)
    assert "cannot read --prompts-file" in _error(
        ["generate", *model, "--prompts-file", str(tmp_path / "nope.txt"), *out], capsys)
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00\x81")
    assert "cannot read --prompts-file" in _error(
        ["generate", *model, "--prompts-file", str(tmp_path / "binary.txt"), *out], capsys)
    assert "cannot read --continue-from audio" in _error(
        ["generate", *model, "--prompt", "x", "--continue-from", str(tmp_path / "blank.txt"), *out], capsys)
    # these load the model (from the cache) and are refused before anything compiles
    assert "generates 1 s segments only" in _error(["generate", *model, "--prompt", "x", "--duration", "10", *out], capsys)
    assert "has 2 entries" in _error(["generate", *model, "--prompt", "x", "--decoding-steps", "2,1", *out], capsys)
    soundfile.write(tmp_path / "long.wav", np.zeros(9000), 8000)   # 1.125 s: longer than the 1 s output
    assert "not shorter than" in _error(
        ["generate", *model, "--prompt", "x", "--continue-from", str(tmp_path / "long.wav"), *out], capsys)
    with pytest.raises(SystemExit):
        main(["generate", *model, "--prompt", "x", "--decoding-steps", "a,b", *out])
    assert not (tmp_path / "out").exists()
