"""MagnetLM against audiocraft's MagnetLMModel on the same random weights (float32, highest precision)."""
from __future__ import annotations

import jax
import numpy as np
import pytest

import reference
from lm_reference import (RefLMShape, build_reference_lm, export_state_dict, padded_condition,
                          reference_condition)
from magnet_jax.lm.convert import CheckpointError, load_audiocraft_lm

SHAPES = {
    "d64h4l3": RefLMShape(dim=64, num_heads=4, num_layers=3, card=64),
    "d96h6l2": RefLMShape(dim=96, num_heads=6, num_layers=2, card=48, subcodes_context=3, frame_rate=24,
                          segment_duration=2),
    # audiocraft's other positional embeddings: RoPE on self-attention q/k, alone or with the sinusoid
    "d64h4l2-rope": RefLMShape(dim=64, num_heads=4, num_layers=2, card=64, positional_embedding="rope"),
    "d64h2l2-sin_rope": RefLMShape(dim=64, num_heads=2, num_layers=2, card=64, positional_embedding="sin_rope"),
}


@pytest.fixture(scope="module", params=list(SHAPES))
def pair(request, tmp_path_factory):
    shape = SHAPES[request.param]
    ref = build_reference_lm(shape, seed=1)
    path = export_state_dict(ref, shape, tmp_path_factory.mktemp(request.param) / "state_dict.bin", half=False)
    cfg, ours, cond_keys = load_audiocraft_lm(path)
    return shape, ref, cfg, ours, cond_keys


def test_config_read_from_xp_cfg(pair):
    shape, _, cfg, _, cond_keys = pair
    assert (cfg.dim, cfg.num_heads, cfg.num_layers, cfg.card, cfg.n_q) == (
        shape.dim, shape.num_heads, shape.num_layers, shape.card, shape.n_q)
    assert cfg.ffn_dim == 4 * shape.dim and cfg.subcodes_context == shape.subcodes_context
    assert cfg.span_len == shape.span_len and cfg.sequence_len == shape.T
    assert cfg.positional_embedding == shape.positional_embedding
    assert set(cond_keys) == {"condition_provider.conditioners.description.embed.weight",
                              "condition_provider.conditioners.description.output_proj.weight",
                              "condition_provider.conditioners.description.output_proj.bias"}


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_logits_match_reference(pair, stage):
    torch = reference.require("torch")
    shape, ref, cfg, ours, _ = pair
    rng = np.random.default_rng(stage)
    codes = rng.integers(0, shape.card + 1, size=(3, shape.n_q, shape.T))  # mask id included
    codes[:, stage + 1:] = shape.card
    # three texts of different lengths padded together, then their three null conditions
    cond, mask = padded_condition(rng, [5, 2, 7], shape.dim)
    tensors = {"description": (torch.as_tensor(np.concatenate([cond, 0 * cond])),
                               torch.as_tensor(np.concatenate([mask, 0 * mask])))}
    with torch.no_grad():
        want = ref(torch.as_tensor(np.concatenate([codes, codes])), [], tensors, stage=stage).numpy()
    with jax.default_matmul_precision("highest"):
        got_cond = np.asarray(ours(codes, stage, cond))
        got_null = np.asarray(ours(codes, stage, None))
    scale = np.abs(want).max()
    assert np.abs(got_cond - want[:3]).max() <= 1e-4 * max(scale, 1.0)
    assert np.abs(got_null - want[3:]).max() <= 1e-4 * max(scale, 1.0)
    # the band mask matters: stage > 0 logits differ from full attention
    if stage > 0:
        full = np.asarray(ours(codes, 0, cond))
        assert np.abs(full - got_cond).max() > 1e-3


def test_fp16_export_loads_as_rounded_weights(tmp_path):
    """Released checkpoints are fp16: we must read them as the fp16 values, in float32."""
    torch = reference.require("torch")
    shape = SHAPES["d64h4l3"]
    ref = build_reference_lm(shape, seed=2)
    path = export_state_dict(ref, shape, tmp_path / "state_dict.bin", half=True)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(p.half().float())
    _, ours, _ = load_audiocraft_lm(path)
    codes = np.random.default_rng(0).integers(0, shape.card, size=(2, shape.n_q, shape.T))
    _, tensors, cond = reference_condition(ref, ["a", "b c"])
    with torch.no_grad():
        want = ref(torch.as_tensor(np.concatenate([codes, codes])), [], tensors, stage=0).numpy()[:2]
    with jax.default_matmul_precision("highest"):
        got = np.asarray(ours(codes, 0, cond))
    assert np.abs(got - want).max() <= 1e-4 * max(np.abs(want).max(), 1.0)


