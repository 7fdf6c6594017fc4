"""Write MODEL_CARD.md for an exported model from the files its recipe left behind.

    python scripts/model_card.py --model magnet_jax/assets/default_model --runs runs
    python scripts/model_card.py --model magnet_jax/assets/default_melody --runs runs/melody

Reads (all written by scripts/train_default_model.sh): the model's magnet.json, the LM workdir
(config.json, summary.json, metrics.jsonl), the codec workdir's config.json and eval/eval.json,
the token dataset's summaries, and the prompt-adherence report (default_eval/report.json).
A MeLoDy folder (magnet.json's kind) gets its own card from what scripts/train_melody_tiny.sh
leaves in its runs folder: vae/ (config.json, eval/eval.json), semantic_lm/ and dpd/ (config.json,
summary.json, metrics.jsonl) and compare/comparison.json (the side-by-side with the shipped MAGNeT).
Every number in the card comes from those files.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from magnet_jax.export import folder_size_mb
from magnet_jax.integrity import write_manifest


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def _rows(metrics: Path, split: str) -> list[dict]:
    return [r for r in map(json.loads, metrics.read_text().splitlines()) if r.get("split") == split]


CODEC_WORKDIR, CODEC_CONFIG = "codec_osc", "configs/codec_oscillators.py"


def codec_lines(runs: Path) -> list[str]:
    cfg = _json(runs / CODEC_WORKDIR / "config.json")
    ev = _json(runs / CODEC_WORKDIR / "eval" / "eval.json")
    c = cfg["codec"]
    hz = c["sample_rate"] / __import__("math").prod(c["ratios"])
    lines = [f"- Codec: trained from scratch with `{CODEC_CONFIG}` ({c['sample_rate']} Hz mono, {hz:g} Hz frames, "
             f"{c.get('encoder', 'seanet')} encoder, {c.get('decoder', 'seanet')} decoder, {c['n_q']} codebooks x "
             f"{c['bins']}), {ev['step']} steps on `{Path(cfg['data']['dir']).name}` (1200 clips x 10 s). "
             f"Held-out reconstruction ({ev['clips']} clips x {ev['seconds_per_clip']:g} s; SI-SNR means nothing "
             f"for a decoder that makes its own phases):", "",
             "| codebooks | SI-SNR (dB) | mel distance | chroma cosine | key agrees | tempo agrees |",
             "|---|---|---|---|---|---|"]
    for r in ev["rows"]:
        name = "original" if r["n_q"] == 0 else str(r["n_q"])
        lines.append(f"| {name} | {r.get('sisnr', float('nan')):.2f} | {r.get('mel_distance', float('nan')):.3f} | "
                     f"{r.get('chroma_cosine', float('nan')):.3f} | {r['key_agree']:.2f} | {r['tempo_agree']:.2f} |"
                     .replace("nan", ""))
    if ev.get("tokens"):
        lines += ["", "Tokens: " + "; ".join(
            f"codebook {t['codebook']} repeats the previous frame {_pct(t['repeat_previous'])}, entropy "
            f"{t['entropy_nats']:.2f} nats" for t in ev["tokens"]) + "."]
    return lines + [""]


def _stage_share(weights: list | None) -> str:
    if not weights:
        return "stages drawn uniformly (MAGNeT)"
    shares = " / ".join(f"{100 * w / sum(weights):.0f} %" for w in weights)
    return f"stages drawn with train.stage_weights ({shares} of the steps per codebook)"


def lm_lines(meta: dict, runs: Path) -> list[str]:
    cfg = _json(runs / "default_lm" / "config.json")
    summary = _json(runs / "default_lm" / "summary.json")
    valid = (_rows(runs / "default_lm" / "metrics.jsonl", "valid") or [{}])[-1]
    train = _rows(runs / "default_lm" / "metrics.jsonl", "train")
    tok = _json(Path(cfg["data"]["dir"]) / "summary-train.json") if (Path(cfg["data"]["dir"]) / "summary-train.json").exists() else {}
    lm, tc, oc, tx = meta["lm"], cfg["train"], cfg["optim"], cfg["text"]
    stages = " / ".join(f"{valid[f'ce_stage{k}']:.2f}" for k in range(lm["n_q"]) if f"ce_stage{k}" in valid)
    return [f"- LM: MAGNeT, dim {lm['dim']}, {lm['num_layers']} layers, {lm['num_heads']} heads, FFN {lm['ffn_dim']}, "
            f"{lm['n_q']} codebooks x {lm['card']}, span {lm['span_len']}, restricted context {lm['subcodes_context']}, "
            f"positional embedding {lm.get('positional_embedding', 'sin')}; "
            f"text: all-MiniLM-L6-v2 (frozen) through a trained projection, CFG dropout {tx['cfg_dropout']}, "
            f"word dropout {tx['word_dropout']}.",
            f"- Training: `configs/default_model.py`, {summary['step']} steps of batch {tc['batch_size']} x "
            f"{lm['segment_duration']:g} s, {oc['optimizer']} lr {oc['lr']} ({oc['schedule']}, warmup {oc['warmup']}), "
            f"weight EMA {oc['ema_decay']} (the exported weights), "
            f"{_stage_share(tc.get('stage_weights'))}. Train loss {train[0]['loss']:.2f} (first "
            f"{train[0]['step']} steps) -> {train[-1]['loss']:.2f}; held-out cross-entropy per stage "
            f"{stages or '–'} (uniform over {lm['card']} codes: {__import__('math').log(lm['card']):.2f}).",
            f"- Data: the synthetic corpus rendered with `--exclude-heldout` (seed 1, "
            f"{tok.get('clips', '?')} clips, {tok.get('records', '?')} segments of {lm['segment_duration']:g} s), "
            f"tokenized with the codec above; the held-out prompts' (instrument, pattern, mode) combinations never "
            f"occur in it.", ""]


def eval_lines(runs: Path) -> list[str]:
    path = runs / "default_eval" / "report.json"
    if not path.exists():
        return ["Prompt adherence: not measured yet (run `magnet-jax eval`).", ""]
    rep = _json(path)
    # exact chance and permutation p-values, also for reports written before they existed
    from magnet_jax.eval.significance import ABOVE_CHANCE_P
    from magnet_jax.eval.summary import summarise
    tested = summarise([path.parent])["accuracy"]
    lines = [f"## Prompt adherence ({rep['num_prompts']} held-out prompts, `magnet-jax eval`, seed {rep['seed']})", "",
             "| attribute | generated | chance | p | ceiling through the codec | ceiling |", "|---|---|---|---|---|---|"]
    for row in tested.values():
        lines.append(f"| {row['label']} | {_pct(row['generated'])} | {_pct(row['chance'])} | {row['p_value']:.2g} | "
                     f"{_pct(row.get('ceiling_through_codec'))} | {_pct(row['ceiling'])} |")
    above = [row["label"] for row in tested.values() if row["p_value"] is not None and row["p_value"] < ABOVE_CHANCE_P]
    lines += ["", "Chance: each generation scored against the other prompts (exact mean over derangements); p: "
              "permutation p-value of the generated accuracy against it (`magnet_jax/eval/significance.py`).",
              f"Attributes followed above chance (p < {ABOVE_CHANCE_P}): "
              + (", ".join(above) if above else "**none**: this model does not follow prompts yet") + "."]
    ml = rep["music_likeness"]
    lines += ["", "Music-likeness (generated mean; real range): " + "; ".join(
        f"{k} {m['generated']['mean']:.3g} ({m['real']['min']:.3g} – {m['real']['max']:.3g}, "
        f"{_pct(m['generated_within_real_range'])} of generations inside)" for k, m in ml.items()) + ".",
        f"Fréchet distance on codec latents, generated vs real: {rep['frechet']['codec_latents']['distance']:.1f}.", ""]
    return lines


def card(model: Path, runs: Path) -> str:
    meta = _json(model / "magnet.json")
    size = folder_size_mb(model)
    head = ["# magnet-jax default model", "",
            "A small text-to-music MAGNeT trained with this project on its synthetic corpus (five synthesizer "
            "timbres, keys, tempi, arpeggios / chord progressions / melodies, optional drums). It proves the "
            "pipeline end to end and is the fixture improvements are measured on; it is not a model of real "
            "music (use the released MAGNeT checkpoints for that).", "",
            f"- Output: {meta['lm']['segment_duration']:g} s of {meta['codec']['sample_rate']} Hz mono per prompt. "
            f"Trained {meta['trained']['lm_step']} steps. Files: {size:.1f} MB (float32).",
            "- Reproduce: `bash scripts/train_default_model.sh` (every command and seed is in it).",
            "- Use: `magnet-jax generate --prompt \"a sawtooth lead playing a melody in E minor at 120 BPM with drums\" "
            "--out out/` (no `--model` needed).",
            "- Sampler defaults stored with it (`magnet.json` \"generation\", over audiocraft's MAGNeT defaults): "
            + ", ".join(f"{k} {v}" for k, v in meta.get("generation", {}).items()) + ".", ""]
    return "\n".join(head + codec_lines(runs) + lm_lines(meta, runs) + eval_lines(runs))


def _train_loss(workdir: Path) -> str:
    rows = [r for r in _rows(workdir / "metrics.jsonl", "train") if r.get("loss") is not None]
    return f"train loss {rows[0]['loss']:.3f} (first {rows[0]['step']} steps) -> {rows[-1]['loss']:.3f}"


def melody_vae_lines(runs: Path) -> list[str]:
    cfg = _json(runs / "vae" / "config.json")
    ev = _json(runs / "vae" / "eval" / "eval.json")
    c = cfg["codec"]
    original, recon = ev["rows"][0], ev["rows"][-1]
    cells = lambda r: " | ".join(_pct(r.get(k)) for k in ("instrument_agree", "drums_agree", "pattern_agree",  # noqa: E731
                                                          "key_agree"))
    return [f"- VAE: `configs/melody_tiny.py:codec_osc`, the shipped MAGNeT's phase-blind codec ({c['encoder']} encoder, "
            f"{c['decoder']} decoder) under a Gaussian bottleneck: {c['latent_dim']}-dim latent at "
            f"{c['sample_rate'] / __import__('math').prod(c['ratios']):g} Hz, KL weight {cfg['losses']['kl']}, no "
            f"discriminator (spectral losses only), {ev['step']} steps. Not the paper's SEANet VAE-GAN: that one "
            "(`configs/melody_tiny.py:codec`) keeps the pitch but loses the instrument on the synthetic corpus "
            "(docs/melody.md).",
            f"- Held-out reconstruction ({ev['clips']} clips x {ev['seconds_per_clip']:g} s, `eval-codec`): chroma "
            f"cosine {recon['chroma_cosine']:.3f}, mel distance {recon['mel_distance']:.3f}.", "",
            "| | instrument | drums | pattern | key |", "|---|---|---|---|---|",
            f"| originals | {cells(original)} |", f"| through the VAE | {cells(recon)} |", ""]


def melody_model_lines(meta: dict, runs: Path) -> list[str]:
    lm, dpd = meta["lm"], meta["dpd"]
    lm_run, dpd_run = _json(runs / "semantic_lm" / "config.json"), _json(runs / "dpd" / "config.json")
    lm_sum, dpd_sum = _json(runs / "semantic_lm" / "summary.json"), _json(runs / "dpd" / "summary.json")
    d = meta["diffusion"]
    return [f"- Semantic tokens: k-means ({lm['card']} centroids) over the built-in log-mel + chroma features "
            f"at {lm['frame_rate']:g} Hz (`magnet-jax fit-semantic`; no pretrained SSL model).",
            f"- Semantic LM: a one-codebook MusicGen, dim {lm['dim']}, {lm['num_layers']} layers, "
            f"{lm['num_heads']} heads, all-MiniLM-L6-v2 text through a trained projection (CFG dropout "
            f"{lm_run['text']['cfg_dropout']}), {lm_sum['step']} steps of batch {lm_run['train']['batch_size']}; "
            f"{_train_loss(runs / 'semantic_lm')}.",
            f"- DPD: dim {dpd['dim']}, {dpd['num_blocks']} dual-path blocks, segments of {dpd['segment_length']} "
            f"frames, M = {dpd['num_chunks']} chunks, semantic tokens "
            f"{'by cross-attention in every block' if dpd['conditioning'] == 'cross' else 'added to the frames'}, "
            f"condition dropout {dpd['cond_dropout']}, latents / {meta['latent_scale']:.4f}; "
            f"{dpd_sum['step']} steps of batch {dpd_run['train']['batch_size']} x "
            f"{dpd_run['data']['segment_duration']:g} s crops; {_train_loss(runs / 'dpd')}.",
            f"- Sampler defaults stored with it: {d['num_steps']} diffusion steps (MeLoDy's angle schedule), "
            f"CFG {d['cfg_scale']}; the semantic LM samples at temperature "
            f"{meta['semantic_sampling']['temperature']}.", ""]


def melody_eval_lines(runs: Path) -> list[str]:
    cmp = _json(runs / "compare" / "comparison.json")
    m, v = cmp["meta"], cmp["variants"]
    lines = [f"## Prompt adherence beside the shipped MAGNeT (`scripts/compare_melody_magnet.py`, seeds "
             f"{', '.join(map(str, m['seeds']))} pooled, {m['num_generations']} generations each, "
             f"{m['clip_s']:g} s clips)", "",
             "| attribute | MeLoDy | p | MAGNeT | p | chance (MeLoDy) |", "|---|---|---|---|---|---|"]
    for attr, row in v["melody"]["accuracy"].items():
        base = v["magnet"]["accuracy"][attr]
        lines.append(f"| {attr} | {_pct(row['generated'])} | {row['p_value']:.2g} | {_pct(base['generated'])} | "
                     f"{base['p_value']:.2g} | {_pct(row['chance'])} |")
    paired = v["melody"].get("vs_baseline", {})
    differs = [f"{a} {'more' if r['only_other'] > r['only_baseline'] else 'less'} often (p {r['p_two_sided']:.2g})"
               for a, r in paired.items() if r["p_two_sided"] < 0.05]
    beat = {n: v[n]["music_likeness"]["beat_steadiness"] for n in ("melody", "magnet")}
    lines += ["", f"Followed above chance: MeLoDy {', '.join(v['melody']['above_chance']) or 'none'}; "
                  f"MAGNeT {', '.join(v['magnet']['above_chance']) or 'none'}. On the same prompts (paired sign "
                  f"test, two-sided p < 0.05) MeLoDy follows "
                  + ("; ".join(differs) if differs else "no attribute more or less often than MAGNeT") + ".",
              f"Beat steadiness: MeLoDy {beat['melody']['generated']['mean']:.2f}, MAGNeT "
              f"{beat['magnet']['generated']['mean']:.2f}, real clips {beat['melody']['real']['mean']:.2f}: "
              "neither writes a steady beat.",
              f"Forward passes per clip: MeLoDy {v['melody']['forward_passes']}, MAGNeT {v['magnet']['forward_passes']}. "
              f"Latency of one batch of {m['batch_size']} relative to MAGNeT: {v['melody']['latency_vs_baseline']:.2f}x "
              f"({m['latency']}; {m['cpu']}).", ""]
    return lines


def melody_card(model: Path, runs: Path) -> str:
    meta = _json(model / "magnet.json")
    head = ["# magnet-jax tiny MeLoDy (`melody-tiny`)", "",
            "MeLoDy (arXiv 2305.15719: a semantic LM, then dual-path diffusion on a VAE's latents) at toy size, "
            "trained with this project on the same synthetic corpus as the default MAGNeT. It shows the second "
            "family end to end and is what the side-by-side below measures; it is not a model of real music.", "",
            f"- Output: {meta['window_seconds']:g} s windows of {meta['codec']['sample_rate']} Hz mono, longer clips "
            f"by multi-chunk continuation. Files: {folder_size_mb(model):.1f} MB (float32). Built by "
            f"{meta['source']}.",
            "- Reproduce: `bash scripts/train_melody_tiny.sh` (every command is in it).",
            "- Use: `magnet-jax generate --model melody-tiny --prompt \"a plucked string melody in C major with drums\" "
            "--duration 5 --out out/`.", ""]
    return "\n".join(head + melody_vae_lines(runs) + melody_model_lines(meta, runs) + melody_eval_lines(runs))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=Path("magnet_jax/assets/default_model"))
    p.add_argument("--runs", type=Path, default=Path("runs"))
    args = p.parse_args()
    kind = _json(args.model / "magnet.json").get("kind", "magnet")
    (args.model / "MODEL_CARD.md").write_text((melody_card if kind == "melody" else card)(args.model, args.runs))
    write_manifest(args.model)      # the folder changed: its integrity.json lists the card too
    print(args.model / "MODEL_CARD.md")


if __name__ == "__main__":
    main()
