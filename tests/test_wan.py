"""Wan 2.x (``WanPipeline``, ``WanTransformer3DModel``) through the sampling core, on a tiny random pipeline with Wan
2.1's shapes scaled down (trained size 32² pixels, clips of 5 frames = 2 latent frames, UniPC on flow sigmas): every
preset runs, is seed-exact and leaves the pipeline as it was; the trained-size stage is the plain call; a later stage
equals a loop written here from UniPC's own ``step`` under a shift policy; the 3-axis RoPE rescalings have their closed
forms (the frame axis left alone); scale fusion's windows equal attention over each window's tokens through every
frame; UG equals the guided velocity computed by hand; the Wan VAE codes a clip as the pipeline does; bad frame counts
and sizes are refused before any transformer call."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from diffusers import WanPipeline
from hook_helpers import PROMPT, assert_same_snapshot, unet_snapshot
from test_flow_transformers import GUIDANCE, PRESETS, SEED, STEPS
from test_sampling_core import assert_same_state, state_of
from tiny_pipelines import load

import hiresdiff
from hiresdiff.denoisers.layouts import WanLayout
from hiresdiff.denoisers.registry import family_of, trained_size
from hiresdiff.hooks.call_context import CallContextHook, UNetCall
from hiresdiff.methods.freescale import ScaleFusionConfig
from hiresdiff.methods.positions import PositionConfig
from hiresdiff.methods.upsample_guidance import UpsampleGuidanceConfig
from hiresdiff.recipe import Recipe
from hiresdiff.sampling.codecs import VaeCodec
from hiresdiff.sampling.restart import stage_generator
from hiresdiff.sampling.stage_parts import stage_modifications
from hiresdiff.transformer.joint_fusion import JointFusionProcessor

CALL = dict(max_sequence_length=16, guidance_scale=GUIDANCE)
TRAINED, FRAMES, LATENT_FRAMES = 32, 5, 2  # pixels (8² latents at the VAE's factor 4); 5 frames = 2 latent frames


def warmed():
    pipe = load("wan")
    pipe(PROMPT, height=32, width=32, num_frames=FRAMES, num_inference_steps=1, output_type="latent", **CALL)
    return pipe


def run(pipe, recipe, height=64, width=64, **kwargs):
    arguments = dict(num_frames=FRAMES, seed=SEED, steps=STEPS, trained_size=TRAINED, **CALL)
    return hiresdiff.generate(pipe, PROMPT, height=height, width=width, recipe=recipe, **{**arguments, **kwargs})


def plain_clip(pipe, steps: int) -> torch.Tensor:
    """The pipeline's own call at the trained 32² with the runs' seed: its clip latents (1, C, F, h, w)."""
    generator = torch.Generator().manual_seed(SEED)
    arguments = dict(height=32, width=32, num_frames=FRAMES, num_inference_steps=steps, output_type="latent")
    return pipe(PROMPT, generator=generator, **arguments, **CALL).frames


def embeddings(pipe):
    """The prompt's and the empty negative prompt's T5 states, as the pipeline encodes them."""
    return pipe.encode_prompt(PROMPT, None, do_classifier_free_guidance=True, max_sequence_length=16)


def velocity(pipe, z, timestep, embeds, negative=None):
    """The transformer's velocity on the clip latents ``z`` (CFG with ``negative``), at the pipeline's ``timestep``."""
    cond = pipe.transformer(z, timestep=timestep.expand(z.shape[0]), encoder_hidden_states=embeds).sample
    if negative is None:
        return cond
    uncond = pipe.transformer(z, timestep=timestep.expand(z.shape[0]), encoder_hidden_states=negative).sample
    return uncond + GUIDANCE * (cond - uncond)


# ---- every preset, the trained-size stage, the state afterwards ---------------------------------------------


@pytest.mark.parametrize("size", [(64, 64), (32, 64)], ids=["square", "non-square"])
@pytest.mark.parametrize("preset", PRESETS + ("fast", "fast+ug"))
def test_every_preset_runs_is_seed_exact_and_leaves_the_pipeline_unchanged(preset, size):
    pipe = warmed()
    before = state_of(pipe), state_of(pipe.scheduler), unet_snapshot(pipe.transformer)
    frames = run(pipe, preset, *size, output_type="pt")
    assert frames.shape == (FRAMES, 3, *size) and torch.isfinite(frames).all()
    assert torch.equal(run(pipe, preset, *size, output_type="pt"), frames)
    assert_same_state(state_of(pipe), before[0])
    assert_same_state(state_of(pipe.scheduler), before[1])
    assert_same_snapshot(unet_snapshot(pipe.transformer), before[2])


def test_the_family_layout_and_the_trained_size_stage_is_the_plain_call():
    pipe = load("wan")
    family = family_of(pipe.transformer)
    assert isinstance(family.layout, WanLayout) and family.flow and family.video
    assert trained_size(pipe.transformer, pipe) == (480 // 4, 832 // 4)  # WanPipeline's default 480×832, in latents
    plain = plain_clip(pipe, STEPS)
    ours = run(pipe, "freescale", 32, 32, output_type="latent")
    assert ours.shape == (4, LATENT_FRAMES, 8, 8) and torch.equal(ours, plain[0])


@pytest.mark.parametrize("shift", ["trained", 5.0])
@torch.no_grad()
def test_a_later_stage_equals_a_loop_written_from_unipcs_own_step(shift):
    """Self-Cascade at 2× with 10 steps: every stage samples UniPC's grid with the pipeline's flow_shift 3 under
    "trained" (Wan's pipeline does not shift by size), with the given 5.0 otherwise; stage 1 restarts the
    bicubic-upsampled clip latents at step K = 10 − int(10·0.3) with the stage's ε, then runs UniPC's ``step`` from K
    on with CFG."""
    from diffusers import UniPCMultistepScheduler

    pipe, steps = load("wan"), 10
    ours = run(pipe, "self-cascade", steps=steps, output_type="latent", shift=shift)
    overrides = {} if shift == "trained" else {"flow_shift": shift}
    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, **overrides)
    plain = plain_clip(pipe, steps)
    frames = plain.transpose(1, 2).flatten(0, 1)
    up = F.interpolate(frames, size=(16, 16), mode="bicubic", align_corners=False, antialias=True)
    pivot = up.reshape(1, LATENT_FRAMES, 4, 16, 16).transpose(1, 2)
    eps = torch.randn(pivot.shape, generator=stage_generator(SEED, 1))
    scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    begin = steps - int(steps * 0.3)
    scheduler.set_begin_index(begin)
    sigma = scheduler.sigmas[begin]
    x = (1 - sigma) * pivot + sigma * eps
    embeds, negative = embeddings(pipe)
    for t in scheduler.timesteps[begin:]:
        x = scheduler.step(velocity(pipe, x, t, embeds, negative), t, x).prev_sample
    assert torch.allclose(ours, x[0], atol=2e-5, rtol=1e-5), float((ours - x[0]).abs().max())


# ---- UG for rectified flow on the video transformer -----------------------------------------------------------


@torch.no_grad()
def test_ug_equals_the_guided_velocity_computed_by_hand_frame_by_frame():
    pipe = load("wan")
    embeds, _ = embeddings(pipe)
    x = torch.randn(1, 4, LATENT_FRAMES, 16, 16, generator=torch.Generator().manual_seed(0))
    sigma, m = 0.7, 2
    v = velocity(pipe, x, torch.tensor(sigma * 1000), embeds)
    tau = sigma / (sigma + m * (1 - sigma))
    c = 1 / (1 - sigma + sigma / m)
    pool = F.avg_pool3d(x, (1, m, m))
    v_low = velocity(pipe, c * pool, torch.tensor(tau * 1000), embeds)
    bracket = (v_low - (m - 1) * pool) / (sigma + m * (1 - sigma)) - F.avg_pool3d(v, (1, m, m))
    expected = v + F.interpolate(bracket, scale_factor=(1, m, m), mode="nearest")
    hiresdiff.apply_upsample_guidance(pipe, UpsampleGuidanceConfig(factor=2, theta=1.0, eta=1.0))
    try:
        guided = velocity(pipe, x, torch.tensor(sigma * 1000), embeds)
    finally:
        hiresdiff.remove_upsample_guidance(pipe)
    assert torch.allclose(guided, expected, atol=1e-5), float((guided - expected).abs().max())


# ---- 3-axis RoPE rescaling against closed forms --------------------------------------------------------------


def captured_rope(pipe, positions, size):
    """Wan's (cos, sin) in one transformer call on 2 latent frames of ``size``² under ``positions``."""
    seen = []
    handle = pipe.transformer.rope.register_forward_hook(lambda module, args, out: seen.append(out))
    recipe = Recipe(positions=positions)
    stage = recipe.stages((8, 8), (size, size), 2)[0]
    embeds, _ = embeddings(pipe)
    try:
        with stage_modifications(pipe.transformer, recipe, stage, pipe.scheduler, trained_size=(8, 8)), torch.no_grad():
            velocity(pipe, torch.randn(1, 4, LATENT_FRAMES, size, size), torch.tensor(900.0), embeds)
    finally:
        handle.remove()
    return seen[0]


@pytest.mark.parametrize("method", ["pi", "ntk", "yarn"])
def test_the_rope_rescalings_have_their_closed_forms_and_leave_the_frame_axis_alone(method):
    """At 2× (16² latents, 8×8 tokens per frame, trained 4×4): token (f, r, c) rotates by f·ω_t on the frame axis
    (its own frequencies), r·ω′ and c·ω′ on rows and columns, ω′ = ω/2 (PI), θ·2^(d/(d−2)) (NTK) or, on these axes that
    turn less than once over 4 trained tokens, ω/2 with the logits × (0.1 ln 2 + 1)² (YaRN); at the trained size the
    embedding's own table."""
    pipe = load("wan")
    rope = pipe.transformer.rope
    cos, sin = captured_rope(pipe, PositionConfig(method), 16)

    def omega(d, base=10_000.0, divisor=1.0):
        return base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d) / divisor

    dims = (rope.t_dim, rope.h_dim, rope.w_dim)
    if method == "ntk":
        scaled = [omega(dims[0])] + [omega(d, 10_000.0 * 2 ** (d / (d - 2))) for d in dims[1:]]
    else:
        scaled = [omega(dims[0])] + [omega(d, divisor=2.0) for d in dims[1:]]
    amplitude = (0.1 * math.log(2) + 1) if method == "yarn" else 1.0
    grid = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in (LATENT_FRAMES, 8, 8)), indexing="ij")
    angles = torch.cat([(g.reshape(-1, 1) * w[None]).repeat_interleave(2, 1) for g, w in zip(grid, scaled)], 1)
    assert cos.shape == (1, LATENT_FRAMES * 64, 1, sum(dims))
    assert torch.allclose(cos[0, :, 0].double(), angles.cos() * amplitude, atol=1e-6)
    assert torch.allclose(sin[0, :, 0].double(), angles.sin() * amplitude, atol=1e-6)
    own = rope(torch.zeros(1, 4, LATENT_FRAMES, 8, 8))
    trained = captured_rope(pipe, PositionConfig(method), 8)
    assert all(torch.equal(a, b) for a, b in zip(trained, own))


