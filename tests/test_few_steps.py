"""Few-step calls (issue: FLUX.1-schnell, SDXL with LCM/TCD at 1–8 steps): the denoiser calls of every preset at steps
1, 2, 4, 8 against their closed form, on tiny SD 1.5 pipelines with the DDIM, LCM and TCD schedulers, a tiny SDXL
with LCM and TCD, and a tiny FLUX with FLUX.1-dev's and FLUX.1-schnell's schedulers; the fast recipe never makes
more calls than plain sampling at the same steps. Calls are counted at the denoiser's first layer (the UNet's
``conv_in``, FLUX's ``x_embedder``), once per evaluation whatever the batch, and grouped by the size they ran at
(latent pixels, or FLUX's image tokens)."""

import math
import warnings
from collections import Counter

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from hook_helpers import PROMPT
from tiny_pipelines import load

import hiresdiff
from hiresdiff.methods.freescale import DilationConfig
from hiresdiff.methods.upsample_guidance import FLOW_ETA, LATENT_ETA
from hiresdiff.recipe import Recipe
from hiresdiff.sampling.schedulers import make_scheduler

TRAINED = 8  # the tiny pipelines' trained latent side (16² pixels)
PRESETS = ("naive", "ug", "self-cascade", "freescale", "freescale+ug", "fast", "fast+ug")
STEPS = (1, 2, 4, 8)
#: (pipeline, scheduler): FLUX's own (dynamic shifting, FLUX.1-dev's) or FLUX.1-schnell's (static shift 1); the tiny
#: FLUX has no guidance embedding, as schnell
SETUPS = (
    ("sd15", "ddim"),
    ("sd15", "lcm"),
    ("sd15", "tcd"),
    ("sdxl", "lcm"),
    ("sdxl", "tcd"),
    ("flux", None),
    ("flux", "schnell"),
)
#: the fast recipe's later stages run FAST_STAGE_STEPS = 3 each, shared with stage 0 within the call's steps: at
#: most ⌊⌊N/2⌋ / their number⌋ each (at least 1), one jump stage when N < the stages, plain sampling at N = 1.
#: Worked out by hand: {scale: {steps: [calls at the trained size, ×2, ×4]}} (a missing size runs no call).
FAST_CALLS = {
    2: {1: [0, 1], 2: [1, 1], 4: [2, 2], 8: [5, 3]},
    4: {1: [0, 0, 1], 2: [1, 0, 1], 4: [2, 1, 1], 8: [4, 2, 2]},
}


