"""``magnet-jax generate`` and ``magnet-jax convert``: text to WAV files with a released MAGNeT or
MusicGen (the family read from the checkpoint's xp.cfg), or a MeLoDy folder.

    magnet-jax generate --model facebook/magnet-small-10secs --prompt "80s synth pop" "calm piano" --out out/
    magnet-jax generate --model facebook/musicgen-small --prompt "80s synth pop" --duration 45 --out out/
    magnet-jax generate --model DIR --prompts-file prompts.txt --batch-size 8 --greedy --out out/
    magnet-jax generate --model DIR --prompt "add drums" --continue-from intro.wav --out out/
    magnet-jax generate --model facebook/magnet-small-10secs --rescorer facebook/musicgen-small --prompt "..." --out out/
    magnet-jax generate --model facebook/magnet-small-10secs --hybrid-prefix 3 --ar-model facebook/musicgen-small ...
    magnet-jax generate --model melody-tiny --prompt "a plucked string melody in C major with drums" --out out/
    magnet-jax convert --model facebook/magnet-small-10secs --out magnet-small-jax/

``generate`` writes one WAV (16-bit PCM) and one spectrogram PNG per prompt, ``tokens.npy`` (all
prompts, [N, K, T]) and ``generate.json`` (every setting used, the files, the timings). ``convert``
writes the orbax folder that ``--model`` also accepts and that loads without torch.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from magnet_jax.cli import finite_float, seed_value


def register(subparsers: argparse._SubParsersAction) -> None:
    g = subparsers.add_parser("generate", help="text to music / sound (WAV files) with a MAGNeT, MusicGen or MeLoDy model",
                              description="Generate audio from text with a MAGNeT, MusicGen or MeLoDy model (the family "
                                          "is read from the checkpoint): one WAV and one "
                                          "spectrogram PNG per prompt, tokens.npy and generate.json (every "
                                          "setting used) in --out.")
    _model_args(g)
    src = g.add_mutually_exclusive_group()
    src.add_argument("--prompt", nargs="+", action="extend", metavar="TEXT", help="one or more descriptions")
    src.add_argument("--prompts-file", metavar="FILE", help="a text file, one description per line")
    src.add_argument("--unconditional", type=int, metavar="N", help="N samples without text (the null condition)")
    g.add_argument("--allow-unconditional", action="store_true",
                   help="an empty prompt (--prompt \"\" or an empty line of --prompts-file) generates without "
                        "text, as audiocraft treats \"\"; without this flag an empty prompt is an error")
    g.add_argument("--out", required=True, help="output folder")
    g.add_argument("--continue-from", metavar="AUDIO", help="an audio file to continue (resampled to the model's rate)")
    g.add_argument("--seed", type=seed_value, default=0)
    g.add_argument("--batch-size", type=int, default=None, help="prompts per compiled call (default: all at once)")
    g.add_argument("--duration", type=finite_float, default=None,
                   help="seconds: MusicGen generates this long (past its 30 s by windows, --extend-stride); "
                        "MAGNeT produces its training segment only (checked, not changed)")
    g.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="LM compute dtype")
    sampler_args(g)
    paper_args(g)
    g.set_defaults(func=run_generate)

    c = subparsers.add_parser("convert", help="convert a MAGNeT checkpoint (LM, codec, text projection) to orbax",
                              description="Convert an audiocraft MAGNeT export (state_dict.bin + "
                                          "compression_state_dict.bin) into a folder that loads without torch.")
    _model_args(c, cache=False, verify=False)
    c.add_argument("--out", required=True, help="output folder (pass it to `generate --model`)")
    c.set_defaults(func=run_convert)

    e = subparsers.add_parser("export", help="package a trained LM + codec (train / train-codec workdirs) as a model",
                              description="Write the latest checkpoints of a `magnet-jax train` workdir and a "
                                          "`magnet-jax train-codec` workdir as one model folder that "
                                          "`generate --model` and `eval --model` load.")
    e.add_argument("--lm-workdir", required=True, help="a `magnet-jax train` workdir")
    e.add_argument("--codec-workdir", required=True, help="the codec that tokenized its data: a `magnet-jax train-codec` "
                                                          "workdir or a converted model folder")
    e.add_argument("--out", required=True, help="output folder")
    e.add_argument("--step", type=int, help="LM checkpoint step (default: the latest)")
    e.add_argument("--codec-step", type=int, help="codec checkpoint step (default: the latest)")
    e.add_argument("--no-ema", dest="use_ema", action="store_false", help="export the raw weights, not the EMA")
    e.add_argument("--generation", action="append", default=[], metavar="KEY=VALUE",
                   help="a default sampler setting stored with the model (a SamplerConfig field, e.g. "
                        "temperature=1.5 or decoding_steps=40,10,10,10); repeatable")
    e.set_defaults(func=run_export)

    m = subparsers.add_parser("export-melody", help="package MeLoDy's trained VAE-GAN, semantic LM and DPD as a model",
                              description="Write one MeLoDy model folder (generate --model loads it) from the "
                                          "workdirs of train-codec (VAE), train (semantic LM) and train-dpd.")
    m.add_argument("--vae", required=True, help="a train-codec workdir of a VAE codec, or a model folder holding one")
    m.add_argument("--semantic-lm-workdir", required=True, help="a `magnet-jax train` workdir of the semantic LM")
    m.add_argument("--dpd-workdir", required=True, help="a `magnet-jax train-dpd` workdir")
    m.add_argument("--out", required=True, help="output folder")
    m.add_argument("--no-ema", dest="use_ema", action="store_false", help="the semantic LM's raw weights, not the EMA")
    m.add_argument("--text-encoder", metavar="DIR", help="local MiniLM / T5 folder to record (default: by its name)")
    m.set_defaults(func=run_export_melody)


def _model_args(p: argparse.ArgumentParser, cache: bool = True, verify: bool = True) -> None:
    p.add_argument("--model", help="a released name (facebook/magnet-small-10secs, ...), a folder with "
                                   "state_dict.bin + compression_state_dict.bin, a converted / exported "
                                   "folder, or melody-tiny (the MeLoDy shipped with magnet-jax) (default for "
                                   "generate: the small MAGNeT shipped with magnet-jax, trained on the synthetic corpus)")
    p.add_argument("--text-encoder", metavar="DIR", help="local T5 folder, when xp.cfg's T5 cannot be fetched")
    p.add_argument("--codec", metavar="DIR", help="local EncodecModel folder, for a codec that redirects to the hub")
    if cache:
        p.add_argument("--cache-dir", metavar="DIR", help="where converted checkpoints are cached "
                                                          "(default $MAGNET_JAX_CACHE or ~/.cache/magnet_jax)")
    if verify:
        p.add_argument("--no-verify", dest="verify", action="store_false",
                       help="skip checking the model folder's files against its integrity.json (for huge "
                            "trusted folders; a damaged file is then read as it is)")


def sampler_args(p: argparse.ArgumentParser) -> None:
    """The sampler flags of ``generate`` (and ``eval``); ``sampler_params`` reads them back."""
    s = p.add_argument_group("sampler (defaults: audiocraft's MAGNeT.set_generation_params)")
    s.add_argument("--greedy", action="store_true", help="argmax decoding (use_sampling=False)")
    s.add_argument("--decoding-steps", type=_int_list, metavar="N,N,N,N", help="steps per codebook (default 20,10,10,10)")
    s.add_argument("--temperature", type=finite_float, help="initial softmax temperature (default 3.0)")
    s.add_argument("--no-anneal-temp", dest="anneal_temp", action="store_const", const=False,
                   help="keep the temperature constant within a stage")
    s.add_argument("--top-k", type=int, help="top-k sampling, used only when --top-p is 0 (default 0)")
    s.add_argument("--top-p", type=finite_float, help="nucleus sampling mass; 0 turns it off (default 0.9)")
    s.add_argument("--max-cfg-coef", type=finite_float, help="classifier-free guidance at the first step (default 10)")
    s.add_argument("--min-cfg-coef", type=finite_float, help="classifier-free guidance at the last step (default 1)")
    s.add_argument("--span-scoring", choices=("max", "prod"), help="span confidence (default max)")
    s.add_argument("--span-arrangement", choices=("nonoverlap", "stride1"),
                   help="spans to re-mask (default nonoverlap; the demo recommends stride1)")
    m = p.add_argument_group("MusicGen sampler (defaults: audiocraft's MusicGen.set_generation_params: "
                             "temperature 1, top-k 250, top-p 0)")
    m.add_argument("--cfg-coef", type=finite_float, help="classifier-free guidance (default 3)")
    m.add_argument("--two-step-cfg", dest="two_step_cfg", action="store_const", const=True,
                   help="audiocraft's two-pass guidance (the same computation here: the null condition is zero)")
    m.add_argument("--extend-stride", type=finite_float, metavar="S",
                   help="seconds each window advances past the trained duration (default 18)")
    d = p.add_argument_group("MeLoDy (its semantic LM takes the MusicGen flags above; defaults: the model folder's)")
    d.add_argument("--diffusion-steps", type=int, metavar="T", help="angular diffusion steps per chunk")
    d.add_argument("--diffusion-cfg", type=finite_float, metavar="W",
                   help="classifier-free guidance on the DPD's velocity (paper: about 2.5; 1 turns it off)")


def paper_args(p: argparse.ArgumentParser) -> None:
    """The MAGNeT paper's rescoring and Hybrid-MAGNeT (MAGNeT models only). The extra MusicGen is
    loaded as --model is (same --text-encoder, --codec, --cache-dir, --dtype)."""
    r = p.add_argument_group("the paper's rescoring and Hybrid-MAGNeT (MAGNeT models only; the MusicGen "
                             "must share MAGNeT's codec)")
    r.add_argument("--rescorer", metavar="MODEL", help="a MusicGen (released name or folder) that rescores "
                                                       "MAGNeT's sampled tokens at every decoding step")
    r.add_argument("--rescore-weight", type=finite_float, metavar="W",
                   help="w in w * p_rescorer + (1 - w) * p_MAGNeT, in [0, 1] (default 0.7)")
    r.add_argument("--hybrid-prefix", type=finite_float, metavar="SECONDS",
                   help="generate the first SECONDS autoregressively with --ar-model, the rest with MAGNeT "
                        "(0: plain MAGNeT; the whole clip: the AR model alone)")
    r.add_argument("--ar-model", metavar="MODEL",
                   help="the MusicGen of --hybrid-prefix (default: the --rescorer model)")


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", ",").split(",") if x]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from err


SAMPLER_FLAGS = ("decoding_steps", "temperature", "anneal_temp", "top_k", "top_p", "max_cfg_coef",
                 "min_cfg_coef", "span_scoring", "span_arrangement", "cfg_coef", "two_step_cfg", "extend_stride",
                 "diffusion_steps", "diffusion_cfg")
# the settings each family has (the others are refused by name, not ignored)
FAMILY_FLAGS = {
    "MAGNeT": {"decoding_steps", "temperature", "anneal_temp", "top_k", "top_p", "max_cfg_coef", "min_cfg_coef",
               "span_scoring", "span_arrangement", "use_sampling"},
    "MusicGen": {"temperature", "top_k", "top_p", "cfg_coef", "two_step_cfg", "extend_stride", "use_sampling"},
    "MeLoDy": {"temperature", "top_k", "top_p", "cfg_coef", "use_sampling", "diffusion_steps", "diffusion_cfg"},
}


def sampler_params(args: argparse.Namespace) -> dict:
    """The sampler parameters the user set (the rest keep audiocraft's defaults)."""
    params = {k: getattr(args, k) for k in SAMPLER_FLAGS if getattr(args, k, None) is not None}
    if args.greedy:
        params["use_sampling"] = False
    return params


def check_family_params(model, params: dict) -> None:
    """Refuse a setting the loaded model's family does not have (e.g. --decoding-steps for MusicGen)."""
    from magnet_jax.cli import UserError
    family = type(model).__name__
    foreign = sorted(set(params) - FAMILY_FLAGS.get(family, set(params)))
    if foreign:
        flags = ", ".join("--" + name.replace("_", "-") for name in foreign)
        raise UserError(f"{flags}: not a {family} setting (this model is {family}); drop it")


def read_prompts(args: argparse.Namespace) -> list[str]:
    """The prompts, in order; "" marks a sample without text (the null condition). Nothing the user
    gave is dropped: an empty prompt is an error naming it unless --allow-unconditional."""
    from magnet_jax.cli import UserError
    if args.unconditional is not None:
        if args.unconditional < 1:
            raise UserError(f"--unconditional {args.unconditional}: ask for at least one sample")
        return [""] * args.unconditional
    if args.prompts_file:
        try:
            text = Path(args.prompts_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise UserError(f"cannot read --prompts-file {args.prompts_file}: {err}") from err
        prompts = [line.strip() for line in text.rstrip("\r\n").splitlines()]
        where = [f"line {i + 1} of --prompts-file {args.prompts_file}" for i in range(len(prompts))]
        if not any(prompts) and not (prompts and args.allow_unconditional):
            raise UserError(f"--prompts-file {args.prompts_file} holds no prompts (one per line)")
    else:
        prompts = [p.strip() for p in (args.prompt or [])]
        where = [f"--prompt number {i + 1}" for i in range(len(prompts))]
        if not prompts:
            raise UserError("no prompts: pass --prompt TEXT [TEXT ...], --prompts-file FILE or --unconditional N")
    empty = [w for p, w in zip(prompts, where) if not p]
    if empty and not args.allow_unconditional:
        raise UserError(f"{empty[0]} is empty{f' (and {len(empty) - 1} more)' if len(empty) > 1 else ''}: "
                        f"write a description, or pass --allow-unconditional to generate that sample without "
                        f"text (the null condition)")
    return prompts


def load_model(args: argparse.Namespace, mesh="auto", compute_dtype: str = "float32"):
    """The model (MAGNeT or MusicGen, as the checkpoint says) with the command line's options;
    errors become one-line UserErrors."""
    from magnet_jax.cli import UserError
    from magnet_jax.models import PipelineError, load_model as load, no_model_message
    from magnet_jax.text import ModelFilesError
    try:
        from magnet_jax.codec.convert import CheckpointError as CodecCheckpointError
        from magnet_jax.lm.convert import CheckpointError as LMCheckpointError
        if args.model is None:
            from magnet_jax.models import sources
            if sources.DEFAULT_MODEL is None:
                raise UserError(no_model_message().replace("no model given", "no --model given"))
        return load(args.model, text_encoder=args.text_encoder, codec=args.codec,
                    cache_dir=args.cache_dir, mesh=mesh, compute_dtype=compute_dtype,
                    verify=getattr(args, "verify", True))
    except (PipelineError, ModelFilesError, FileNotFoundError, LMCheckpointError, CodecCheckpointError) as err:
        raise UserError(str(err).replace("\n", " ")) from err


def check_paper_flags(args: argparse.Namespace) -> None:
    """Flag combinations of rescoring / Hybrid-MAGNeT that cannot work, refused before loading."""
    from magnet_jax.cli import UserError
    if args.rescore_weight is not None and args.rescorer is None:
        raise UserError("--rescore-weight without --rescorer: name the MusicGen that rescores")
    if args.ar_model is not None and args.hybrid_prefix is None:
        raise UserError("--ar-model without --hybrid-prefix: say how many seconds it generates")
    if args.hybrid_prefix is not None:
        if args.ar_model is None and args.rescorer is None:
            raise UserError("--hybrid-prefix needs --ar-model MODEL (a MusicGen), or --rescorer MODEL to reuse")
        if args.continue_from:
            raise UserError("--hybrid-prefix and --continue-from both make the clip's beginning: use one")


def load_paper_models(args: argparse.Namespace, model) -> tuple[Any, Any]:
    """(rescorer, AR model) for --rescorer / --hybrid-prefix: MusicGens loaded as --model is; the
    rescorer set on ``model``. One model serves both when they are the same name."""
    from magnet_jax.cli import UserError
    from magnet_jax.lm.rescore import RescoreConfig
    from magnet_jax.models import MAGNeT, MusicGen, PipelineError
    if args.rescorer is None and args.hybrid_prefix is None:
        return None, None
    if not isinstance(model, MAGNeT):
        flag = "--rescorer" if args.rescorer is not None else "--hybrid-prefix"
        raise UserError(f"{flag}: the paper's rescoring and Hybrid-MAGNeT are for MAGNeT models; "
                        f"this model is {type(model).__name__}")
    loaded: dict[str, Any] = {}

    def musicgen(name: str, flag: str):
        if name not in loaded:
            other = load_model(argparse.Namespace(**{**vars(args), "model": name}), mesh=model.mesh,
                               compute_dtype=args.dtype)
            if not isinstance(other, MusicGen):
                raise UserError(f"{flag} {name} is a {type(other).__name__} model; it must be an "
                                f"autoregressive MusicGen")
            loaded[name] = other
        return loaded[name]

    rescorer = None if args.rescorer is None else musicgen(args.rescorer, "--rescorer")
    ar_name = args.ar_model or args.rescorer
    ar_model = None if args.hybrid_prefix is None else musicgen(ar_name, "--ar-model" if args.ar_model else "--rescorer")
    from magnet_jax.models import HybridMAGNeT
    try:
        if rescorer is not None:
            weight = RescoreConfig.weight if args.rescore_weight is None else args.rescore_weight
            model.set_rescorer(rescorer, weight=weight)
    except PipelineError as err:
        raise UserError(f"--rescorer {args.rescorer}: {err}") from err
    try:
        if ar_model is not None:
            HybridMAGNeT(model, ar_model)       # checks the shared codec before any generation
    except PipelineError as err:
        raise UserError(f"{'--ar-model' if args.ar_model else '--rescorer'} {ar_name}: {err}") from err
    return rescorer, ar_model


def _generate(args: argparse.Namespace, model, ar_model, prompts: list[str], params: dict, prompt_audio):
    """The generation the flags ask for: hybrid, continuation or plain."""
    if ar_model is not None:
        from magnet_jax.models import HybridMAGNeT
        ar_params = {"use_sampling": False} if args.greedy else {}
        return HybridMAGNeT(model, ar_model).generate(prompts, prefix_seconds=args.hybrid_prefix, seed=args.seed,
                                                      batch_size=args.batch_size, progress=True,
                                                      duration=args.duration, ar_params=ar_params, **params)
    if prompt_audio is None:
        return model.generate(prompts, seed=args.seed, batch_size=args.batch_size, progress=True,
                              duration=args.duration, **params)
    wav, rate = prompt_audio
    return model.generate_continuation(wav, rate, prompts, seed=args.seed, batch_size=args.batch_size,
                                       progress=True, duration=args.duration, **params)


def _paper_sidecar(args: argparse.Namespace, model, rescorer, ar_model) -> dict:
    """What generate.json records of rescoring and Hybrid-MAGNeT (None where unused)."""
    rescore = None if rescorer is None else {"model": rescorer.name, **dataclasses.asdict(model.rescore_params)}
    hybrid = None
    if ar_model is not None:
        ar_config = ar_model.sampler_config({"use_sampling": False} if args.greedy else {})
        hybrid = {"prefix_s": args.hybrid_prefix, "ar_model": ar_model.name,
                  "prefix_frames": int(round(args.hybrid_prefix * model.frame_rate)),
                  "ar_sampler": dataclasses.asdict(ar_config)}
    return {"rescorer": rescore, "hybrid": hybrid}


def run_generate(args: argparse.Namespace) -> int:
    from magnet_jax.cli import UserError
    from magnet_jax.models import PipelineError
    prompts = read_prompts(args)
    params = sampler_params(args)
    check_paper_flags(args)
    prepare_out(Path(args.out), prompts)
    prompt_audio = _read_prompt_audio(args.continue_from) if args.continue_from else None
    t0 = time.perf_counter()
    model = load_model(args, compute_dtype=args.dtype)
    check_family_params(model, params)
    if type(model).__name__ == "MeLoDy":
        return _run_melody(args, model, prompts, params, time.perf_counter() - t0)
    rescorer, ar_model = load_paper_models(args, model)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    try:
        out = _generate(args, model, ar_model, prompts, params, prompt_audio)
    except PipelineError as err:
        raise UserError(str(err)) from err
    gen_s = time.perf_counter() - t0
    files = write_outputs(Path(args.out), prompts, out)
    sidecar = {"model": model.name, "checkpoint_dir": str(model.checkpoint_dir), "prompts": prompts,
               "seed": args.seed, "batch_size": args.batch_size, "continue_from": args.continue_from,
               "model_family": type(model).__name__,
               "sampler": dataclasses.asdict(model.sampler_config({k: v for k, v in params.items()
                                                                    if k != "extend_stride"})),
               **_paper_sidecar(args, model, rescorer, ar_model),
               "compute_dtype": args.dtype,
               "sample_rate": model.sample_rate, "duration_s": out.audio.shape[-1] / model.sample_rate,
               "tokens_shape": list(out.tokens.shape), "files": files,
               "load_s": round(load_s, 3), "generate_s (compile + run)": round(gen_s, 3),
               "devices": [str(d) for d in (model.mesh.devices.flat if model.mesh is not None else [None])]}
    (Path(args.out) / "generate.json").write_text(json.dumps(sidecar, indent=2))
    print(json.dumps({"out": args.out, "wavs": [f["wav"] for f in files], "generate_s": round(gen_s, 3)}))
    return 0


def _run_melody(args: argparse.Namespace, model, prompts: list[str], params: dict, load_s: float) -> int:
    """generate for a MeLoDy folder: captions -> semantic tokens -> diffusion -> VAE decoder; the
    MAGNeT-only flags are refused by name."""
    from magnet_jax.cli import UserError
    from magnet_jax.models import PipelineError
    foreign = [flag for flag, value in (("--continue-from", args.continue_from), ("--rescorer", args.rescorer),
                                        ("--hybrid-prefix", args.hybrid_prefix), ("--ar-model", args.ar_model))
               if value is not None]
    if foreign:
        raise UserError(f"{', '.join(foreign)}: not for a MeLoDy model (it generates from text only); drop it")
    t0 = time.perf_counter()
    try:
        out = model.generate(prompts, seed=args.seed, batch_size=args.batch_size, progress=True,
                             duration=args.duration, **params)
    except (PipelineError, ValueError) as err:
        raise UserError(str(err)) from err
    gen_s = time.perf_counter() - t0
    files = write_outputs(Path(args.out), prompts, out)
    sidecar = {"model": model.name, "checkpoint_dir": str(model.checkpoint_dir), "prompts": prompts,
               "seed": args.seed, "batch_size": args.batch_size, "model_family": "MeLoDy", "settings": params,
               "diffusion_defaults": dataclasses.asdict(model.diffusion_config),
               "semantic_defaults": dataclasses.asdict(model.semantic_config), "compute_dtype": args.dtype,
               "sample_rate": model.sample_rate, "duration_s": out.audio.shape[-1] / model.sample_rate,
               "semantic_tokens_shape": list(out.tokens.shape), "files": files,
               "load_s": round(load_s, 3), "generate_s (compile + run)": round(gen_s, 3)}
    (Path(args.out) / "generate.json").write_text(json.dumps(sidecar, indent=2))
    print(json.dumps({"out": args.out, "wavs": [f["wav"] for f in files], "generate_s": round(gen_s, 3)}))
    return 0


def _read_prompt_audio(path: str) -> tuple[np.ndarray, int]:
    """[C, N] float32 at the file's own rate (the pipeline resamples, as the reference does)."""
    from magnet_jax.codec.cli import read_audio_file
    return read_audio_file(path, "--continue-from audio")


def _slug(text: str, limit: int = 40) -> str:
    if not text:
        return "unconditional"
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:limit].rstrip("_") or "prompt"


def _stems(prompts: list[str]) -> list[str]:
    return [f"{i:03d}_{_slug(prompt)}" for i, prompt in enumerate(prompts)]


def output_names(prompts: list[str]) -> list[str]:
    """Every file ``generate`` writes for these prompts."""
    return ["tokens.npy", "generate.json"] + [f"{stem}.{ext}" for stem in _stems(prompts) for ext in ("wav", "png")]


def prepare_out(out: Path, prompts: list[str]) -> None:
    """Check --out before anything is loaded or generated. A folder an earlier ``generate`` wrote
    is cleared of exactly the files its generate.json lists (so old and new WAVs never mix); any
    other file this run would overwrite is refused, so nothing else in the folder is touched."""
    from magnet_jax.cli import UserError, writable_folder
    writable_folder(out)
    previous = out / "generate.json"      # (an --out that does not exist yet holds nothing)
    if previous.is_file():
        try:
            listed = json.loads(previous.read_text())["files"]
            ours = ["tokens.npy", "generate.json"] + [f[k] for f in listed for k in ("wav", "spectrogram")]
        except (ValueError, KeyError, TypeError) as err:
            raise UserError(f"--out {out} holds a generate.json this version cannot read ({err}); choose "
                            f"another --out or remove it") from None
        for name in ours:
            if Path(name).name == name:            # only plain names inside --out
                (out / name).unlink(missing_ok=True)
    clash = [name for name in output_names(prompts) if (out / name).exists()]
    if clash:
        raise UserError(f"--out {out} already holds {clash[0]}{f' (and {len(clash) - 1} more)' if len(clash) > 1 else ''}, "
                        f"which this run would overwrite and no earlier generate wrote: choose another --out "
                        f"or move the file")


def write_outputs(out: Path, prompts: list[str], generation) -> list[dict]:
    """One WAV + one spectrogram PNG per prompt, and tokens.npy; returns the file names."""
    import soundfile
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "tokens.npy", generation.tokens)
    files = []
    for stem, prompt, audio in zip(_stems(prompts), prompts, generation.audio):
        soundfile.write(out / f"{stem}.wav", np.clip(audio.T, -1.0, 1.0), generation.sample_rate,
                        subtype="PCM_16")
        plot_spectrogram(audio, generation.sample_rate, out / f"{stem}.png", prompt or "(no text)")
        files.append({"prompt": prompt, "wav": f"{stem}.wav", "spectrogram": f"{stem}.png"})
    return files


