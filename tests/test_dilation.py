"""Restrained dilated convolution hooks: which convs, what they compute, when, and exact removal.

The UNets are tiny (trained latent size 8×8) and are called at 2× or non-square sizes through the call
context, as a FreeScale stage would call them. Also holds the UNet builders and inputs that
``test_scale_fusion`` uses.
"""

import pytest
import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel, UNet2DModel
from hook_helpers import assert_same_snapshot, unet_snapshot
from tiny_pipelines import TEXT_DIM, build
from tiny_pipelines import unet as tiny_sd_unet

from hiresdiff.hooks.base import attached
from hiresdiff.hooks.call_context import apply_call_context, remove_call_context
from hiresdiff.methods.freescale import DilationConfig
from hiresdiff.unet.dilation import DILATION_HOOK, apply_dilation, dilated_convs, remove_dilation

TRAINED = (8, 8)
T = 1000
KINDS = ("sd15", "sd15_4_levels", "sdxl", "animatediff", "pixel")


def pixel_attention_unet() -> UNet2DModel:
    """A 3-level pixel UNet2DModel (32, 64, 64)-style, with attention at the two lower levels and the mid block."""
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16, 16),
        layers_per_block=1,
        norm_num_groups=4,
        attention_head_dim=4,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    ).eval()


def sd15_four_level_unet() -> UNet2DConditionModel:
    """SD 1.5's block layout (3 cross-attention down levels, a plain deepest level) with tiny channels."""
    return tiny_sd_unet(
        block_out_channels=(8, 8, 16, 16),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    )


def make_unet(kind: str):
    """A fresh tiny UNet of ``kind`` (one of ``KINDS``), in eval mode."""
    if kind == "pixel":
        return pixel_attention_unet()
    if kind == "sd15_4_levels":
        return sd15_four_level_unet().eval()
    return build(kind).unet.eval()  # AnimateDiff's pipeline turns its UNet into a UNetMotionModel


def unet_inputs(kind: str, unet, size, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, dict]:
    """(sample, keyword arguments) of a seeded UNet call at latent ``size`` (h, w)."""
    g = torch.Generator().manual_seed(seed)
    channels = unet.config.in_channels
    if kind == "animatediff":
        frames = 2
        return (
            torch.randn(batch, channels, frames, *size, generator=g),
            {"encoder_hidden_states": torch.randn(batch * frames, 16, TEXT_DIM, generator=g)},
        )
    sample = torch.randn(batch, channels, *size, generator=g)
    if kind == "pixel":
        return sample, {}
    if kind == "sdxl":
        return sample, {
            "encoder_hidden_states": torch.randn(batch, 16, 2 * TEXT_DIM, generator=g),
            "added_cond_kwargs": {
                "text_embeds": torch.randn(batch, TEXT_DIM, generator=g),
                "time_ids": torch.randn(batch, 6, generator=g),
            },
        }
    return sample, {"encoder_hidden_states": torch.randn(batch, 16, TEXT_DIM, generator=g)}


@torch.no_grad()
def call(kind: str, unet, size, t: float, **kwargs) -> torch.Tensor:
    sample, arguments = unet_inputs(kind, unet, size, **kwargs)
    return unet(sample, t, **arguments).sample


def full_snapshot(unet) -> dict:
    """Every module's instance attributes (``forward``, hook registries), conv settings and processors, and the
    UNet's config and weights (``unet_snapshot`` too where the UNet lists its attention processors)."""
    modules = {
        name: (
            sorted(vars(m)),
            getattr(m, "dilation", None),
            getattr(m, "padding", None),
            id(getattr(m, "processor", None)),
        )
        for name, m in unet.named_modules()
    }
    return {
        "modules": modules,
        "unet": unet_snapshot(unet)
        if hasattr(unet, "attn_processors")
        else {
            "forward": unet.forward.__func__,
            "config": dict(unet.config),
            "weights": {k: v.clone() for k, v in unet.state_dict().items()},
        },
    }


def assert_same_full_snapshot(a: dict, b: dict) -> None:
    assert a["modules"] == b["modules"]
    if "processors" in a["unet"]:
        assert_same_snapshot(a["unet"], b["unet"])
    else:
        assert a["unet"]["forward"] is b["unet"]["forward"] and a["unet"]["config"] == b["unet"]["config"]
        assert all(torch.equal(v, b["unet"]["weights"][k]) for k, v in a["unet"]["weights"].items())


