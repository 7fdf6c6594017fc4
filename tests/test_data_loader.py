"""The grain training loader and the TFDS view of tokenized records.

Independent facts: audiocraft's own ``augment_music_info_description`` (the reference) fed the
same random state; records read straight from the ArrayRecord files; hand-made crop cases.
"""
import dataclasses
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import reference
from test_data_common import REPO, cli_env, tokenized_synth

from data_pipelines import records
from data_pipelines.loader import LoaderConfig, augment_description, make_train_loader, random_crop

CFG = LoaderConfig(batch_size=4, frames=60, seed=3, merge_text_p=0.5, drop_desc_p=0.3, drop_other_p=0.5)


def direct(directory: Path) -> list[dict]:
    """Records through grain's ArrayRecordDataSource and our parser, in file order."""
    import grain

    src = grain.sources.ArrayRecordDataSource([str(p) for p in records.shard_paths(directory)])
    codec = records.RecordCodec(records.features_from_directory(directory))
    return [codec.parse(src[i]) for i in range(len(src))]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        np.array_equal(a[k], b[k], equal_nan=True) if k in ("codes", "bpm") else a[k] == b[k] for k in a)


def test_tfds_loading_equals_direct_loading():
    import tensorflow_datasets as tfds

    out, _ = tokenized_synth()
    want = direct(out)
    by_dir = tfds.builder_from_directory(str(out)).as_data_source()["train"]
    by_name = tfds.data_source("magnet_tokens", data_dir=str(out.parent.parent))["train"]
    assert len(by_dir) == len(by_name) == len(want) == 12
    for i, rec in enumerate(want):
        assert _same(records.decode_record(by_dir[i]), rec)
        assert _same(records.decode_record(by_name[i]), rec)


def test_tfds_builder_rebuilds_from_tokenized_folders(tmp_path):
    import tensorflow_datasets as tfds

    from data_pipelines.tfds_builder import MagnetTokens

    out, _ = tokenized_synth()
    builder = MagnetTokens(data_dir=str(tmp_path), file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(out)))
    rebuilt = [records.decode_record(r) for r in builder.as_data_source()["train"]]
    key = lambda r: (r["clip_id"], r["offset_s"])  # noqa: E731
    assert sorted(map(key, rebuilt)) == sorted(map(key, direct(out)))
    want = {key(r): r for r in direct(out)}
    assert all(_same(r, want[key(r)]) for r in rebuilt)


def _take(it, n):
    return [next(it) for _ in range(n)]


def _batches_equal(a, b):
    return all(np.array_equal(x["codes"], y["codes"]) and np.array_equal(x["padding_mask"], y["padding_mask"])
               and x["descriptions"] == y["descriptions"] and x["clip_id"] == y["clip_id"] for x, y in zip(a, b))


def test_iterator_restored_from_a_checkpoint_continues_identically(tmp_path):
    import grain
    import orbax.checkpoint as ocp

    out, _ = tokenized_synth()
    it = make_train_loader(out, CFG, process_index=0, process_count=1)
    _take(it, 3)                        # into the second epoch (12 records, batch 4)
    state = it.get_state()
    mngr = ocp.CheckpointManager(tmp_path / "ckpt", options=ocp.CheckpointManagerOptions(max_to_keep=1))
    mngr.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
    expected = _take(it, 5)
    again = make_train_loader(out, CFG, process_index=0, process_count=1)
    again.set_state(state)
    assert _batches_equal(_take(again, 5), expected)
    restored = make_train_loader(out, CFG, process_index=0, process_count=1)
    mngr.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored)))
    got = _take(restored, 5)
    assert _batches_equal(got, expected)
    assert got[0]["codes"].shape == (4, 4, 60) and got[0]["codes"].dtype == np.int32


def test_batches_are_crops_of_records_with_padding_masks():
    out, _ = tokenized_synth()
    recs = {(r["clip_id"], r["codes"].shape[1]): r["codes"] for r in direct(out)}
    cfg = dataclasses.replace(CFG, merge_text_p=0.0)
    for batch in _take(make_train_loader(out, cfg, process_index=0, process_count=1), 6):
        for codes, mask, cid, text in zip(batch["codes"], batch["padding_mask"], batch["clip_id"],
                                          batch["descriptions"]):
            valid = int(mask.sum())
            assert mask[:valid].all() and not mask[valid:].any()
            if valid == 50:                                  # the 1 s tail: padded, masked
                np.testing.assert_array_equal(codes[:, :50], recs[(cid, 50)])
                assert not codes[:, 50:].any()
            else:                                            # a window of the 2 s segment
                full = recs[(cid, 100)]
                assert any(np.array_equal(codes, full[:, s:s + 60]) for s in range(41))
            assert text and text.endswith(".")               # captions kept (merge_text_p = 0)


