"""Scale fusion processors: selection, the local/global math against independent computations, bounded
window batches, identity at scale 1, exact removal; and both FreeScale per-call parts on tiny pipelines."""

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor2_0
from hook_helpers import run
from test_dilation import KINDS, TRAINED, T, assert_same_full_snapshot, call, full_snapshot, make_unet
from test_freescale_math import numpy_gaussian
from tiny_pipelines import load

import hiresdiff.unet.scale_fusion as scale_fusion
from hiresdiff.hooks.call_context import CallContextHook, UNetCall, apply_call_context, remove_call_context
from hiresdiff.methods.freescale import DilationConfig, ScaleFusionConfig
from hiresdiff.unet.dilation import apply_dilation, remove_dilation
from hiresdiff.unet.scale_fusion import (
    ScaleFusionAttnProcessor,
    apply_scale_fusion,
    remove_scale_fusion,
    self_attentions,
    windowed_attention,
)

LEVEL1_ATTN1 = "down_blocks.1.attentions.0.transformer_blocks.0.attn1"  # tiny SD UNet: 16 channels, level 1


def processors(unet) -> dict:
    return {name: m.processor for name, m in unet.named_modules() if hasattr(m, "processor")}


@pytest.mark.parametrize("kind", KINDS)
def test_only_spatial_self_attention_is_replaced(kind):
    unet = make_unet(kind)
    before = processors(unet)
    names = apply_scale_fusion(unet, ScaleFusionConfig(), apply_call_context(unet, TRAINED, T))
    assert names == list(self_attentions(unet))
    assert names and not any("attn2" in n or "motion_modules" in n for n in names)
    if kind == "pixel":
        assert names == [
            "down_blocks.1.attentions.0",
            "down_blocks.2.attentions.0",
            "up_blocks.0.attentions.0",
            "up_blocks.0.attentions.1",
            "up_blocks.1.attentions.0",
            "up_blocks.1.attentions.1",
            "mid_block.attentions.0",
        ]
    else:
        assert all(n.endswith("attn1") for n in names)
        assert any("motion_modules" in n for n in before) == (kind == "animatediff")
    for name, processor in processors(unet).items():
        if name in names:
            assert isinstance(processor, ScaleFusionAttnProcessor) and processor.original is before[name]
        else:
            assert processor is before[name]  # cross-attention and temporal attention keep theirs
    remove_scale_fusion(unet)
    assert all(p is before[n] for n, p in processors(unet).items())


def crop_average_reference(attn, hidden, grid, window, starts):
    """h_local by cropping the tokens and running diffusers' own processor on each window, then averaging."""
    (gh, gw), (wh, ww) = grid, window
    b, _, c = hidden.shape
    tokens = hidden.reshape(b, gh, gw, c)
    total, count = torch.zeros_like(tokens), torch.zeros(gh, gw, 1)
    for y in starts[0]:
        for x in starts[1]:
            crop = tokens[:, y : y + wh, x : x + ww].reshape(b, wh * ww, c)
            total[:, y : y + wh, x : x + ww] += AttnProcessor2_0()(attn, crop).reshape(b, wh, ww, c)
            count[y : y + wh, x : x + ww] += 1
    return (total / count).reshape(b, gh * gw, c)


def test_windowed_attention_equals_cropping_and_averaging():
    attn = make_unet("sd15").get_submodule(LEVEL1_ATTN1)
    hidden = torch.randn(2, 8 * 12, 16)
    starts = ([0, 2, 4], [0, 3, 5, 6])
    expected = crop_average_reference(attn, hidden, (8, 12), (4, 6), starts)
    for per_batch in (1, 5, 100):
        out = windowed_attention(attn, hidden, (8, 12), (4, 6), starts, per_batch)
        assert torch.allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize(
    "kind,name,shape", [("sd15", LEVEL1_ATTN1, (2, 8 * 6, 16)), ("pixel", "down_blocks.1.attentions.0", (2, 16, 8, 6))]
)
def test_one_window_covering_the_grid_is_the_layer_attention(kind, name, shape):
    attn = make_unet(kind).get_submodule(name)  # pixel: 4-D input, group_norm and residual connection
    hidden = torch.randn(shape)
    out = windowed_attention(attn, hidden, (8, 6), (8, 6), ([0], [0]), 1)
    assert out.shape == hidden.shape
    assert torch.allclose(out, AttnProcessor2_0()(attn, hidden), atol=1e-6)


