"""MusicGen against audiocraft, on exports built from the composed musicgen configs (scale shrunk,
random fp16 weights, audiocraft's own builders and exporter: tests/family_reference.py):

- the delay pattern equals audiocraft's DelayedPatternProvider (build, valid mask, revert, first step);
- decoding with the KV cache gives the full forward's logits at every step;
- logits equal audiocraft's LMModel (mono and stereo, with a text condition);
- greedy tokens of ``magnet-jax generate --model`` equal ``MusicGen.generate``: text and empty
  prompt with CFG, unconditional, a prompt continued, stereo, and a duration past the trained one
  (audiocraft's windowed continuation);
- what is not supported is refused by name (melody's chroma conditioner, MAGNeT-only flags).
"""
from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile

import reference
from audiocraft_configs import MUSICGEN_FAMILIES, family_xp, to_yaml
from family_reference import build_family_export
from pipeline_reference import local_hf_codec, local_t5
from magnet_jax import xp_cfg
from magnet_jax.lm.musicgen import MusicGenConfig, MusicGenLM
from magnet_jax.lm.pattern import DelayPattern
from magnet_jax.pipeline_cli import main as cli_main

SMALL, STEREO = MUSICGEN_FAMILIES["facebook/musicgen-small"], MUSICGEN_FAMILIES["facebook/musicgen-stereo-small"]
TEXTS = ["calm piano with soft strings", ""]


@pytest.mark.parametrize("delays", [(0, 1, 2, 3), (0, 0, 1, 1, 2, 2, 3, 3)])
def test_delay_pattern_matches_audiocraft(delays):
    torch = reference.require("torch")
    patterns = reference.require("audiocraft.modules.codebooks_patterns")
    K, T, P, special = len(delays), 7, 3, 99
    provider = patterns.DelayedPatternProvider(K, list(delays))
    ref = provider.get_pattern(T)
    codes = np.random.default_rng(0).integers(0, 50, size=(2, K, T))
    unknown = torch.full((2, K, T), -1, dtype=torch.long)
    unknown[..., :P] = torch.as_tensor(codes[..., :P])
    want, _, mask = ref.build_pattern_sequence(unknown, special)
    ours = DelayPattern(delays)
    got = np.asarray(ours.build(jnp.asarray(codes[..., :P]), T, special))
    np.testing.assert_array_equal(got, np.where(want.numpy() == -1, special, want.numpy()))
    np.testing.assert_array_equal(ours.valid(T), mask.numpy())
    assert ours.first_step_with_frame(P) == ref.get_first_step_with_timesteps(P)
    full, _, _ = ref.build_pattern_sequence(torch.as_tensor(codes), special)
    back, _, _ = ref.revert_pattern_sequence(full, special_token=special)
    np.testing.assert_array_equal(np.asarray(ours.revert(jnp.asarray(full.numpy()), T)), back.numpy())
    np.testing.assert_array_equal(np.asarray(ours.revert(jnp.asarray(full.numpy()), T)), codes)


@pytest.mark.parametrize("positional", ["sin", "rope"])
def test_kv_cache_decoding_gives_the_full_forward_logits(positional):
    """A prefill of 4 steps, then one step at a time, with CFG rows (the null half skips
    cross-attention): every step's logits equal the causal full forward's."""
    from flax import nnx
    cfg = MusicGenConfig(dim=32, num_heads=2, num_layers=2, ffn_dim=64, n_q=4, card=17, frame_rate=10,
                         segment_duration=1.0, positional_embedding=positional)
    model = MusicGenLM(cfg, rngs=nnx.Rngs(0))
    S = 9
    seq = jax.random.randint(jax.random.key(1), (4, 4, S), 0, 18)
    kv = model.project_condition(jax.random.normal(jax.random.key(2), (2, 5, 32)))   # rows 2, 3: null
    with jax.default_matmul_precision("highest"):
        full = model.all_logits(model.hidden(seq, kv))
        logits, cache = model.decode(seq[..., :4], model.init_cache(4, S), 0, kv)
        steps = [logits]
        step = jax.jit(lambda col, cache, pos: model.decode(col, cache, pos, kv))
        for s in range(4, S):
            logits, cache = step(seq[..., s:s + 1], cache, jnp.int32(s))
            steps.append(logits)
    np.testing.assert_allclose(np.concatenate(steps, axis=2), np.asarray(full), rtol=0, atol=1e-5)


def _written_inside_loops(hlo: str) -> list[tuple[str, int]]:
    """(name, elements) of every array an instruction writes inside a while loop's body, in an
    optimised HLO text; views (bitcast, get-tuple-element) and in-place cache updates
    (dynamic-update-slice) write nothing new and are left out."""
    import re
    bodies = set(re.findall(r" while\(.*?body=%([\w.\-]+)", hlo))
    written = []
    for name in bodies:
        for line in hlo.split(f"\n%{name} ", 1)[1].split("\n}\n", 1)[0].splitlines():
            m = re.match(r"\s*(?:ROOT )?%(\S+) = \w+\[([\d,]*)\]\{[^}]*\} ([\w-]+)\(", line)
            if m and m.group(3) not in ("get-tuple-element", "bitcast", "constant", "parameter") \
                    and "dynamic-update-slice" not in m.group(1):
                written.append((m.group(1), int(np.prod([int(d) for d in m.group(2).split(",") if d]))))
    return written