def test_random_crop_by_hand():
    codes = np.arange(2 * 10).reshape(2, 10)
    c, m = random_crop(codes, 4, np.random.default_rng(0))
    s = int(c[0, 0])
    np.testing.assert_array_equal(c, codes[:, s:s + 4]) and m.all()
    c, m = random_crop(codes[:, :3], 5, np.random.default_rng(0))
    np.testing.assert_array_equal(c, [[0, 1, 2, 0, 0], [10, 11, 12, 0, 0]])
    np.testing.assert_array_equal(m, [True, True, True, False, False])


def test_processes_get_disjoint_slices_and_epochs_reshuffle():
    out, _ = tokenized_synth()
    cfg = LoaderConfig(batch_size=2, frames=80, seed=0, num_epochs=2)   # masks: 80 or 50 valid
    seen = []
    for p in range(2):
        batches = list(make_train_loader(out, cfg, process_index=p, process_count=2))
        assert len(batches) == 12 and all(len(b["clip_id"]) == 1 for b in batches)  # 6 records x 2 epochs
        ids = [(b["clip_id"][0], int(b["padding_mask"].sum())) for b in batches]
        assert sorted(ids[:6]) == sorted(ids[6:]) and ids[:6] != ids[6:]   # same slice, new order
        seen.append(set(ids[:6]))
    assert not seen[0] & seen[1]
    assert len(seen[0] | seen[1]) == 12


REC = {"caption": "Calm piano", "key": "e minor", "bpm": np.float32(72.5), "genre": "classical",
       "moods": ["calm", "soft"], "aspects": ["piano", "slow"], "instrument": ""}


@pytest.mark.parametrize("probs", [(1.0, 0.0, 1.0), (1.0, 1.0, 1.0), (0.0, 0.5, 0.5), (0.5, 0.3, 0.5),
                                   (0.7, 0.5, 0.2)])
def test_text_augmentation_matches_audiocraft(probs):
    ms = reference.require("audiocraft.data.music_dataset")
    from audiocraft.data.audio_dataset import AudioMeta

    info = ms.MusicInfo(meta=AudioMeta(path="x.wav", duration=1.0, sample_rate=16000), seek_time=0.0,
                        n_frames=1, total_frames=1, sample_rate=16000, channels=1,
                        description=REC["caption"], key="e minor", bpm=72.5, genre="classical",
                        moods=["calm", "soft"], keywords=["piano", "slow"], instrument=None)
    for seed in range(40):
        random.seed(seed)
        want = ms.augment_music_info_description(info, *probs).description
        got = augment_description(REC, random.Random(seed), *probs)
        assert got == (want or ""), (seed, got, want)


def test_text_augmentation_rates():
    rng = random.Random(0)
    outs = [augment_description(REC, rng, 0.5, 0.5, 0.3) for _ in range(4000)]
    # a merge is visible unless it kept none of the 5 valued fields and kept the description
    visible = sum(1 for o in outs if ":" in o or not o.startswith("Calm")) / 4000
    assert abs(visible - 0.5 * (1 - 0.7 ** 5 * 0.5)) < 0.03
    kept = sum(o.count(": ") for o in outs) / (0.5 * 4000 * 5)     # fields kept per merged field
    assert abs(kept - 0.3) < 0.03
    dropped = sum(1 for o in outs if o and not o.startswith("Calm")) + outs.count("")
    assert abs(dropped / 4000 - 0.5 * 0.5) < 0.03


WORKER_SCRIPT = """
import dataclasses, sys
import numpy as np
from data_pipelines.loader import LoaderConfig, make_train_loader
cfg = LoaderConfig(batch_size=4, frames=60, seed=3, merge_text_p=0.5, drop_desc_p=0.3, drop_other_p=0.5)
out = sys.argv[1]
single = make_train_loader(out, cfg, process_index=0, process_count=1)
multi = make_train_loader(out, dataclasses.replace(cfg, worker_count=1), process_index=0, process_count=1)
for _ in range(3):
    a, b = next(single), next(multi)
    assert np.array_equal(a["codes"], b["codes"]) and a["descriptions"] == b["descriptions"], "differ"
multi.close()
print("same")
"""


def test_worker_processes_give_the_same_batches():
    # in a child process with a deadline: a stuck worker pool fails this test, not the suite
    out, _ = tokenized_synth()
    env = cli_env(Path(tempfile.mkdtemp()))
    res = subprocess.run([sys.executable, "-c", WORKER_SCRIPT, str(out)], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == 0 and res.stdout.strip().endswith("same"), res.stderr[-3000:]