def plot_spectrogram(audio: np.ndarray, sample_rate: int, path: Path, title: str) -> None:
    """Log-magnitude spectrogram of the first channel (matplotlib's specgram, Hann window)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    nfft = 1024 if audio.shape[-1] >= 4096 else 128
    fig, ax = plt.subplots(figsize=(10, 3))
    ax.specgram(audio[0], NFFT=nfft, Fs=sample_rate, noverlap=nfft // 2, cmap="magma")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (Hz)")
    ax.set_title(title[:100])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_convert(args: argparse.Namespace) -> int:
    from magnet_jax.cli import UserError
    from magnet_jax.models import PipelineError, convert, no_model_message
    from magnet_jax.text import ModelFilesError
    from magnet_jax.codec.convert import CheckpointError as CodecCheckpointError
    from magnet_jax.lm.convert import CheckpointError as LMCheckpointError
    if args.model is None:
        raise UserError(no_model_message().replace("no model given", "no --model given"))
    try:
        out = convert(args.model, args.out, text_encoder=args.text_encoder, codec=args.codec)
    except (PipelineError, ModelFilesError, FileNotFoundError, LMCheckpointError, CodecCheckpointError) as err:
        raise UserError(str(err).replace("\n", " ")) from err
    meta = json.loads((out / "magnet.json").read_text())
    print(json.dumps({"out": str(out), "source": meta["source"], "lm": meta["lm"],
                      "codec_sample_rate": meta["codec"]["sample_rate"],
                      "text_encoder": (meta["text"] or {}).get("encoder")}))
    return 0


def generation_overrides(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` sampler settings -> a dict of ``SamplerConfig`` fields, each parsed like its
    default (``decoding_steps=40,10,10,10`` -> a list)."""
    from magnet_jax.cli import UserError
    from magnet_jax.config_loader import _parse
    from magnet_jax.lm.sampler import SamplerConfig
    defaults = dataclasses.asdict(SamplerConfig())
    out: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or key not in defaults:
            raise UserError(f"--generation {item!r}: expected KEY=VALUE with KEY one of {sorted(defaults)}")
        try:
            parsed = _parse(value, defaults[key])
        except (ValueError, SyntaxError) as err:
            raise UserError(f"--generation {item!r}: {value!r} is not a valid {key} ({err})") from err
        out[key] = list(parsed) if isinstance(parsed, tuple) else parsed
    return out