EXPECTED_CONVS = {
    "sd15": ["down_blocks.0.downsamplers.0.conv", "down_blocks.1.resnets.0.conv1", "down_blocks.1.resnets.0.conv2"],
    "sd15_4_levels": [
        "down_blocks.2.downsamplers.0.conv",
        "down_blocks.3.resnets.0.conv1",
        "down_blocks.3.resnets.0.conv2",
    ],
    "sdxl": ["down_blocks.0.downsamplers.0.conv", "down_blocks.1.resnets.0.conv1", "down_blocks.1.resnets.0.conv2"],
    "animatediff": [
        "down_blocks.0.downsamplers.0.conv",
        "down_blocks.1.resnets.0.conv1",
        "down_blocks.1.resnets.0.conv2",
    ],
    "pixel": ["down_blocks.1.downsamplers.0.conv", "down_blocks.2.resnets.0.conv1", "down_blocks.2.resnets.0.conv2"],
}
MID_CONVS = [f"mid_block.resnets.{i}.conv{j}" for i in (0, 1) for j in (1, 2)]


@pytest.mark.parametrize("kind", KINDS)
def test_selected_convs_are_the_deepest_level_its_downsampler_and_the_mid_block(kind):
    unet = make_unet(kind)
    convs = dilated_convs(unet)
    assert list(convs) == EXPECTED_CONVS[kind] + MID_CONVS
    assert not any(name.startswith("up_blocks") for name in convs)
    assert all(conv.kernel_size == (3, 3) and conv is unet.get_submodule(name) for name, conv in convs.items())
    context = apply_call_context(unet, TRAINED, T)
    assert apply_dilation(unet, DilationConfig(), context) == list(convs)
    hooked = {name for name, m in unet.named_modules() if attached(m, DILATION_HOOK) is not None}
    assert set(convs) == hooked
    remove_dilation(unet)
    remove_call_context(unet)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scale", [(2, 2), (2, 1), (1, 2)])
