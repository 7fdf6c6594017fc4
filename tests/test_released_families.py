"""Released MAGNeT checkpoints as they really are: configurations composed from audiocraft's own
config tree, models built and exported by audiocraft's own builders and exporter.

- The composed xp.cfg of every released family holds what the issue found in real files
  (``cross_attention: false``, ``memory_efficient: true``, ``segment_duration: 0``, ...).
- Full size, no weights: audiocraft's LM built on torch's meta device from each family's
  composed config; our converter accepts every key and shape and reads the model card's
  configuration from it.
- Scale shrunk, random fp16 weights: ``magnet-jax generate`` on the exported folder gives the
  greedy tokens of audiocraft's ``MAGNeT.get_pretrained(folder).generate`` for every family, a RoPE
  and a sin_rope variant, and a variant away from the defaults (3 codebooks, 100 codes, span 5,
  band 7, fp32 weights; on audio-magnet, whose codec is a native export), wherever the reference's own float32 decisions are not near-ties.
"""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest
import soundfile

import reference
from audiocraft_configs import MAGNET_FAMILIES, MUSICGEN_FAMILIES, family_xp, to_yaml
from family_reference import (assert_greedy_parity, build_family_export, build_reference_lm, reference_generate_recorded,
                              reference_model)
from magnet_jax import xp_cfg
from magnet_jax.lm.convert import _expected_shapes, check_keys, lm_config_from_xp
from magnet_jax.pipeline_cli import main as cli_main
from magnet_jax.text import text_settings_from_xp

FAMILIES = list(MAGNET_FAMILIES)
TEXTS = ["calm piano with soft strings", ""]     # "" is audiocraft's null condition
STEPS = [3, 2, 2, 2]


@pytest.mark.parametrize("name", FAMILIES)
def test_composed_config_holds_what_a_released_file_holds(name):
    family = MAGNET_FAMILIES[name]
    xp = xp_cfg.parse(to_yaml(family_xp(family)))       # the text an export stores, read back
    lm = xp["transformer_lm"]
    assert xp["lm_model"] == "transformer_lm_magnet" and xp["solver"] in ("magnet", "audio_magnet")
    assert (lm["cross_attention"], lm["causal"], lm["custom"], lm["memory_efficient"]) == (False, False, False, True)
    assert (lm["segment_duration"], lm["span_len"]) == (0, -1)
    assert xp["codebooks_pattern"]["modeling"] == "parallel" and "delay" in xp["codebooks_pattern"]
    assert xp["fuser"]["cross"] == ["description"] and xp["masking"]["span_len"] == 3
    assert xp["dataset"]["segment_duration"] == family.segment_duration
    assert xp["sample_rate"] == family.sample_rate
    assert xp["conditioners"]["description"]["t5"]["name"] == family.t5
    assert (lm["dim"], lm["num_heads"], lm["num_layers"]) == (family.dim, family.num_heads, family.num_layers)


@pytest.mark.parametrize("name", list(MUSICGEN_FAMILIES))
def test_musicgen_configs_compose_and_the_magnet_converter_refuses_them_by_name(name):
    """MusicGen's composed configs (delay pattern, causal, 8 codebooks for stereo; melody prepends
    its conditions instead of cross-attending) are refused as MusicGen, not misread as MAGNeT."""
    from magnet_jax.lm.convert import CheckpointError
    family = MUSICGEN_FAMILIES[name]
    xp = xp_cfg.parse(to_yaml(family_xp(family)))
    lm = xp["transformer_lm"]
    assert xp["lm_model"] == "transformer_lm" and xp["codebooks_pattern"]["modeling"] == "delay"
    assert (lm["dim"], lm["num_heads"], lm["num_layers"], lm["n_q"]) == (
        family.dim, family.num_heads, family.num_layers, family.n_q)
    assert xp["codebooks_pattern"]["delay"]["delays"] == ([0, 0, 1, 1, 2, 2, 3, 3] if family.n_q == 8 else [0, 1, 2, 3])
    assert lm["causal"] and xp["channels"] == family.channels
    assert xp["fuser"]["cross"] == ([] if "melody" in name else ["description"])
    with pytest.raises(CheckpointError, match="lm_model='transformer_lm': a MusicGen / AudioGen"):
        lm_config_from_xp(xp, frame_rate=50)


