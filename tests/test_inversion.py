"""Restart by inversion (hiresdiff.sampling.inversion): the walk against closed forms in exact worlds (a point mass, a
Gaussian), in the three scheduler forms (VP, σ, flow matching), and the cascade's use of it through the pipelines."""

import contextlib
import math

import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler
from test_flow_transformers import STEPS as FLOW_STEPS
from test_flow_transformers import run as flow_run
from test_sampling_core import STEPS, pipeline_run
from tiny_pipelines import load

from hiresdiff.methods.self_cascade import CascadeConfig, implied_noise, injected_noise, restart_index
from hiresdiff.recipe import Recipe
from hiresdiff.sampling.inversion import InvertingScheduler
from hiresdiff.sampling.noise_levels import NoiseLevels
from hiresdiff.sampling.restart import RestartedScheduler
from hiresdiff.sampling.schedulers import EDM_ONLY, SCHEDULERS, make_scheduler

S = 0.7  # the Gaussian world's data standard deviation
SD_BETAS = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
SD_DDIM = dict(SD_BETAS, clip_sample=False, set_alpha_to_one=True)  # SD 1.5's, its last step to ᾱ = 1
FORMS = {
    "ddim-epsilon": lambda: DDIMScheduler(**SD_DDIM),
    "ddim-v": lambda: DDIMScheduler(**SD_DDIM, prediction_type="v_prediction"),
    "euler": lambda: EulerDiscreteScheduler(**SD_BETAS),
    "flow": lambda: FlowMatchEulerDiscreteScheduler(shift=3.0),
}


def level(form: str, scheduler, t) -> tuple[float, float]:
    """(a, b) of x = a·x₀ + b·ε at timestep ``t``, read from the scheduler's own tables (not from NoiseLevels)."""
    if form == "flow":
        sigma = float(t) / scheduler.config.num_train_timesteps
        return 1 - sigma, sigma
    if form == "euler":
        index = (scheduler.timesteps == t).nonzero()[0].item()
        return 1.0, float(scheduler.sigmas[index])
    alpha_bar = float(scheduler.alphas_cumprod[int(t)])
    return math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)


def model_of(form: str, scheduler, posterior):
    """The model whose output is the exact posterior mean of a world, in the scheduler's parametrisation: ``posterior``
    maps (x, a, b) to (E[x₀|x], E[ε|x]) for x = a·x₀ + b·ε."""

    def model(model_input, t):
        a, b = level(form, scheduler, t)
        x = model_input * math.sqrt(1 + b * b) if form == "euler" else model_input  # Euler's input is x/√(1+σ²)
        x0, eps = posterior(x, a, b)
        if form == "flow":
            return eps - x0
        if form == "ddim-v":
            return a * eps - b * x0
        return eps

    return model


def gaussian(x, a, b):
    """Data N(0, S²): E[ε|x] = b·x/(a²S² + b²), E[x₀|x] = a·S²·x/(a²S² + b²)."""
    var = a * a * S * S + b * b
    return a * S * S * x / var, b * x / var


def point_mass(center):
    def posterior(x, a, b):
        return center.expand_as(x), (x - a * center) / b

    return posterior


def walk(form: str, steps: int, strength: float, x0: torch.Tensor, posterior):
    """Run the inversion as a pipeline does (set_timesteps, scale_model_input, the model, step); returns the
    inverted latents, the restarted scheduler and the walk."""
    restarted = RestartedScheduler(FORMS[form](), restart_index(steps, strength))
    restarted.set_timesteps(steps)
    inverting = InvertingScheduler(restarted, NoiseLevels.of(restarted.inner, steps), form == "flow")
    inverting.set_timesteps(steps)
    model, x = model_of(form, restarted.inner, posterior), x0
    for t in inverting.timesteps:
        x = inverting.step(model(inverting.scale_model_input(x, t), t), t, x).prev_sample
    assert inverting.calls == steps - restarted.begin
    return x, restarted, inverting


def walk_gain(form: str, restarted) -> float:
    """The closed form of the Gaussian world's walk: each call maps x to x·[a_n(1 − b_s·g)/a_s + b_n·g], g = b_e/(a_e²S²
    + b_e²) at the level e of its timestep, s the state's level (the clean pivot first: a = 1, b = 0), n the next."""
    inner = restarted.inner
    starts = [level(form, inner, inner.timesteps[i]) for i in range(restarted.begin, len(inner.timesteps))]
    gain, state = 1.0, (1.0, 0.0)
    for e, n in zip([starts[-1], *starts[::-1][:-1]], starts[::-1]):
        g = e[1] / (e[0] ** 2 * S * S + e[1] ** 2)
        gain *= n[0] * (1 - state[1] * g) / state[0] + n[1] * g
        state = n
    return gain