# ---- scale fusion on the self-attention, through every frame ---------------------------------------------------


def windowed_attention(attn, hidden, rope, frames, grid, window):
    """Each spatial window's attention computed on its own tokens, gathered frame by frame, row by row (with their
    rotary rows), the outputs averaged where windows overlap."""
    tokens = frames * grid[0] * grid[1]
    total, count = torch.zeros(1, tokens, hidden.shape[-1]), torch.zeros(tokens, 1)
    for y in range(0, grid[0] - window[0] + 1, window[0] // 2):
        for x in range(0, grid[1] - window[1] + 1, window[1] // 2):
            index = torch.tensor(
                [
                    (f * grid[0] + row) * grid[1] + column
                    for f in range(frames)
                    for row in range(y, y + window[0])
                    for column in range(x, x + window[1])
                ]
            )
            out = attn.processor(attn, hidden[:, index], None, None, tuple(part[:, index] for part in rope))
            total[:, index] += out
            count[index] += 1
    return total / count


@torch.no_grad()
def test_fusion_windows_equal_attention_over_their_tokens_through_every_frame_and_the_identity_when_one_covers():
    pipe = load("wan")
    attn = pipe.transformer.blocks[0].attn1
    dim = attn.to_q.in_features
    hidden = torch.randn(1, LATENT_FRAMES * 64, dim, generator=torch.Generator().manual_seed(0))
    rope = pipe.transformer.rope(torch.zeros(1, 4, LATENT_FRAMES, 16, 16))

    def context(trained):
        hook = CallContextHook(trained, 1000.0, WanLayout())
        size = (LATENT_FRAMES, 16, 16)
        hook.current = UNetCall(torch.tensor(500.0), size, (16 / trained[0], 16 / trained[1]), hook.clock)
        return hook

    config = ScaleFusionConfig(kernel=1, jitter=False)  # G = identity: the fusion is the local branch itself
    local = JointFusionProcessor(attn.processor, config, context((8, 8)), 0, 2)(attn, hidden, None, None, rope)
    reference = windowed_attention(attn, hidden, rope, LATENT_FRAMES, (8, 8), (4, 4))
    assert torch.allclose(local, reference, atol=1e-5), float((local - reference).abs().max())
    covering = JointFusionProcessor(attn.processor, ScaleFusionConfig(), context((16, 16)), 0, 2)
    assert torch.equal(covering(attn, hidden, None, None, rope), attn.processor(attn, hidden, None, None, rope))


# ---- the Wan VAE, φ in RGB ---------------------------------------------------------------------------------------


@torch.no_grad()
def test_the_codec_decodes_a_clip_as_the_pipeline_and_rgb_phi_runs_when_asked():
    pipe = load("wan")
    arguments = dict(height=32, width=32, num_frames=FRAMES, num_inference_steps=2, **CALL)
    latents = pipe(PROMPT, output_type="latent", generator=torch.Generator().manual_seed(0), **arguments).frames
    frames = pipe(PROMPT, output_type="pt", generator=torch.Generator().manual_seed(0), **arguments).frames
    codec = VaeCodec(pipe.vae, 4)
    decoded = codec.decode(latents)
    assert decoded.shape == (1, 3, FRAMES, 32, 32)
    assert torch.allclose((decoded / 2 + 0.5).clamp(0, 1).transpose(1, 2), frames, atol=1e-5)
    assert codec.encode(decoded).shape == latents.shape
    rgb = run(pipe, Recipe.freescale(space="rgb"), output_type="latent")
    latent = run(pipe, Recipe.freescale(), output_type="latent")
    assert rgb.shape == latent.shape == (4, LATENT_FRAMES, 16, 16) and not torch.equal(rgb, latent)
    assert torch.equal(latent, run(pipe, Recipe.freescale(space="latent"), output_type="latent"))  # video default


# ---- bad input before any transformer call ------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(num_frames=6), r"num_frames must be 4·k \+ 1"),
        (dict(num_frames=0), r"num_frames must be 4·k \+ 1"),
        (dict(height=36), r"height must be a positive multiple of 8"),
        (dict(width=60, recipe="freescale"), r"width must be a positive multiple of 8"),
        (dict(height=16, width=16, recipe="freescale"), r"smaller than the trained size"),
        (dict(trained_size=(32, 30), recipe="freescale"), r"trained_size must be .* \(height, width\) pair"),
        (dict(recipe=Recipe(ug=UpsampleGuidanceConfig(factor=(2, 2, 2)))), r"factor"),
    ],
)
def test_bad_frame_counts_and_sizes_are_refused_before_any_transformer_call(kwargs, message):
    pipe = load("wan")
    calls = []
    handle = pipe.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ValueError, match=message):
            run(pipe, **{"recipe": None, **kwargs})
    finally:
        handle.remove()
    assert not calls


