"""The one time axis of every window (hiresdiff.core.step_fraction): a part configured for a share of the steps acts
on that share of the steps — counted from the denoiser's calls — on a VP model (uniform and Karras grids), an EDM
model and a flow model with FLUX's resolution-shifted grid, at 2× and 4×. Closed form: the first ⌈share·N⌉ of N."""

import math

import numpy as np
import pytest
import torch
from diffusers import EDMEulerScheduler, HeunDiscreteScheduler
from hook_helpers import PROMPT
from tiny_pipelines import load

import hiresdiff
from hiresdiff.core.step_fraction import in_window, step_fraction
from hiresdiff.hooks.call_context import scheduler_clock
from hiresdiff.methods.freescale import DilationConfig
from hiresdiff.methods.positions import PositionConfig
from hiresdiff.methods.upsample_guidance import UpsampleGuidanceConfig
from hiresdiff.recipe import Recipe
from hiresdiff.sampling.schedulers import make_scheduler

STEPS = 10


def test_step_fraction_is_the_step_index_over_n_and_linear_between_steps():
    grid = torch.tensor([900.0, 700.0, 400.0, 100.0])
    assert torch.allclose(step_fraction(grid, grid), torch.tensor([0.0, 0.25, 0.5, 0.75], dtype=torch.float64))
    assert float(step_fraction(550.0, grid)) == pytest.approx(0.375)  # halfway between steps 1 and 2
    assert float(step_fraction(50.0, grid)) == pytest.approx(0.875)  # below the last step: on to p = 1 at t = 0
    assert float(step_fraction(999.0, grid)) == 0.0 and float(step_fraction(0.0, grid)) == 1.0
    # a repeated time keeps its first step; no grid: the continuous limit
    assert float(step_fraction(700.0, torch.tensor([900.0, 700.0, 700.0, 100.0]))) == pytest.approx(0.25)
    assert float(step_fraction(300.0, None, 1000.0)) == pytest.approx(0.7)
    assert in_window(0.55, 0.6) and not in_window(0.6, 0.6) and not in_window(0.0, 0.0) and in_window(0.99, 1.0)


def test_a_second_order_grid_counts_each_step_once():
    heun = HeunDiscreteScheduler()
    heun.set_timesteps(4)  # timesteps t0, t1, t1, t2, t2, t3, t3: every step but the first evaluates twice
    clock = scheduler_clock(lambda: heun, heun.config.num_train_timesteps)
    starts = heun.timesteps[::2]
    assert torch.allclose(clock(starts), torch.tensor([0.0, 0.25, 0.5, 0.75], dtype=torch.float64))


class Calls:
    """Counts the denoiser's calls by the latent side they run at, seen by its input layer (every call passes it, also
    those a hook makes past the denoiser's own ``__call__``)."""

    def __init__(self, denoiser):
        self.flow = hasattr(denoiser, "x_embedder")
        self.sizes = []
        layer = denoiser.x_embedder if self.flow else denoiser.conv_in
        self.handle = layer.register_forward_pre_hook(self.record)

    def record(self, module, args):
        x = args[0]
        self.sizes.append(int(round(math.sqrt(x.shape[1]))) * 2 if self.flow else x.shape[-1])

    def count(self, size) -> int:
        return self.sizes.count(size)


def vp_pipe(scheduler: str):
    pipe = load("sd15")
    if scheduler == "edm":
        pipe.scheduler = make_scheduler("edm-dpm++", EDMEulerScheduler().config)
    else:
        pipe.scheduler = make_scheduler(scheduler, pipe.scheduler.config)
    return pipe


