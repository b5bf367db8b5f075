"""Noise shared between a clip's frames (PYoCo's mixed prior): the map's covariance in closed form, stage 0's draw
and a cascade's restart noise under ``frame_noise_share``, bad values refused."""

import pytest
import torch
from hook_helpers import PROMPT
from tiny_pipelines import load

import hiresdiff
from hiresdiff.core.noise import frame_shared_noise
from hiresdiff.methods.self_cascade import CascadeConfig, resize
from hiresdiff.recipe import Recipe
from hiresdiff.sampling import generate as generate_module
from hiresdiff.sampling.restart import stage_generator
from hiresdiff.sampling.schedulers import EDM_ONLY, SCHEDULERS, make_scheduler

FRAMES = 4


@pytest.mark.parametrize("share", [0.0, 0.3, 0.6, 1.0])
@pytest.mark.parametrize("frames", [2, 8])
def test_the_mixed_noise_has_unit_variance_and_the_shared_correlation_exactly(share, frames):
    """The map is linear: applied to the identity it is a matrix M whose M·Mᵀ must be (1 − s)·I + s·11ᵀ, the
    covariance of √s·ε_shared + √(1 − s)·ε_f (PYoCo's mixed prior)."""
    basis = torch.eye(frames, dtype=torch.float64).view(frames, 1, frames, 1, 1)  # row k: the unit draw on frame k
    m = frame_shared_noise(basis, share).view(frames, frames).T
    expected = (1 - share) * torch.eye(frames, dtype=torch.float64) + share * torch.ones(frames, frames)
    assert torch.allclose(m @ m.T, expected, atol=1e-12)
    noise = torch.randn(3, 2, frames, 4, 4)
    mixed = frame_shared_noise(noise, share)
    if share == 0:
        assert torch.equal(mixed, noise)
    if share == 1:
        assert torch.allclose(mixed, mixed[:, :, :1].expand_as(mixed), atol=1e-6)  # one draw on every frame


def test_frame_noise_share_outside_0_1_or_without_frames_is_refused_before_any_call():
    pipe = load("animatediff")
    for bad in (-0.1, 1.5, "half", True):
        with pytest.raises(ValueError, match=r"frame_noise_share must be a number in \[0, 1\]"):
            hiresdiff.generate(pipe, PROMPT, height=16, width=16, num_frames=FRAMES, frame_noise_share=bad)
    with pytest.raises(ValueError, match="frame_noise_share=0.5 correlates a clip's noise .* give num_frames"):
        hiresdiff.generate(load("sd15"), PROMPT, height=16, width=16, frame_noise_share=0.5)


@pytest.mark.parametrize("scheduler", [name for name in SCHEDULERS if name not in EDM_ONLY])
def test_stage_0_starts_from_the_pipelines_own_draw_mixed_between_frames(scheduler):
    """``frame_noise_share`` = the plain pipeline called with ``latents`` = its own draw (stage 0's generator) mixed
    by the map, the generator going on from there (a stochastic scheduler's per-step noise), under every scheduler
    a user can choose; latents the caller passes are used as given."""
    pipe = load("animatediff")
    pipe.scheduler = make_scheduler(scheduler, pipe.scheduler.config)
    call = dict(height=16, width=16, num_frames=FRAMES, output_type="latent")
    shared = hiresdiff.generate(pipe, PROMPT, steps=3, seed=5, frame_noise_share=0.6, **call)
    shape = (1, pipe.unet.config.in_channels, FRAMES, 16 // pipe.vae_scale_factor, 16 // pipe.vae_scale_factor)
    generator = stage_generator(5, 0)
    draw = torch.randn(shape, generator=generator)
    mixed = frame_shared_noise(draw, 0.6)
    expected = pipe(PROMPT, num_inference_steps=3, latents=mixed, generator=generator, **call).frames[0]
    # sigma-form schedulers scale the draw by init_noise_sigma (≈ 15) before or after the mixing: float rounding,
    # carried through the steps (≤ 3e-5 here; a draw mixed otherwise differs by O(1))
    torch.testing.assert_close(shared, expected, rtol=1e-4, atol=1e-4)
    given = hiresdiff.generate(pipe, PROMPT, steps=3, seed=5, frame_noise_share=0.6, latents=draw, **call)
    plain = pipe(PROMPT, num_inference_steps=3, latents=draw, generator=stage_generator(5, 0), **call).frames[0]
    torch.testing.assert_close(given, plain, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("share, shared", [(1.0, True), (0.0, False)])
def test_a_cascades_restart_noise_is_one_draw_on_every_frame_at_share_1(monkeypatch, share, shared):
    """A later stage starts from z = a·φ(pivot) + b·ε: with ε the same on every frame (share 1) the start's
    deviations from its frame mean are exactly a·(φ(pivot)'s deviations); with independent frames they are not."""
    pipe = load("animatediff")
    starts, pivots = [], []
    real_restart = generate_module._restart

    def spying(*args, **kwargs):
        real_restart(*args, **kwargs)
        starts.append(args[6]["latents"].clone())  # the later stage's call, as _restart prepared it

    monkeypatch.setattr(generate_module, "_restart", spying)
    cascade = CascadeConfig(space="latent", strength=0.6)
    hiresdiff.generate(
        pipe, PROMPT, height=32, width=32, num_frames=FRAMES, steps=4, recipe=Recipe(cascade=cascade),
        frame_noise_share=share, output_type="latent", on_stage=lambda stage, z: pivots.append(z),
    )  # fmt: skip
    (start,), (pivot,) = starts, pivots
    up = resize(pivot, start.shape[-2:], cascade.upsample)
    d, u = start - start.mean(2, keepdim=True), up - up.mean(2, keepdim=True)
    a = (d * u).sum() / (u * u).sum()
    residual = float((d - a * u).norm() / d.norm())
    assert (residual < 1e-4) if shared else (residual > 0.05)  # float32 rounding vs the noise's share (0.14 here)