@pytest.mark.parametrize("form", sorted(FORMS))
def test_the_walk_in_a_gaussian_world_is_its_closed_form_and_reaches_the_restart_levels_statistics(form):
    x0 = S * torch.randn(8, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    gaps = []
    for steps in (10, 40):
        inverted, restarted, _ = walk(form, steps, 0.5, x0, gaussian)
        torch.testing.assert_close(inverted, x0 * walk_gain(form, restarted), rtol=2e-5, atol=1e-6)
        a, b = level(form, restarted.inner, restarted.inner.timesteps[restarted.begin])
        marginal = math.sqrt(a * a * S * S + b * b)  # the restart level's standard deviation
        spread = inverted.std().item()
        sampling = 4 * marginal / math.sqrt(2 * inverted.numel())
        gaps.append(abs(walk_gain(form, restarted) * S - marginal) / marginal)
        assert abs(spread - marginal) / marginal <= gaps[-1] + sampling / marginal
    # first order: 4× the steps, a third of the gap or less (measured: 13–22 % at 10 steps, 3.9–5.4 % at 40, 0.9–1.4 %
    # at 160, over the four forms; the first call reads the clean pivot at the last step's level)
    assert gaps[1] < gaps[0] / 3 and gaps[1] < 0.06


@pytest.mark.parametrize("form", sorted(FORMS))
def test_inverting_then_denoising_returns_the_input_in_a_point_mass_world(form):
    """Every x̂₀ is exact here, so the walk up and the scheduler's own steps down lose nothing but float rounding."""
    center = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    steps = 12
    inverted, restarted, inverting = walk(form, steps, 0.6, center.expand(2, -1, -1, -1), point_mass(center))
    noise = implied_noise(inverted, center, *level(form, restarted.inner, restarted.inner.timesteps[restarted.begin]))
    a, b = level(form, restarted.inner, restarted.inner.timesteps[-1])  # the first call's: the last step's level
    torch.testing.assert_close(noise, (center * (1 - a) / b).expand_as(noise), rtol=1e-4, atol=1e-5)  # σ form: 0
    model, x = model_of(form, restarted.inner, point_mass(center)), inverted
    restarted.set_timesteps(steps)
    for t in restarted.timesteps:
        model_input = x if form == "flow" else restarted.scale_model_input(x, t)  # flow pipelines scale nothing
        x = restarted.step(model(model_input, t), t, x).prev_sample
    torch.testing.assert_close(x, center.expand_as(x), rtol=0, atol=2e-5)


def test_injected_noise_keeps_unit_variance_and_its_ends():
    g = torch.Generator().manual_seed(2)
    inverted, fresh = torch.randn(200_000, generator=g), torch.randn(200_000, generator=g)
    assert torch.equal(injected_noise(inverted, fresh, 0.0), inverted)
    assert torch.equal(injected_noise(inverted, fresh, 1.0), fresh)
    for share in (0.1, 0.5):
        assert abs(injected_noise(inverted, fresh, share).var().item() - 1) < 0.01
    x0, eps = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    torch.testing.assert_close(implied_noise(0.6 * x0 + 0.8 * eps, x0, 0.6, 0.8), eps)
    with pytest.raises(ValueError, match="inversion must be None .* in \\[0, 1\\]"):
        CascadeConfig(inversion=1.5)


def counted_calls(pipe):
    calls = []
    denoiser = pipe.unet if hasattr(pipe, "unet") else pipe.transformer
    handle = denoiser.register_forward_pre_hook(lambda module, args: calls.append(1))
    return calls, handle


@pytest.mark.parametrize(
    "kind,scheduler", [("flux", None), *(("sd15", name) for name in sorted(SCHEDULERS) if name not in EDM_ONLY)]
)
def test_a_cascade_restarts_from_the_inversion_at_one_model_call_per_step(kind, scheduler):
    """Through the pipelines, with every scheduler a user can choose (PNDM's later stages sample with DDIM; second-order
    schedulers invert one call per step): γ = 1 is the fresh-noise restart bit for bit (the inversion's call changes no
    state), γ = 0 another start; a later stage makes one more call per step; the pipeline is left as found."""
    pipe, flux = load(kind), kind == "flux"
    if scheduler is not None:
        pipe.scheduler = make_scheduler(scheduler, pipe.scheduler.config)
    config_before = dict(pipe.scheduler.config)

    def run(inversion):
        recipe = Recipe.self_cascade(strength=0.5, inversion=inversion)
        calls, handle = counted_calls(pipe)
        said = pytest.warns(UserWarning, match="PNDM") if scheduler == "pndm" else contextlib.nullcontext()
        try:
            with said:
                out = (
                    flow_run(pipe, kind, recipe, output_type="latent", return_stages=True)
                    if flux
                    else pipeline_run(pipe, recipe)
                )
        finally:
            handle.remove()
        return out, len(calls)

    fresh, fresh_calls = run(None)
    same, same_calls = run(1.0)
    inverted, inverted_calls = run(0.0)
    for a, b in zip(fresh, same):
        assert torch.equal(a, b)
    assert not torch.allclose(fresh[-1], inverted[-1]) and torch.isfinite(inverted[-1]).all()
    steps = FLOW_STEPS if flux else STEPS
    later = steps - restart_index(steps, 0.5)  # SD batches CFG's halves into one call: one call a step
    assert same_calls == inverted_calls == fresh_calls + later
    assert dict(pipe.scheduler.config) == config_before


def test_inversion_with_an_edm_scheduler_is_refused_before_any_call():
    from diffusers import EDMEulerScheduler

    pipe = load("sd15")
    pipe.scheduler = make_scheduler("edm-dpm++", EDMEulerScheduler().config)
    calls, handle = counted_calls(pipe)
    with pytest.raises(ValueError, match="inversion: .*EDM.*inversion=None"):
        pipeline_run(pipe, Recipe.self_cascade(inversion=0.2))
    handle.remove()
    assert not calls
