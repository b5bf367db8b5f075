"""Upsample Guidance hooks on SD1.5-, SD2-v-, SDXL- and AnimateDiff-like tiny pipelines (diffusers-style:
enabled differs, disabled and removed equal the baseline bit for bit, apply/remove repeatable)."""

import math

import pytest
import torch
from hook_helpers import (
    UNetCallRecorder,
    assert_same_snapshot,
    block_mean,
    expected_lowres_sample,
    expected_tau,
    run,
    unet_snapshot,
)
from tiny_pipelines import load

from hiresdiff.methods.upsample_guidance import UpsampleGuidanceConfig
from hiresdiff.sampling.family_parts import apply_upsample_guidance, remove_upsample_guidance
from hiresdiff.unet.lowres_call import lowres_conditioning

FAMILIES = ["sd15", "sd2v", "sdxl", "animatediff"]
UG = UpsampleGuidanceConfig(factor=2, theta=1.0, eta=0.5)  # DDIM, 2 steps: the first (t = 501) guided, the second not


@pytest.mark.parametrize("kind", FAMILIES)
def test_theta_zero_equals_plain_and_theta_positive_differs(kind):
    pipe = load(kind)
    plain = run(pipe)
    apply_upsample_guidance(pipe, UpsampleGuidanceConfig(factor=2, theta=0.0))
    zero = run(pipe)
    remove_upsample_guidance(pipe)
    apply_upsample_guidance(pipe, UG)
    guided = run(pipe)
    remove_upsample_guidance(pipe)
    assert torch.equal(zero, plain)
    assert guided.shape == plain.shape and torch.isfinite(guided).all()
    assert (guided - plain).abs().max() > 1e-3


@pytest.mark.parametrize("kind", FAMILIES)
def test_apply_remove_apply_restores_unet_and_output_exactly(kind):
    pipe = load(kind)
    before = unet_snapshot(pipe.unet)
    plain = run(pipe)
    guided = []
    for _ in range(2):
        apply_upsample_guidance(pipe, UG)
        guided.append(run(pipe))
        remove_upsample_guidance(pipe)
        assert_same_snapshot(unet_snapshot(pipe.unet), before)
        assert "forward" not in vars(pipe.unet) and not hasattr(pipe.unet, "_diffusers_hook")
        assert torch.equal(run(pipe), plain)
    assert torch.equal(guided[0], guided[1])


@pytest.mark.parametrize("kind", FAMILIES)
def test_lowres_call_gets_tau_power_downsampled_latents_and_same_conditioning(kind):
    pipe = load(kind)
    with UNetCallRecorder(pipe.unet) as recorder:
        apply_upsample_guidance(pipe, UG)
        run(pipe)
        remove_upsample_guidance(pipe)
    high, low, last = recorder.calls  # step 1 at t=501: high + low; step 2 at t=1: w=0, no low call
    ac = pipe.scheduler.alphas_cumprod
    t = int(high["timestep"].unique())
    factors = (1, 2, 2) if kind == "animatediff" else (2, 2)
    assert t == 501 and int(last["timestep"]) == 1
    assert last["sample"].shape == high["sample"].shape
    assert torch.allclose(low["sample"], expected_lowres_sample(high["sample"], ac, t, factors), atol=1e-5)
    assert low["timestep"].shape == (high["sample"].shape[0],)
    assert low["timestep"] == pytest.approx(expected_tau(ac, t, k=4), abs=1e-3)
    assert low["encoder_hidden_states"] is high["encoder_hidden_states"]  # AnimateDiff: one copy per frame
    assert low.get("cross_attention_kwargs") is high.get("cross_attention_kwargs")
    if kind == "sdxl":
        assert low["added_cond_kwargs"]["text_embeds"] is high["added_cond_kwargs"]["text_embeds"]


@pytest.mark.parametrize("kind", ["sd15", "sd2v", "animatediff"])
def test_guided_output_is_eq4_in_the_models_prediction_type(kind):
    """ε̃ = ε_h + w·U[ε_l/√k − D[ε_h]], each prediction converted to ε at its own ᾱ (v: ε = √ᾱ v + √(1−ᾱ) x)."""
    pipe = load(kind)
    with UNetCallRecorder(pipe.unet) as plain_run:
        run(pipe)
    arguments = plain_run.calls[0]
    with UNetCallRecorder(pipe.unet) as recorder:
        apply_upsample_guidance(pipe, UpsampleGuidanceConfig(factor=2, theta=1.3, eta=0.6))
        output = pipe.unet(**arguments)
        remove_upsample_guidance(pipe)
    assert type(output) is type(plain_run.outputs[0])  # the UNet's native output: tuple or UNet…Output
    guided = output[0]
    (high, low), (out_high, out_low) = recorder.calls, [out[0] for out in recorder.outputs]
    t, k = int(arguments["timestep"]), 4
    a = float(pipe.scheduler.alphas_cumprod[t])
    a_tau = k * a / (1 + (k - 1) * a)  # ᾱ(τ): SNR(τ) = k·SNR(t)
    v = pipe.scheduler.config.prediction_type == "v_prediction"
    to_eps = (lambda pred, x, ab: math.sqrt(ab) * pred + math.sqrt(1 - ab) * x) if v else (lambda pred, x, ab: pred)
    eps_high, eps_low = to_eps(out_high, high["sample"], a), to_eps(out_low, low["sample"], a_tau)
    factors = (1, 2, 2) if kind == "animatediff" else (2, 2)
    up = eps_low / 2 - block_mean(eps_high, factors)
    for dim, f in enumerate(factors, start=eps_high.ndim - len(factors)):
        up = up.repeat_interleave(f, dim)
    eps = eps_high + 1.3 * up
    expected = (eps - math.sqrt(1 - a) * arguments["sample"]) / math.sqrt(a) if v else eps
    assert torch.allclose(guided, expected, atol=1e-4)