def test_a_pipeline_with_two_experts_is_refused_naming_them():
    pipe = load("wan")
    pipe.register_modules(transformer_2=copy.deepcopy(pipe.transformer))
    with pytest.raises(ValueError, match="two transformers"):
        run(pipe, "freescale")


def test_context_parallelism_takes_ug_and_cascades_and_refuses_the_parts_on_the_whole_token_grid():
    """diffusers' context parallelism (``enable_parallelism``) needs an accelerator: it places rank r on device
    r mod the accelerator count, which is 0 here, so it cannot run on the CPU (benchmarks/context_parallel_check.py
    compares it with one device on a multi-GPU machine). A transformer marked parallel is planned for UG and cascades,
    whose calls go through its split and gather hooks whole, and refused, naming the option, for position rescaling
    and scale fusion, which act on the whole token grid that each device sees a part of."""
    from hiresdiff.sampling.run_plan import plan_run

    pipe = load("wan")
    pipe.transformer._parallel_config = object()  # what enable_parallelism records
    plain = dict(height=64, width=64, num_frames=FRAMES, steps=STEPS, trained_size=TRAINED)
    for recipe in ("ug", "self-cascade", Recipe.fast(dilation=False), Recipe.freescale(dilation=False, fusion=False)):
        plan_run(pipe, PROMPT, recipe=recipe, **plain)
    for recipe in ("freescale", "freescale+ug", "fast", Recipe(positions=PositionConfig())):
        with pytest.raises(ValueError, match="context parallelism.*dilation=False, fusion=False"):
            plan_run(pipe, PROMPT, recipe=recipe, **plain)