@pytest.mark.parametrize("name", FAMILIES)
def test_full_size_structure_is_accepted(name):
    """audiocraft's LM at its real size on the meta device (no weights): every key and shape of its
    state dict is what our converter expects, and the config read from xp.cfg is the model card's."""
    family = MAGNET_FAMILIES[name]
    xp_text = to_yaml(family_xp(family))
    lm = build_reference_lm(family_xp(family), family, device="meta")
    shapes = {k: v for k, v in lm.state_dict().items()}
    assert all(v.device.type == "meta" for v in shapes.values())
    cfg = lm_config_from_xp(xp_cfg.parse(xp_text), frame_rate=50)
    check_keys(shapes, cfg)                                  # raises on any missing / extra / mis-shaped key
    assert (cfg.dim, cfg.num_heads, cfg.num_layers, cfg.ffn_dim) == (
        family.dim, family.num_heads, family.num_layers, 4 * family.dim)
    assert (cfg.n_q, cfg.card, cfg.span_len, cfg.subcodes_context) == (4, 2048, 3, 5)
    assert cfg.cross_attention and cfg.positional_embedding == "sin"
    assert cfg.sequence_len == 50 * family.segment_duration
    assert len(_expected_shapes(cfg)) == sum(not k.startswith("condition_provider.") for k in shapes)
    proj = shapes["condition_provider.conditioners.description.output_proj.weight"]
    assert tuple(proj.shape) == (family.dim, family.t5_width)
    assert text_settings_from_xp(xp_cfg.parse(xp_text)).encoder == family.t5
    n_params = sum(int(np.prod(s)) for s in _expected_shapes(cfg).values())
    print(f"{name}: {n_params / 1e6:.1f}M LM parameters, T={cfg.sequence_len}, T5 width {family.t5_width}")


# (family, xp.cfg overrides, fp16 weights, decoding steps given to both, continue a 2 s prompt)
VARIANTS = {name.split("/")[1]: (name, (), True, STEPS, False) for name in FAMILIES}
VARIANTS |= {
    "magnet-small-10secs-rope": ("facebook/magnet-small-10secs", ("transformer_lm.positional_embedding=rope",),
                                 True, STEPS, True),
    "audio-magnet-small-sin_rope": ("facebook/audio-magnet-small",
                                    ("transformer_lm.positional_embedding=sin_rope",), True, STEPS, False),
    # 3 codebooks of 100 codes, span 5, band 7, fp32: four steps given, audiocraft uses the first 3
    # (a native codec export: transformers' EncodecModel takes power-of-two codebooks only)
    "audio-magnet-small-odd": ("facebook/audio-magnet-small",
                                ("transformer_lm.n_q=3", "transformer_lm.card=100", "masking.span_len=5",
                                 "transformer_lm.subcodes_context=7"), False, STEPS, False),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_generate_cli_matches_audiocraft(variant, tmp_path, capsys):
    """Greedy tokens of ``magnet-jax generate`` (a text prompt and the empty prompt, decoded
    together) equal audiocraft's ``MAGNeT.generate`` on the same exported folder wherever the
    reference's float32 decisions are decidable (``family_reference.NEAR_TIE``); the WAVs hold the
    reference's audio to 16-bit PCM precision where the tokens agree."""
    name, overrides, half, steps, continuation = VARIANTS[variant]
    family = MAGNET_FAMILIES[name]
    export = build_family_export(tmp_path / variant, family, overrides, half=half, seed=list(VARIANTS).index(variant))
    prompt = None
    if continuation:   # a RoPE-only model sees no absolute position: from an all-masked start its
        # first-step confidences are nearly the same for every span (ties decided by float noise),
        # so its greedy trajectory is compared from a prompt, which anchors positions
        rng = np.random.default_rng(0)
        prompt = np.repeat((0.3 * rng.standard_normal((1, 1, 2 * family.sample_rate))).astype(np.float32), 2, 0)
        soundfile.write(tmp_path / "prompt.wav", prompt[0, 0], family.sample_rate, subtype="FLOAT")
    want_tokens, want_audio, margins, cuts = reference_generate_recorded(
        reference_model(export), TEXTS, steps, prompt=prompt, prompt_sample_rate=family.sample_rate)
    args = ["generate", "--model", str(export.folder), "--text-encoder", str(export.t5),
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), "--greedy",
            "--decoding-steps", ",".join(map(str, steps)), "--allow-unconditional", "--prompt", *TEXTS]
    if continuation:
        args += ["--continue-from", str(tmp_path / "prompt.wav")]
    if export.hf_codec is not None:
        args += ["--codec", str(export.hf_codec)]
    with jax.default_matmul_precision("highest"):
        assert cli_main(args) == 0, capsys.readouterr().err
    tokens = np.load(tmp_path / "out" / "tokens.npy")
    verdict = assert_greedy_parity(tokens, want_tokens, margins, cuts)
    sidecar = json.loads((tmp_path / "out" / "generate.json").read_text())
    n_q = 3 if "odd" in variant else 4
    assert sidecar["sampler"]["decoding_steps"] == steps[:n_q] and tokens.shape[1] == n_q
    assert [f["wav"][:4] for f in sidecar["files"]] == ["000_", "001_"] and sidecar["prompts"] == TEXTS
    audio = np.stack([soundfile.read(tmp_path / "out" / f["wav"], dtype="float32", always_2d=True)[0].T
                      for f in sidecar["files"]])
    assert audio.shape == want_audio.shape
    same = [r for r in range(len(TEXTS)) if np.array_equal(tokens[r], want_tokens[r])]
    assert same, "no row decoded to the reference's tokens"
    assert np.abs(audio[same] - np.clip(want_audio[same], -1, 1)).max() <= 1.0 / 2**15 + 1e-4   # 16-bit PCM
    print(f"{variant}: {tokens.shape}: {verdict}")


