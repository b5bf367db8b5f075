"""Bad input to the Upsample Guidance hooks gets a clear error, raised before any heavy work where possible."""

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from hook_helpers import UNetCallRecorder, assert_same_snapshot, run, unet_snapshot
from tiny_pipelines import TEXT_DIM, load

from hiresdiff.methods.upsample_guidance import UpsampleGuidanceConfig
from hiresdiff.sampling.family_parts import apply_upsample_guidance, remove_upsample_guidance
from hiresdiff.unet.lowres_call import lowres_conditioning

UG = UpsampleGuidanceConfig(factor=2, theta=1.0, eta=0.6)


def test_latent_size_not_divisible_fails_before_the_unet_runs():
    pipe = load("sd15")  # 32x32 pixels, VAE scale factor 2: a 16x16 latent, not divisible by 3
    with UNetCallRecorder(pipe.unet) as recorder:
        apply_upsample_guidance(pipe, UpsampleGuidanceConfig(factor=3))
        with pytest.raises(
            ValueError,
            match=r"latent \(height, width\) \(16, 16\) is not divisible by the factor "
            r"\(3, 3\).*height and width must be multiples of 6 and 6 pixels",
        ):
            run(pipe)
        remove_upsample_guidance(pipe)
    assert recorder.calls == []


def test_frame_count_not_divisible_names_num_frames():
    pipe = load("animatediff")
    apply_upsample_guidance(pipe, UpsampleGuidanceConfig(factor=(2, 1, 1)))
    with pytest.raises(ValueError, match=r"latent \(frames, height, width\) \(3, 16, 16\).*num_frames a multiple of 2"):
        run(pipe, num_frames=3)
    remove_upsample_guidance(pipe)


def test_pipeline_without_unet_is_rejected_saying_what_is_supported():
    pipe = load("dit")
    with pytest.raises(
        ValueError,
        match=r"UNet2DConditionModel.*UNetMotionModel.*UNet2DModel.*"
        r"FluxTransformer2DModel.*SD3Transformer2DModel.*; DiTPipeline has transformer",
    ):
        apply_upsample_guidance(pipe, UG)
    with pytest.raises(ValueError, match="got a DiTTransformer2DModel"):
        apply_upsample_guidance(pipe.transformer, UG, scheduler=pipe.scheduler)


def test_bare_unet_needs_a_scheduler():
    with pytest.raises(ValueError, match="a bare UNet needs scheduler="):
        apply_upsample_guidance(load("sd15").unet, UG)


def test_non_vp_scheduler_is_rejected_at_apply_and_at_call():
    pipe = load("sd15")
    ddim = pipe.scheduler
    pipe.scheduler = FlowMatchEulerDiscreteScheduler()
    with pytest.raises(ValueError, match="FlowMatchEulerDiscreteScheduler has no alphas_cumprod"):
        apply_upsample_guidance(pipe, UG)
    pipe.scheduler = ddim
    apply_upsample_guidance(pipe, UG)
    pipe.scheduler = FlowMatchEulerDiscreteScheduler()
    with pytest.raises(ValueError, match="FlowMatchEulerDiscreteScheduler has no alphas_cumprod"):
        pipe.unet(torch.zeros(1, 4, 16, 16), 500, encoder_hidden_states=torch.zeros(1, 16, TEXT_DIM))
    remove_upsample_guidance(pipe)


def test_frame_factor_on_an_image_unet_is_rejected():
    with pytest.raises(ValueError, match="scales frames.*needs a video UNet"):
        apply_upsample_guidance(load("sd15"), UpsampleGuidanceConfig(factor=(2, 1, 1)))


def test_bad_sdxl_time_ids_choice():
    with pytest.raises(ValueError, match="sdxl_time_ids must be one of"):
        apply_upsample_guidance(load("sdxl"), UG, sdxl_time_ids="original")


def test_applying_twice_is_an_error_that_keeps_the_first_application():
    reference = load("sd15")
    apply_upsample_guidance(reference, UG)
    expected = run(reference)
    pipe = load("sd15")
    before = unet_snapshot(pipe.unet)
    plain = run(pipe)
    apply_upsample_guidance(pipe, UG)
    with pytest.raises(ValueError, match="already applied.*remove_upsample_guidance first"):
        apply_upsample_guidance(pipe, UpsampleGuidanceConfig(factor=2, theta=0.5))
    assert torch.equal(run(pipe), expected)
    remove_upsample_guidance(pipe)
    assert_same_snapshot(unet_snapshot(pipe.unet), before)
    assert torch.equal(run(pipe), plain)


def test_remove_without_apply_is_a_no_op():
    pipe = load("sd15")
    before = unet_snapshot(pipe.unet)
    remove_upsample_guidance(pipe)
    assert_same_snapshot(unet_snapshot(pipe.unet), before)


def test_controlnet_residual_that_does_not_divide_is_named():
    arguments = {"down_block_additional_residuals": (torch.zeros(2, 8, 6, 6), torch.zeros(2, 8, 3, 3))}
    with pytest.raises(ValueError, match=r"ControlNet/adapter residual's \(h, w\) \(3, 3\) is not divisible"):
        lowres_conditioning(arguments, (2, 4, 6, 6), factor=2)
