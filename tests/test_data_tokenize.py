"""magnet-jax tokenize end to end with a small random-init EnCodec (a real codec, tiny config).

Independent facts: codes are compared with the codec applied directly to audio read back with
soundfile at the recorded offsets; segment counts and hours are computed by hand from the clip
lengths; broken inputs fail for reasons known by construction.
"""
import json
import math
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_data_audio import _broken_corpus
from test_data_common import (CLIP_S, SEGMENT_S, cli_env, run_cli, settings, synth_corpus,
                              tiny_encoder, tokenize_cmd, tokenized_synth)

from data_pipelines import cli as data_cli
from data_pipelines import records
from data_pipelines.manifests import read_manifest
from data_pipelines.rejects import read_report
from data_pipelines.tokenize import TokenizeOptions, marker_path, tokenize


def read_all(directory: Path, split: str = "train") -> list[dict]:
    codec = records.RecordCodec(records.features_from_directory(directory))
    return [codec.parse(raw) for p in records.shard_paths(directory, split) for raw in records.read_shard(p)]


def direct_codes(path: str, offset_s: float, duration_s: float) -> np.ndarray:
    """The codec on the audio itself: read, cut, zero-pad to a segment, encode."""
    enc = tiny_encoder()
    wav, sr = sf.read(path, dtype="float32", always_2d=True)
    assert sr == enc.sample_rate
    a, n = int(round(offset_s * sr)), int(round(duration_s * sr))
    batch = np.zeros((enc.batch_size, 1, int(SEGMENT_S * sr)), np.float32)
    batch[0, 0, :n] = wav[a:a + n, 0]
    return enc(batch)[0, :, :math.ceil(n / enc.hop_length)]


def test_musiccaps_corpus_end_to_end():
    out, summary = tokenized_synth()
    clips = 6
    # per clip: a 2 s segment and a 1 s tail (>= 0.5 x 2 s)
    assert summary["finished"] and summary["clips"] == clips and summary["records"] == 2 * clips
    assert summary["audio_seconds"] == pytest.approx(clips * CLIP_S)
    assert summary["hours"] == pytest.approx(clips * CLIP_S / 3600, abs=1e-6)
    assert summary["rejects"] == 0 and summary["this_run"]["audio_seconds_per_second"] > 0
    manifest = read_manifest(synth_corpus())
    by_id = {c.clip_id: c for c in manifest.clips}
    recs = read_all(out)
    assert len(recs) == 2 * clips
    for rec in recs:
        clip = by_id[rec["clip_id"]]
        assert rec["codes"].dtype == np.int16
        assert rec["codes"].shape == (4, 100 if rec["offset_s"] == 0 else 50)
        assert rec["offset_s"] in (0.0, SEGMENT_S)
        np.testing.assert_array_equal(rec["codes"], direct_codes(clip.path, rec["offset_s"], rec["duration_s"]))
        assert rec["caption"] == clip.caption and rec["aspects"] == list(clip.aspects)
        assert json.loads(rec["labels"])["bpm"] == clip.bpm and rec["source"] == clip.path
    info = json.loads((out / "dataset_info.json").read_text())
    assert sum(int(n) for n in info["splits"][0]["shardLengths"]) == 2 * clips


