"""Qwen-Image (``QwenImagePipeline``, ``QwenImageTransformer2DModel``) through the sampling core, on a tiny random
pipeline built from its published config's shape (trained size 16² pixels): every preset runs, is seed-exact and
leaves the pipeline as it was; the trained-size stage is the plain call; the layout packs and unpacks as the pipeline
does; MSRoPE's rescalings have their closed forms; scale fusion's local branch is the identity at the trained size;
bad input is refused before any transformer call."""

import math

import pytest
import torch
from hook_helpers import PROMPT, assert_same_snapshot, unet_snapshot
from test_flow_transformers import PRESETS, SEED, STEPS
from test_sampling_core import assert_same_state, state_of
from tiny_pipelines import load

import hiresdiff
from hiresdiff.denoisers.layouts import QwenImageLayout
from hiresdiff.denoisers.registry import family_of, trained_size
from hiresdiff.hooks.call_context import CallContextHook, UNetCall
from hiresdiff.methods.positions import PositionConfig
from hiresdiff.transformer.position_scaling import apply_positions, remove_positions

CALL = dict(true_cfg_scale=2.0, negative_prompt="blurry")


def warmed():
    pipe = load("qwen_image")
    pipe(PROMPT, height=16, width=16, num_inference_steps=1, output_type="latent", **CALL)
    return pipe


def run(pipe, recipe, height=32, width=32, **kwargs):
    return hiresdiff.generate(
        pipe, PROMPT, height=height, width=width, recipe=recipe, seed=SEED, steps=STEPS, **{**CALL, **kwargs}
    )


@pytest.mark.parametrize("preset", PRESETS + ("fast", "fast+ug"))
def test_every_preset_runs_is_seed_exact_and_leaves_the_pipeline_unchanged(preset):
    pipe = warmed()
    before = state_of(pipe), state_of(pipe.scheduler), unet_snapshot(pipe.transformer)
    images = run(pipe, preset, 32, 64, output_type="pt")
    assert images.shape == (1, 3, 32, 64) and torch.isfinite(images).all()
    assert torch.equal(run(pipe, preset, 32, 64, output_type="pt"), images)
    assert_same_state(state_of(pipe), before[0])
    assert_same_state(state_of(pipe.scheduler), before[1])
    assert_same_snapshot(unet_snapshot(pipe.transformer), before[2])


def test_the_family_layout_and_the_trained_size_stage_is_the_plain_call():
    pipe = load("qwen_image")
    family = family_of(pipe.transformer)
    assert isinstance(family.layout, QwenImageLayout) and family.flow
    assert trained_size(pipe.transformer, pipe) == (pipe.default_sample_size,) * 2
    plain = pipe(
        PROMPT,
        height=16,
        width=16,
        num_inference_steps=STEPS,
        output_type="latent",
        generator=torch.Generator().manual_seed(SEED),
        **CALL,
    ).images
    assert torch.equal(run(pipe, None, 16, 16, output_type="latent"), plain)
    stages = run(pipe, "freescale", output_type="latent", return_stages=True)
    assert torch.equal(stages[0], family.layout.to_grid(plain, (8, 8)))


def test_the_layout_packs_as_the_pipeline_and_reads_the_grid_from_img_shapes():
    from diffusers import QwenImagePipeline

    layout = QwenImageLayout()
    z = torch.randn(2, 4, 8, 12)
    packed = layout.from_grid(z)
    assert torch.equal(packed, QwenImagePipeline._pack_latents(z, 2, 4, 8, 12))
    assert torch.equal(layout.to_grid(packed, (8, 12)), z)
    arguments = layout.with_input({"hidden_states": None, "img_shapes": None, "timestep": 1}, z)
    assert arguments["img_shapes"] == [[(1, 4, 6)]] * 2 and layout.grid_size(arguments) == (8, 12)
    assert torch.equal(layout.input_grid(arguments), z)


def captured_rope(pipe, config, size, scale):
    """(image, text) frequencies of Qwen's rope for a latent ``size`` grid in a call at ``scale``."""
    transformer = pipe.transformer
    context = CallContextHook((8, 8), 1.0)
    apply_positions(transformer, config, context)
    try:
        h, w = size[0] // 2, size[1] // 2
        context.current = UNetCall(torch.tensor(0.9), tuple(size), (scale, scale), context.clock)
        return transformer.pos_embed([(1, h, w)], device=torch.device("cpu"), max_txt_seq_len=5)
    finally:
        context.current = None
        remove_positions(transformer)