def run_export(args: argparse.Namespace) -> int:
    from magnet_jax.cli import UserError
    from magnet_jax.export import ExportError, export_trained, folder_size_mb
    generation = generation_overrides(args.generation)
    try:
        out = export_trained(args.lm_workdir, args.codec_workdir, args.out, step=args.step,
                             codec_step=args.codec_step, use_ema=args.use_ema, generation=generation)
    except (ExportError, FileNotFoundError) as err:
        raise UserError(str(err).replace("\n", " ")) from err
    meta = json.loads((out / "magnet.json").read_text())
    print(json.dumps({"out": str(out), "size_mb": round(folder_size_mb(out), 2), "trained": meta["trained"],
                      "text_encoder": (meta["text"] or {}).get("encoder")}))
    return 0


def run_export_melody(args: argparse.Namespace) -> int:
    from magnet_jax.cli import UserError
    from magnet_jax.export import ExportError, export_melody, folder_size_mb
    from magnet_jax.models import PipelineError
    try:
        out = export_melody(args.vae, args.semantic_lm_workdir, args.dpd_workdir, args.out, use_ema=args.use_ema,
                            text_encoder=args.text_encoder)
    except (ExportError, PipelineError, FileNotFoundError) as err:
        raise UserError(str(err).replace("\n", " ")) from err
    print(json.dumps({"out": str(out), "size_mb": round(folder_size_mb(out), 2)}))
    return 0


def main(argv: list[str] | None = None) -> int:
    """These verbs on their own (``python -m magnet_jax.pipeline_cli``), as ``magnet-jax`` runs them."""
    from magnet_jax.cli import run
    return run([register], argv)


if __name__ == "__main__":
    # import ourselves by name, so the verbs' UserError is magnet_jax.cli's own
    from magnet_jax.pipeline_cli import main as _main
    sys.exit(_main())