def test_window_batches_are_bounded(monkeypatch):
    attn = make_unet("sd15").get_submodule(LEVEL1_ATTN1)
    hidden = torch.randn(2, 16 * 16, 16)
    batches, sdpa = [], F.scaled_dot_product_attention

    def recording_sdpa(q, *args, **kwargs):
        batches.append(q.shape)
        return sdpa(q, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording_sdpa)
    starts = (list(range(0, 13, 2)), list(range(0, 13, 2)))  # 49 windows of 4x4
    reference = windowed_attention(attn, hidden, (16, 16), (4, 4), starts, 49)
    batches.clear()
    out = windowed_attention(attn, hidden, (16, 16), (4, 4), starts, 3)
    assert torch.allclose(out, reference, atol=1e-6)
    assert max(shape[0] for shape in batches) == 3 * 2 and sum(shape[0] for shape in batches) == 49 * 2
    assert all(shape[2] == 16 for shape in batches)  # window tokens only, never the grid


def reference_blur(x, grid, kernel):
    """G over the token grid by an independent route: numpy Gaussian, replicate padding, depthwise conv."""
    b, n, c = x.shape
    maps = x.transpose(1, 2).reshape(b, c, *grid)
    weights = torch.from_numpy(numpy_gaussian(kernel, 1.0)).float().expand(c, 1, kernel, kernel)
    pad = kernel // 2
    out = F.conv2d(F.pad(maps, (pad,) * 4, mode="replicate"), weights, groups=c)
    return out.reshape(b, c, n).transpose(1, 2)


def test_fused_output_is_blurred_local_plus_high_pass_global():
    attn = make_unet("sd15").get_submodule(LEVEL1_ATTN1)
    context = CallContextHook(TRAINED, T)  # level 1 of a 16x24 call: grid (8, 12), trained window (4, 4)
    context.current = UNetCall(torch.tensor(900.0), (16, 24), (2.0, 3.0), context.clock)
    processor = ScaleFusionAttnProcessor(AttnProcessor2_0(), ScaleFusionConfig(jitter=False), context, 0)
    hidden = torch.randn(2, 8 * 12, 16)
    global_out = AttnProcessor2_0()(attn, hidden)
    local = crop_average_reference(attn, hidden, (8, 12), (4, 4), ([0, 2, 4], [0, 2, 4, 6, 8]))
    expected = reference_blur(local, (8, 12), 5) + global_out - reference_blur(global_out, (8, 12), 5)  # 2*3 - 1
    assert torch.allclose(processor(attn, hidden), expected, atol=1e-5)
    assert torch.equal(
        processor(attn, hidden, attention_mask=torch.zeros(2, 1, 96)),
        AttnProcessor2_0()(attn, hidden, attention_mask=torch.zeros(2, 1, 96)),
    )  # masks: global only
    context.current = None  # outside a UNet call
    assert torch.equal(processor(attn, hidden), global_out)


@pytest.mark.parametrize("kind", KINDS)
def test_scale_one_is_the_plain_unet_bit_for_bit_without_local_attention(kind, monkeypatch):
    unet = make_unet(kind)
    plain_trained, plain_small = call(kind, unet, TRAINED, 900.0), call(kind, unet, (8, 4), 900.0)
    apply_scale_fusion(unet, ScaleFusionConfig(), apply_call_context(unet, TRAINED, T))
    monkeypatch.setattr(scale_fusion, "windowed_attention", lambda *a, **k: pytest.fail("local attention computed"))
    assert torch.equal(call(kind, unet, TRAINED, 900.0), plain_trained)
    assert torch.equal(call(kind, unet, (8, 4), 900.0), plain_small)  # below the trained size: one window


@pytest.mark.parametrize("kind", KINDS)
def test_larger_calls_differ_from_plain_attention_square_and_not(kind):
    unet = make_unet(kind)
    sizes = [(16, 16), (16, 8), (8, 16), (24, 16)]
    plain = [call(kind, unet, size, 500.0) for size in sizes]
    apply_scale_fusion(unet, ScaleFusionConfig(), apply_call_context(unet, TRAINED, T))
    for size, expected in zip(sizes, plain):
        out = call(kind, unet, size, 500.0)
        assert torch.isfinite(out).all() and not torch.allclose(out, expected), size


def test_jitter_is_seeded():
    unet = make_unet("sd15")  # trained 16x16 and a 48x48 call: level-1 windows of 8 tokens, jitter up to 1
    context = apply_call_context(unet, (16, 16), T)
    outputs = {}
    for seed, jitter in [(0, True), (0, True), (1, True), (2, True), (3, True), (0, False)]:
        apply_scale_fusion(unet, ScaleFusionConfig(seed=seed, jitter=jitter), context)
        outputs.setdefault((seed, jitter), []).append(call("sd15", unet, (48, 48), 500.0))
        remove_scale_fusion(unet)
    assert torch.equal(*outputs[(0, True)])
    jittered = [outputs[(s, True)][0] for s in range(4)]
    assert any(not torch.equal(jittered[0], other) for other in jittered[1:])
    assert any(not torch.equal(outputs[(0, False)][0], other) for other in jittered)