@pytest.mark.parametrize("method", ["pi", "ntk", "yarn"])
def test_msrope_rescalings_have_their_closed_forms(method):
    """At 2× (a 16² latent, 8×8 tokens, trained 4×4): rows and columns centred (i − 4), each axis's angle p·ω′ with
    ω′ = ω/2 (PI), θ·2^(d/(d−2)) (NTK) or, on these tiny axes that turn less than once over 4 trained tokens, ω/2
    (YaRN, with the logits × (0.1 ln 2 + 1)²); the text from m = 4 on the diagonal, under PI at the trained
    frequencies from m/2. The trained size is the module's own output."""
    pipe = load("qwen_image")
    embed = pipe.transformer.pos_embed
    image, text = captured_rope(pipe, PositionConfig(method), (16, 16), 2.0)
    axes, theta = embed.axes_dim, embed.theta

    def omega(d, base=theta, divisor=1.0):
        return base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d) / divisor

    if method == "ntk":
        scaled = [omega(axes[0])] + [omega(d, theta * 2 ** (d / (d - 2))) if d > 2 else omega(d) for d in axes[1:]]
    else:
        scaled = [omega(axes[0])] + [omega(d, divisor=2.0) for d in axes[1:]]
    amplitude = (0.1 * math.log(2) + 1) if method == "yarn" else 1.0
    rows = torch.arange(8, dtype=torch.float64) - 4
    grid = torch.meshgrid(torch.zeros(1, dtype=torch.float64), rows, rows, indexing="ij")
    expected = torch.cat([g.reshape(-1, 1) * w[None] for g, w in zip(grid, scaled)], 1)
    assert torch.allclose(image, torch.polar(torch.full_like(expected, amplitude), expected).to(image.dtype), atol=1e-6)
    j = torch.arange(5, dtype=torch.float64)[:, None]
    if method == "pi":
        text_angles = torch.cat([(2 + j) * omega(d) for d in axes], 1)
    else:
        text_angles = torch.cat([(4 + j) * w for w in scaled], 1)
    assert torch.allclose(
        text, torch.polar(torch.full_like(text_angles, amplitude), text_angles).to(text.dtype), atol=1e-6
    )
    own = embed([(1, 4, 4)], device=torch.device("cpu"), max_txt_seq_len=5)
    trained = captured_rope(pipe, PositionConfig(method), (8, 8), 1.0)
    assert all(torch.equal(a, b) for a, b in zip(trained, own))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(height=30, width=32), r"height must be a positive multiple of 4"),
        (dict(height=24, width=24, recipe="ug"), r"factor|integer"),
        (dict(height=8, width=8, recipe="freescale"), r"smaller than the trained size"),
    ],
)
def test_bad_input_is_refused_before_any_transformer_call(kwargs, message):
    pipe = load("qwen_image")
    calls = []
    handle = pipe.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ValueError, match=message):
            hiresdiff.generate(pipe, PROMPT, steps=STEPS, **{"recipe": None, **kwargs}, **CALL)
    finally:
        handle.remove()
    assert not calls


@pytest.mark.parametrize("preset", ["freescale", "freescale+ug"])
def test_a_batch_with_text_padding_equals_each_prompt_alone(preset):
    """Prompts of different lengths pad the shorter one's text: Qwen's mask must reach its attention in every fusion
    window and in UG's trained-size call, so the padded prompt's image is the one it gives alone (the same noise: the
    first of the batch)."""
    pipe = load("qwen_image")
    prompts = ["a red cat", "a small green dog sitting on a large wooden table"]
    batch = hiresdiff.generate(
        pipe, prompts, height=32, width=32, recipe=preset, seed=SEED, steps=STEPS, output_type="pt", true_cfg_scale=1.0
    )
    for i, prompt in enumerate(prompts[:1]):
        alone = hiresdiff.generate(
            pipe,
            prompt,
            height=32,
            width=32,
            recipe=preset,
            seed=SEED,
            steps=STEPS,
            output_type="pt",
            true_cfg_scale=1.0,
        )
        assert (batch[i] - alone[0]).abs().max() < 1e-4