def test_the_decoding_step_reads_the_weights_in_place():
    """The compiled sampler's loop must not copy weights. Before ``DecodeWeights`` XLA:CPU copied
    (and transposed) every layer's weights and the heads at every step, which made a step 3.6x
    slower at dim 512 (bench/bench_latency.py). Checked on the optimised HLO, not timed: nothing
    inside a loop writes an array as large as the smallest weight matrix."""
    from flax import nnx
    from magnet_jax.lm.ar_sampler import ARSamplerConfig, MusicGenSampler
    cfg = MusicGenConfig(dim=96, num_heads=3, num_layers=3, ffn_dim=192, n_q=4, card=101, frame_rate=10,
                         segment_duration=1.0)
    sampler = MusicGenSampler(MusicGenLM(cfg, rngs=nnx.Rngs(0)))
    fn = sampler._function(ARSamplerConfig(), 12, True)
    hlo = fn.lower(sampler.state, jnp.zeros((1, 2, 96)), jnp.zeros((1, 4, 0), jnp.int32),
                   jax.random.key(0)).compile().as_text()
    smallest = 96 * 96                                # out_proj [H, Dh, D]; the others are larger
    large = [(name, n) for name, n in _written_inside_loops(hlo) if n >= smallest]
    assert not large, f"inside the decoding loop these write weight-sized arrays at every step: {large}"


@pytest.fixture(scope="module")
def mono(tmp_path_factory):
    reference.require("audiocraft.models.musicgen")
    return build_family_export(tmp_path_factory.mktemp("mg") / "musicgen-small", SMALL)


@pytest.fixture(scope="module")
def stereo(tmp_path_factory):
    reference.require("audiocraft.models.musicgen")
    return build_family_export(tmp_path_factory.mktemp("mg") / "musicgen-stereo-small", STEREO, seed=3)


def reference_musicgen(export):
    """audiocraft's ``MusicGen.get_pretrained(folder)``. Its constructor sets the default generation
    parameters, whose extend_stride of 18 s it asserts is below the trained duration: for the
    1 s model of the windowing test that call is skipped (the test sets its own parameters)."""
    import unittest.mock
    musicgen = reference.require("audiocraft.models.musicgen")
    skip_defaults = unittest.mock.patch.object(musicgen.MusicGen, "set_generation_params", lambda self, **kw: None)
    with local_t5(export.t5, export.family.t5), local_hf_codec(export.hf_codec), skip_defaults:
        return musicgen.MusicGen.get_pretrained(str(export.folder), device="cpu")


@pytest.mark.parametrize("which", ["mono", "stereo"])
def test_logits_match_audiocraft(which, request):
    """Random delay-pattern sequences (special tokens included) under a text condition and the
    null one: every head's logits within 1e-4 of the logit scale."""
    torch = reference.require("torch")
    conditioners = reference.require("audiocraft.modules.conditioners")
    from magnet_jax.lm.convert import load_audiocraft_lm
    export = request.getfixturevalue(which)
    ref = reference_musicgen(export).lm
    cfg, ours, _ = load_audiocraft_lm(export.folder / "state_dict.bin", frame_rate=50)
    assert isinstance(cfg, MusicGenConfig) and cfg.n_q == export.family.n_q
    assert cfg.delays == ((0, 0, 1, 1, 2, 2, 3, 3) if which == "stereo" else (0, 1, 2, 3))
    attrs = [conditioners.ConditioningAttributes(text={"description": t}) for t in ["jazzy piano chords", "heavy metal"]]
    nulls = conditioners.ClassifierFreeGuidanceDropout(p=1.0)(attrs)
    tensors = ref.condition_provider(ref.condition_provider.tokenize(attrs + nulls))
    seq = np.random.default_rng(0).integers(0, cfg.card + 1, size=(2, cfg.n_q, 23))
    with torch.no_grad():
        want = ref(torch.as_tensor(np.concatenate([seq, seq])), [], tensors).numpy()
    cond = tensors["description"][0][:2].detach().numpy()
    with jax.default_matmul_precision("highest"):
        got = np.asarray(ours(seq, cond))
        got_null = np.asarray(ours(seq, None))
    scale = np.abs(want).max()
    assert np.abs(got - want[:2]).max() <= 1e-4 * scale and np.abs(got_null - want[2:]).max() <= 1e-4 * scale


def _reference_generate(ref, texts, duration, prompt=None, num_samples=None, **params):
    torch = reference.require("torch")
    ref.set_generation_params(use_sampling=False, duration=duration, **params)
    with torch.no_grad():
        if prompt is not None:
            audio, tokens = ref.generate_continuation(torch.as_tensor(prompt), ref.sample_rate, texts,
                                                      return_tokens=True)
        elif texts is None:
            audio, tokens = ref.generate_unconditional(num_samples, return_tokens=True)
        else:
            audio, tokens = ref.generate(texts, return_tokens=True)
    return tokens.numpy(), audio.numpy()