@pytest.mark.parametrize("kind", KINDS)
def test_apply_remove_restores_the_exact_processors_also_after_an_exception(kind):
    unet = make_unet(kind)
    large = (16, 16)
    baseline, before, originals = call(kind, unet, large, 900.0), full_snapshot(unet), processors(unet)
    for _ in range(2):
        context = apply_call_context(unet, TRAINED, T)
        apply_scale_fusion(unet, ScaleFusionConfig(), context)
        failing = unet.mid_block.register_forward_hook(fail)
        with pytest.raises(RuntimeError, match="boom"):
            call(kind, unet, large, 900.0)
        failing.remove()
        remove_scale_fusion(unet)
        remove_call_context(unet)
        assert all(p is originals[n] for n, p in processors(unet).items())
        assert_same_full_snapshot(before, full_snapshot(unet))
        assert torch.equal(call(kind, unet, large, 900.0), baseline)


def fail(*args):
    raise RuntimeError("boom")


def test_bad_setup_is_rejected():
    unet = make_unet("sd15")
    with pytest.raises(ValueError, match=r"apply_call_context\(unet, ...\) first"):
        apply_scale_fusion(unet, ScaleFusionConfig())
    context = apply_call_context(unet, TRAINED, T)
    with pytest.raises(ValueError, match="config must be a ScaleFusionConfig"):
        apply_scale_fusion(unet, DilationConfig(), context)
    apply_scale_fusion(unet, ScaleFusionConfig())
    with pytest.raises(ValueError, match="scale fusion is already applied"):
        apply_scale_fusion(unet, ScaleFusionConfig(), context)
    remove_scale_fusion(unet)
    remove_scale_fusion(unet)  # a no-op


@pytest.mark.parametrize("kind", ["sd15", "sdxl", "animatediff", "pixel"])
def test_dilation_and_fusion_on_a_pipeline_run_and_come_off_exactly(kind):
    pipe = load(kind)  # sample_size 8 latents (pixel: 16 pixels); runs at 2x the declared trained size 8x8
    unet = pipe.unet
    baseline, before = run(pipe), full_snapshot(unet)
    context = apply_call_context(unet, TRAINED, pipe.scheduler.config.num_train_timesteps)
    apply_dilation(unet, DilationConfig(), context)
    apply_scale_fusion(unet, ScaleFusionConfig(), context)
    out = run(pipe)
    assert torch.isfinite(out).all() and not torch.allclose(out, baseline)
    calls = []

    def fail_at_second_call(*args):
        calls.append(1)
        if len(calls) == 2:
            fail()

    failing = unet.mid_block.register_forward_hook(fail_at_second_call)
    with pytest.raises(RuntimeError, match="boom"):
        run(pipe)
    failing.remove()
    assert context.current is None
    remove_scale_fusion(unet)
    remove_dilation(unet)
    remove_call_context(unet)
    assert_same_full_snapshot(before, full_snapshot(unet))
    assert torch.equal(run(pipe), baseline)


class CustomProcessor:
    """A user's own processor (as IP-Adapter's or PAG's are): plain attention by a class hiresdiff does not know,
    recording the token counts it is called with."""

    def __init__(self):
        self.tokens, self.inner = [], AttnProcessor2_0()

    def __call__(self, attn, hidden_states, *args, **kwargs):
        self.tokens.append(hidden_states.shape[1])
        return self.inner(attn, hidden_states, *args, **kwargs)


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_fusion_wraps_a_custom_processor_and_computes_its_windows_with_it(kind):
    """On SD/SDXL self-attention (no token-pooling norm) calling the processor on window crops is exact: a custom
    processor that is plain attention gives the standard processor's fused result."""
    standard, custom = make_unet(kind), make_unet(kind)
    recorders = {}
    for name, attn in scale_fusion.self_attentions(custom).items():
        recorders[name] = CustomProcessor()
        attn.set_processor(recorders[name])
    for unet in (standard, custom):
        apply_scale_fusion(unet, ScaleFusionConfig(), apply_call_context(unet, TRAINED, T))
    assert torch.allclose(call(kind, custom, (16, 16), 500.0), call(kind, standard, (16, 16), 500.0), atol=1e-5)
    recorder = recorders[LEVEL1_ATTN1]
    assert recorder.tokens[0] == 8 * 8 and set(recorder.tokens[1:]) == {4 * 4}  # global grid, then trained windows
    remove_scale_fusion(custom)
    assert all(attn.processor is recorders[name] for name, attn in scale_fusion.self_attentions(custom).items())


def test_fusion_refuses_a_custom_processor_on_a_layer_that_normalises_over_tokens():
    unet = make_unet("pixel")
    name, attn = next(iter(scale_fusion.self_attentions(unet).items()))
    attn.set_processor(CustomProcessor())
    with pytest.raises(ValueError, match=f"cannot wrap the CustomProcessor of {name}.*fusion=False"):
        apply_scale_fusion(unet, ScaleFusionConfig(), apply_call_context(unet, TRAINED, T))