# ---- image-to-video: Wan 2.2 TI2V-5B's one transformer, Wan 2.1 I2V's conditioned one ---------------------------

IMAGE = torch.linspace(0, 1, 3 * 32 * 32).view(1, 3, 32, 32)  # the first frame asked for, in [0, 1]


def ti2v(image: bool):
    """Wan 2.2 TI2V's two uses of its one transformer: text-to-video (``WanPipeline``) and image-to-video."""
    pipe = load("wan_ti2v")
    if not image:
        parts = {name: getattr(pipe, name) for name in ("tokenizer", "text_encoder", "vae", "scheduler", "transformer")}
        pipe = WanPipeline(**parts, expand_timesteps=True)
        pipe.set_progress_bar_config(disable=True)
    return pipe, (dict(image=IMAGE) if image else {})


@pytest.mark.parametrize("preset", PRESETS + ("fast", "fast+ug"))
@pytest.mark.parametrize("image", [False, True], ids=["text-to-video", "image-to-video"])
def test_wan22_ti2v_runs_every_preset_seed_exact_and_unchanged_keeping_the_image_as_its_first_frame(preset, image):
    """Every preset on TI2V's time per token: finite, seed-exact, the pipeline as it was; with an image, the clip's
    first latent frame is the image's latents at the output size, as in the pipeline's own call there."""
    pipe, extra = ti2v(image)
    before = state_of(pipe), state_of(pipe.scheduler), unet_snapshot(pipe.transformer)
    latents = run(pipe, preset, output_type="latent", **extra)
    assert latents.shape == (4, LATENT_FRAMES, 16, 16) and torch.isfinite(latents).all()
    assert torch.equal(run(pipe, preset, output_type="latent", **extra), latents)
    assert_same_state(state_of(pipe), before[0])
    assert_same_state(state_of(pipe.scheduler), before[1])
    assert_same_snapshot(unet_snapshot(pipe.transformer), before[2])
    if image:
        arguments = dict(height=64, width=64, num_frames=FRAMES, num_inference_steps=1, output_type="latent")
        plain = pipe(prompt=PROMPT, **extra, **arguments, **CALL).frames[0]
        assert torch.equal(latents[:, 0], plain[:, 0])