@pytest.mark.parametrize("choice, divisor", [("scale", 2.0), ("keep", 1.0)])
def test_sdxl_lowres_time_ids(choice, divisor):
    pipe = load("sdxl")
    plain = run(pipe)
    with UNetCallRecorder(pipe.unet) as recorder:
        apply_upsample_guidance(pipe, UG, sdxl_time_ids=choice)
        guided = run(pipe)
        remove_upsample_guidance(pipe)
    high, low = recorder.calls[:2]
    high_ids, low_ids = high["added_cond_kwargs"]["time_ids"], low["added_cond_kwargs"]["time_ids"]
    assert high_ids[0].tolist() == [32, 32, 0, 0, 32, 32]  # original size, crop top-left, target size
    assert torch.equal(low_ids, high_ids / divisor)
    assert (guided - plain).abs().max() > 1e-3


def test_sdxl_refiner_time_ids_keep_the_aesthetic_score():
    time_ids = torch.tensor([[1024.0, 768.0, 64.0, 32.0, 6.0]])  # original size, crop top-left, aesthetic score
    added = {"text_embeds": torch.zeros(1, 8), "time_ids": time_ids}
    low = lowres_conditioning({"added_cond_kwargs": added}, (1, 4, 128, 96), factor=(2, 4))["added_cond_kwargs"]
    assert low["time_ids"].tolist() == [[512.0, 192.0, 32.0, 8.0, 6.0]]
    assert low["text_embeds"] is added["text_embeds"]


def test_sdxl_time_id_choices_give_different_images():
    pipe = load("sdxl")
    outputs = []
    for choice in ("scale", "keep"):
        apply_upsample_guidance(pipe, UG, sdxl_time_ids=choice)
        outputs.append(run(pipe))
        remove_upsample_guidance(pipe)
    assert not torch.equal(*outputs)


@pytest.mark.parametrize(
    "factor, low_shape",
    [((2, 1, 1), (2, 16, 16)), ((2, 2, 2), (2, 8, 8)), (2, (4, 8, 8))],
    ids=["temporal", "spatio-temporal", "spatial"],
)
def test_animatediff_factors_keep_frame_count(factor, low_shape):
    pipe = load("animatediff")
    plain = run(pipe, num_frames=4)
    with UNetCallRecorder(pipe.unet) as recorder:
        apply_upsample_guidance(pipe, UpsampleGuidanceConfig(factor=factor, theta=1.0, eta=0.6))
        frames = run(pipe, num_frames=4)
        remove_upsample_guidance(pipe)
    high, low = recorder.calls[:2]
    assert tuple(high["sample"].shape[2:]) == (4, 16, 16)
    assert tuple(low["sample"].shape[2:]) == low_shape
    assert frames.shape == plain.shape == (1, 4, 32, 32, 3)
    assert (frames - plain).abs().max() > 1e-3
    ac = pipe.scheduler.alphas_cumprod
    factors = (1, factor, factor) if isinstance(factor, int) else factor
    k = math.prod(factors)
    t = int(high["timestep"].unique())
    assert torch.allclose(low["sample"], expected_lowres_sample(high["sample"], ac, t, factors), atol=1e-5)
    assert low["timestep"] == pytest.approx(expected_tau(ac, t, k), abs=1e-3)
    frame_step = factors[0]  # the pipeline repeats the prompt per frame; the low call gets one per low frame
    assert torch.equal(low["encoder_hidden_states"], high["encoder_hidden_states"][::frame_step])


def test_exception_inside_unet_leaves_no_state_behind():
    reference_pipe = load("sd15")
    apply_upsample_guidance(reference_pipe, UG)
    reference = run(reference_pipe)
    pipe = load("sd15")
    plain = run(pipe)
    with UNetCallRecorder(pipe.unet, fail_at=2) as recorder:  # the low-res call of the first step
        apply_upsample_guidance(pipe, UG)
        with pytest.raises(RuntimeError, match="simulated failure"):
            run(pipe)
        recorder.fail_at = None
        assert torch.equal(run(pipe), reference)
        remove_upsample_guidance(pipe)
        assert torch.equal(run(pipe), plain)
