"""Upsample Guidance hooks with every scheduler, img2img, ControlNet, T2I-Adapter, LoRA, IP-Adapter, a pixel
UNet2DModel pipeline and a bare UNet: each runs with θ > 0 and equals the plain pipeline with θ = 0."""

import diffusers
import pytest
import torch
import torch.nn.functional as F
from hook_helpers import UNetCallRecorder, expected_lowres_sample, expected_tau, guided_pairs, run
from tiny_pipelines import TEXT_DIM, ip_adapter_state_dict, load

from hiresdiff.methods.upsample_guidance import UpsampleGuidanceConfig
from hiresdiff.sampling.family_parts import apply_upsample_guidance, remove_upsample_guidance

UG = UpsampleGuidanceConfig(factor=2, theta=1.0, eta=0.6)
SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
    "lcm": "LCMScheduler",
    "heun": "HeunDiscreteScheduler",
}


def check_plain_zero_guided(pipe, config=UG, **overrides):
    """θ = 0 equals plain bit for bit, θ > 0 differs and is finite, removal restores plain; returns the UNet calls."""
    plain = run(pipe, **overrides)
    apply_upsample_guidance(pipe, UpsampleGuidanceConfig(factor=config.factor, theta=0.0))
    zero = run(pipe, **overrides)
    remove_upsample_guidance(pipe)
    with UNetCallRecorder(pipe.unet) as recorder:
        apply_upsample_guidance(pipe, config)
        guided = run(pipe, **overrides)
        remove_upsample_guidance(pipe)
    assert torch.equal(zero, plain)
    assert torch.isfinite(guided).all() and (guided - plain).abs().max() > 1e-3
    assert torch.equal(run(pipe, **overrides), plain)
    return recorder.calls


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_scheduler_reads_t_from_each_call(name):
    pipe = load("sd15")
    pipe.scheduler = getattr(diffusers, SCHEDULERS[name]).from_config(pipe.scheduler.config)
    calls = check_plain_zero_guided(pipe, UpsampleGuidanceConfig(factor=2, theta=1.0, eta=1.0))
    ac = pipe.scheduler.alphas_cumprod
    pairs = guided_pairs(calls)
    assert len(calls) == 2 * len(pairs) == (6 if name == "heun" else 4)  # Heun: 3 UNet calls for 2 steps
    for high, low in pairs:
        t = float(high["timestep"][0])
        assert torch.allclose(low["sample"], expected_lowres_sample(high["sample"], ac, t, (2, 2)), atol=1e-5)
        assert float(low["timestep"][0]) == pytest.approx(expected_tau(ac, t, 4), abs=1e-3)


def test_scheduler_swapped_after_apply_is_read_at_call_time():
    v_config = {**load("sd15").scheduler.config, "prediction_type": "v_prediction"}
    pipe = load("sd15")
    stale = pipe.scheduler
    apply_upsample_guidance(pipe, UG)
    pipe.scheduler = diffusers.DDIMScheduler.from_config(v_config)
    swapped = run(pipe)
    remove_upsample_guidance(pipe)
    apply_upsample_guidance(pipe, UG, scheduler=stale)
    with_stale = run(pipe)
    remove_upsample_guidance(pipe)
    reference = load("sd15")
    reference.scheduler = diffusers.DDIMScheduler.from_config(v_config)
    apply_upsample_guidance(reference, UG)
    assert torch.equal(swapped, run(reference))
    assert not torch.equal(swapped, with_stale)


def test_bare_unet_with_its_scheduler_equals_the_pipeline_hook():
    pipe = load("sd15")
    apply_upsample_guidance(pipe.unet, UG, scheduler=pipe.scheduler)
    bare = run(pipe)
    remove_upsample_guidance(pipe.unet)
    apply_upsample_guidance(pipe, UG)
    assert torch.equal(bare, run(pipe))


def test_img2img():
    pipe = diffusers.StableDiffusionImg2ImgPipeline(**load("sd15").components)
    pipe.set_progress_bar_config(disable=True)
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    calls = check_plain_zero_guided(pipe, image=image, strength=0.8, num_inference_steps=5)
    high_times = [int(c["timestep"].flatten()[0]) for c in calls if c["sample"].shape[-1] == 16]
    assert high_times == [601, 401, 201, 1]  # the shortened schedule, read from each call
    assert [int(high["timestep"][0]) for high, _ in guided_pairs(calls)] == [601, 401]  # w_t > 0 for t >= 400


