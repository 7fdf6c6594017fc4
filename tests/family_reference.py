"""Random-weight exports of each released model family, built and exported by audiocraft itself.

For a family (``audiocraft_configs.MAGNET_FAMILIES``) the xp.cfg is composed from audiocraft's
config tree with only the scale keys shrunk (plus a test's explicit variations), the LM is built by
``builders.get_lm_model`` from that very config (after the settings ``loaders.load_lm_model_magnet``
fills in), and ``audiocraft.utils.export.export_lm`` writes ``state_dict.bin`` from a training
checkpoint, as Meta's release did. The codec is what the family's folder holds:

- music MAGNeT: ``compression_state_dict.bin`` is ``export_pretrained_compression_model``'s
  redirect to facebook/encodec_32khz, a transformers EncodecModel (here a random one with the real
  32 kHz structure, hop 640, 4 x 2048 codes, and 4 instead of 64 filters);
- audio-MAGNeT: a native EnCodec export composed from ``solver=compression/encodec_audiogen_16khz``
  (16 kHz, hop 320, 4 filters instead of 64) and written by ``export_encodec``.

The text encoder is a one-layer random T5 of the real width (768 for t5-base, 1024 for t5-large),
which audiocraft's T5Conditioner is pointed at while it builds and loads (``local_t5``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
from pathlib import Path
from typing import Sequence

import numpy as np

import reference
from audiocraft_configs import Family, compose, family_xp, shrink
from pipeline_reference import REDIRECT_NAME, hf_encodec_folder, local_hf_codec, local_t5, randomize_codec, randomize_lm
from text_fixtures import t5_folder


@dataclasses.dataclass(frozen=True)
class FamilyExport:
    """An exported folder and the local stand-ins its hub names point to."""
    folder: Path
    family: Family
    xp: object                  # the composed DictConfig written as xp.cfg
    t5: Path                    # the local T5 for xp.cfg's t5-base / t5-large
    hf_codec: Path | None       # the local EncodecModel for a codec redirect


@contextlib.contextmanager
def trusting_torch_load():
    """audiocraft's export functions ``torch.load`` a training checkpoint that holds an OmegaConf
    config, which torch >= 2.6 refuses by default (weights_only). The checkpoint is one this test
    just wrote, so it is read with weights_only=False for the duration of the export."""
    import torch
    saved = torch.load
    torch.load = functools.partial(saved, weights_only=False)
    try:
        yield
    finally:
        torch.load = saved


def _export_codec(folder: Path, family: Family, card: int, n_q: int, seed: int) -> Path | None:
    """compression_state_dict.bin as the family's release holds it (``card`` codes in ``n_q``
    codebooks, the LM's); the HF folder for a redirect."""
    torch = reference.require("torch")
    export = reference.require("audiocraft.utils.export")
    target = folder / "compression_state_dict.bin"
    if family.sample_rate == 32000:
        export.export_pretrained_compression_model(REDIRECT_NAME, target)
        return hf_encodec_folder(folder.parent / f"{folder.name}-encodec_32khz", sample_rate=32000,
                                 ratios=(8, 5, 4, 4), num_filters=4, card=card, n_q=n_q,
                                 seed=seed)
    builders = reference.require("audiocraft.models.builders")
    xp = compose("compression/encodec_audiogen_16khz", "internal/sounds_16khz",
                 ["seanet.n_filters=4", f"rvq.bins={card}", f"rvq.n_q={n_q}"])
    xp.device = "cpu"
    torch.manual_seed(seed)
    codec = builders.get_compression_model(xp).eval()
    randomize_codec(codec)
    xp.device = "cuda"                                  # as the training run recorded it
    _save_and_export(export.export_encodec, {"best_state": {"model": codec.state_dict()}, "xp.cfg": xp},
                     target)
    return None


def _save_and_export(export_fn, checkpoint: dict, target: Path) -> None:
    """Write a training checkpoint and turn it into a release file with audiocraft's exporter."""
    import torch
    raw = target.with_suffix(".train.th")
    torch.save(checkpoint, raw)
    with trusting_torch_load():
        export_fn(raw, target)
    raw.unlink()


