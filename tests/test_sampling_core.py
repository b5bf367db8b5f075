"""The one sampling core (``hiresdiff.generate``, also under ``hiresdiff.loading.pixel_model.sample``) against
independent computations: a step-by-step loop written here from the scheduler's own ``step``, the closed
form of the restart's first UNet input, and the plain pipeline call; for every scheduler × preset × driver."""

import dataclasses
import math
import warnings
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from hook_helpers import PROMPT, assert_same_snapshot, unet_snapshot
from test_pixel_cascade import attention_pixel_unet
from tiny_pipelines import load

import hiresdiff
from hiresdiff.loading.pixel_model import sample
from hiresdiff.loading.pixel_pipeline import PixelPipeline
from hiresdiff.methods.family_defaults import DIFFUSION
from hiresdiff.recipe import Recipe
from hiresdiff.sampling.codecs import PixelCodec, VaeCodec, upsample_pivot
from hiresdiff.sampling.restart import RestartedScheduler, stage_generator
from hiresdiff.sampling.schedulers import EDM_ONLY, SCHEDULERS, make_scheduler
from hiresdiff.sampling.stage_parts import stage_modifications

PRESETS = ("naive", "ug", "self-cascade", "freescale", "freescale+ug")
VP_SCHEDULERS = sorted(set(SCHEDULERS) - set(EDM_ONLY))
STEPS, SEED, GUIDANCE = 6, 3, 3.0  # tiny pipelines: trained latent 8 (16 px); 32 px = 2x


# ---- the two drivers on one footing ------------------------------------------------------------------------


def pipeline_run(pipe, recipe, **kw):
    """Every stage's latents of a 2× run on a tiny SD pipeline."""
    return hiresdiff.generate(
        pipe,
        PROMPT,
        height=32,
        width=32,
        recipe=recipe,
        seed=SEED,
        steps=STEPS,
        guidance_scale=GUIDANCE,
        output_type="latent",
        return_stages=True,
        **kw,
    )


def pixel_run(pipe, recipe, **kw):
    return sample(
        pipe.unet,
        pipe.scheduler,
        height=16,
        width=16,
        recipe=recipe,
        seed=SEED,
        steps=STEPS,
        num_images=2,
        return_stages=True,
        progress=False,
        **kw,
    )


def driver(kind: str, scheduler_name: str):
    """(pipeline-like object, run function, codec) for the ``kind`` of driver with a fresh ``scheduler_name``."""
    if kind == "pipeline":
        pipe = load("sd15")
        run, codec = pipeline_run, VaeCodec(pipe.vae, pipe.vae_scale_factor)
    else:
        pipe = PixelPipeline(attention_pixel_unet(), load("pixel").scheduler)
        run, codec = pixel_run, PixelCodec()
    pipe.scheduler = make_scheduler(scheduler_name, pipe.scheduler.config)
    return pipe, run, codec


def plain_call(kind: str, pipe):
    """Stage 0 computed without hiresdiff: the pipeline's own call at the trained size."""
    if kind == "pipeline":
        return pipe(
            PROMPT,
            height=16,
            width=16,
            num_inference_steps=STEPS,
            guidance_scale=GUIDANCE,
            output_type="latent",
            generator=torch.Generator().manual_seed(SEED),
        ).images
    return pipe(
        height=8,
        width=8,
        num_inference_steps=STEPS,
        num_images_per_prompt=2,
        generator=torch.Generator().manual_seed(SEED),
    ).images


def state_of(obj) -> dict:
    """Every attribute of ``obj`` (tensors also as a copy of their values), to compare before and after a run."""
    return {k: (v, v.clone()) if isinstance(v, torch.Tensor) else v for k, v in vars(obj).items()}


def assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], tuple) and isinstance(a[key][0], torch.Tensor):
            assert a[key][0] is b[key][0], key  # the same tensor object, with the same values
            assert torch.allclose(a[key][1], b[key][1], rtol=0, atol=0, equal_nan=True), key
        elif isinstance(a[key], (int, float, str, bool, type(None), tuple, list)):
            assert a[key] == b[key], key
        else:
            assert a[key] is b[key], key