def count_calls(kind: str, scheduler, preset: str, steps: int, scale: int) -> Counter:
    pipe = load(kind)
    if scheduler == "schnell":
        pipe.scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=False, shift=1.0)
    elif scheduler is not None:
        pipe.scheduler = make_scheduler(scheduler, pipe.scheduler.config)
    denoiser = pipe.transformer if kind == "flux" else pipe.unet
    first = denoiser.x_embedder if kind == "flux" else denoiser.conv_in
    calls = Counter()

    def record(module, args):
        x = args[0]
        side = math.isqrt(x.shape[1]) * 2 if kind == "flux" else x.shape[-1]  # FLUX: 2×2 latents a token
        calls[side // TRAINED] += 1

    handle = first.register_forward_pre_hook(record)
    side = TRAINED * scale * 2  # both VAEs halve the sides
    extra = dict(max_sequence_length=16) if kind == "flux" else {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the few-step fallbacks say what they do; tested below
            hiresdiff.generate(
                pipe, PROMPT, height=side, width=side, recipe=preset, steps=steps, output_type="latent", **extra
            )
    finally:
        handle.remove()
    return calls


def ug_calls(grid: int, start: int, flow: bool) -> int:
    """UG's trained-size calls in a stage running steps start…grid−1 of its grid: those at step fraction p < η (the
    family's: 0.6 on a latent UNet, 1 on a flow transformer)."""
    eta = FLOW_ETA if flow else LATENT_ETA
    return sum(1 for i in range(start, grid) if i / grid < eta - 1e-9)


def expected_calls(preset: str, steps: int, scale: int, flow: bool) -> Counter:
    """The closed form: plain sampling N calls at the target; UG one more at the trained size per step in its window;
    a cascade N at the trained size, then per later stage (sides doubling) the last int(N·strength) steps of its
    N-step grid (strength 0.7, flow 0.3), or the last step of a ⌈1/strength⌉-step grid when that is none."""
    ug = preset.endswith("+ug") or preset == "ug"
    if preset.startswith("fast"):
        calls = Counter({2**i: n for i, n in enumerate(FAST_CALLS[scale][steps]) if n})
        if ug and steps == 1:  # plain sampling at the target, with UG
            calls[1] += ug_calls(1, 0, flow)
        elif ug and flow:  # η = 1: UG in every step of the later stage (at 2×: one, of a ⌈k/0.3⌉ grid)
            calls[1] += calls[2]
        return calls  # on a UNet the later stages restart at p ≥ 0.7 > η: no UG call there
    if preset in ("naive", "ug"):
        return Counter({scale: steps, 1: ug_calls(steps, 0, flow)} if ug else {scale: steps})
    strength = 0.3 if flow else 0.7
    calls = Counter({1: steps})
    for stage in range(1, int(math.log2(scale)) + 1):
        grid = steps if int(steps * strength) >= 1 else math.ceil(1 / strength - 1e-9)
        start = grid - int(grid * strength)
        calls[2**stage] += grid - start
        if ug:
            calls[2 ** (stage - 1)] += ug_calls(grid, start, flow)
    return calls


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("kind,scheduler", SETUPS)
def test_calls_of_every_preset_at_few_steps_match_their_closed_form(kind, scheduler, preset, steps):
    scale = 2 if "ug" in preset else 4  # UG at 4× nests a second level; its counts are tested in the UG tests
    flow = kind == "flux"
    calls = count_calls(kind, scheduler, preset, steps, scale)
    assert calls == expected_calls(preset, steps, scale, flow)


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("kind,scheduler", SETUPS)
def test_the_fast_recipe_makes_no_more_calls_than_plain_sampling(kind, scheduler, steps):
    fast = count_calls(kind, scheduler, "fast", steps, 4)
    naive = count_calls(kind, scheduler, "naive", steps, 4)
    assert sum(fast.values()) <= sum(naive.values()) == steps


def test_a_few_step_cascade_says_what_it_does_instead():
    pipe = load("sd15")
    kwargs = dict(height=64, width=64, output_type="latent")
    with pytest.warns(UserWarning, match="steps=1 cannot share one denoiser call among 3 stages: plain sampling"):
        hiresdiff.generate(pipe, PROMPT, recipe="fast", steps=1, **kwargs)
    with pytest.warns(UserWarning, match="steps=2 cannot give each of the cascade's 3 stages a step: it jumps"):
        hiresdiff.generate(pipe, PROMPT, recipe="fast", steps=2, **kwargs)
    with pytest.warns(UserWarning, match=r"steps=1 × strength 0.7 < 1 .* the last step of a 2-step grid"):
        hiresdiff.generate(pipe, PROMPT, recipe="self-cascade", steps=1, **kwargs)


def test_fast_at_one_step_is_plain_sampling_bit_for_bit():
    """The 1-step fallback is the plain call at the target with the recipe's per-call parts (fast: FreeScale's
    restrained dilation, which a single step at p = 0 runs)."""
    pipe = load("sd15")
    kwargs = dict(height=32, width=32, steps=1, seed=5, output_type="latent")
    with pytest.warns(UserWarning, match="plain sampling"):
        fast = hiresdiff.generate(pipe, PROMPT, recipe="fast", **kwargs)
    plain = hiresdiff.generate(pipe, PROMPT, recipe=Recipe(dilation=DilationConfig()), **kwargs)
    assert torch.equal(fast, plain)
