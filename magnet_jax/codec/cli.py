"""``magnet-jax codec-encode`` / ``codec-decode``: audio files to EnCodec codes and back.

    magnet-jax codec-encode --checkpoint facebook_encodec_32khz/ song.wav song.npz
    magnet-jax codec-decode --checkpoint facebook_encodec_32khz/ song.npz song_decoded.wav
    magnet-jax codec-encode --config configs/codec_32khz.py song.wav codes.npz   # random weights (smoke test)

``--checkpoint`` takes an audiocraft ``compression_state_dict.bin`` (or its folder) or a Hugging
Face EncodecModel folder. Audio is read with soundfile, mixed to the codec's channel count and
resampled with soxr when its rate differs. Codes are saved as ``.npz`` (``codes [1, K, T]`` int32,
``sample_rate``, ``num_samples``), decoded audio as 16-bit PCM trimmed to ``num_samples``.
Audio longer than ``--chunk-frames`` frames is processed in chunked mode (bounded memory).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def register(subparsers: argparse._SubParsersAction) -> None:
    for verb, fn, help_text in (("codec-encode", run_encode, "audio file -> EnCodec codes (.npz)"),
                                ("codec-decode", run_decode, "EnCodec codes (.npz) -> audio file")):
        p = subparsers.add_parser(verb, help=help_text, description=__doc__.splitlines()[0])
        p.add_argument("--checkpoint", help="compression_state_dict.bin (or folder) or a Hugging Face EncodecModel folder")
        p.add_argument("--config", help="configs/codec_*.py[:variant], random weights (when no --checkpoint)")
        p.add_argument("--chunk-frames", type=int, default=1500, help="window size of the chunked mode (frames)")
        p.add_argument("--context-frames", type=int, default=50, help="context on each side of a window (frames)")
        if verb == "codec-encode":
            p.add_argument("--n-q", type=int, default=None, help="number of codebooks to keep (default all)")
        p.add_argument("input")
        p.add_argument("output")
        p.add_argument("overrides", nargs="*", help="key=value overrides of --config, e.g. codec.pad_mode=constant")
        p.set_defaults(func=fn)


def _runner(args):
    from flax import nnx
    from magnet_jax.cli import UserError
    from magnet_jax.codec import Encodec
    from magnet_jax.codec.convert import CheckpointError
    from magnet_jax.models import load_codec_weights as load_codec
    from magnet_jax.codec.runner import CodecRunner
    if args.checkpoint:
        try:
            _, model = load_codec(args.checkpoint)
        except (FileNotFoundError, CheckpointError) as err:
            raise UserError(str(err)) from err
    elif args.config:
        from magnet_jax.config_loader import load_config
        try:
            config = load_config(args.config, args.overrides)
        except (FileNotFoundError, KeyError, ValueError, TypeError) as err:
            raise UserError(str(err)) from err
        model = Encodec(config["codec"], rngs=nnx.Rngs(int(config.get("seed", 0))))
    else:
        raise UserError("give --checkpoint (released weights) or --config (random weights)")
    return CodecRunner(model)


def read_audio_file(path: str, what: str = "audio") -> tuple[np.ndarray, int]:
    """An audio file as float32 ``[channels, samples]`` and its rate, refused (one line naming the
    file) when missing, unreadable, empty, or holding NaN / inf samples, the check tokenize
    applies to training audio: NaN through the codec gives constant codes, not an error."""
    from magnet_jax.cli import UserError
    from data_pipelines.rejects import REASONS
    try:
        import soundfile
    except ImportError as err:
        raise UserError("reading audio needs soundfile: pip install soundfile") from err
    if not Path(path).is_file():
        raise UserError(f"{what} {path} does not exist" if not Path(path).exists() else f"{what} {path} is not a file")
    try:
        wav, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except Exception as err:  # noqa: BLE001 - unreadable file: say which and why
        raise UserError(f"cannot read {what} {path}: {err}") from err
    if wav.shape[0] == 0:
        raise UserError(f"{what} {path} has no samples")
    bad = int(wav.size - np.count_nonzero(np.isfinite(wav)))
    if bad:
        raise UserError(f"{what} {path}: {REASONS['non_finite']} ({bad} NaN/inf samples of {wav.size}); "
                        f"repair or re-export the file")
    return np.ascontiguousarray(wav.T), int(rate)


def to_codec_format(wav: np.ndarray, rate: int, sample_rate: int, channels: int, path: str) -> np.ndarray:
    """``[C, N]`` audio at ``rate`` -> float32 ``[channels, samples]`` at ``sample_rate``."""
    from magnet_jax.cli import UserError
    if wav.shape[0] != channels:
        if channels == 1:
            wav = wav.mean(axis=0, keepdims=True)
        elif wav.shape[0] == 1:
            wav = np.repeat(wav, channels, axis=0)
        else:
            raise UserError(f"{path} has {wav.shape[0]} channels; the codec takes {channels}")
    if rate != sample_rate:
        try:
            import soxr
        except ImportError as err:
            raise UserError(f"{path} is {rate} Hz and the codec {sample_rate} Hz; resampling needs soxr "
                            f"(pip install soxr) or resample the file first") from err
        wav = soxr.resample(wav.T, rate, sample_rate).T.astype(np.float32)
    return np.ascontiguousarray(wav)


def run_encode(args) -> int:
    from magnet_jax.cli import UserError
    audio, rate = read_audio_file(args.input)          # refused before the codec is built
    runner = _runner(args)
    cfg = runner.cfg
    wav = to_codec_format(audio, rate, cfg.sample_rate, cfg.channels, args.input)[None]
    if wav.shape[-1] == 0:
        raise UserError(f"{args.input} has no samples")
    try:
        if runner.num_frames(wav.shape[-1]) > args.chunk_frames + 2 * args.context_frames:
            codes = runner.encode_chunked(wav, args.chunk_frames, args.context_frames, n_q=args.n_q,
                                          windows_per_call=1)
        else:
            codes = runner.encode(wav, n_q=args.n_q)
    except ValueError as err:
        raise UserError(str(err)) from err
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.output, codes=np.asarray(codes, np.int32), sample_rate=cfg.sample_rate,
             num_samples=wav.shape[-1])
    print(f"{args.input}: {wav.shape[-1] / cfg.sample_rate:.2f} s -> codes {tuple(codes.shape)} in {args.output}")
    return 0


def run_decode(args) -> int:
    from magnet_jax.cli import UserError
    runner = _runner(args)
    cfg = runner.cfg
    try:
        data = np.load(args.input)
        codes = data["codes"]
    except Exception as err:  # noqa: BLE001
        raise UserError(f"cannot read codes from {args.input} (expected codec-encode's .npz): {err}") from err
    if codes.ndim == 2:
        codes = codes[None]
    if "sample_rate" in data and int(data["sample_rate"]) != cfg.sample_rate:
        raise UserError(f"{args.input} was encoded at {int(data['sample_rate'])} Hz; this codec is {cfg.sample_rate} Hz")
    try:
        if codes.shape[-1] > args.chunk_frames + 2 * args.context_frames:
            audio = runner.decode_chunked(codes, args.chunk_frames, args.context_frames, windows_per_call=1)
        else:
            audio = runner.decode(codes)
    except ValueError as err:
        raise UserError(str(err)) from err
    audio = np.asarray(audio)[0]
    if "num_samples" in data:
        audio = audio[:, :int(data["num_samples"])]
    try:
        import soundfile
    except ImportError as err:
        raise UserError("writing audio needs soundfile: pip install soundfile") from err
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(args.output, np.clip(audio.T, -1.0, 1.0), cfg.sample_rate, subtype="PCM_16")
    print(f"{args.input}: codes {tuple(codes.shape)} -> {audio.shape[-1] / cfg.sample_rate:.2f} s in {args.output}")
    return 0
