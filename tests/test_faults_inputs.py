"""Fault injection on user input (issue "nothing silently wrong", items 4, 7 and 8): each case is
a bad flag, file or pickle given to the real command line, and the exact outcome is checked: the
one-line message, the exit code, that nothing ran or was written before the refusal, and that no
code from a pickle ever runs."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile

from magnet_jax import cli
from magnet_jax import models as pipeline
from magnet_jax.models import sources

ROOT = Path(__file__).resolve().parents[1]
needs_default_model = pytest.mark.skipif(sources.DEFAULT_MODEL is None, reason="the shipped model is missing")


def run(argv: list[str], capsys) -> tuple[int, str]:
    """``magnet-jax ARGV`` in this process: (exit code, stderr); argparse refusals exit too."""
    capsys.readouterr()
    try:
        code = cli.main(argv)
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("flag,value", [("--temperature", "nan"), ("--max-cfg-coef", "nan"),
                                        ("--top-p", "inf"), ("--min-cfg-coef", "-inf"), ("--duration", "nan")])
def test_non_finite_numbers_are_refused(flag, value, tmp_path, capsys):
    code, err = run(["generate", "--prompt", "x", "--out", str(tmp_path / "o"), f"{flag}={value}"], capsys)
    assert code == 2 and f"argument {flag}: {value!r} is not a finite number" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("seed", [str(2**64), "-1", "1.5"])
def test_seeds_outside_64_bits_are_refused(seed, tmp_path, capsys):
    code, err = run(["generate", "--prompt", "x", "--out", str(tmp_path / "o"), "--seed", seed], capsys)
    assert code == 2 and "argument --seed" in err


def test_seeds_above_32_bits_are_not_folded_onto_small_ones():
    """jax.random.key keeps a seed's low 32 bits only: 2**32 was seed 0 again. seed_key keeps small
    seeds' keys as they were and gives large ones their own."""
    import jax
    from magnet_jax.seeds import seed_key
    data = lambda s: np.asarray(jax.random.key_data(seed_key(s)))   # noqa: E731
    np.testing.assert_array_equal(data(7), np.asarray(jax.random.key_data(jax.random.key(7))))
    keys = [tuple(data(s)) for s in (0, 2**32, 2**63, 2**64 - 1, 2**32 - 1)]
    assert len(set(keys)) == len(keys)
    with pytest.raises(ValueError, match=r"outside \[0, 2\*\*64\)"):
        seed_key(2**64)


