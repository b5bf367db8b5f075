"""``hiresdiff.generate(pipe, …)`` on tiny SD 1.5, SD 2 (v-prediction), SDXL and AnimateDiff pipelines."""

import pytest
import torch
from hook_helpers import PROMPT, assert_same_snapshot, unet_snapshot
from tiny_pipelines import load

import hiresdiff
from hiresdiff.loading.pixel_pipeline import PixelPipeline
from hiresdiff.methods.self_cascade import CascadeConfig
from hiresdiff.recipe import Recipe
from hiresdiff.unet.feature_upsamplers import FeatureUpsamplers

# tiny pipelines: VAE factor 2, UNet factor 2, trained latent size 8 → 16 pixels trained, 32 = 2x, 64 = 4x
KW = dict(steps=4, seed=0, output_type="np")


def run(pipe, recipe, size=32, **kw):
    frames = {"num_frames": 2} if "motion_adapter" in pipe.components else {}
    return torch.as_tensor(
        hiresdiff.generate(pipe, PROMPT, height=size, width=size, recipe=recipe, **frames, **{**KW, **kw})
    )


def pipeline_state(pipe) -> dict:
    return {
        "unet": unet_snapshot(pipe.unet),
        "scheduler_vars": sorted(vars(pipe.scheduler)),
        "scheduler_config": dict(pipe.scheduler.config),
        "vae_tiling": getattr(pipe.vae, "use_tiling", None),
        "vae_dtype": pipe.vae.dtype,
    }


def assert_same_state(a, b):
    assert_same_snapshot(a["unet"], b["unet"])
    assert {k: v for k, v in a.items() if k != "unet"} == {k: v for k, v in b.items() if k != "unet"}


@pytest.mark.parametrize("kind", ["sd15", "sd2v", "sdxl", "animatediff"])
def test_two_stage_cascade_runs_and_leaves_the_pipeline_unchanged(kind):
    pipe = load(kind)
    before = pipeline_state(pipe)
    naive = run(pipe, None)
    for recipe in (Recipe.self_cascade(), Recipe.freescale(), Recipe.preset("freescale+ug")):
        out = run(pipe, recipe)
        assert out.shape == naive.shape and torch.isfinite(out).all() and not torch.equal(out, naive)
        assert_same_state(pipeline_state(pipe), before)
    assert torch.equal(run(pipe, None), naive)


@pytest.mark.parametrize("kind", ["sd15", "sdxl", "animatediff"])
def test_an_exception_in_the_second_stage_leaves_the_pipeline_unchanged(kind):
    pipe = load(kind)
    before = pipeline_state(pipe)
    reference = run(pipe, None, size=16)
    calls = []

    def fail_at_32(module, args):
        calls.append(args[0].shape[-1])
        if args[0].shape[-1] == 16:  # latent 16 = 32 pixels: stage 2
            raise RuntimeError("simulated failure inside the UNet")

    handle = pipe.unet.conv_in.register_forward_pre_hook(fail_at_32)
    try:
        with pytest.raises(RuntimeError, match="simulated"):
            run(pipe, Recipe.preset("freescale+ug"))
    finally:
        handle.remove()
    assert 8 in calls  # stage 1 ran
    assert_same_state(pipeline_state(pipe), before)
    assert torch.equal(run(pipe, None, size=16), reference)


def test_first_stage_is_the_plain_call_at_the_trained_size():
    pipe = load("sd15")
    stages = []
    hiresdiff.generate(
        pipe,
        PROMPT,
        height=64,
        width=64,
        recipe=Recipe.self_cascade(),
        on_stage=lambda stage, latents: stages.append(latents),
        **KW,
    )
    plain = pipe(
        PROMPT,
        height=16,
        width=16,
        num_inference_steps=4,
        output_type="latent",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert [s.shape[-1] for s in stages] == [8, 16]
    assert torch.equal(stages[0], plain)


def test_later_stages_start_at_k_from_the_noised_pivot():
    pipe = load("sd15")
    seen = []
    handle = pipe.unet.conv_in.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[-1]))
    try:
        hiresdiff.generate(
            pipe,
            PROMPT,
            height=32,
            width=32,
            recipe=Recipe.self_cascade(strength=0.5),
            guidance_scale=1.0,
            **{**KW, "steps": 10},
        )
    finally:
        handle.remove()
    assert seen.count(8) == 10 and seen.count(16) == 5