def test_each_dilated_conv_equals_an_independent_dilated_conv(kind, scale):
    unet = make_unet(kind)
    records, handles = {}, []

    def record(name):
        def hook(module, args, out):
            records.setdefault(name, (args[0], out))  # the first call of each conv

        return hook

    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            handles.append(module.register_forward_hook(record(name)))
    apply_dilation(unet, DilationConfig(), apply_call_context(unet, TRAINED, T))
    call(kind, unet, (TRAINED[0] * scale[0], TRAINED[1] * scale[1]), 900.0)
    selected = dilated_convs(unet)
    d_h, d_w = scale
    for name, (x, out) in records.items():
        conv = unet.get_submodule(name)
        plain = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        if name in selected:
            k_h, k_w = conv.kernel_size
            expected = F.conv2d(
                x, conv.weight, conv.bias, conv.stride, (d_h * (k_h // 2), d_w * (k_w // 2)), (d_h, d_w), conv.groups
            )
            assert out.shape == plain.shape
            assert torch.equal(out, expected), name
            assert not torch.allclose(out, plain)
        else:
            assert torch.equal(out, plain), name  # never dilated: up blocks, shortcuts, conv_in/out, shallow levels
    assert any(name.startswith("up_blocks") for name in records)
    for handle in handles:
        handle.remove()


@pytest.mark.parametrize("kind", KINDS)
def test_late_steps_and_scale_one_equal_the_undilated_unet_bit_for_bit(kind):
    unet = make_unet(kind)
    large = (2 * TRAINED[0], 2 * TRAINED[1])
    plain_late, plain_early = call(kind, unet, large, 200.0), call(kind, unet, large, 900.0)
    plain_trained = call(kind, unet, TRAINED, 900.0)
    context = apply_call_context(unet, TRAINED, T)
    apply_dilation(unet, DilationConfig(until=0.7), context)
    # without a grid the clock is continuous, p = 1 − t/T: the window p < until is t > (1 − until)·T
    assert torch.equal(call(kind, unet, large, 200.0), plain_late)
    assert torch.equal(call(kind, unet, large, 300.0), call(kind, make_unet(kind), large, 300.0))
    assert torch.equal(call(kind, unet, TRAINED, 900.0), plain_trained)  # scale 1
    assert not torch.allclose(call(kind, unet, large, 900.0), plain_early)
    assert not torch.allclose(call(kind, unet, large, 301.0), call(kind, make_unet(kind), large, 301.0))
    remove_dilation(unet)
    remove_call_context(unet)


def test_outside_a_unet_call_the_hook_is_the_identity():
    unet = make_unet("sd15")
    apply_dilation(unet, DilationConfig(), apply_call_context(unet, TRAINED, T))
    conv = unet.mid_block.resnets[0].conv1
    x = torch.randn(1, conv.in_channels, 6, 5)
    assert torch.equal(conv(x), F.conv2d(x, conv.weight, conv.bias, padding=1))


def fail(*args):
    raise RuntimeError("boom")


@pytest.mark.parametrize("kind", KINDS)
def test_apply_remove_restores_the_unet_exactly_also_after_an_exception(kind):
    unet = make_unet(kind)
    large = (2 * TRAINED[0], TRAINED[1])
    baseline, before = call(kind, unet, large, 900.0), full_snapshot(unet)
    for _ in range(2):  # repeatable
        context = apply_call_context(unet, TRAINED, T)
        apply_dilation(unet, DilationConfig(), context)
        assert not torch.allclose(call(kind, unet, large, 900.0), baseline)
        failing = unet.mid_block.register_forward_hook(fail)
        with pytest.raises(RuntimeError, match="boom"):
            call(kind, unet, large, 900.0)
        failing.remove()
        assert context.current is None
        remove_dilation(unet)
        remove_call_context(unet)
        assert_same_full_snapshot(before, full_snapshot(unet))
        assert torch.equal(call(kind, unet, large, 900.0), baseline)
    remove_dilation(unet)  # removing again is a no-op
    assert_same_full_snapshot(before, full_snapshot(unet))


def test_bad_setup_is_rejected_naming_what_is_missing():
    unet = make_unet("sd15")
    with pytest.raises(ValueError, match=r"apply_call_context\(unet, ...\) first"):
        apply_dilation(unet, DilationConfig())
    context = apply_call_context(unet, TRAINED, T)
    with pytest.raises(ValueError, match="config must be a DilationConfig"):
        apply_dilation(unet, {"until": 0.7}, context)
    apply_dilation(unet, DilationConfig())  # the attached context is found by default
    with pytest.raises(ValueError, match="dilation is already applied"):
        apply_dilation(unet, DilationConfig(), context)
    remove_dilation(unet)
    with pytest.raises(ValueError, match=r"until must be a number in \[0, 1\]"):
        DilationConfig(until=1.2)


def test_lora_wrapped_convs_are_dilated_base_and_adapter_alike():
    """peft wraps a LoRA'd conv: its base conv and the adapter's down-projection (same kernel) are both dilated,
    so the wrapped conv's output is the dilated base plus the dilated LoRA branch."""
    from peft import LoraConfig

    unet = make_unet("sd15")
    unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["conv1", "conv2"], init_lora_weights=False))
    paths = dilated_convs(unet)
    assert "mid_block.resnets.0.conv1.base_layer" in paths and "mid_block.resnets.0.conv1.lora_A.default" in paths
    wrapped = unet.mid_block.resnets[0].conv1
    seen = []
    handle = wrapped.register_forward_hook(lambda m, a, out: seen.append((a[0], out)))
    try:
        apply_dilation(unet, DilationConfig(), apply_call_context(unet, TRAINED, T))
        call("sd15", unet, (16, 16), 950.0)
    finally:
        handle.remove()
    x, out = seen[0]
    base, down, up = wrapped.base_layer, wrapped.lora_A["default"], wrapped.lora_B["default"]
    dilated = lambda conv: F.conv2d(x, conv.weight, conv.bias, conv.stride, 2 * conv.padding[0], 2)  # noqa: E731
    expected = dilated(base) + up(dilated(down)) * wrapped.scaling["default"]
    assert torch.allclose(out, expected, atol=1e-5)
    remove_dilation(unet)