def _nan_wav(path: Path, rate: int = 16000) -> Path:
    wav = np.zeros(rate // 2, np.float32)
    wav[100:110] = np.nan
    soundfile.write(path, wav, rate, subtype="FLOAT")
    return path


def test_non_finite_audio_is_refused_everywhere(tmp_path, capsys):
    """The message tokenize gives ("decoded samples contain NaN or inf"), before anything loads;
    the Python API refuses the same array."""
    nan = _nan_wav(tmp_path / "nan.wav")
    code, err = run(["generate", "--prompt", "x", "--continue-from", str(nan), "--out", str(tmp_path / "g")], capsys)
    assert code == 2 and "decoded samples contain NaN or inf (10 NaN/inf samples of 8000)" in err
    code, err = run(["codec-encode", "--config", "configs/codec_tiny.py", str(nan), str(tmp_path / "c.npz")], capsys)
    assert code == 2 and "decoded samples contain NaN or inf" in err and not (tmp_path / "c.npz").exists()
    code, err = run(["generate", "--prompt", "x", "--continue-from", str(tmp_path / "missing.wav"),
                     "--out", str(tmp_path / "g")], capsys)
    assert code == 2 and "--continue-from audio" in err and "missing.wav does not exist" in err
    assert not (tmp_path / "g").exists()


@needs_default_model
def test_api_refuses_non_finite_prompt_audio_and_bad_seeds():
    model = pipeline.MAGNeT.from_pretrained(mesh=None)
    wav = np.zeros((1, 1, 800), np.float32)
    wav[0, 0, 5] = np.inf
    with pytest.raises(pipeline.PipelineError, match="1 NaN/inf samples of 800"):
        model.generate_continuation(wav, model.sample_rate, ["x"])
    with pytest.raises(pipeline.PipelineError, match=r"seed=-1: outside \[0, 2\*\*64\)"):
        model.generate(["x"], seed=-1)


def test_out_is_checked_before_any_work(tmp_path, capsys, monkeypatch):
    """An existing file or an unwritable place as --out is refused before the model loads."""
    loaded = []
    monkeypatch.setattr(pipeline.MAGNeT, "from_pretrained", classmethod(lambda *a, **k: loaded.append(1)))
    (tmp_path / "file").write_text("x")
    code, err = run(["generate", "--prompt", "x", "--out", str(tmp_path / "file")], capsys)
    assert code == 2 and "is a file, not a folder" in err
    code, err = run(["generate", "--prompt", "x", "--out", "/proc/magnet-jax-out"], capsys)
    assert code == 2 and "cannot be written" in err
    code, err = run(["eval", "--out", str(tmp_path / "file")], capsys)
    assert code == 2 and "is a file, not a folder" in err
    assert not loaded


@needs_default_model
def test_a_reused_out_is_cleared_of_our_files_only(tmp_path, capsys):
    """A second generate into the same --out removes exactly the files the first one listed in its
    generate.json (no mix of old and new WAVs), keeps the user's other files, and refuses to
    overwrite a user's file that happens to carry one of its names."""
    out = tmp_path / "out"
    base = ["generate", "--greedy", "--decoding-steps", "1,1,1,1", "--out", str(out)]
    assert run(base + ["--prompt", "a flute", "a cello"], capsys)[0] == 0
    (out / "notes.txt").write_text("mine")
    assert run(base + ["--prompt", "an organ"], capsys)[0] == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["000_an_organ.png", "000_an_organ.wav", "generate.json", "notes.txt", "tokens.npy"], names
    assert json.loads((out / "generate.json").read_text())["prompts"] == ["an organ"]

    other = tmp_path / "other"
    other.mkdir()
    (other / "000_a_flute.wav").write_bytes(b"the user's own recording")
    code, err = run(base[:-1] + [str(other), "--prompt", "a flute"], capsys)
    assert code == 2 and "already holds 000_a_flute.wav" in err
    assert (other / "000_a_flute.wav").read_bytes() == b"the user's own recording"


def test_convert_lm_bad_files_are_one_line_errors(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    torch.save([1, 2, 3], tmp_path / "list.bin")
    code, err = run(["convert-lm", "--checkpoint", str(tmp_path / "list.bin"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "holds a list, not an audiocraft checkpoint" in err
    (tmp_path / "empty").mkdir()
    code, err = run(["convert-lm", "--checkpoint", str(tmp_path / "empty"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "is a folder without state_dict.bin" in err
    torch.save({"emb.0.weight": torch.zeros(3, 2)}, tmp_path / "bare.bin")
    code, err = run(["convert-lm", "--checkpoint", str(tmp_path / "bare.bin"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "bare state dict without 'xp.cfg'" in err and "--config configs/NAME.py" in err
    assert len(err.strip().splitlines()) == 1


class _Payload:
    """Pickles as "call os.system(...)": what a malicious checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_with_a_code_payload_is_refused_without_running_it(tmp_path, capsys):
    """Every torch reader (LM, codec, text weights, VGGish) loads with weights_only: the payload is
    refused by name and the command it carries never runs."""
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"
    evil = tmp_path / "state_dict.bin"
    torch.save({"best_state": {"emb.0.weight": torch.zeros(2)}, "xp.cfg": _Payload(marker)}, evil)
    with open(tmp_path / "plain.pkl", "wb") as f:    # the payload is real: plain pickle runs it
        pickle.dump(_Payload(tmp_path / "control"), f)
    with open(tmp_path / "plain.pkl", "rb") as f:
        pickle.load(f)
    assert (tmp_path / "control").exists()

    code, err = run(["convert-lm", "--checkpoint", str(evil), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "no code from a checkpoint ever runs" in err
    from magnet_jax.codec.convert import CheckpointError, load_codec
    with pytest.raises(CheckpointError, match="no code from a checkpoint ever runs"):
        load_codec(evil)
    from magnet_jax.eval import vggish
    with pytest.raises(ValueError, match="no code from a checkpoint ever runs"):
        vggish.load(str(evil))
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "pytorch_model.bin").write_bytes(evil.read_bytes())
    from magnet_jax.text.files import ModelFilesError, load_weights
    with pytest.raises(ModelFilesError, match="no code from a checkpoint ever runs"):
        load_weights(hf)
    assert not marker.exists()


def test_an_unexpected_failure_is_one_line_with_exit_3_and_debug_shows_the_traceback(capsys, monkeypatch):
    def register(subparsers):
        p = subparsers.add_parser("boom")
        p.set_defaults(func=lambda args: {}["no such key"])

    code = cli.run([register], ["boom"])
    err = capsys.readouterr().err
    assert code == 3 and err.count("\n") == 1
    assert "magnet-jax boom: failed: KeyError: 'no such key' (rerun with --debug" in err
    with pytest.raises(KeyError):
        cli.run([register], ["boom", "--debug"])
    monkeypatch.setenv("MAGNET_JAX_DEBUG", "1")
    with pytest.raises(KeyError):
        cli.run([register], ["boom"])
