"""``magnet-jax synth-corpus``, ``magnet-jax tokenize`` and ``magnet-jax fit-semantic``.

    magnet-jax synth-corpus --out data/synth --clips 1000
    magnet-jax tokenize data/synth --out data/tokens/magnet_tokens/1.0.0 --codec encodec_32khz
    magnet-jax fit-semantic data/synth --out data/semantic.npz --num-tokens 32
    magnet-jax tokenize data/synth --out data/semantic_tokens/magnet_tokens/1.0.0 --semantic-tokenizer data/semantic.npz

``tokenize`` reads a MusicCaps CSV, an audiocraft JSONL or a folder of audio + .txt captions
(auto-detected or ``--format``), encodes segments with EnCodec and writes a resumable,
TFDS-loadable ArrayRecord dataset plus ``summary-<split>.json`` and ``rejects-<split>.tsv``.
"""
from __future__ import annotations

import argparse
import ast
import json
import math
import sys
from pathlib import Path

from magnet_jax.cli import UserError, finite_float, seed_value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the data verbs to the ``magnet-jax`` command."""
    p = subparsers.add_parser("synth-corpus", help="render a synthetic MusicCaps-style corpus",
                              description=synth_corpus.__doc__)
    p.add_argument("--out", type=Path, required=True, help="folder to write (created)")
    p.add_argument("--clips", type=int, required=True, help="number of clips to render")
    p.add_argument("--duration", type=finite_float, default=10.0, help="seconds per clip (MusicCaps: 10)")
    p.add_argument("--sample-rate", type=int, default=32000)
    p.add_argument("--seed", type=seed_value, default=0)
    p.add_argument("--exclude-heldout", action="store_true",
                   help="no clip gets an (instrument, pattern, mode) combination of the held-out "
                        "evaluation prompts (magnet_jax.eval.prompts.HELDOUT_COMBOS)")
    p.add_argument("--tempi", metavar="BPM,BPM,...",
                   help="draw every clip's tempo from these BPMs (default: uniform over 72-152)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes rendering clips (the corpus is the same whatever the number)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=synth_corpus)

    t = subparsers.add_parser("tokenize", help="encode a captioned music corpus to codec tokens",
                              description=tokenize.__doc__)
    _corpus_args(t, "dataset folder (TFDS layout)")
    t.add_argument("--split", default="train")
    t.add_argument("--codec", default="encodec_32khz",
                   help="codec architecture: encodec_32khz, encodec_16khz, encodec_24khz")
    t.add_argument("--codec-weights", help="an audiocraft export, a Hugging Face folder, a train-codec "
                                           "workdir or a converted model folder (the shipped default: "
                                           "magnet_jax/assets/default_model); without it the codec has "
                                           "random weights")
    t.add_argument("--codec-seed", type=seed_value, default=0, help="init seed when no weights are given")
    t.add_argument("--codec-override", action="append", default=[], metavar="KEY=VALUE",
                   help="change an EncodecConfig field of a random-init codec, e.g. n_filters=8 "
                        "(repeatable; for small test codecs)")
    t.add_argument("--semantic-tokenizer", metavar="FILE",
                   help="write MeLoDy's semantic tokens (one codebook) with this `fit-semantic` tokenizer "
                        "instead of codec tokens (then no --codec-* flag)")
    t.add_argument("--text-encoder", default="none", choices=("none", "minilm", "t5"),
                   help="also store this encoder's caption states (float16 [L, width]) per record")
    t.add_argument("--text-encoder-path", help="T5 / BERT folder or hub name (minilm: optional)")
    t.add_argument("--segment-duration", type=finite_float, default=10.0, help="seconds per record")
    t.add_argument("--min-segment-ratio", type=finite_float, default=0.5,
                   help="keep a tail segment of at least this fraction of --segment-duration")
    t.add_argument("--normalize", action="store_true", help="loudness-normalise to -14 LUFS")
    t.add_argument("--batch-size", type=int, default=8, help="segments per codec call "
                                                              "(a multiple of the local devices)")
    t.add_argument("--clips-per-shard", type=int, default=64)
    t.add_argument("--decode-workers", type=int, default=2)
    t.add_argument("--max-shards", type=int, help="write at most this many new shards, then stop")
    t.add_argument("--process-index", type=int, help="split the work by hand, without jax.distributed "
                                                     "(default: jax.process_index())")
    t.add_argument("--process-count", type=int, help="default: jax.process_count()")
    t.add_argument("--no-progress", action="store_true")
    from magnet_jax.train.cli import add_distributed_flags
    add_distributed_flags(t)
    t.set_defaults(func=tokenize)

    f = subparsers.add_parser("fit-semantic", help="fit MeLoDy's semantic tokenizer (k-means over log-mel + chroma)",
                              description=fit_semantic.__doc__)
    _corpus_args(f, "the tokenizer file to write (an .npz archive)")
    f.add_argument("--num-tokens", type=int, default=32, help="k-means centres (the semantic vocabulary)")
    f.add_argument("--clips", type=int, default=64, help="fit on the first N clips of the corpus")
    f.add_argument("--seconds", type=finite_float, default=10.0, help="seconds read per clip")
    f.add_argument("--sample-rate", type=int, default=16000)
    f.add_argument("--hop-length", type=int, default=640, help="samples per token (16 kHz / 640 = 25 Hz)")
    f.add_argument("--n-fft", type=int, default=2048)
    f.add_argument("--n-mels", type=int, default=32)
    f.add_argument("--iters", type=int, default=50, help="Lloyd iterations")
    f.add_argument("--seed", type=seed_value, default=0)
    f.set_defaults(func=fit_semantic)


def _corpus_args(p: argparse.ArgumentParser, out_help: str) -> None:
    """The corpus a verb reads (``read_manifest``'s arguments) and its --out."""
    p.add_argument("source", type=Path, help="MusicCaps .csv, audiocraft .jsonl(.gz), or a folder")
    p.add_argument("--out", type=Path, required=True, help=out_help)
    p.add_argument("--format", default="auto", choices=("auto", "musiccaps", "jsonl", "folder"))
    p.add_argument("--audio-dir", type=Path, help="MusicCaps audio folder (default: audio/ beside the CSV)")


def synth_corpus(args: argparse.Namespace) -> int:
    """Render a synthetic MusicCaps-style corpus (audio, captions, aspects, labels)."""
    from data_pipelines.synth import write_corpus

    if args.clips < 1 or args.duration <= 0 or args.sample_rate < 8000:
        raise UserError(f"need --clips >= 1, --duration > 0 and --sample-rate >= 8000; got "
                        f"{args.clips}, {args.duration}, {args.sample_rate}")
    exclude: frozenset = frozenset()
    if args.exclude_heldout:
        from magnet_jax.eval.prompts import HELDOUT_COMBOS
        exclude = frozenset(tuple(c) for c in HELDOUT_COMBOS)
    tempi = None
    if args.tempi is not None:
        try:
            tempi = tuple(int(t) for t in args.tempi.split(",") if t.strip())
        except ValueError:
            raise UserError(f"--tempi {args.tempi!r}: give comma-separated whole BPMs, e.g. 80,110,140") from None
    try:
        csv_path = write_corpus(args.out, args.clips, duration=args.duration,
                                sample_rate=args.sample_rate, seed=args.seed,
                                progress=not args.no_progress, exclude=exclude, tempi=tempi,
                                workers=args.workers)
    except ValueError as err:
        raise UserError(str(err)) from err
    print(json.dumps({"csv": str(csv_path), "audio": str(args.out / "audio"),
                      "labels": str(args.out / "labels.jsonl"), "clips": args.clips,
                      "excluded_combos": sorted(exclude), "tempi": tempi,
                      "hours": round(args.clips * args.duration / 3600, 6)}))
    return 0


def tokenize(args: argparse.Namespace) -> int:
    """Tokenize a corpus into ArrayRecord shards (resumable; see data_pipelines.tokenize)."""
    from data_pipelines.audio import AudioSettings
    from data_pipelines.manifests import read_manifest
    from data_pipelines.tokenize import TokenizeOptions
    from data_pipelines.tokenize import tokenize as run

    check_tokenize_args(args)
    from magnet_jax.train.cli import start_distributed
    start_distributed(args)
    try:
        manifest = read_manifest(args.source, args.format, args.audio_dir)
        encoder = _encoder(args)
        settings = AudioSettings(sample_rate=encoder.sample_rate, channels=encoder.channels,
                                 segment_duration=args.segment_duration,
                                 min_segment_ratio=args.min_segment_ratio, normalize=args.normalize)
        pi, pc = _process(args)
        together = pc > 1 and args.process_index is None      # processes of one jax.distributed job
        opts = TokenizeOptions(split=args.split, clips_per_shard=args.clips_per_shard,
                               decode_workers=args.decode_workers, process_index=pi,
                               process_count=pc, max_shards=args.max_shards,
                               progress=not args.no_progress, finalize=not together)
        text = _text_embedder(args)
        summary = run(manifest, encoder, settings, args.out, opts, text)
        if together:
            summary = _finish_together(args.out, manifest, encoder, opts, summary, text is not None)
    except (ValueError, FileNotFoundError, KeyError, TypeError) as err:
        raise UserError(str(err)) from None
    print(json.dumps(summary, indent=1))
    return 0


def _encoder(args: argparse.Namespace):
    """The codec of the command line, or MeLoDy's semantic tokenizer (no codec flag with it)."""
    from data_pipelines.encoder import CodecEncoder, SemanticEncoder
    if args.semantic_tokenizer:
        given = [flag for flag, set_ in (("--codec", args.codec != "encodec_32khz"), ("--codec-weights", args.codec_weights),
                                         ("--codec-override", args.codec_override)) if set_]
        if given:
            raise UserError(f"{', '.join(given)}: --semantic-tokenizer makes the tokens, not a codec; drop it")
        return SemanticEncoder.from_file(args.semantic_tokenizer, args.batch_size)
    return CodecEncoder.from_name(args.codec, args.batch_size, weights=args.codec_weights, seed=args.codec_seed,
                                  overrides=parse_overrides(args.codec_override))


def fit_semantic(args: argparse.Namespace) -> int:
    """Fit MeLoDy's semantic tokenizer: k-means (``--num-tokens`` centres) over the standardised
    log-mel + chroma frames of the first ``--clips`` clips of a corpus (mono, ``--sample-rate``).
    Writes an .npz that ``tokenize --semantic-tokenizer`` reads."""
    import jax
    import numpy as np

    from data_pipelines.audio import AudioSettings, load_clip
    from data_pipelines.manifests import read_manifest
    from magnet_jax.melody.semantic import LogMelChroma, SemanticTokenizer

    if min(args.num_tokens - 1, args.clips, args.iters) < 1 or not args.seconds > 0:
        raise UserError("need --num-tokens >= 2, --clips >= 1, --iters >= 1 and --seconds > 0")
    try:
        manifest = read_manifest(args.source, args.format, args.audio_dir)
        extractor = LogMelChroma(args.sample_rate, args.hop_length, args.n_fft, args.n_mels)
        settings = AudioSettings(sample_rate=args.sample_rate, channels=1, segment_duration=args.seconds)
        n = settings.segment_samples
        clips = [c for c in manifest.clips[:args.clips]]
        audio = np.zeros((len(clips), n), np.float32)
        for i, clip in enumerate(clips):        # shorter clips are zero-padded to --seconds
            wav = load_clip(Path(clip.path), settings, clip.start_s, clip.end_s)[0, :n]
            audio[i, :wav.shape[-1]] = wav
        tokenizer = SemanticTokenizer.fit(jax.random.key(args.seed), extractor, audio, args.num_tokens, args.iters)
    except (ValueError, FileNotFoundError) as err:
        raise UserError(str(err)) from None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(args.out)
    used = np.unique(np.asarray(tokenizer.encode(audio))).size
    print(json.dumps({"out": str(args.out), "clips": len(clips), "num_tokens": args.num_tokens,
                      "tokens_used_on_these_clips": int(used), "frame_rate": extractor.frame_rate}))
    return 0


def _finish_together(out: Path, manifest, encoder, opts, summary: dict, text_embedding: bool) -> dict:
    """Every process of a jax.distributed job has written its shards: process 0 alone writes
    the split's metadata (no two processes race on the same files), then everyone returns."""
    import dataclasses

    from jax.experimental import multihost_utils

    from data_pipelines.tokenize import finish
    multihost_utils.sync_global_devices("tokenize: every process wrote its shards")
    if opts.process_index == 0:
        summary = finish(out, manifest, encoder, dataclasses.replace(opts, finalize=True),
                         summary["this_run"], text_embedding)
    multihost_utils.sync_global_devices("tokenize: the split is finalized")
    return summary


def check_tokenize_args(args: argparse.Namespace) -> None:
    """Refuse impossible numbers before anything is built or written: a job that failed later
    would leave an --out folder whose job file records the bad value."""
    at_least_one = {"--batch-size": args.batch_size, "--clips-per-shard": args.clips_per_shard,
                    "--decode-workers": args.decode_workers, "--max-shards": args.max_shards}
    for flag, value in at_least_one.items():
        if value is not None and value < 1:
            raise UserError(f"{flag} {value}: must be >= 1")
    if not 0 < args.segment_duration < math.inf:
        raise UserError(f"--segment-duration {args.segment_duration}: must be a finite number of seconds > 0")
    if not 0 < args.min_segment_ratio <= 1:
        raise UserError(f"--min-segment-ratio {args.min_segment_ratio}: must be in (0, 1]")


def _text_embedder(args: argparse.Namespace):
    """The optional caption-state embedder named on the command line."""
    if args.text_encoder == "none":
        return None
    from data_pipelines.tokenize import text_embedder
    from magnet_jax.text import TextEncoder

    if args.text_encoder == "minilm":
        return text_embedder(TextEncoder.minilm(args.text_encoder_path))
    if not args.text_encoder_path:
        raise ValueError("--text-encoder t5 needs --text-encoder-path (a local T5 folder)")
    return text_embedder(TextEncoder.t5(args.text_encoder_path))


def parse_overrides(items: list[str]) -> dict:
    """``["n_filters=8", "ratios=(4, 4)"]`` -> ``{"n_filters": 8, "ratios": (4, 4)}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--codec-override {item!r}: expected KEY=VALUE, e.g. n_filters=8")
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()        # a bare string such as pad_mode=constant
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m data_pipelines.cli VERB ...``: the data verbs without the rest of the CLI."""
    from magnet_jax.cli import run
    return run([register], argv)


def _process(args: argparse.Namespace) -> tuple[int, int]:
    if (args.process_index is None) != (args.process_count is None):
        raise ValueError("give both --process-index and --process-count, or neither")
    if args.process_index is not None:
        return args.process_index, args.process_count
    import jax

    return jax.process_index(), jax.process_count()


if __name__ == "__main__":
    sys.exit(main())