def test_checkpoint_of_another_shape_is_a_clear_error(tmp_path):
    """Weights of one shape under a config of another: every problem named, nothing loaded."""
    torch = reference.require("torch")
    shape = SHAPES["d64h4l3"]
    ref = build_reference_lm(shape)
    path = export_state_dict(ref, shape, tmp_path / "state_dict.bin")
    pkg = torch.load(path, weights_only=True)
    state = pkg["best_state"]
    del state["transformer.layers.1.self_attn.in_proj_weight"]
    state["transformer.layers.0.extra.weight"] = torch.zeros(3)
    state["linears.0.weight"] = torch.zeros(shape.card + 1, shape.dim)
    torch.save(pkg, path)
    with pytest.raises(CheckpointError) as err:
        load_audiocraft_lm(path)
    msg = str(err.value)
    assert "missing: transformer.layers.1.self_attn.in_proj_weight" in msg
    assert "unexpected: transformer.layers.0.extra.weight" in msg
    assert "linears.0.weight: (65, 64) (expected (64, 64))" in msg

    # a whole checkpoint of a different width under this config
    bigger = RefLMShape(dim=96, num_heads=4, num_layers=3, card=64)
    other = export_state_dict(build_reference_lm(bigger), bigger, tmp_path / "big.bin")
    from magnet_jax.lm.convert import lm_config_from_xp, xp_cfg_of
    with pytest.raises(CheckpointError, match="mis-shaped"):
        load_audiocraft_lm(other, cfg=lm_config_from_xp(xp_cfg_of(path)))


def test_rope_checkpoint_under_another_max_period_or_embedding_is_refused(tmp_path):
    """RoPE frequencies are recomputed from max_period, so saved ones that disagree (another
    max_period) are an error, as is a positional embedding audiocraft does not have."""
    shape = SHAPES["d64h4l2-rope"]
    path = export_state_dict(build_reference_lm(shape), shape, tmp_path / "state_dict.bin")
    from magnet_jax.lm.convert import lm_config_from_xp, xp_cfg_of
    cfg = lm_config_from_xp(xp_cfg_of(path))
    with pytest.raises(CheckpointError, match="max_period=500.0"):
        load_audiocraft_lm(path, cfg=cfg.replace(max_period=500.0))
    xp = xp_cfg_of(path)
    xp["transformer_lm"]["positional_embedding"] = "alibi"
    with pytest.raises(CheckpointError, match="positional_embedding='alibi'"):
        lm_config_from_xp(xp)


@pytest.mark.parametrize("stage,attention_impl", [(0, "einsum"), (2, "einsum"), (0, "xla")])
def test_training_loss_and_gradients_match_reference(pair, stage, attention_impl):
    """The train step's objective against the reference's: MAGNeT's masked cross-entropy of the
    stage's head at its masked positions, loss and every parameter's gradient. Ours runs as the
    train step runs it (``restricted``: band-only self-attention for stages > 0, full for stage 0);
    audiocraft's forward applies the additive band mask over T x T scores. ``xla``: full and
    cross-attention through ``jax.nn.dot_product_attention`` (lm.attention_impl)."""
    torch = reference.require("torch")
    from flax import nnx

    from magnet_jax.lm.convert import build_lm, lm_from_state
    from magnet_jax.lm.objective import magnet_loss, mask_codes, span_count_lut
    shape, ref, cfg, ours, _ = pair
    if attention_impl != cfg.attention_impl:
        ours = build_lm(cfg.replace(attention_impl=attention_impl), nnx.to_pure_dict(nnx.state(ours, nnx.Param)))
    rng = np.random.default_rng(20 + stage)
    codes = rng.integers(0, shape.card, size=(2, shape.n_q, shape.T)).astype(np.int32)
    cond, mask = padded_condition(rng, [5, 3], shape.dim)
    lut = jax.numpy.asarray(span_count_lut(shape.T, cfg.span_len))
    key = jax.random.key(stage)
    restricted = stage > 0 if cfg.subcodes_context >= 0 else None
    graphdef, params = nnx.split(ours, nnx.Param)

    def loss_fn(p):
        return magnet_loss(nnx.merge(graphdef, p), codes, cond, key, lut=lut, cfg_dropout=0.0,
                           stage=jax.numpy.int32(stage), restricted=restricted).loss
    with jax.default_matmul_precision("highest"):
        loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params)
    masked = mask_codes(jax.random.split(key, 3)[1], codes, jax.numpy.int32(stage), span_len=cfg.span_len,
                        lut=lut, mask_id=cfg.mask_id)
    sel = torch.as_tensor(np.asarray(masked.loss_mask))
    ref.zero_grad()
    logits = ref(torch.as_tensor(np.asarray(masked.inputs)).long(), [],
                 {"description": (torch.as_tensor(cond), torch.as_tensor(mask))}, stage=stage)
    want = torch.nn.functional.cross_entropy(logits[:, stage][sel], torch.as_tensor(codes[:, stage]).long()[sel])
    want.backward()
    assert abs(float(loss) - float(want)) <= 1e-5 * max(1.0, abs(float(want)))
    # the reference's gradients through the checkpoint converter land in our parameter layout
    named = dict(ref.named_parameters())
    state = {k: (named[k].grad if k in named and named[k].grad is not None else
                 torch.zeros_like(v) if k in named else v).detach().numpy()
             for k, v in ref.state_dict().items()}
    _, as_ours = lm_from_state(state, cfg)
    want_g = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(nnx.state(as_ours, nnx.Param)))[0]
    got_g = dict(jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(grads))[0])
    assert len(want_g) == len(got_g)
    for path, w in want_g:
        g, w = np.asarray(got_g[path]), np.asarray(w)
        scale = max(np.abs(w).max(), 1e-6)
        assert np.abs(g - w).max() <= 2e-4 * scale, (jax.tree_util.keystr(path), np.abs(g - w).max(), scale)