def build_reference_lm(xp, family: Family, device: str = "cpu"):
    """audiocraft's ``builders.get_lm_model`` on ``xp`` after the settings
    ``loaders.load_lm_model_magnet`` fills in for MAGNeT (the codec's frame rate, 50 Hz for every
    release; ``dataset.segment_duration``; ``masking.span_len``; MusicGen's loader adds none). ``device="meta"`` builds the full-size
    model without allocating its weights (shapes only)."""
    builders = reference.require("audiocraft.models.builders")
    conditioners = reference.require("audiocraft.modules.conditioners")
    from omegaconf import OmegaConf
    build = OmegaConf.create(OmegaConf.to_container(xp))
    build.device, build.dtype = device, "float32"
    if family.kind == "magnet":
        build.transformer_lm.compression_model_framerate = 50
        build.transformer_lm.segment_duration = build.dataset.segment_duration
        build.transformer_lm.span_len = build.masking.span_len
    saved = conditioners.TorchAutocast
    if device == "meta":        # T5Conditioner's autocast refuses the meta device; nothing runs here
        conditioners.TorchAutocast = lambda *args, **kwargs: None
    try:
        with local_t5(t5_folder(family.t5), family.t5):
            return builders.get_lm_model(build).eval()
    finally:
        conditioners.TorchAutocast = saved


def build_family_export(folder: Path, family: Family, overrides: Sequence[str] = (), *, seed: int = 0,
                        half: bool = True, scale: Sequence[str] | None = None) -> FamilyExport:
    """``folder`` with state_dict.bin + compression_state_dict.bin of ``family`` (scale shrunk,
    ``overrides`` applied), random weights, fp16 like the releases unless ``half`` is False."""
    torch = reference.require("torch")
    export = reference.require("audiocraft.utils.export")
    folder.mkdir(parents=True, exist_ok=True)
    xp = family_xp(family, [*(shrink() if scale is None else scale), *overrides])
    streams = 2 if xp.get("interleave_stereo_codebooks", {}).get("use", False) else 1   # stereo: per channel
    hf = _export_codec(folder, family, int(xp.transformer_lm.card), int(xp.transformer_lm.n_q) // streams, seed + 1)

    t5 = t5_folder(family.t5)
    torch.manual_seed(seed)
    lm = build_reference_lm(xp, family)
    randomize_lm(lm)
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in lm.state_dict().items()}
    _save_and_export(export.export_lm, {"best_state": {"model": state}, "fsdp_best_state": None, "xp.cfg": xp},
                     folder / "state_dict.bin")
    return FamilyExport(folder, family, xp, t5, hf)


def reference_model(export: FamilyExport):
    """audiocraft's own ``MAGNeT.get_pretrained(folder)`` on the export."""
    magnet = reference.require("audiocraft.models.magnet")
    with local_t5(export.t5, export.family.t5), local_hf_codec(export.hf_codec):
        return magnet.MAGNeT.get_pretrained(str(export.folder), device="cpu")


# -- greedy parity at real sequence lengths ------------------------------------------------------
# Two float32 implementations agree on logits to a few 1e-6 (summation order), and at 500-1500
# frames x 4 codebooks x 2048 codes the reference's own greedy decisions include near-ties closer
# than that (gaps of 1e-8 between its top two logits were measured), and so do its re-masking
# choices (two spans' confidences on either side of the cut). Such a decision can go either way in
# any other float32 implementation, and the flip can change later decisions. So greedy parity is
# stated exactly where it is decidable: a row whose decisions were all clear (logit margins above
# NEAR_TIE per unit of 1 + 2 * cfg_coef, which amplifies logit errors; re-masking cuts above
# NEAR_TIE_SCORE) must be identical; a row with a near-tie may differ only from the codebook of its
# first near-tie on, and in at most MAX_DIVERGENT_FRACTION of its tokens. Any real discrepancy (a
# mask, a key, a scale) changes far more.
NEAR_TIE = 2e-5            # ~7x the logit error measured at T=498, per unit of 1 + 2 * cfg_coef
NEAR_TIE_SCORE = 1e-4      # span confidences (probabilities) on either side of the re-masking cut
MAX_DIVERGENT_FRACTION = 0.01