def expected_first_input(scheduler_name: str, config, pivot, eps, strength: float = 0.7):
    """(t_K, the model input at t_K) in closed form: x_K = √ᾱ_K·x₀ + √(1−ᾱ_K)·ε, i.e. (x₀ + σ_K·ε)/√(1 + σ_K²)."""
    grid = make_scheduler(scheduler_name, config)
    if scheduler_name == "pndm":
        from diffusers import DDIMScheduler

        grid = DDIMScheduler.from_config(config)
    grid.set_timesteps(STEPS)
    begin = (STEPS - int(STEPS * strength)) * grid.order
    t = grid.timesteps[begin]
    if (
        hasattr(grid, "sigmas") and grid.sigmas is not None
    ):  # σ grids (Euler, Heun, KDPM2, LMS, DPM-Solver, UniPC, DEIS)
        sigma = float(grid.sigmas[begin])
    else:  # ᾱ-indexed (DDIM, DDPM, LCM, TCD)
        a = float(grid.alphas_cumprod[int(t)])
        sigma = math.sqrt((1 - a) / a)
    return t, (pivot.double() + sigma * eps.double()) / math.sqrt(1 + sigma**2)


class FirstCall:
    """Records the (sample, timestep) of the first outer UNet call at a given latent size."""

    def __init__(self, unet, size):
        self.unet, self.size, self.seen = unet, size, None

    def __enter__(self):
        def record(module, args, kwargs):
            sample_ = args[0] if args else kwargs["sample"]
            timestep = args[1] if len(args) > 1 else kwargs["timestep"]
            if self.seen is None and sample_.shape[-1] == self.size:
                self.seen = (sample_.clone(), torch.as_tensor(timestep).clone())

        self.handle = self.unet.register_forward_pre_hook(record, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# ---- every scheduler × preset × driver --------------------------------------------------------------------

KDPM2_A = "kdpm2_a"


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("name", VP_SCHEDULERS)
@pytest.mark.parametrize("kind", ["pipeline", "pixel"])
def test_every_scheduler_and_preset_on_both_drivers(kind, name, preset):
    pipe, run, codec = driver(kind, name)
    recipe = Recipe.preset(preset)
    scheduler_before, pipe_before, unet_before = state_of(pipe.scheduler), state_of(pipe), unet_snapshot(pipe.unet)
    later_size = 16 if kind == "pipeline" else 16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(100)
        with FirstCall(pipe.unet, later_size) as first:
            stages = run(pipe, recipe)
        torch.manual_seed(200)
        again = run(pipe, recipe)
    out = stages[-1]
    kdpm2_a_nan = kind == "pixel" and name == KDPM2_A  # diffusers' own KDPM2 a is NaN on this pixel schedule
    assert kdpm2_a_nan or torch.isfinite(out).all()
    assert all(torch.equal(a, b) or (kdpm2_a_nan and a.isnan().all()) for a, b in zip(stages, again)), (
        "the same seed must give the same output under any global RNG"
    )
    assert_same_state(state_of(pipe.scheduler), scheduler_before)
    assert_same_state(state_of(pipe), pipe_before)
    assert_same_snapshot(unet_snapshot(pipe.unet), unet_before)
    if preset in ("naive", "self-cascade", "freescale", "freescale+ug") and not kdpm2_a_nan:
        plain = plain_call(kind, pipe) if preset != "naive" else None
        if plain is not None:
            assert torch.equal(stages[0], plain), "stage 0 must be the plain call bit for bit"
    if recipe.cascade is not None and not kdpm2_a_nan:
        pivot = upsample_pivot(codec, stages[0], (16, 16), recipe.cascade)
        eps = torch.randn(pivot.shape, generator=stage_generator(SEED, 1))
        t, expected = expected_first_input(name, pipe.scheduler.config, pivot, eps)
        seen_sample, seen_t = first.seen
        assert torch.equal(seen_t.reshape(-1)[0].float(), t.float())
        x = seen_sample[: len(pivot)]  # the CFG batch repeats the sample
        assert torch.allclose(x.double(), expected, atol=2e-5, rtol=1e-5), float((x.double() - expected).abs().max())


@pytest.mark.parametrize("name", VP_SCHEDULERS)
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_interrupt_mid_stage_leaves_pipeline_scheduler_and_unet_unchanged(name, error):
    pipe, run, _ = driver("pipeline", name)
    scheduler_before, pipe_before, unet_before = state_of(pipe.scheduler), state_of(pipe), unet_snapshot(pipe.unet)
    calls = []

    def interrupt(module, args):
        calls.append(args[0].shape[-1])
        if args[0].shape[-1] == 16 and calls.count(16) == 2:
            raise error("stopped mid-stage")

    handle = pipe.unet.conv_in.register_forward_pre_hook(interrupt)
    try:
        with pytest.raises(error), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run(pipe, Recipe.preset("freescale+ug"))
    finally:
        handle.remove()
    assert 8 in calls
    assert_same_state(state_of(pipe.scheduler), scheduler_before)
    assert_same_state(state_of(pipe), pipe_before)
    assert_same_snapshot(unet_snapshot(pipe.unet), unet_before)


# ---- later stages against a loop written from the scheduler's own step -------------------------------------


def independent_cascade(pipe, name: str, recipe: Recipe, sdxl: bool) -> torch.Tensor:
    """Stage 1 of a 2× cascade by hand: the plain stage-0 call, φ, z_K from the scheduler's add_noise at grid
    index K·order, then scale_model_input → UNet (CFG) → step, with FreeScale's blend before every later call."""
    ids = dict(original_size=(16, 16), target_size=(16, 16)) if sdxl else {}
    z0 = pipe(
        PROMPT,
        height=16,
        width=16,
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE,
        output_type="latent",
        generator=torch.Generator().manual_seed(SEED),
        **ids,
    ).images
    cascade, vae, sf = recipe.cascade, pipe.vae, pipe.vae.config.scaling_factor
    if cascade.space == "latent":
        pivot = F.interpolate(z0, size=(16, 16), mode="bicubic", align_corners=False, antialias=True)
    else:
        image = F.interpolate(
            vae.decode(z0 / sf).sample, size=(32, 32), mode="bicubic", align_corners=False, antialias=True
        ).clamp(-1, 1)
        pivot = vae.encode(image).latent_dist.mode() * sf
    eps = torch.randn(pivot.shape, generator=stage_generator(SEED, 1))
    scheduler, noiser = (make_scheduler(name, pipe.scheduler.config) for _ in range(2))
    scheduler.set_timesteps(STEPS)
    noiser.set_timesteps(STEPS)
    strength = cascade.for_family(DIFFUSION).strength  # 0.7, the papers'
    begin = (STEPS - int(STEPS * strength)) * scheduler.order
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(begin)
    timesteps = scheduler.timesteps[begin:]

    def noised(i):
        if hasattr(noiser, "set_begin_index"):
            noiser.set_begin_index(begin + i)
        return noiser.add_noise(pivot, eps, timesteps[i : i + 1])

    if sdxl:
        embeds, negative, pooled, negative_pooled = pipe.encode_prompt(PROMPT, device="cpu")
        added = {
            "text_embeds": torch.cat([negative_pooled, pooled]),
            "time_ids": torch.tensor([[16.0, 16, 0, 0, 16, 16]] * 2),
        }
    else:
        embeds, negative = pipe.encode_prompt(PROMPT, "cpu", 1, True)
        added = None
    context = torch.cat([negative, embeds])
    stage = recipe.stages((8, 8), (16, 16), 2)[1]
    x = noised(0)
    with stage_modifications(pipe.unet, recipe, stage, scheduler, pivot=z0, sdxl_time_ids="keep"), torch.no_grad():
        for i, t in enumerate(timesteps):
            if cascade.detail_alpha is not None and i > 0:
                p = (begin + i) / STEPS  # the step fraction (these schedulers are of order 1)
                c = ((1 + math.cos(math.pi * p)) / 2) ** cascade.detail_alpha
                x = (1 - c) * x + c * noised(i)
            model_input = scheduler.scale_model_input(torch.cat([x, x]), t)
            uncond, cond = pipe.unet(
                model_input, t, encoder_hidden_states=context, added_cond_kwargs=added
            ).sample.chunk(2)
            x = scheduler.step(uncond + GUIDANCE * (cond - uncond), t, x).prev_sample
    return x


@pytest.mark.parametrize("preset", ["self-cascade", "freescale"])
@pytest.mark.parametrize("name", ["euler", "dpm++", "ddim"])
@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_later_stages_equal_a_loop_written_from_the_schedulers_own_step(kind, name, preset):
    pipe = load(kind)
    pipe.scheduler = make_scheduler(name, pipe.scheduler.config)
    recipe = Recipe.preset(preset)
    ours = hiresdiff.generate(
        pipe,
        PROMPT,
        height=32,
        width=32,
        recipe=recipe,
        seed=SEED,
        steps=STEPS,
        guidance_scale=GUIDANCE,
        output_type="latent",
    )
    reference = independent_cascade(pipe, name, recipe.for_family(flow=False), sdxl=kind == "sdxl")  # α, strength
    assert torch.allclose(ours, reference, atol=1e-5, rtol=1e-5), float((ours - reference).abs().max())


# ---- the rest of the contract ------------------------------------------------------------------------------


def test_pixel_and_pipeline_paths_are_the_same_code_and_agree():
    unet, scheduler = attention_pixel_unet(), make_scheduler("dpm++", load("pixel").scheduler.config)
    recipe = Recipe.preset("freescale+ug")
    by_sample = sample(
        unet, scheduler, height=16, width=16, recipe=recipe, seed=SEED, steps=STEPS, num_images=2, progress=False
    )
    pipe = PixelPipeline(unet, scheduler)
    pipe.set_progress_bar_config(disable=True)
    by_generate = hiresdiff.generate(
        pipe, height=16, width=16, recipe=recipe, seed=SEED, steps=STEPS, num_images_per_prompt=2, output_type="latent"
    )
    assert torch.equal(by_sample, by_generate)


def test_pndm_restarts_as_ddim_on_the_same_schedule_with_a_warning():
    pipe, run, _ = driver("pipeline", "pndm")
    with pytest.warns(UserWarning, match="PNDM cannot restart"):
        ours = run(pipe, Recipe.self_cascade())[-1]
    ddim, _, _ = driver("pipeline", "ddim")
    with pytest.warns(UserWarning, match="PNDM cannot restart"):
        stage0 = run(pipe, Recipe.self_cascade())[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = hiresdiff.generate(
            ddim,
            PROMPT,
            height=32,
            width=32,
            recipe=Recipe.self_cascade(),
            seed=SEED,
            steps=STEPS,
            guidance_scale=GUIDANCE,
            output_type="latent",
            init_image=ddim.vae.decode(stage0 / ddim.vae.config.scaling_factor).sample,
        )
    assert torch.isfinite(ours).all() and ours.shape == reference.shape


def test_steps_times_strength_below_one_runs_one_step_of_a_longer_grid_and_says_so():
    """3 steps × strength 0.3 leave a later stage no step: it runs the last step of a ⌈1/0.3⌉ = 4-step grid."""
    from hiresdiff.sampling.run_plan import plan_run

    pipe, run, _ = driver("pipeline", "ddim")
    with pytest.warns(UserWarning, match=r"steps=3 × strength 0\.3 < 1.*the last step of a 4-step grid"):
        planned = plan_run(pipe, PROMPT, height=32, width=32, steps=3, recipe=Recipe.self_cascade(strength=0.3))
    assert [(p.steps, p.restart, p.steps_run) for p in planned.stages] == [(3, 0, 3), (4, 3, 1)]
    sizes = []
    handle = pipe.unet.conv_in.register_forward_pre_hook(lambda m, a: sizes.append(a[0].shape[-1]))
    try:
        with pytest.warns(UserWarning, match="4-step grid"):
            hiresdiff.generate(pipe, PROMPT, height=32, width=32, steps=3, recipe=Recipe.self_cascade(strength=0.3))
    finally:
        handle.remove()
    assert sizes == [8, 8, 8, 16]  # 3 steps at the trained latent size, then one at 2× (CFG batched in each call)


def test_edm_models_run_cascades_and_ug_refuses_clearly():
    from diffusers import EDMEulerScheduler

    pipe = load("sd15")
    pipe.scheduler = make_scheduler("edm-dpm++", EDMEulerScheduler().config)
    with pytest.raises(ValueError, match="edm-dpm\\+\\+.*EDM's preconditioning"):
        make_scheduler("edm-dpm++", load("sd15").scheduler.config)
    stages = pipeline_run(pipe, Recipe.preset("freescale"))
    assert torch.isfinite(stages[-1]).all()
    with pytest.raises(ValueError, match="alphas_cumprod"):
        pipeline_run(pipe, Recipe.preset("ug"))


def test_the_restart_and_the_detail_blend_create_their_tensors_on_the_models_device():
    """With the previous stage on the ``meta`` device, every tensor the restart makes (φ, ε, z_K, the blend) must
    be on it too: one created on the CPU and mixed in raises. (diffusers' schedulers cannot step on ``meta``:
    their ``set_timesteps`` copies sigmas to the CPU, so the loop itself is the pipeline's own device handling.)"""
    from hiresdiff.methods.self_cascade import restart_index
    from hiresdiff.sampling.generate import _restart
    from hiresdiff.sampling.run_plan import StagePlan

    scheduler = make_scheduler("euler", load("pixel").scheduler.config)
    recipe = Recipe(cascade=Recipe.freescale().cascade).for_family(flow=False)
    stage = recipe.stages((8, 8), (16, 16))[1]
    planned = StagePlan(stage, (16, 16), STEPS, restart_index(STEPS, 0.7))
    previous = torch.empty(2, 3, 8, 8, device="meta")
    call = {"generator": stage_generator(SEED, 1)}
    restarted = RestartedScheduler(scheduler, planned.restart)
    restarted.set_timesteps(STEPS)
    plan = SimpleNamespace(recipe=recipe, family=SimpleNamespace(flow=False, layout=None), frame_noise_share=0.0)
    _restart(None, restarted, plan, planned, previous, PixelCodec(), call)
    assert call["latents"].device.type == "meta" and call["latents"].shape == (2, 3, 16, 16)
    blended = call["callback_on_step_end"](None, 0, restarted.timesteps[0], {"latents": call["latents"]})
    assert blended["latents"].device.type == "meta"
    # a flow transformer's packed latents (FLUX), on the grid the restart computes for the stage
    from diffusers import FlowMatchEulerDiscreteScheduler

    from hiresdiff.denoisers.layouts import FluxLayout

    flow = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_image_seq_len=4, max_image_seq_len=16)
    call = {"generator": stage_generator(SEED, 1)}
    grid = FluxLayout().stage_grid(flow, STEPS, 64, 16, "trained")
    restarted = RestartedScheduler(flow, planned.restart, grid)
    restarted.set_timesteps(STEPS)
    flux_plan = SimpleNamespace(
        recipe=recipe, family=SimpleNamespace(flow=True, layout=FluxLayout()), frame_noise_share=0
    )
    _restart(None, restarted, flux_plan, planned, torch.empty(2, 4, 8, 8, device="meta"), PixelCodec(), call, grid)
    assert call["latents"].device.type == "meta" and call["latents"].shape == (2, 64, 16)
    blended = call["callback_on_step_end"](None, 0, restarted.timesteps[0], {"latents": call["latents"]})
    assert blended["latents"].device.type == "meta" and blended["latents"].shape == (2, 64, 16)


def test_class_detection_follows_the_models_device():
    from diffusers import UNet2DModel

    from hiresdiff.image_upscale import likely_class_labels

    torch.manual_seed(0)
    conditional = UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        num_class_embeds=3,
        down_block_types=("DownBlock2D",) * 2,
        up_block_types=("UpBlock2D",) * 2,
    ).to("meta")
    labels = likely_class_labels(conditional, load("pixel").scheduler, torch.rand(2, 3, 8, 8), draws=2)
    assert labels.shape == (2,)