def test_controlnet_residuals_are_block_averaged_for_the_lowres_call():
    calls = check_plain_zero_guided(load("controlnet"))
    high, low = calls[:2]
    assert len(high["down_block_additional_residuals"]) == len(low["down_block_additional_residuals"]) == 4
    for h, lo in zip(high["down_block_additional_residuals"], low["down_block_additional_residuals"]):
        assert h.abs().max() > 0 and torch.allclose(lo, F.avg_pool2d(h, 2), atol=1e-6)
    assert torch.allclose(low["mid_block_additional_residual"], F.avg_pool2d(high["mid_block_additional_residual"], 2))


def test_animatediff_controlnet_residuals_are_block_averaged_in_frames_and_space():
    video, controlnet = load("animatediff"), load("controlnet").controlnet
    pipe = diffusers.AnimateDiffControlNetPipeline(
        controlnet=controlnet,
        **{
            name: video.components[name]
            for name in ("vae", "text_encoder", "tokenizer", "unet", "motion_adapter", "scheduler")
        },
    )
    pipe.set_progress_bar_config(disable=True)
    frames = list(torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(6)))
    calls = check_plain_zero_guided(
        pipe, UpsampleGuidanceConfig(factor=(2, 2, 2), theta=1.0, eta=0.6), conditioning_frames=frames, num_frames=4
    )
    high, low = guided_pairs(calls)[0]
    for h, lo in zip(high["down_block_additional_residuals"], low["down_block_additional_residuals"]):
        video_residual = h.unflatten(0, (-1, 4)).transpose(1, 2)  # (B·F, C, h, w) -> (B, C, F, h, w)
        expected = F.avg_pool3d(video_residual, 2).transpose(1, 2).flatten(0, 1)
        assert torch.allclose(lo, expected, atol=1e-6)


def test_t2i_adapter_residuals_are_block_averaged_for_the_lowres_call():
    calls = check_plain_zero_guided(load("t2i_adapter"))
    high, low = calls[:2]
    assert len(high["down_intrablock_additional_residuals"]) == 2
    for h, lo in zip(high["down_intrablock_additional_residuals"], low["down_intrablock_additional_residuals"]):
        assert torch.allclose(lo, F.avg_pool2d(h, 2), atol=1e-6)


def test_lora_loaded_unet(tmp_path):
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    source = load("sd15")
    source.unet.add_adapter(
        LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False)
    )
    lora_layers = get_peft_model_state_dict(source.unet)
    diffusers.StableDiffusionPipeline.save_lora_weights(tmp_path, unet_lora_layers=lora_layers)
    pipe = load("sd15")
    without_lora = run(pipe)
    pipe.load_lora_weights(tmp_path)
    assert not torch.equal(run(pipe), without_lora)
    calls = check_plain_zero_guided(pipe, cross_attention_kwargs={"scale": 0.5})
    high, low = guided_pairs(calls)[0]
    assert low["cross_attention_kwargs"] is high["cross_attention_kwargs"]


def test_ip_adapter_image_embeds_pass_unchanged():
    pipe = load("sd15")
    pipe.load_ip_adapter(ip_adapter_state_dict(pipe.unet), subfolder="", weight_name="", image_encoder_folder=None)
    embeds = [torch.randn(2, 1, TEXT_DIM, generator=torch.Generator().manual_seed(5))]  # (negative, positive)
    without = run(pipe, ip_adapter_image_embeds=[torch.zeros_like(embeds[0])])
    assert not torch.equal(run(pipe, ip_adapter_image_embeds=embeds), without)
    calls = check_plain_zero_guided(pipe, ip_adapter_image_embeds=embeds)
    high, low = guided_pairs(calls)[0]
    assert low["added_cond_kwargs"]["image_embeds"] is high["added_cond_kwargs"]["image_embeds"]


def test_pixel_unet2dmodel_pipeline():
    calls = check_plain_zero_guided(load("pixel"), UpsampleGuidanceConfig(factor=2, theta=1.0, eta=1.0))
    assert len(guided_pairs(calls)) == 2
