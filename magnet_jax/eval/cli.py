"""``magnet-jax eval``: prompt adherence of a model (MAGNeT, MusicGen, MeLoDy) on the synthetic attributes.

    magnet-jax eval --out eval/                                  # shipped model, held-out prompts
    magnet-jax eval --model DIR --prompts prompts.jsonl --out eval/ --num-prompts 12 --batch-size 4
    magnet-jax eval --model DIR --out eval/ --embedding vggish=~/weights/vggish-10086976.pth
    magnet-jax eval --model DIR --out eval/ --embedding my_pkg.embedders:my_embedder
    magnet-jax eval --model DIR --out eval/ --temperature 1.0 --max-cfg-coef 3   # sampler ablation
    magnet-jax eval --model MELODY_DIR --out eval/ --duration 5 --diffusion-steps 20   # a MeLoDy

Writes report.json, report.md (attribute | generated | chance | p | ceiling), accuracy.png,
music_likeness.png and generated/*.wav into --out.

    magnet-jax eval-summary eval_seed0/ eval_seed1/ eval_seed2/ --out eval_pooled/
"""
from __future__ import annotations

import argparse
import json
import sys
from magnet_jax.cli import finite_float, seed_value


def register(subparsers: argparse._SubParsersAction) -> None:
    from magnet_jax.eval.frechet import BUILTIN_EMBEDDINGS
    from magnet_jax.pipeline_cli import _model_args, sampler_args
    e = subparsers.add_parser(
        "eval", help="prompt adherence on the synthetic attributes (report.json / .md / PNGs)",
        description="Generate audio for every prompt of a JSONL prompt set, recover instrument, key, mode, "
                    "tempo, pattern and drums from it with librosa analysers, and compare with the prompts "
                    "(generated), with shuffled prompts (chance) and with real synthetic clips of the same "
                    "attributes (ceiling); plus pitch salience, spectral flatness, Fréchet distances and "
                    "chroma cosine against the real clips.")
    _model_args(e)
    e.add_argument("--prompts", metavar="FILE", default=None,
                   help="JSONL prompts, one {\"caption\": ..., \"attributes\": {...}} per line "
                        "(default: the held-out set shipped in magnet_jax/eval/prompts/heldout.jsonl)")
    e.add_argument("--out", required=True, help="output folder")
    e.add_argument("--seed", type=seed_value, default=0, help="generation, real-clip rendering and chance shuffle seed")
    e.add_argument("--batch-size", type=int, default=8, help="prompts per compiled generate call (default 8)")
    e.add_argument("--num-prompts", type=int, default=None, metavar="N", help="evaluate the first N prompts only")
    e.add_argument("--embedding", action="append", default=[], metavar="NAME=PATH|MODULE:FUNCTION",
                   help="an extra embedding for the Fréchet distance, repeatable: "
                        f"{'=PATH, '.join(BUILTIN_EMBEDDINGS)}=PATH from local weights (VGGish: torchvggish's "
                        "vggish-10086976.pth; CLAP: a LAION-CLAP .pt; PaSST: a PaSST state dict), or a callable "
                        "returning an Embedder (name, sample_rate, __call__(audio [N, samples]) -> [M, D]). "
                        "The codec's latents are always used.")
    e.add_argument("--duration", type=finite_float, default=None, metavar="S",
                   help="clip length for the families that choose it (MusicGen, MeLoDy; MAGNeT makes its "
                        "trained segment only); default: the model's")
    sampler_args(e)
    e.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="LM compute dtype")
    e.set_defaults(func=run_eval)

    p = subparsers.add_parser(
        "probe-captions", help="which caption attributes a trained LM reads (cross-entropy with edited captions)",
        description="Valid-split cross-entropy per stage of a `magnet-jax train` workdir with the true captions "
                    "and with each caption edited in one attribute (mode, bpm, instrument, tonic, or empty): "
                    "an attribute the LM reads costs cross-entropy when changed. Writes caption_probe.json "
                    "and caption_probe.png.")
    p.add_argument("--workdir", required=True, help="a `magnet-jax train` workdir (its EMA weights)")
    p.add_argument("--data", default=None, help="tokenized dataset (default: the run's data.dir)")
    p.add_argument("--batches", type=int, default=8, help="valid batches (default 8)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    p.add_argument("--seed", type=seed_value, default=0, help="mask seed (the same masks for every edit)")
    p.add_argument("--mask-rate", type=finite_float, default=None, metavar="R",
                   help="mask this fraction of every stage's codes instead of the training cosine draw; 1.0 "
                        "hides (nearly) all, so the caption is the only clue (default: the cosine draw)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run_probe)

    m = subparsers.add_parser(
        "eval-summary", help="pool several `magnet-jax eval` reports (seeds): accuracy, exact chance, p-values",
        description="Pool the per-prompt analyses of several `magnet-jax eval` report folders (e.g. seeds "
                    "0, 1, 2): accuracy per attribute over all generations, the exact chance (each "
                    "generation scored against the other prompts of its run), a permutation p-value "
                    "against it, and the ceilings. Writes summary.json, summary.md and summary.png.")
    m.add_argument("reports", nargs="+", metavar="REPORT_DIR", help="folders written by `magnet-jax eval --out`")
    m.add_argument("--out", required=True, help="output folder")
    m.add_argument("--permutations", type=int, default=None, help="derangements per run for the p-values (default 2000)")
    m.add_argument("--seed", type=seed_value, default=0, help="permutation seed")
    m.set_defaults(func=run_summary)


def _prompts(args: argparse.Namespace) -> tuple[list, str]:
    from magnet_jax.cli import UserError
    from magnet_jax.eval.prompts import HELDOUT_FILE, PromptError, load_prompts
    path = args.prompts or str(HELDOUT_FILE)
    try:
        prompts = load_prompts(path)
    except PromptError as err:
        raise UserError(str(err)) from err
    if args.num_prompts is not None:
        if args.num_prompts < 1:
            raise UserError(f"--num-prompts {args.num_prompts}: must be at least 1")
        prompts = prompts[:args.num_prompts]
    return prompts, path


def _embedders(specs: list[str]) -> list:
    from magnet_jax.cli import UserError
    from magnet_jax.eval.frechet import load_embedder
    try:
        return [load_embedder(s) for s in specs]
    except (ValueError, ImportError, OSError) as err:     # bad spec, missing package, missing weights
        raise UserError(str(err)) from err


def run_eval(args: argparse.Namespace) -> int:
    from magnet_jax.cli import UserError, writable_folder
    from magnet_jax.eval.runner import evaluate
    from magnet_jax.models import PipelineError
    from magnet_jax.pipeline_cli import check_family_params, load_model, sampler_params
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be at least 1")
    prompts, path = _prompts(args)
    embedders = _embedders(args.embedding)
    writable_folder(args.out)                 # before the model loads and the prompts generate
    model = load_model(args, compute_dtype=args.dtype)
    params = sampler_params(args)
    check_family_params(model, params)
    if args.duration is not None:
        params["duration"] = args.duration
    try:
        report = evaluate(model, prompts, args.out, seed=args.seed, batch_size=args.batch_size,
                          embedders=embedders, prompts_file=path, **params)
    except PipelineError as err:
        raise UserError(str(err)) from err
    print(json.dumps({"out": args.out, "files": report["files"],
                      "accuracy": {k: {g: r[g] for g in ("generated", "chance", "ceiling")}
                                   for k, r in report["accuracy"].items()}}))
    return 0


def run_probe(args: argparse.Namespace) -> int:
    from magnet_jax.cli import UserError
    from magnet_jax.eval.caption_probe import probe, write
    from magnet_jax.export import ExportError
    if args.batches < 1:
        raise UserError(f"--batches {args.batches}: must be at least 1")
    if args.mask_rate is not None and not 0 < args.mask_rate <= 1:
        raise UserError(f"--mask-rate {args.mask_rate}: must be in (0, 1]")
    try:
        report = probe(args.workdir, args.data, args.batches, args.seed, args.step, args.mask_rate)
    except (ExportError, ValueError) as err:
        raise UserError(str(err)) from err
    files = write(report, args.out)
    print(json.dumps({"files": files, "step": report["step"], "delta": report["delta"]}))
    return 0


def run_summary(args: argparse.Namespace) -> int:
    from magnet_jax.cli import UserError
    from magnet_jax.eval.significance import PERMUTATIONS
    from magnet_jax.eval.summary import SummaryError, summarise, write
    permutations = PERMUTATIONS if args.permutations is None else args.permutations
    if permutations < 1:
        raise UserError(f"--permutations {permutations}: must be at least 1")
    try:
        summary = summarise(args.reports, permutations, args.seed)
    except SummaryError as err:
        raise UserError(str(err)) from err
    files = write(summary, args.out)
    print(json.dumps({"files": files, "accuracy": {k: {g: r[g] for g in ("generated", "chance", "p_value")}
                                                   for k, r in summary["accuracy"].items()}}))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m magnet_jax.eval.cli``: this verb alone, as ``magnet-jax`` runs it."""
    from magnet_jax.cli import run
    return run([register], argv)


if __name__ == "__main__":
    from magnet_jax.eval.cli import main as _main
    sys.exit(_main())