def generate(pipe, recipe, pixels, **kw):
    return hiresdiff.generate(
        pipe, PROMPT, height=pixels, width=pixels, recipe=recipe, seed=0, steps=STEPS, output_type="latent", **kw
    )


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("eta", [0.3, 0.6])
@pytest.mark.parametrize("family", ["vp", "vp-karras", "flow"])
def test_ug_guides_the_first_eta_of_the_steps(family, eta, scale):
    """UG's low-resolution calls (its outer level's, at half the target's side) happen in ⌈η·N⌉ steps."""
    if family == "flow":
        pipe, extra = load("flux"), {"max_sequence_length": 16}
    else:
        pipe, extra = vp_pipe("dpm++_karras" if family == "vp-karras" else "dpm++"), {}
    trained = 8  # both tiny pipelines: 16² pixels, latent 8²
    calls = Calls(pipe.transformer if family == "flow" else pipe.unet)
    try:
        generate(pipe, Recipe.upsample_guidance(eta=eta), 16 * scale, **extra)
    finally:
        calls.handle.remove()
    target = trained * scale
    assert calls.count(target) == STEPS
    assert calls.count(target // 2) == math.ceil(eta * STEPS)


def test_eta_changes_the_flux_sample_at_4x_on_its_shifted_grid():
    """The issue's symptom: on FLUX's resolution-shifted grid every σ but the last is high, so a window in σ made η
    inert; on the step fraction η 1, 0.6 and 0.3 give three different samples."""
    pipe = load("flux")
    samples = [generate(pipe, Recipe.upsample_guidance(eta=eta), 64, max_sequence_length=16) for eta in (1.0, 0.6, 0.3)]
    sigmas = pipe.scheduler.sigmas  # the last call's grid, at 64² pixels
    assert (sigmas[:-1] > 0.3).sum() >= STEPS - 1  # a σ ≥ 1 − η window would have guided every step
    for a, b in ((0, 1), (1, 2), (0, 2)):
        assert not torch.allclose(samples[a], samples[b])


class WindowSpy:
    """Wraps a config class's ``is_active`` and records, per denoiser call, whether the window was open."""

    def __init__(self, monkeypatch, cls, calls: Calls):
        original = cls.is_active
        self.open_calls = set()

        def spy(config, progress):
            active = original(config, progress)
            if active:
                self.open_calls.add(len(calls.sizes))
            return active

        monkeypatch.setattr(cls, "is_active", spy)


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("until", [0.3, 0.7])
@pytest.mark.parametrize("family", ["vp", "vp-karras", "edm"])
def test_dilation_acts_in_the_first_until_of_the_steps(monkeypatch, family, until, scale):
    pipe = vp_pipe({"vp": "dpm++", "vp-karras": "dpm++_karras", "edm": "edm"}[family])
    calls = Calls(pipe.unet)
    spy = WindowSpy(monkeypatch, DilationConfig, calls)
    try:
        generate(pipe, Recipe(dilation=DilationConfig(until=until)), 16 * scale)
    finally:
        calls.handle.remove()
    assert len(calls.sizes) == STEPS
    assert len(spy.open_calls) == math.ceil(until * STEPS)
    assert spy.open_calls == set(range(1, math.ceil(until * STEPS) + 1))  # the first calls, in order


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("until", [0.3, 0.7])
def test_flow_position_rescaling_acts_in_the_first_until_of_the_steps(monkeypatch, until, scale):
    pipe = load("flux")
    calls = Calls(pipe.transformer)
    spy = WindowSpy(monkeypatch, PositionConfig, calls)
    try:
        generate(pipe, Recipe(positions=PositionConfig("pi", until=until)), 16 * scale, max_sequence_length=16)
    finally:
        calls.handle.remove()
    assert len(calls.sizes) == STEPS
    assert spy.open_calls == set(range(1, math.ceil(until * STEPS) + 1))


def test_a_restarted_stage_reads_the_window_on_its_full_grid(monkeypatch):
    """A cascade's later stage starts at step K = N − int(N·strength) of its grid: its first call has p = K/N, so
    a window of share u covers max(0, ⌈u·N⌉ − K) of its steps (here FreeScale: strength 0.7, dilation 0.7 → 4 of 7)."""
    pipe = vp_pipe("dpm++")
    calls = Calls(pipe.unet)
    spy = WindowSpy(monkeypatch, DilationConfig, calls)
    try:
        generate(pipe, Recipe.freescale(), 32)
    finally:
        calls.handle.remove()
    restart = STEPS - int(STEPS * 0.7)
    assert calls.count(16) == STEPS - restart and calls.count(8) == STEPS
    assert len(spy.open_calls) == math.ceil(0.7 * STEPS) - restart


def test_ug_weights_on_a_bare_denoiser_fall_back_to_the_continuous_clock():
    config = UpsampleGuidanceConfig(theta=1.0, eta=0.6)
    times = np.array([999.0, 401.0, 400.0, 0.0])
    weights = config.weight(step_fraction(times, None, 1000.0))
    assert weights.tolist() == [1.0, 1.0, 0.0, 0.0]