def test_ug_eta_follows_the_model_family_pixel_every_step_latent_the_first_60_percent():
    for kind, name in (("pipeline", "ddim"), ("pixel", "ddim")):
        pipe, run, _ = driver(kind, name)
        calls = []
        handle = pipe.unet.conv_in.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[-1]))
        try:
            run(pipe, Recipe.preset("ug"), **({} if kind == "pixel" else {}))
        finally:
            handle.remove()
        eta = 0.6 if kind == "pipeline" else 1.0
        guided = math.ceil(eta * STEPS - 1e-9)  # the first η of the steps
        low = 8 if kind == "pipeline" else 8  # trained latent (pipeline) or pixel size of both tiny models
        assert calls.count(low) == guided and 0 < guided <= STEPS
        assert kind == "pixel" or guided < STEPS


def test_ug_in_bf16_converts_in_float32():
    """bf16 v-prediction at t = 999: the hook's output equals eq. 4 computed in float64 from the bf16 UNet's
    own predictions, up to bf16 rounding of the result (the conversions in bf16 were 2.45 % off)."""
    from hiresdiff.methods.upsample_guidance import UpsampleGuidanceConfig, nested_guided_prediction
    from hiresdiff.sampling.family_parts import apply_upsample_guidance, remove_upsample_guidance

    pipe = load("sd2v")
    unet = pipe.unet.to(torch.bfloat16)
    config = UpsampleGuidanceConfig(factor=2, theta=1.0, eta=1.0)
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    context = torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    t = torch.tensor([999])
    with torch.no_grad():

        def model(x_in, t_in):
            return unet(x_in.to(torch.bfloat16), t_in, encoder_hidden_states=context).sample.double()

        reference = nested_guided_prediction(
            model, x.double(), t, pipe.scheduler.alphas_cumprod, [config], "v_prediction"
        )
        apply_upsample_guidance(unet, config, scheduler=pipe.scheduler)
        try:
            ours = unet(x.to(torch.bfloat16), t, encoder_hidden_states=context).sample
        finally:
            remove_upsample_guidance(unet)
    assert ours.dtype == torch.bfloat16
    error = float((ours.double() - reference).norm() / reference.norm())
    assert error < 0.004, error  # bf16 keeps 8 bits: 0.4 % is its rounding of the result