def _cli(export, out: Path, *flags: str) -> tuple[np.ndarray, np.ndarray, dict]:
    args = ["generate", "--model", str(export.folder), "--text-encoder", str(export.t5), "--codec",
            str(export.hf_codec), "--cache-dir", str(out.parent / "cache"), "--out", str(out), "--greedy", *flags]
    with jax.default_matmul_precision("highest"):
        assert cli_main(args) == 0
    sidecar = json.loads((out / "generate.json").read_text())
    audio = np.stack([soundfile.read(out / f["wav"], dtype="float32", always_2d=True)[0].T for f in sidecar["files"]])
    return np.load(out / "tokens.npy"), audio, sidecar


def _same_audio(audio: np.ndarray, want: np.ndarray) -> None:
    assert audio.shape == want.shape
    assert np.abs(audio - np.clip(want, -1, 1)).max() <= 1.0 / 2**15 + 1e-4      # 16-bit PCM


@pytest.mark.parametrize("which", ["mono", "stereo"])
def test_generate_cli_matches_audiocraft(which, request, tmp_path):
    """Greedy, CFG 3, a text and the empty prompt (the null condition) batched together, 1 s."""
    export = request.getfixturevalue(which)
    want_tokens, want_audio = _reference_generate(reference_musicgen(export), TEXTS, 1.0)
    tokens, audio, sidecar = _cli(export, tmp_path / "out", "--duration", "1", "--allow-unconditional",
                                  "--prompt", *TEXTS)
    np.testing.assert_array_equal(tokens, want_tokens)
    _same_audio(audio, want_audio)
    assert sidecar["model_family"] == "MusicGen" and tokens.shape == (2, export.family.n_q, 50)
    assert sidecar["sampler"]["cfg_coef"] == 3.0 and sidecar["sampler"]["top_k"] == 250


def test_continuation_and_unconditional_match_audiocraft(mono, tmp_path):
    """A 0.5 s prompt WAV continued to 1.2 s under a text; and two samples without text."""
    rng = np.random.default_rng(0)
    prompt = (0.3 * rng.standard_normal((1, 1, 16000))).astype(np.float32)
    soundfile.write(tmp_path / "prompt.wav", prompt[0, 0], 32000, subtype="FLOAT")
    ref = reference_musicgen(mono)
    want_tokens, want_audio = _reference_generate(ref, ["calm piano"], 1.2, prompt=prompt)
    tokens, audio, _ = _cli(mono, tmp_path / "cont", "--duration", "1.2", "--prompt", "calm piano",
                            "--continue-from", str(tmp_path / "prompt.wav"))
    np.testing.assert_array_equal(tokens, want_tokens)
    _same_audio(audio, want_audio)
    want_tokens, _ = _reference_generate(ref, None, 0.6, num_samples=2)
    tokens, _, _ = _cli(mono, tmp_path / "uncond", "--duration", "0.6", "--unconditional", "2")
    np.testing.assert_array_equal(tokens, want_tokens)


def test_duration_past_the_trained_one_is_windowed_as_audiocraft(tmp_path):
    """A model trained on 1 s segments generating 1.6 s: windows of 1 s advancing by 0.6 s, each
    continuing the last 0.4 s of the one before (audiocraft's extend_stride)."""
    export = build_family_export(tmp_path / "short", SMALL, ("dataset.segment_duration=1",), seed=5)
    want_tokens, want_audio = _reference_generate(reference_musicgen(export), ["calm piano"], 1.6, extend_stride=0.6)
    tokens, audio, _ = _cli(export, tmp_path / "out", "--duration", "1.6", "--extend-stride", "0.6",
                            "--prompt", "calm piano")
    np.testing.assert_array_equal(tokens, want_tokens)
    assert tokens.shape[-1] == 80
    _same_audio(audio, want_audio)


def test_unsupported_musicgen_settings_are_refused_by_name(mono, tmp_path, capsys):
    from magnet_jax.lm.convert import CheckpointError, musicgen_config_from_xp
    melody = xp_cfg.parse(to_yaml(family_xp(MUSICGEN_FAMILIES["facebook/musicgen-melody"])))
    with pytest.raises(CheckpointError, match="musicgen-melody's chroma conditioner is not ported"):
        musicgen_config_from_xp(melody)
    args = ["generate", "--model", str(mono.folder), "--text-encoder", str(mono.t5), "--codec", str(mono.hf_codec),
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "o"), "--prompt", "x"]
    assert cli_main(args + ["--decoding-steps", "2,1,1,1"]) == 2
    assert "--decoding-steps: not a MusicGen setting" in capsys.readouterr().err
    assert cli_main(args + ["--duration", "40", "--extend-stride", "30"]) == 2
    assert "extend_stride 30.0: must be in (0, 30)" in capsys.readouterr().err