def _tone(seconds, sr=16000, freq=330.0):
    return (0.3 * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def _tokenize_fresh(source, fmt="auto", **opts):
    out = Path(tempfile.mkdtemp(prefix="magnet_tok_"))
    summary = tokenize(read_manifest(source, fmt), tiny_encoder(), settings(), out,
                       TokenizeOptions(progress=False, **opts))
    return out, summary


def test_jsonl_manifest_with_sidecar_metadata(tmp_path):
    lines = []
    for i, meta in enumerate([
            {"description": " Calm piano. ", "genre": "Classical", "moods": ["Calm", "Soft"],
             "keywords": "piano, slow", "bpm": "72", "key": "E Minor"},
            {"description": "Drum loop", "key": "C major, A minor", "bpm": "fast"},
            None]):
        path = tmp_path / "audio" / f"t{i}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, _tone(2.0 + i), 16000)
        if meta is not None:
            path.with_suffix(".json").write_text(json.dumps(meta))
        lines.append(json.dumps({"path": f"audio/t{i}.wav", "duration": 2.0 + i, "sample_rate": 16000}))
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")
    out, summary = _tokenize_fresh(tmp_path)
    assert summary["format"] == "jsonl" and summary["uncaptioned_clips"] == 1
    assert summary["records"] == 1 + 2 + 2          # 2 s, 3 s (2 + 1), 4 s (2 + 2)
    recs = {Path(r["clip_id"]).stem: r for r in read_all(out) if r["offset_s"] == 0}
    r0 = recs["t0"]
    # audiocraft's MusicInfo cleaning: strings stripped, keywords lower-cased and split
    assert r0["caption"] == "Calm piano." and r0["genre"] == "classical" and r0["moods"] == ["calm", "soft"]
    assert r0["aspects"] == ["piano", "slow"] and r0["bpm"] == 72.0 and r0["key"] == "e minor"
    assert recs["t1"]["key"] == "" and math.isnan(recs["t1"]["bpm"])   # two keys / non-numeric bpm
    assert recs["t2"]["caption"] == ""


def test_folder_manifest_with_txt_captions(tmp_path):
    sf.write(tmp_path / "a.wav", _tone(2.0), 16000)
    (tmp_path / "a.txt").write_text("a quiet tone\n")
    (tmp_path / "sub").mkdir()
    sf.write(tmp_path / "sub" / "b.flac", _tone(2.0, sr=44100), 44100)
    (tmp_path / "sub" / "b.txt").write_text("a flac tone")
    sf.write(tmp_path / "c.ogg", _tone(2.0, sr=22050), 22050, format="OGG")
    (tmp_path / "notes.md").write_text("not audio")
    out, summary = _tokenize_fresh(tmp_path)
    assert summary["format"] == "folder" and summary["records"] == 3
    assert summary["rejects_by_reason"] == {"unsupported_extension": 1}
    recs = {r["clip_id"]: r for r in read_all(out)}
    assert recs["a"]["caption"] == "a quiet tone" and recs["sub/b"]["caption"] == "a flac tone"
    assert recs["c"]["caption"] == "" and summary["uncaptioned_clips"] == 1
    assert all(r["codes"].shape == (4, 100) for r in recs.values())


def test_broken_files_are_reported_and_good_ones_tokenized(tmp_path):
    d, expected = _broken_corpus(tmp_path)
    (d / "data.jsonl").write_text("".join(json.dumps({"path": name}) + "\n" for name in sorted(expected))
                                  + "{not json\n")
    out, summary = _tokenize_fresh(d / "data.jsonl")
    rejects = read_report(out / "rejects-train.tsv")
    got = {Path(r.path).name: r.reason for r in rejects}
    want = {name: reason for name, reason in expected.items() if reason}
    want["data.jsonl:11"] = "bad_manifest_row"
    assert got == want and all(r.detail for r in rejects)
    assert summary["rejects"] == len(want)
    assert sorted(r["clip_id"] for r in read_all(out)) == ["good.flac", "good.wav", "stereo8k.wav"]
    assert summary["clips"] == 3 and summary["clips_listed"] == len(expected) + 1


def test_kill_mid_way_then_resume_gives_the_same_shards(tmp_path):
    corpus = synth_corpus()
    ref, _ = tokenized_synth(clips_per_shard=1)
    out = tmp_path / "out"
    env = cli_env(tmp_path / "jax_cache")
    proc = subprocess.Popen(tokenize_cmd(corpus, out, "--clips-per-shard", "1"), env=env, cwd=env["PYTHONPATH"].split(":")[0],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not marker_path(out, "train", 0).exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = [marker_path(out, "train", i).exists() for i in range(6)]
    assert done[0] and not all(done), (done, proc.stderr.read()[-2000:])
    # a crash between writing a shard and marking it done leaves a stale file: it must be rewritten
    stale = out / records.shard_name("train", done.index(False), 6)
    stale.write_bytes(b"partial shard from a killed job")
    res = run_cli(tokenize_cmd(corpus, out, "--clips-per-shard", "1"), env)
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads(res.stdout)
    assert summary["this_run"]["shards_skipped"] == sum(done) and summary["finished"]
    names = sorted(p.name for p in ref.glob("magnet_tokens-*"))
    assert names == sorted(p.name for p in out.glob("magnet_tokens-*")) and len(names) == 6
    for name in names:
        assert (ref / name).read_bytes() == (out / name).read_bytes(), name


def test_processes_take_disjoint_slices_and_match_one_process():
    ref, _ = tokenized_synth()
    corpus = read_manifest(synth_corpus())
    out = Path(tempfile.mkdtemp(prefix="magnet_mp_")) / "ds"
    s1 = tokenize(corpus, tiny_encoder(), settings(), out,
                  TokenizeOptions(clips_per_shard=2, process_index=1, process_count=2, progress=False))
    assert not s1["finished"] and s1["this_run"]["shards_written"] == 1      # shard 1 of 0, 1, 2
    s0 = tokenize(corpus, tiny_encoder(), settings(), out,
                  TokenizeOptions(clips_per_shard=2, process_index=0, process_count=2, progress=False))
    assert s0["finished"] and s0["this_run"]["shards_written"] == 2 and s0["records"] == 12
    for p in sorted(ref.glob("magnet_tokens-*")):
        assert p.read_bytes() == (out / p.name).read_bytes()


def test_resume_with_other_settings_is_refused():
    out, _ = tokenized_synth()
    with pytest.raises(ValueError, match="settings"):
        tokenize(read_manifest(synth_corpus()), tiny_encoder(), settings(segment_duration=1.0), out,
                 TokenizeOptions(clips_per_shard=2, progress=False))


def test_cli_reports_user_errors(tmp_path, capsys):
    assert data_cli.main(["tokenize", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    assert data_cli.main(["tokenize", str(tmp_path / "x.csv"), "--out", str(tmp_path / "o")]) == 2
    assert "not a MusicCaps CSV" in capsys.readouterr().err


def test_precomputed_text_embeddings_are_the_encoders_states(tmp_path):
    from magnet_jax.text import TextEncoder

    from data_pipelines.tokenize import text_embedder

    encoder = TextEncoder.minilm()
    corpus = read_manifest(synth_corpus())
    corpus.clips[:] = corpus.clips[:2]
    corpus.clips[1] = corpus.clips[1].__class__(**{**corpus.clips[1].__dict__, "caption": ""})
    tokenize(corpus, tiny_encoder(), settings(), tmp_path, TokenizeOptions(progress=False),
             text_embedder(encoder))
    recs = read_all(tmp_path)
    assert len(recs) == 4
    for rec in recs:
        emb = rec["text_embedding"]
        assert emb.dtype == np.float16
        if rec["caption"]:
            want = encoder.hidden_states([rec["caption"]])[0]
            assert emb.shape == want.shape == (want.shape[0], 384)
            np.testing.assert_allclose(emb.astype(np.float32), want, rtol=2e-3, atol=2e-3)
        else:                                                # the null text
            assert emb.shape == (1, 384) and not emb.any()