def variant(kind: str):
    """A tiny SD 1.5 pipeline with ControlNet, T2I-Adapter, LoRA (attention and convs) or IP-Adapter, and the call
    arguments it needs (the control image under the pipeline's own name ``image``)."""
    from tiny_pipelines import TEXT_DIM, ip_adapter_state_dict

    control = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    if kind in ("controlnet", "t2i_adapter"):
        return load(kind), {"image": control}
    pipe = load("sd15")
    if kind == "lora":
        from peft import LoraConfig

        pipe.unet.add_adapter(
            LoraConfig(
                r=2,
                lora_alpha=2,
                init_lora_weights=False,
                target_modules=["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2"],
            )
        )
        return pipe, {"cross_attention_kwargs": {"scale": 0.5}}
    pipe.load_ip_adapter(ip_adapter_state_dict(pipe.unet), subfolder="", weight_name="", image_encoder_folder=None)
    return pipe, {"ip_adapter_image_embeds": [torch.randn(2, 1, TEXT_DIM, generator=torch.Generator().manual_seed(5))]}


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("kind", ["controlnet", "t2i_adapter", "lora", "ip_adapter"])
def test_controlnet_adapter_lora_and_ip_adapter_pipelines_run_every_recipe(kind, preset):
    pipe, kwargs = variant(kind)
    pipe_before, unet_before = state_of(pipe), unet_snapshot(pipe.unet)
    recipe = Recipe.preset(preset)
    if kind == "t2i_adapter" and preset.startswith("freescale"):  # its pipeline has no callback_on_step_end
        with pytest.raises(ValueError, match="detail control.*callback_on_step_end.*detail_alpha=None"):
            pipeline_run(pipe, recipe, **kwargs)
        recipe = dataclasses.replace(recipe, cascade=dataclasses.replace(recipe.cascade, detail_alpha=None))
    stages = pipeline_run(pipe, recipe, **kwargs)
    assert torch.isfinite(stages[-1]).all() and stages[-1].shape == (1, 4, 16, 16)
    assert_same_state(state_of(pipe), pipe_before)
    assert_same_snapshot(unet_snapshot(pipe.unet), unet_before)
    if preset == "self-cascade":  # the conditioning reaches the later stage: other conditioning, other result
        if kind == "lora":
            other_pipe, other = load("sd15"), kwargs
        else:
            other_pipe, other = (
                pipe,
                {
                    name: ([torch.zeros_like(v[0])] if isinstance(v, list) else torch.zeros_like(v))
                    for name, v in kwargs.items()
                },
            )
        other_stages = pipeline_run(other_pipe, Recipe.preset(preset), **other)
        assert not torch.equal(other_stages[-1], stages[-1])