def test_sdxl_stages_are_told_the_trained_size_unless_the_caller_says_otherwise():
    pipe = load("sdxl")
    ids = []
    handle = pipe.unet.register_forward_pre_hook(
        lambda m, a, k: ids.append(k["added_cond_kwargs"]["time_ids"].clone()), with_kwargs=True
    )
    try:
        run(pipe, Recipe.self_cascade())
        assert all(torch.equal(i[0], torch.tensor([16.0, 16, 0, 0, 16, 16])) for i in ids)
        ids.clear()
        run(pipe, Recipe.self_cascade(), original_size=(32, 32), target_size=(32, 32))
        assert all(torch.equal(i[0], torch.tensor([32.0, 32, 0, 0, 32, 32])) for i in ids)
    finally:
        handle.remove()


def test_zero_upsamplers_equal_the_tuning_free_cascade_on_a_pipeline():
    pipe = load("sd15")
    upsamplers = FeatureUpsamplers.for_unet(pipe.unet)
    assert torch.equal(run(pipe, Recipe.self_cascade(upsamplers=upsamplers)), run(pipe, Recipe.self_cascade()))
    torch.nn.init.normal_(upsamplers.levels[-1].proj_out.weight)
    assert not torch.equal(run(pipe, Recipe.self_cascade(upsamplers=upsamplers)), run(pipe, Recipe.self_cascade()))


def test_rgb_and_latent_cascades_differ_and_detail_control_acts():
    pipe = load("sd15")
    latent = run(pipe, Recipe(cascade=CascadeConfig(space="latent")), steps=10)
    rgb = run(pipe, Recipe(cascade=CascadeConfig(space="rgb")), steps=10)
    detail = run(pipe, Recipe(cascade=CascadeConfig(space="rgb", detail_alpha=2.0)), steps=10)
    assert not torch.equal(latent, rgb) and not torch.equal(rgb, detail)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(height=30, width=32), "height must be a positive multiple of 4"),
        (dict(height=8, width=8, recipe=Recipe.self_cascade()), "smaller than the trained size"),
        (dict(height=40, width=40, recipe=Recipe.upsample_guidance()), "ug needs integer scales"),
        (dict(height=32, width=32, steps=0), "steps"),
    ],
)
def test_bad_input_fails_before_any_unet_call(kwargs, match):
    pipe = load("sd15")
    seen = []
    handle = pipe.unet.conv_in.register_forward_pre_hook(lambda m, a: seen.append(1))
    try:
        with pytest.raises(ValueError, match=match):
            hiresdiff.generate(pipe, PROMPT, **{**dict(steps=2), **kwargs})
    finally:
        handle.remove()
    assert seen == []


def test_pixel_pipelines_resize_under_rgb_space_and_upsamplers_must_fit():
    pipe = load("pixel")
    with pytest.raises(ValueError, match="DDPMPipeline takes no height, width.*PixelPipeline"):
        hiresdiff.generate(pipe, height=32, width=32, recipe=Recipe.freescale(), steps=2)
    pixel = PixelPipeline(pipe.unet, pipe.scheduler)
    rgb, latent = (
        hiresdiff.generate(
            pixel, height=32, width=32, steps=2, output_type="latent", recipe=Recipe.freescale(space=space)
        )
        for space in ("rgb", "latent")
    )
    assert torch.equal(rgb, latent)
    sd = load("sd15")
    with pytest.raises(ValueError, match="upsamplers were built for another UNet"):
        hiresdiff.generate(
            sd,
            PROMPT,
            height=32,
            width=32,
            steps=2,
            recipe=Recipe.self_cascade(upsamplers=FeatureUpsamplers.for_unet(pipe.unet)),
        )


def test_videos_use_latent_phi_by_default_and_rgb_phi_when_asked_for():
    pipe = load("animatediff")
    decodes = []
    handle = pipe.vae.decoder.register_forward_pre_hook(lambda m, a: decodes.append(1))
    try:
        family = run(pipe, Recipe(cascade=CascadeConfig(space="family")), output_type="latent")
        assert decodes == []  # no VAE round trip between stages (and none at the end: latent output)
        rgb = run(pipe, Recipe(cascade=CascadeConfig(space="rgb")), output_type="latent")
    finally:
        handle.remove()
    assert decodes == [1]  # the clip's frames decoded once (folded into the batch) for the RGB φ
    assert torch.equal(family, run(pipe, Recipe(cascade=CascadeConfig(space="latent")), output_type="latent"))
    assert not torch.equal(rgb, family)