def test_a_non_square_trained_size_is_the_first_stage_of_a_cascade():
    """TI2V-5B's 704×1280 is not its pipeline's default: trained_size=(h, w) makes the first stage that size."""
    pipe, _ = ti2v(False)
    stages = run(pipe, "freescale", 64, 128, trained_size=(32, 64), output_type="latent", return_stages=True)
    assert [tuple(stage.shape[-2:]) for stage in stages] == [(8, 16), (16, 32)]


@torch.no_grad()
def test_ug_on_a_time_per_token_equals_ug_on_the_same_transformer_with_one_time():
    """TI2V's text-to-video gives every token the step's time (expand_timesteps): UG there, whose trained-size call
    gets the pooled token times × τ, equals UG with Wan 2.1's one time per clip on the same transformer (both passing
    τ·1000 unrounded, though UniPC's own timesteps are integers)."""
    per_token, _ = ti2v(False)
    parts = {
        name: getattr(per_token, name) for name in ("tokenizer", "text_encoder", "vae", "scheduler", "transformer")
    }
    one_time = WanPipeline(**parts)
    a, b = (run(pipe, "ug", output_type="latent") for pipe in (per_token, one_time))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_token_weights_pool_the_time_per_token_within_each_frame():
    """A conditioning frame (time 0) stays 0 and a noised one 1 at any smaller grid; inside a frame the weights are
    the mean over the tokens each coarser token covers (patch 2: tokens (F, h/2, w/2), row-major)."""
    t = torch.full((2, 3, 8, 8), 700.0)  # B, F, h/2, w/2 tokens of a (3, 16, 16) latent grid
    t[:, 0] = 0.0
    t[1, 1, :2, :2] = torch.tensor([[0.0, 700.0], [350.0, 350.0]])
    weights = WanLayout.token_weights(t.flatten(1), (3, 16, 16), (3, 8, 8)).view(2, 3, 4, 4)
    assert torch.equal(weights[:, 0], torch.zeros(2, 4, 4)) and torch.equal(weights[:, 2], torch.ones(2, 4, 4))
    assert weights[1, 1, 0, 0] == (0 + 1 + 0.5 + 0.5) / 4 and torch.equal(weights[0, 1], torch.ones(4, 4))
    assert torch.equal(WanLayout.token_weights(t.flatten(1), (3, 16, 16), (3, 16, 16)), t.flatten(1) / 700)


@pytest.mark.parametrize("preset", ["naive", "self-cascade", "freescale", "fast"])
def test_wan21_i2v_runs_the_presets_without_ug_seed_exact(preset):
    pipe = load("wan_i2v")
    latents = run(pipe, preset, output_type="latent", image=IMAGE)
    assert latents.shape == (4, LATENT_FRAMES, 16, 16) and torch.isfinite(latents).all()
    assert torch.equal(run(pipe, preset, output_type="latent", image=IMAGE), latents)


@pytest.mark.parametrize("preset", ["ug", "freescale+ug", "fast+ug"])
def test_wan21_i2v_refuses_ug_naming_its_conditioning_channels_before_any_call(preset):
    pipe = load("wan_i2v")
    calls = []
    handle = pipe.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ValueError, match=r"recipe: .*conditioning channels.*in_channels 12, out_channels 4"):
            run(pipe, preset, image=IMAGE)
    finally:
        handle.remove()
    assert not calls