def test_a_compiled_unet_is_accepted_and_gives_the_uncompiled_result():
    pipe = load("sd15")
    recipe = Recipe.preset("freescale+ug")
    plain = pipeline_run(pipe, recipe)[-1]
    pipe.unet = torch.compile(pipe.unet, backend="eager")  # dynamo traces the hooks; eager keeps CI fast
    try:
        compiled = pipeline_run(pipe, recipe)[-1]
    finally:
        torch._dynamo.reset()
    assert torch.allclose(compiled, plain, atol=1e-5)


HALF_TOLERANCE = {torch.bfloat16: 0.02, torch.float16: 0.003}  # relative L2 to fp32; measured ≤ 1.2 % and ≤ 0.17 %


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", ["pipeline", "pixel"])
def test_half_precision_runs_stay_within_the_stated_tolerance_of_fp32(kind, dtype):
    """Every recipe in bf16 / fp16 on the CPU: within 2 % / 0.3 % of fp32 (relative L2 of the final latents), and
    no worse than 1.5× plain sampling's own half-precision error (the methods add no precision loss of their own)."""
    errors = {}
    for preset in PRESETS:
        reference_pipe, run, _ = driver(kind, "dpm++")
        reference = run(reference_pipe, Recipe.preset(preset))[-1].double()
        pipe, run, _ = driver(kind, "dpm++")
        for component in ("unet", "vae", "text_encoder"):
            if component in pipe.components:
                getattr(pipe, component).to(dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = run(pipe, Recipe.preset(preset))[-1]
        assert out.dtype == dtype
        errors[preset] = float((out.double() - reference).norm() / reference.norm())
    assert max(errors.values()) < HALF_TOLERANCE[dtype], errors
    assert max(errors.values()) < 1.5 * errors["naive"], errors


def test_a_unet_that_already_carries_a_part_is_refused_and_keeps_it():
    from hiresdiff.methods.upsample_guidance import UpsampleGuidanceConfig
    from hiresdiff.sampling.family_parts import apply_upsample_guidance, remove_upsample_guidance

    pipe = load("sd15")
    apply_upsample_guidance(pipe, UpsampleGuidanceConfig(factor=2, eta=1.0))
    forward, hooks = pipe.unet.forward, dict(pipe.unet._diffusers_hook.hooks)
    with pytest.raises(ValueError, match="already carries upsample_guidance"):
        pipeline_run(pipe, Recipe.preset("freescale+ug"))
    assert pipe.unet.forward is forward and pipe.unet._diffusers_hook.hooks == hooks  # the user's UG is still there
    remove_upsample_guidance(pipe)


@pytest.mark.parametrize("name", ["ddim", "euler", "dpm++_karras", "heun", "lcm"])
def test_noise_levels_match_each_schedulers_own_definition(name):
    """σ, ᾱ and log-SNR read off add_noise equal the scheduler's grid: its sigmas where it keeps them (σ form and
    Karras), else ᾱ at the grid's timesteps; a_i·x₀ + b_i·ε is add_noise itself."""
    from hiresdiff.sampling.noise_levels import NoiseLevels

    scheduler = make_scheduler(name, load("sd15").scheduler.config)
    levels = NoiseLevels.of(scheduler, STEPS)
    grid = make_scheduler(name, scheduler.config)
    grid.set_timesteps(STEPS)
    assert torch.equal(levels.timesteps, grid.timesteps)
    if getattr(grid, "sigmas", None) is not None:
        expected = grid.sigmas[: len(grid.timesteps)].double()
    else:
        a = grid.alphas_cumprod[grid.timesteps.long()].double()
        expected = ((1 - a) / a).sqrt()
    assert torch.allclose(levels.sigma, expected, rtol=1e-5)
    assert torch.allclose(levels.alpha_bar, 1 / (1 + expected**2), rtol=1e-5)
    assert torch.allclose(levels.log_snr, -2 * expected.log(), rtol=1e-4, atol=1e-5)
    x0, eps = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2)
    if hasattr(grid, "set_begin_index"):
        grid.set_begin_index(2)
    assert torch.allclose(levels.noised(x0, eps, 2), grid.add_noise(x0, eps, grid.timesteps[2:3]), atol=1e-6)
