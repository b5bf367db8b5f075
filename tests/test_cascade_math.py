"""The pure parts of the cascade (stage plan, restart index, φ) and the Recipe."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from hiresdiff.methods.family_defaults import FAMILY
from hiresdiff.methods.freescale import DilationConfig, ScaleFusionConfig
from hiresdiff.methods.self_cascade import CascadeConfig, pivot_noise_vp, resize, restart_index, stage_sizes
from hiresdiff.methods.upsample_guidance import UpsampleGuidanceConfig, levels_for_scale
from hiresdiff.recipe import Recipe


@pytest.mark.parametrize(
    "trained,target,multiple,expected",
    [
        ((32, 32), (64, 64), 4, [(32, 32), (64, 64)]),  # 2x
        ((32, 32), (96, 96), 4, [(32, 32), (64, 64), (96, 96)]),  # 3x: ×2 until the last, target last
        ((32, 32), (128, 128), 4, [(32, 32), (64, 64), (128, 128)]),  # 4x
        ((32, 32), (48, 48), 4, [(32, 32), (48, 48)]),  # 1.5x
        ((32, 32), (32, 32), 4, [(32, 32)]),  # 1x: one stage
        ((128, 128), (192, 128), 8, [(128, 80), (192, 128)]),  # non-square: target aspect, fits trained
        ((64, 64), (256, 128), 8, [(64, 32), (128, 64), (256, 128)]),
    ],
)
def test_stage_sizes(trained, target, multiple, expected):
    sizes = stage_sizes(trained, target, multiple)
    assert sizes == expected
    assert len(sizes) == 1 + math.ceil(math.log2(max(target[0] / trained[0], target[1] / trained[1])) - 1e-9)
    assert all(h % multiple == 0 and w % multiple == 0 for h, w in sizes)
    assert all(h <= trained[0] and w <= trained[1] for h, w in sizes[:1])


@pytest.mark.parametrize(
    "target,match",
    [((16, 16), "smaller than the trained size"), ((66, 64), "height=66"), ((64, 0), "width must be a positive int")],
)
def test_stage_sizes_rejects_bad_targets(target, match):
    with pytest.raises(ValueError, match=match):
        stage_sizes((32, 32), target, 4)


def test_restart_index_matches_img2img_and_freescale():
    assert restart_index(50, 0.7) == 15  # FreeScale's restart_steps = 15 of 50
    assert restart_index(20, 0.7) == 6 and restart_index(20, 1.0) == 0 and restart_index(10, 0.05) == 10
    for steps in (1, 7, 30):
        for strength in (0.3, 0.5, 0.9):
            assert steps - restart_index(steps, strength) == int(steps * strength)


def test_resize_modes_and_videos():
    x = torch.randn(2, 3, 8, 6)
    assert torch.equal(resize(x, (16, 12), "nearest"), x.repeat_interleave(2, 2).repeat_interleave(2, 3))
    assert torch.allclose(resize(x, (16, 12), "bilinear"), F.interpolate(x, (16, 12), mode="bilinear", antialias=True))
    assert resize(x, (8, 6)) is x
    video = torch.randn(1, 4, 3, 8, 8)
    up = resize(video, (16, 16), "bicubic")
    assert up.shape == (1, 4, 3, 16, 16)
    for f in range(3):
        assert torch.allclose(up[:, :, f], resize(video[:, :, f], (16, 16), "bicubic"))
    with pytest.raises(ValueError, match="upsample must be one of"):
        resize(x, (16, 12), "lanczos")


def test_pivot_noise_closed_form():
    x0, eps = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    a = 0.3
    assert torch.allclose(pivot_noise_vp(x0, eps, a), a**0.5 * x0 + (1 - a) ** 0.5 * eps)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(strength=0.0), "strength"),
        (dict(strength=1.5), "strength"),
        (dict(upsample="area"), "upsample"),
        (dict(space="pixel"), "space"),
        (dict(steps=0), "steps"),
        (dict(detail_alpha=-1.0), "detail_alpha"),
        (dict(detail_alpha=float("nan")), "detail_alpha"),
        (dict(detail_alpha=torch.ones(1, 4, 4)), "detail_alpha"),
    ],
)
def test_cascade_config_validates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CascadeConfig(**kwargs)


def test_levels_for_scale():
    ug = UpsampleGuidanceConfig(factor=3, theta=0.7, eta=0.6)
    assert levels_for_scale(ug, (1, 1)) == []
    nested = levels_for_scale(ug, (4.0, 4.0))
    assert [c.factor for c in nested] == [2, 2] and all(c.theta == 0.7 and c.eta == 0.6 for c in nested)
    assert [c.factor for c in levels_for_scale(ug, (4, 4), nested=False)] == [(4, 4)]
    assert [c.factor for c in levels_for_scale(ug, (3, 3))] == [(3, 3)]
    assert [c.factor for c in levels_for_scale(ug, (2, 1))] == [(2, 1)]
    with pytest.raises(ValueError, match="ug needs integer scales"):
        levels_for_scale(ug, (1.5, 1.5))
    video = UpsampleGuidanceConfig(factor=(2, 2, 2))
    assert [c.factor for c in levels_for_scale(video, (1, 1))] == [(2, 1, 1)]  # temporal only at spatial scale 1
    assert [c.factor for c in levels_for_scale(video, (4, 4))] == [(2, 4, 4)]
    assert levels_for_scale(UpsampleGuidanceConfig(factor=(1, 2, 2)), (1, 1)) == []


def test_recipe_stages_and_presets():
    assert Recipe().stages((32, 32), (64, 64), 4) == Recipe.naive().stages((32, 32), (64, 64), 4)
    one = Recipe.naive().stages((32, 32), (64, 64), 4)
    assert len(one) == 1 and one[0].size == (64, 64) and one[0].ug_levels == ()
    ug = Recipe.upsample_guidance().stages((32, 32), (128, 128), 4)
    assert len(ug) == 1 and [c.factor for c in ug[0].ug_levels] == [2, 2]
    sc = Recipe.self_cascade().stages((32, 32), (128, 128), 4)
    assert [s.size for s in sc] == [(32, 32), (64, 64), (128, 128)] and [s.scale for s in sc][0] == (1.0, 1.0)
    assert not sc[0].is_upscaled and sc[1].is_upscaled
    fs = Recipe.freescale(ug=UpsampleGuidanceConfig())
    stages = fs.stages((32, 32), (128, 128), 4)
    assert stages[0].ug_levels == () and [c.factor for c in stages[2].ug_levels] == [2, 2]
    assert fs.cascade.space == FAMILY and fs.cascade.detail_alpha == FAMILY and fs.cascade.strength is None
    assert fs.dilation.until is None  # the family's
    diffusion, flow = fs.for_family(flow=False), fs.for_family(flow=True)
    # the papers' on diffusion models (restart 0.7, α 2, dilation until 0.7); measured on flow ones
    assert (diffusion.cascade.strength, diffusion.cascade.detail_alpha, diffusion.dilation.until) == (0.7, 2.0, 0.7)
    assert (flow.cascade.strength, flow.cascade.detail_alpha, flow.dilation.until) == (0.3, 0.5, 0.88)
    # φ in RGB for images, in latents for videos (FreeScale's finding); an explicit space is kept for either
    assert (diffusion.cascade.space, fs.for_family(flow=False, video=True).cascade.space) == ("rgb", "latent")
    assert Recipe.freescale(space="rgb").for_family(flow=True, video=True).cascade.space == "rgb"
    mine = dataclasses.replace(
        Recipe.freescale(detail_alpha=3.0, strength=0.5, space="rgb"), dilation=DilationConfig(until=0.6)
    )
    assert mine.for_family(flow=True) == mine  # the caller's values are kept
    assert Recipe.freescale(detail_alpha=None).for_family(flow=True).cascade.detail_alpha is None  # off stays off
    assert isinstance(fs.dilation, DilationConfig) and isinstance(fs.fusion, ScaleFusionConfig)
    ablated = Recipe.freescale(dilation=False, fusion=False, detail_alpha=None, space="latent")
    assert ablated.dilation is None and ablated.fusion is None and ablated.cascade == CascadeConfig(space="latent")
    assert Recipe.naive().stages((32, 32), (16, 16), 4)[0].size == (16, 16)  # one stage may be below trained


def test_recipe_composition_parses_like_the_presets():
    composed = Recipe.preset("freescale+ug")
    assert composed == Recipe.freescale(ug=UpsampleGuidanceConfig())
    assert composed.name == "freescale+ug"
    assert Recipe.preset("self-cascade") == Recipe.self_cascade()
    assert Recipe.preset("ug+self-cascade") == Recipe(cascade=CascadeConfig(), ug=UpsampleGuidanceConfig())
    with pytest.raises(ValueError, match="method must be one of"):
        Recipe.preset("freescale+hidiffusion")
    with pytest.raises(ValueError, match="both recipes set cascade differently"):
        Recipe.preset("freescale+self-cascade")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(upsamplers="x"), "upsamplers need a cascade"),
        (dict(cascade=CascadeConfig(), upsamplers="/no/such/folder"), "not a folder"),
        (dict(cascade="rgb"), "cascade must be a CascadeConfig"),
    ],
)
def test_recipe_validates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Recipe(**kwargs)
    with pytest.raises(ValueError, match="ug needs integer scales"):
        Recipe.preset("freescale+ug").stages((32, 32), (48, 48), 4)


@pytest.mark.parametrize(
    "ratio,target,expected",
    [
        (4, (128, 128), [(32, 32), (128, 128)]),  # one jump at 4x
        (8, (128, 128), [(32, 32), (128, 128)]),  # a ratio above the scale: one jump too
        (3, (288, 288), [(32, 32), (96, 96), (288, 288)]),  # 9x by x3 stages
        (2, (128, 128), [(32, 32), (64, 64), (128, 128)]),  # the default doubling
        (math.inf, (1024, 512), [(32, 16), (1024, 512)]),  # ∞: one jump at any scale and aspect
        (math.inf, (40, 40), [(32, 32), (40, 40)]),
    ],
)
def test_stage_sizes_with_a_stage_ratio(ratio, target, expected):
    assert stage_sizes((32, 32), target, 4, ratio) == expected
    assert Recipe(cascade=CascadeConfig(stage_ratio=ratio)).stages((32, 32), target, 4)[-1].size == target


@pytest.mark.parametrize(
    "stage_steps,strength", [(2, 0.3), (3, 0.3), (4, 0.3), (2, 0.5), (3, 0.5), (4, 0.5), (5, 0.7), (1, 1.0), (7, 0.45)]
)
def test_the_fast_recipe_runs_its_stage_steps_from_its_strength(stage_steps, strength):
    """Closed form: a later stage's grid has ⌈k/s⌉ steps and runs the last int(⌈k/s⌉·s) = k of them, restarting at
    a fraction of the schedule within one grid step of s."""
    cascade = Recipe.fast(stage_steps=stage_steps, strength=strength, target_steps=stage_steps + 1).cascade
    assert cascade.steps == math.ceil(stage_steps / strength - 1e-9)
    for last, k in ((False, stage_steps), (True, stage_steps + 1)):
        for steps in (1, 20, 50):  # the call's steps set stage 0 only
            grid = cascade.stage_steps(steps, last)
            ran = grid - restart_index(grid, cascade.strength)
            assert cascade.steps_run(steps, last) == ran == k and abs(ran / grid - strength) <= 1 / grid


def test_the_fast_recipe_is_a_preset_that_composes_and_validates():
    fast = Recipe.preset("fast")
    assert fast == Recipe.fast() and fast.cascade.space == FAMILY and fast.dilation is not None and fast.fusion is None
    assert [s.size for s in fast.stages((32, 32), (128, 128), 4)] == [(32, 32), (64, 64), (128, 128)]
    composed = Recipe.preset("fast+ug")
    assert composed.cascade == fast.cascade and composed.ug is not None
    with pytest.raises(ValueError, match="cascade"):
        Recipe.preset("fast+freescale")
    assert Recipe.fast(stage_steps=4, strength=0.5, target_steps=2).cascade.stage_steps(20, last=True) == 4  # ⌈2/0.5⌉
    for bad, match in (
        ({"stage_steps": 0}, "stage_steps"),
        ({"stage_steps": 2.5}, "stage_steps"),
        ({"target_steps": 0}, "target_steps"),
        ({"strength": 0}, "strength"),
        ({"strength": 1.5}, "strength"),
        ({"stage_ratio": 1}, "stage_ratio"),
    ):
        with pytest.raises(ValueError, match=match):
            Recipe.fast(**bad)


def test_the_fast_recipe_with_an_upscaler_defaults_to_one_jump_and_one_step_and_the_cli_gets_it():
    """Recipe.fast(upscaler=…): one jump (ratio ∞), one step of a 10-step grid (strength 0.1), stage 0 with all the
    steps; explicit arguments win; MethodOptions(upscaler=…) gives the fast preset, alone or with UG, those defaults
    and leaves every other recipe's cascade as it was but for the upscaler."""
    from hiresdiff.options import MethodOptions

    def upscaler(images, size):
        return images

    cascade = Recipe.fast(upscaler=upscaler).cascade
    assert (cascade.stage_ratio, cascade.strength, cascade.steps, cascade.shared_steps) == (math.inf, 0.1, 10, False)
    assert cascade.steps_run(20) == 1
    assert Recipe.fast(3, 0.3, stage_ratio=2.0, shared_steps=True, upscaler=upscaler).cascade == dataclasses.replace(
        Recipe.fast().cascade, upscaler=upscaler
    )
    options = MethodOptions(upscaler="some.pth")
    for name in ("fast", "fast+ug"):
        recipe = options.apply(Recipe.preset(name), upscaler=upscaler)
        assert recipe.cascade == cascade and recipe.name == name and (recipe.ug is None) == (name == "fast")
    freescale = options.apply(Recipe.preset("freescale"), upscaler=upscaler)
    assert freescale.cascade == dataclasses.replace(Recipe.freescale().cascade, upscaler=upscaler)
    tuned = MethodOptions(upscaler="some.pth", strength=0.2).apply(Recipe.preset("fast"), upscaler=upscaler)
    assert tuned.cascade == dataclasses.replace(cascade, strength=0.2)
