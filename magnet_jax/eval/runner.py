"""``evaluate``: generate for every prompt, render the real counterparts, analyse both, write the report.

    from magnet_jax.eval.runner import evaluate
    from magnet_jax.eval.prompts import heldout_prompts
    report = evaluate(model, heldout_prompts(), "eval_out/", seed=0, batch_size=8)

Reproducibility: generation uses ``model.generate(captions, seed=seed)``; prompt i's real clip
is rendered with ``numpy.random.default_rng([seed, i])`` (missing attributes drawn first, then
the rendering noise, see ``render_real``); the chance permutation test uses ``default_rng(seed)``.
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from data_pipelines import synth
from magnet_jax.eval import analysers as A
from magnet_jax.eval import frechet as F
from magnet_jax.eval import report as R
from magnet_jax.eval.prompts import Prompt, complete_attributes


def render_real(prompts: Sequence[Prompt], num_samples: int, sample_rate: int,
                seed: int) -> tuple[list[synth.ClipAttributes], np.ndarray]:
    """Real synthetic clips ``[N, num_samples]`` for the prompts' attributes, at the model's rate
    and length: prompt i uses ``default_rng([seed, i])`` to draw its missing attributes and then
    to render (``synth.render_clip``)."""
    attrs, clips = [], []
    for i, prompt in enumerate(prompts):
        rng = np.random.default_rng([seed, i])
        a = complete_attributes(prompt.attributes, rng)
        clip = synth.render_clip(a, num_samples / sample_rate, sample_rate, rng)
        clips.append(np.pad(clip, (0, max(0, num_samples - clip.size)))[:num_samples])
        attrs.append(a)
    return attrs, np.stack(clips).astype(np.float32)


def features(audio: np.ndarray, sample_rate: int, desc: str, progress: bool) -> list[dict[str, float]]:
    """``analysers.clip_features`` of every clip ``[N, samples]``."""
    return [A.clip_features(A.to_analysis_rate(x, sample_rate))
            for x in tqdm(audio, desc=desc, unit="clip", disable=not progress)]


def frechet_rows(embedders: Sequence[F.Embedder], generated: np.ndarray, real: np.ndarray,
                 sample_rate: int) -> dict[str, dict]:
    """Per embedder: the Fréchet distance generated vs real, and the set sizes it rests on."""
    rows = {}
    for embedder in embedders:
        g, r = F.embed(embedder, generated, sample_rate), F.embed(embedder, real, sample_rate)
        row = {"distance": None, "generated_embeddings": int(g.shape[0]), "real_embeddings": int(r.shape[0]),
               "dimension": int(g.shape[1])}
        try:
            row["distance"] = F.frechet_distance(g, r)
        except ValueError as err:         # e.g. one embedding per clip and a single prompt
            row["error"] = str(err)
        rows[embedder.name] = row
    return rows


def codec_module(model):
    """The ``Encodec`` behind a model: MAGNeT and MusicGen hold it in a ``CodecRunner``, MeLoDy
    (whose codec is a VAE-GAN) holds it directly."""
    return getattr(model.codec, "model", model.codec)


def codec_round_trip(model, audio: np.ndarray, batch_size: int) -> np.ndarray:
    """Real clips ``[N, samples]`` through the model's codec: encoded and decoded with the LM's
    codebooks, or for MeLoDy through its VAE-GAN (``MeLoDy.reconstruct``).

    Why: the model can only produce what its codec can decode, so the analysers on these clips
    are the ceiling the model itself can reach; the gap to the clean ceiling is the codec's.
    """
    from magnet_jax.codec.training.evaluate import batched
    wav = np.repeat(audio[:, None, :], codec_module(model).cfg.channels, axis=1).astype(np.float32)
    reconstruct = getattr(model, "reconstruct", None) or (
        lambda a: model.decode(model.codec.encode(a, n_q=model.lm_cfg.n_q)))
    coded = batched(reconstruct, wav, batch_size)
    return coded.mean(axis=1)[:, :audio.shape[-1]]


def reference_analyses(model, prompts: Sequence[Prompt], num_samples: int, sample_rate: int, seed: int,
                       batch_size: int, progress: bool, cache: dict | None = None) -> tuple:
    """(attributes, clips, analyses, analyses through the codec) of the prompts' real clips.

    They depend only on the prompts, the seed, the clip length and the codec, not on how the
    generations were made; an ablation that evaluates several samplers of one model (or models
    sharing a codec) passes one ``cache`` dict so they are rendered and analysed once per seed.
    The key holds the codec object's id, so models on another codec never share an entry."""
    key = (seed, num_samples, sample_rate, id(codec_module(model)), tuple(p.caption for p in prompts))
    if cache is not None and key in cache:
        return cache[key]
    real_attrs, real = render_real(prompts, num_samples, sample_rate, seed)
    real_an = A.analyse_features(features(real, sample_rate, "analysing real clips", progress))
    coded_an = A.analyse_features(features(codec_round_trip(model, real, batch_size), sample_rate,
                                           "analysing real clips through the codec", progress))
    result = (real_attrs, real, real_an, coded_an)
    if cache is not None:
        cache[key] = result
    return result


def slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:limit].rstrip("_") or "prompt"


def write_wavs(out: Path, prompts: Sequence[Prompt], audio: np.ndarray, sample_rate: int) -> list[str]:
    """The generations as 16-bit WAVs under ``out/generated/``; returns paths relative to ``out``."""
    import soundfile
    folder = out / "generated"
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, (prompt, clip) in enumerate(zip(prompts, audio)):
        name = f"generated/{i:03d}_{slug(prompt.caption)}.wav"
        soundfile.write(out / name, np.clip(np.asarray(clip).T, -1.0, 1.0), sample_rate, subtype="PCM_16")
        names.append(name)
    return names


def evaluate(model, prompts: Sequence[Prompt], out: str | Path, *, seed: int = 0, batch_size: int | None = None,
             embedders: Sequence[F.Embedder] = (), prompts_file: str = "", progress: bool = True,
             reference_cache: dict | None = None, **sampler_params: Any) -> dict:
    """Generate, analyse and score; writes report.json, report.md, the plots and the WAVs into
    ``out`` and returns the report. ``model``: a MAGNeT, MusicGen, HybridMAGNeT or MeLoDy (anything
    whose ``generate(captions, seed=, batch_size=, progress=, **sampler_params)`` returns a
    ``Generation``).
    ``reference_cache``: a dict shared by several calls that compare models on the same codec
    (see ``reference_analyses``)."""
    out = Path(out)
    prompts = list(prompts)
    timings = {}
    t0 = time.perf_counter()
    gen = model.generate([p.caption for p in prompts], seed=seed, batch_size=batch_size, progress=progress,
                         **sampler_params)
    timings["generate_s"] = time.perf_counter() - t0
    sr, generated = gen.sample_rate, gen.audio.mean(axis=1)            # mono [N, samples]
    t0 = time.perf_counter()
    gen_an = A.analyse_features(features(generated, sr, "analysing generations", progress))
    real_attrs, real, real_an, coded_an = reference_analyses(model, prompts, generated.shape[-1], sr, seed,
                                                             batch_size or 8, progress, reference_cache)
    timings["analyse_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    codec = F.CodecLatents(codec_module(model), batch_size=batch_size or 8)
    fd = frechet_rows([codec, *embedders], generated, real, sr)
    timings["frechet_s"] = time.perf_counter() - t0
    cosines = [A.chroma_cosine(r, g, sr) for r, g in zip(real, generated)]
    attrs = [p.attributes for p in prompts]
    wavs = write_wavs(out, prompts, gen.audio, sr)
    report = {
        "model": getattr(model, "name", "") or type(model).__name__, "prompts_file": prompts_file,
        "num_prompts": len(prompts), "seed": seed, "batch_size": batch_size, "sampler": dict(sampler_params),
        "sample_rate": sr, "duration_s": generated.shape[-1] / sr,
        "accuracy": R.accuracy_table(attrs, gen_an, real_an, coded_an, seed),
        "confusions": R.confusions(attrs, gen_an),
        "music_likeness": R.music_likeness(gen_an, real_an),
        "frechet": fd,
        "chroma_cosine": {"mean": float(np.nanmean(cosines)), "note": "weak: same pitch classes score high"},
        "calibration_seed": A.load_calibration()["seed"],
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "prompts": [_prompt_row(p, w, g, r, ra, c, cr) for p, w, g, r, ra, c, cr
                    in zip(prompts, wavs, gen_an, real_an, real_attrs, cosines, coded_an)]}
    per_clip = {m: {"generated": [getattr(a, m) for a in gen_an], "real": [getattr(a, m) for a in real_an]}
                for m in R.MUSIC_MEASURES}
    report["files"] = R.write(report, out, per_clip)
    return report


def _prompt_row(prompt: Prompt, wav: str, gen: A.Analysis, real: A.Analysis, real_attrs: synth.ClipAttributes,
                cosine: float, coded: A.Analysis) -> dict:
    return {"caption": prompt.caption, "attributes": dict(prompt.attributes), "wav": wav,
            "generated": gen.to_dict(), "generated_correct": R.correct(prompt.attributes, gen),
            "real": real.to_dict(), "real_correct": R.correct(prompt.attributes, real),
            "real_through_codec": coded.to_dict(), "real_attributes": synth.labels_dict(real_attrs),
            "chroma_cosine": cosine}