def reference_generate_recorded(model, descriptions, decoding_steps, *, prompt=None, prompt_sample_rate=None,
                                **params):
    """audiocraft's greedy generate (or continuation), plus how decidable each decision was.

    Returns (tokens, audio, margins [B, K, T], cuts [B, K]): ``margins`` is, for every frame, the
    (top-1 minus top-2) guided logit / (1 + 2 * cfg_coef) at the last step the frame was masked
    (the decision that fixed its token); ``cuts`` the smallest gap, over a codebook's steps,
    between the confidences of the last span re-masked and the first span kept. Computed from the
    LM's outputs at each step (a forward hook) with the sampler's own rules ('nonoverlap' spans,
    'max' scoring, annealed temperature)."""
    import math
    import torch
    from pipeline_reference import reference_generate
    lm = model.lm
    calls = []

    def record(module, args, kwargs, out):
        calls.append((args[0].detach().clone(), kwargs["stage"], out.detach().clone()))

    handle = lm.register_forward_hook(record, with_kwargs=True)
    try:
        tokens, audio = reference_generate(model, descriptions, prompt=prompt, prompt_sample_rate=prompt_sample_rate,
                                           use_sampling=False, decoding_steps=decoding_steps, **params)
    finally:
        handle.remove()
    gen = model.generation_params
    assert gen["span_arrangement"] == "nonoverlap" and gen.get("span_scoring", "max") == "max"
    B, K, T = tokens.shape
    L, mask_id = lm.span_len, lm.special_token_id
    prompt_frames = int((calls[0][0][0, 0, :T] != mask_id).sum())   # pinned before the first step
    n_prompt_chunks = prompt_frames // L
    margins, cuts = np.full((B, K, T), np.inf), np.full((B, K), np.inf)
    calls = iter(calls)
    for stage, n_steps in zip(range(K), decoding_steps):
        scores = None
        for k, step in enumerate(torch.linspace(0, 1, n_steps)):
            seq, called_stage, logits = next(calls)
            assert called_stage == stage
            mask_p = torch.cos(step * math.pi * 0.5)
            if scores is not None:                      # the cut this step's re-masking made
                n = max(int((mask_p * (T // L - n_prompt_chunks)).item()), 1)
                ordered = torch.sort(scores, dim=-1, descending=True).values
                if n < ordered.shape[-1]:
                    cuts[:, stage] = np.minimum(cuts[:, stage], (ordered[:, n - 1] - ordered[:, n]).numpy())
            coef = float(mask_p) * gen["max_cfg_coef"] + (1 - float(mask_p)) * gen["min_cfg_coef"]
            if logits.shape[0] == 2 * B:      # conditional rows, then their null conditions
                logits = logits[B:] + (logits[:B] - logits[B:]) * coef
            logits = logits[:, stage, :T]
            top2 = torch.topk(logits, 2, dim=-1).values
            gap = ((top2[..., 0] - top2[..., 1]) / (1 + 2 * coef)).numpy()
            masked = seq[:B, stage, :T] == mask_id
            margins[:, stage][masked.numpy()] = gap[masked.numpy()]
            temp = gen["temp"] * (n_steps - 1 - k) / n_steps
            probs = torch.softmax(logits / max(temp, 1e-2), dim=-1)
            p = probs.gather(-1, logits.argmax(-1, keepdim=True))[..., 0]
            scores = 1 - p.reshape(B, T // L, L).max(-1).values
            scores = scores.masked_fill(~masked.reshape(B, T // L, L).any(-1), -1e4)
    return tokens, audio, margins, cuts


def assert_greedy_parity(got: np.ndarray, want: np.ndarray, margins: np.ndarray, cuts: np.ndarray) -> str:
    """Identical tokens wherever the reference's decisions were decidable (see NEAR_TIE)."""
    assert got.shape == want.shape, (got.shape, want.shape)
    lines = []
    for row in range(want.shape[0]):
        differ = got[row] != want[row]
        undecided = (margins[row] < NEAR_TIE).any(-1) | (cuts[row] < NEAR_TIE_SCORE)
        if not differ.any():
            continue
        first_bad_stage = int(np.argwhere(differ)[:, 0].min())
        assert undecided.any(), (
            f"row {row}: {int(differ.sum())} tokens differ from the reference although all of its decisions "
            f"were clear (smallest logit margin {margins[row].min():.2e}, smallest cut {cuts[row].min():.2e})")
        first_tie_stage = int(np.argmax(undecided))
        assert first_tie_stage <= first_bad_stage, (
            f"row {row}: tokens differ from codebook {first_bad_stage} on, before the reference's first "
            f"near-tie (codebook {first_tie_stage})")
        assert differ.mean() <= MAX_DIVERGENT_FRACTION, (
            f"row {row}: {differ.mean():.2%} of its tokens differ (after a near-tie in codebook "
            f"{first_tie_stage}), more than {MAX_DIVERGENT_FRACTION:.0%}")
        lines.append(f"row {row}: {int(differ.sum())} tokens differ after a near-tie in codebook {first_tie_stage} "
                     f"(smallest logit margin {margins[row].min():.1e}, cut {cuts[row].min():.1e})")
    return "; ".join(lines) or "tokens identical"