def test_cross_attention_false_in_xp_cfg_loads(tmp_path):
    """The finding behind this file: a composed config says cross_attention false, and the
    converter must still build cross-attention because audiocraft's builders do (fuser.cross)."""
    reference.require("audiocraft.models.builders")
    family = MAGNET_FAMILIES["facebook/magnet-small-10secs"]
    from magnet_jax.lm.convert import load_audiocraft_lm, xp_cfg_of
    export = build_family_export(tmp_path / "x", family)
    assert xp_cfg_of(export.folder / "state_dict.bin")["transformer_lm"]["cross_attention"] is False
    cfg, model, cond = load_audiocraft_lm(export.folder / "state_dict.bin", frame_rate=50)
    assert cfg.cross_attention and cfg.sequence_len == 500 and cfg.span_len == 3
    assert "condition_provider.conditioners.description.output_proj.weight" in cond


def test_rope_frequencies_come_from_the_checkpoint(tmp_path):
    """An fp16 export rounds RoPE's saved frequencies (0.5625 for 0.5623) and audiocraft rotates
    with the rounded ones: so must we. Stage-0 logits at the real length (T=498) then agree to a
    few 1e-6, where recomputing the frequencies from max_period left errors of 1e-3."""
    torch = reference.require("torch")
    from flax import nnx
    from magnet_jax.lm.convert import load_audiocraft_lm
    family = MAGNET_FAMILIES["facebook/magnet-small-10secs"]
    export = build_family_export(tmp_path / "rope", family, ("transformer_lm.positional_embedding=rope",))
    ref = reference_model(export).lm
    cfg, ours, _ = load_audiocraft_lm(export.folder / "state_dict.bin", frame_rate=50)
    saved = ref.transformer.rope.frequencies.numpy()
    assert cfg.rope_frequencies == tuple(float(f) for f in saved)
    assert not np.allclose(saved, 1.0 / 10_000 ** (np.arange(0, 16, 2) / 16), rtol=1e-6, atol=0)   # rounded
    codes = np.random.default_rng(0).integers(0, 2049, size=(2, 4, 498))
    codes[:, 1:] = 2048
    null = {"description": (torch.zeros(2, 1, cfg.dim), torch.zeros(2, 1))}
    with torch.no_grad():
        want = ref(torch.as_tensor(codes), [], null, stage=0).numpy()
    with jax.default_matmul_precision("highest"):
        got = np.asarray(nnx.jit(lambda m, c: m(c, 0, None))(ours, codes))
    err = np.abs(got - want).max()
    assert err <= 2e-5 * np.abs(want).max(), err
