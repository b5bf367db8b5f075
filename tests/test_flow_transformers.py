"""Flow-matching transformers (FLUX.1, SD3/3.5) through the sampling core, on tiny random ``FluxPipeline`` and
``StableDiffusion3Pipeline`` (trained size 16² pixels): against the plain call, a loop written here from the
scheduler's own ``step``, the closed forms of UG for rectified flow and of the position rescalings, and windowed
attention computed with attention masks."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hook_helpers import PROMPT, assert_same_snapshot, unet_snapshot
from test_sampling_core import assert_same_state, state_of
from tiny_pipelines import load

import hiresdiff
from hiresdiff.denoisers.layouts import FluxLayout
from hiresdiff.hooks.call_context import CallContextHook, UNetCall
from hiresdiff.methods.freescale import ScaleFusionConfig
from hiresdiff.methods.positions import PositionConfig
from hiresdiff.methods.upsample_guidance import UpsampleGuidanceConfig
from hiresdiff.models import EMBEDDED_UPSAMPLERS_DIR
from hiresdiff.recipe import Recipe
from hiresdiff.sampling.restart import stage_generator
from hiresdiff.sampling.stage_parts import stage_modifications
from hiresdiff.transformer.joint_fusion import JointFusionProcessor

PRESETS = ("naive", "ug", "self-cascade", "freescale", "freescale+ug")
KINDS = ("flux", "sd3")
STEPS, SEED, GUIDANCE = 4, 3, 3.0
CALL = {"flux": dict(max_sequence_length=16), "sd3": dict(max_sequence_length=16, guidance_scale=GUIDANCE)}


def warmed(kind):
    """A tiny pipeline after one plain call: diffusers' own lazy state (FLUX's ``cache_context`` gives the transformer a
    hook registry on its first call) is there before the snapshots that hiresdiff must leave unchanged."""
    pipe = load(kind)
    pipe(PROMPT, height=16, width=16, num_inference_steps=1, output_type="latent", **CALL[kind])
    return pipe


def run(pipe, kind, recipe, height=32, width=32, **kw):
    return hiresdiff.generate(
        pipe, PROMPT, height=height, width=width, recipe=recipe, seed=SEED, steps=STEPS, **{**CALL[kind], **kw}
    )


def unpack(latents, size):
    """FLUX's packed (B, N, 4C) latents as (B, C, h, w), by the pipeline's own function."""
    from diffusers import FluxPipeline

    return FluxPipeline._unpack_latents(latents, size * 2, size * 2, 2)


def pack(z):
    from diffusers import FluxPipeline

    return FluxPipeline._pack_latents(z, *z.shape)


# ---- every preset, the trained-size stage, the state afterwards ---------------------------------------------


@pytest.mark.parametrize("size", [(32, 32), (32, 64)], ids=["square", "non-square"])
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("kind", KINDS)
def test_every_preset_runs_and_leaves_pipeline_scheduler_and_transformer_unchanged(kind, preset, size):
    pipe = warmed(kind)
    before = state_of(pipe), state_of(pipe.scheduler), unet_snapshot(pipe.transformer)
    images = run(pipe, kind, preset, *size, output_type="pt")
    assert images.shape == (1, 3, *size) and torch.isfinite(images).all()
    assert_same_state(state_of(pipe), before[0])
    assert_same_state(state_of(pipe.scheduler), before[1])
    assert_same_snapshot(unet_snapshot(pipe.transformer), before[2])


@pytest.mark.parametrize("kind", KINDS)
def test_the_trained_size_stage_is_the_plain_call_bit_for_bit(kind):
    pipe = load(kind)
    plain = pipe(
        PROMPT,
        height=16,
        width=16,
        num_inference_steps=STEPS,
        output_type="latent",
        generator=torch.Generator().manual_seed(SEED),
        **CALL[kind],
    ).images
    assert torch.equal(run(pipe, kind, None, 16, 16, output_type="latent"), plain)
    stages = run(pipe, kind, "freescale", output_type="latent", return_stages=True)
    assert torch.equal(stages[0], unpack(plain, 8) if kind == "flux" else plain)


def test_flux_trained_size_comes_from_the_pipeline_or_trained_size():
    pipe = load("flux")
    ours = run(pipe, "flux", "self-cascade", output_type="latent")
    pipe.default_sample_size = 128  # what FluxPipeline assumes for any weights (FLUX.1: 1024 px)
    assert torch.equal(run(pipe, "flux", "self-cascade", output_type="latent", trained_size=16), ours)
    with pytest.raises(ValueError, match="smaller than|trained"):
        run(pipe, "flux", "self-cascade", output_type="latent")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_flux_call_size_is_exact_when_the_position_ids_are_not(dtype):
    """FluxPipeline makes ``img_ids`` in the prompt's dtype; in bf16 row 511 of an 8192×6144 image reads 512 (integers
    above 256 round to even), which made FreeScale's fusion refuse FLUX at 8192² in bf16. The size comes out exact."""
    from diffusers import FluxPipeline

    ids = FluxPipeline._prepare_latent_image_ids(None, 512, 384, "cpu", dtype)
    assert FluxLayout().grid_size({"img_ids": ids}) == (1024, 768)
    assert (int(ids[:, 1].max()) + 1) * 2 == (1026 if dtype == torch.bfloat16 else 1024)  # the largest id misleads


# ---- a later stage against a loop written from the scheduler's own step ------------------------------------


def independent_stage(pipe, kind: str, recipe: Recipe, policy: str) -> torch.Tensor:
    """Stage 1 of a 2× cascade by hand: the plain call, φ, z_K = (1−σ_K)·φ + σ_K·ε on the stage's own grid (FLUX: μ
    from its 64 tokens with ``shift="pipeline"`` — or the trained size's 16 with ``shift="trained"`` — by the linear
    formula of the FLUX
    pipeline; SD3: the static shift, for either choice), then transformer →
    ``step``, FreeScale's blend before every later call."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    plain = pipe(
        PROMPT,
        height=16,
        width=16,
        num_inference_steps=STEPS,
        output_type="latent",
        generator=torch.Generator().manual_seed(SEED),
        **CALL[kind],
    ).images
    z0 = unpack(plain, 8) if kind == "flux" else plain
    cascade, vae = recipe.cascade, pipe.vae
    sf, shift = vae.config.scaling_factor, vae.config.shift_factor
    if cascade.space == "latent":
        pivot = F.interpolate(z0, size=(16, 16), mode="bicubic", align_corners=False, antialias=True)
    else:
        image = F.interpolate(
            vae.decode(z0 / sf + shift).sample, size=(32, 32), mode="bicubic", align_corners=False, antialias=True
        ).clamp(-1, 1)
        pivot = (vae.encode(image).latent_dist.mode() - shift) * sf
    eps = torch.randn(pivot.shape, generator=stage_generator(SEED, 1))
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    if kind == "flux":
        c = scheduler.config
        slope = (c.max_shift - c.base_shift) / (c.max_image_seq_len - c.base_image_seq_len)
        tokens = 16 if policy == "trained" else 64  # the trained 8² latents or the stage's 16², packed 2×2
        mu = c.base_shift + slope * (tokens - c.base_image_seq_len)
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / STEPS, STEPS), mu=mu)
    else:
        scheduler.set_timesteps(STEPS)
    begin = STEPS - int(STEPS * cascade.strength)
    scheduler.set_begin_index(begin)
    sigmas, timesteps = scheduler.sigmas, scheduler.timesteps[begin:]

    def noised(i):
        return (1 - sigmas[begin + i]) * pivot + sigmas[begin + i] * eps

    if kind == "flux":
        embeds, pooled, text_ids = pipe.encode_prompt(PROMPT, None, max_sequence_length=16)
        ids = FluxLayout().with_input({"img_ids": torch.zeros(1, 3)}, pivot)["img_ids"]
    else:
        embeds, negative, pooled, negative_pooled = pipe.encode_prompt(PROMPT, None, None, max_sequence_length=16)
    stage = recipe.stages((8, 8), (16, 16), 2)[1]
    x = noised(0)
    with stage_modifications(pipe.transformer, recipe, stage, scheduler, trained_size=(8, 8)), torch.no_grad():
        for i, t in enumerate(timesteps):
            if cascade.detail_alpha is not None and i > 0:
                c = ((1 + math.cos(math.pi * (begin + i) / STEPS)) / 2) ** cascade.detail_alpha  # step fraction
                x = (1 - c) * x + c * noised(i)
            if kind == "flux":
                v = unpack(
                    pipe.transformer(
                        pack(x),
                        timestep=(t / 1000).expand(1),
                        pooled_projections=pooled,
                        encoder_hidden_states=embeds,
                        txt_ids=text_ids,
                        img_ids=ids,
                    ).sample,
                    16,
                )
            else:
                uncond, cond = pipe.transformer(
                    torch.cat([x, x]),
                    timestep=t.expand(2),
                    encoder_hidden_states=torch.cat([negative, embeds]),
                    pooled_projections=torch.cat([negative_pooled, pooled]),
                ).sample.chunk(2)
                v = uncond + GUIDANCE * (cond - uncond)
            x = scheduler.step(v, t, x).prev_sample
    return x


@pytest.mark.parametrize("shift", ["pipeline", "trained"])
@pytest.mark.parametrize("preset", ["self-cascade", "freescale"])
@pytest.mark.parametrize("kind", KINDS)
def test_later_stages_equal_a_loop_written_from_the_schedulers_own_step(kind, preset, shift):
    pipe = load(kind)
    recipe = Recipe.preset(preset)
    ours = run(pipe, kind, recipe, output_type="latent", shift=shift)
    ours = unpack(ours, 16) if kind == "flux" else ours
    reference = independent_stage(pipe, kind, recipe.for_family(flow=True), shift)  # flow's strength, α, window
    assert torch.allclose(ours, reference, atol=2e-5, rtol=1e-5), float((ours - reference).abs().max())


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("kind", KINDS)
def test_an_interrupt_mid_stage_leaves_everything_unchanged(kind, error):
    pipe = warmed(kind)
    before = state_of(pipe), state_of(pipe.scheduler), unet_snapshot(pipe.transformer)
    calls = []

    def interrupt(module, args, kwargs):
        calls.append(kwargs["hidden_states"].shape)
        if len(calls) == STEPS + 1:  # in stage 1, at its first call (a flow model's runs int(4·0.3) = 1)
            raise error("stopped mid-stage")

    handle = pipe.transformer.register_forward_pre_hook(interrupt, with_kwargs=True)
    try:
        with pytest.raises(error):
            run(pipe, kind, "freescale+ug", output_type="latent")
    finally:
        handle.remove()
    assert_same_state(state_of(pipe), before[0])
    assert_same_state(state_of(pipe.scheduler), before[1])
    assert_same_snapshot(unet_snapshot(pipe.transformer), before[2])


# ---- Upsample Guidance for rectified flow on the transformer ------------------------------------------------


def transformer_call(pipe, kind, z, sigma):
    """The transformer's velocity on the grid ``z`` (B, C, h, w) at noise level σ, conditioned on PROMPT."""
    if kind == "flux":
        embeds, pooled, text_ids = pipe.encode_prompt(PROMPT, None, max_sequence_length=16)
        ids = FluxLayout().with_input({"img_ids": torch.zeros(1, 3)}, z)["img_ids"]
        out = pipe.transformer(
            pack(z),
            timestep=torch.tensor([sigma]),
            pooled_projections=pooled,
            encoder_hidden_states=embeds,
            txt_ids=text_ids,
            img_ids=ids,
        ).sample
        return unpack(out, z.shape[-1])
    embeds, _, pooled, _ = pipe.encode_prompt(
        PROMPT, None, None, do_classifier_free_guidance=False, max_sequence_length=16
    )
    return pipe.transformer(
        z, timestep=torch.tensor([sigma * 1000]), encoder_hidden_states=embeds, pooled_projections=pooled
    ).sample


@pytest.mark.parametrize("kind", KINDS)
@torch.no_grad()
def test_ug_on_the_transformer_equals_the_guided_velocity_computed_by_hand(kind):
    pipe = load(kind)
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    sigma, m = 0.7, 2
    v = transformer_call(pipe, kind, x, sigma)
    tau = sigma / (sigma + m * (1 - sigma))
    c = 1 / (1 - sigma + sigma / m)
    pool = F.avg_pool2d(x, m)
    v_low = transformer_call(pipe, kind, c * pool, tau)
    bracket = (v_low - (m - 1) * pool) / (sigma + m * (1 - sigma)) - F.avg_pool2d(v, m)
    expected = v + F.interpolate(bracket, scale_factor=m, mode="nearest")
    hiresdiff.apply_upsample_guidance(pipe, UpsampleGuidanceConfig(factor=2, theta=1.0, eta=1.0))
    try:
        guided = transformer_call(pipe, kind, x, sigma)
    finally:
        hiresdiff.remove_upsample_guidance(pipe)
    assert torch.allclose(guided, expected, atol=1e-5), float((guided - expected).abs().max())
    hiresdiff.apply_upsample_guidance(pipe, UpsampleGuidanceConfig(factor=2, theta=1.0, eta=0.2))  # w = 0 at σ 0.7
    try:
        assert torch.equal(transformer_call(pipe, kind, x, sigma), v)
    finally:
        hiresdiff.remove_upsample_guidance(pipe)


# ---- position rescaling against closed forms -----------------------------------------------------------------


def captured_rope(pipe, positions, size=16):
    """FLUX's (cos, sin) in one transformer call on a ``size``² latent grid under ``positions`` (None: none)."""
    seen = []
    handle = pipe.transformer.pos_embed.register_forward_hook(lambda module, args, out: seen.append(out))
    recipe = Recipe(positions=positions)
    stage = recipe.stages((8, 8), (size, size), 2)[0]
    try:
        with stage_modifications(pipe.transformer, recipe, stage, pipe.scheduler, trained_size=(8, 8)), torch.no_grad():
            transformer_call(pipe, "flux", torch.randn(1, 4, size, size), 0.9)
    finally:
        handle.remove()
    return seen[0]


def rope_closed_form(positions, axes, theta, bases, amplitude=1.0):
    """cos, sin of RoPE with frequencies ω_i = base^(−2i/d) / divisor per axis: ``bases`` = [(base, divisor)]."""
    cos, sin = [], []
    for axis, dim in enumerate(axes):
        base, divisor = bases[axis]
        omega = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim) / divisor
        angles = positions[:, axis, None].double() * omega
        cos.append(angles.cos().repeat_interleave(2, 1))
        sin.append(angles.sin().repeat_interleave(2, 1))
    return torch.cat(cos, -1) * amplitude, torch.cat(sin, -1) * amplitude


@pytest.mark.parametrize("method", ["pi", "ntk", "yarn"])
def test_flux_rope_rescalings_have_their_closed_forms(method):
    pipe = load("flux")
    embed = pipe.transformer.pos_embed
    axes, theta = embed.axes_dim, embed.theta
    text_ids = torch.zeros(16, 3)
    image_ids = FluxLayout().with_input({"img_ids": torch.zeros(1, 3)}, torch.zeros(1, 4, 16, 16))["img_ids"]
    ids = torch.cat([text_ids, image_ids])
    cos, sin = captured_rope(pipe, PositionConfig(method))
    if method == "pi":  # the angle of every spatial frequency halved at 2x
        expected = rope_closed_form(ids, axes, theta, [(theta, 1), (theta, 2), (theta, 2)])
    elif method == "ntk":  # the base raised to θ·s^(d/(d−2)) per axis
        expected = rope_closed_form(
            ids, axes, theta, [(theta, 1)] + [(theta * 2 ** (d / (d - 2)) if d > 2 else theta, 1) for d in axes[1:]]
        )
    else:  # these tiny axes (d = 2, 4) turn < 1 time over 4 trained tokens: all interpolated; logits × (0.1 ln 2 + 1)²
        expected = rope_closed_form(ids, axes, theta, [(theta, 1), (theta, 2), (theta, 2)], 0.1 * math.log(2) + 1)
    assert torch.allclose(cos, expected[0].float(), atol=1e-6) and torch.allclose(sin, expected[1].float(), atol=1e-6)
    trained = captured_rope(pipe, PositionConfig(method), size=8)  # identity at the trained size
    own = embed(
        torch.cat(
            [text_ids, FluxLayout().with_input({"img_ids": torch.zeros(1, 3)}, torch.zeros(1, 4, 8, 8))["img_ids"]]
        )
    )
    assert all(torch.equal(a, b) for a, b in zip(trained, own))


def test_flux_entropy_scaling_multiplies_the_logits_by_log_n_over_log_n_trained():
    pipe = load("flux")
    cos, sin = captured_rope(pipe, PositionConfig("pi", attention="entropy"))
    assert torch.allclose(cos**2 + sin**2, torch.full_like(cos, math.log(64) / math.log(16)), atol=1e-6)


def test_sd3_position_interpolation_resamples_the_trained_crop_and_is_needed_beyond_its_grid():
    pipe = load("sd3")
    embed = pipe.transformer.pos_embed
    seen = []
    handle = embed.register_forward_hook(lambda module, args, out: seen.append((args[0], out)))
    recipe = Recipe(positions=PositionConfig("pi"))
    stage = recipe.stages((8, 8), (48, 48), 2)[0]  # 24 patches per side: beyond its 16-patch grid
    try:
        with stage_modifications(pipe.transformer, recipe, stage, pipe.scheduler, trained_size=(8, 8)), torch.no_grad():
            transformer_call(pipe, "sd3", torch.randn(1, 4, 48, 48), 0.2)  # late step: beyond the grid it still applies
    finally:
        handle.remove()
    latent, out = seen[0]
    grid = embed.pos_embed.reshape(1, 16, 16, -1)[:, 6:10, 6:10].permute(0, 3, 1, 2)  # the central 4² crop
    table = (
        F.interpolate(grid, size=(24, 24), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, 576, -1)
    )
    assert torch.allclose(out, embed.proj(latent).flatten(2).transpose(1, 2) + table, atol=1e-6)
    with pytest.raises(ValueError, match=r"height and width.*pos_embed_max_size 16 patches.*96x96"):
        run(pipe, "sd3", None, 96, 96)
    with pytest.raises(ValueError, match="method='pi'"):
        run(pipe, "sd3", Recipe(positions=PositionConfig("yarn")), 32, 32)


# ---- scale fusion on joint attention ------------------------------------------------------------------------


def fusion_context(trained, size):
    context = CallContextHook(trained, 1.0, FluxLayout())
    scale = (size[0] / trained[0], size[1] / trained[1])
    context.current = UNetCall(torch.tensor(0.5), tuple(size), scale, context.clock)
    return context


def masked_local_attention(attn, processor, hidden, encoder, rope, grid, window, text, single):
    """The windows' attention by masks over the whole joint sequence (every token keeps its place and rotation):
    text tokens and a window's image tokens see each other, the image outputs are averaged over the windows."""
    n_img = grid[0] * grid[1]
    total, count = torch.zeros(1, n_img, hidden.shape[-1]), torch.zeros(n_img, 1)
    positions = torch.arange(n_img).view(grid)
    for y in range(0, grid[0] - window[0] + 1, window[0] // 2):
        for x in range(0, grid[1] - window[1] + 1, window[1] // 2):
            inside = torch.zeros(text + n_img, dtype=torch.bool)
            inside[:text] = True
            index = positions[y : y + window[0], x : x + window[1]].reshape(-1)
            inside[text + index] = True
            mask = (inside[:, None] & inside[None, :]) | torch.eye(text + n_img, dtype=torch.bool)
            out = processor(
                attn, hidden, encoder_hidden_states=encoder, image_rotary_emb=rope, attention_mask=mask[None, None]
            )
            image = out[:, text:] if single else out[0]
            total[:, index] += image[:, index]
            count[index] += 1
    return total / count


@pytest.mark.parametrize("block", ["dual", "single"])
@torch.no_grad()
def test_joint_fusion_local_branch_equals_masked_attention_and_is_the_identity_at_the_trained_size(block):
    pipe = load("flux")
    transformer = pipe.transformer
    attn = transformer.transformer_blocks[0].attn if block == "dual" else transformer.single_transformer_blocks[0].attn
    dim, text = transformer.inner_dim, 5
    g = torch.Generator().manual_seed(0)
    image, encoder = torch.randn(1, 64, dim, generator=g), torch.randn(1, text, dim, generator=g)
    ids = torch.cat(
        [
            torch.zeros(text, 3),
            FluxLayout().with_input({"img_ids": torch.zeros(1, 3)}, torch.zeros(1, 4, 16, 16))["img_ids"],
        ]
    )
    rope = transformer.pos_embed(ids)
    hidden, enc = (image, encoder) if block == "dual" else (torch.cat([encoder, image], 1), None)
    config = ScaleFusionConfig(kernel=1, jitter=False)  # G = identity: the fusion is the local branch itself
    fused = JointFusionProcessor(attn.processor, config, fusion_context((8, 8), (16, 16)), 0, 2)(
        attn, hidden, encoder_hidden_states=enc, image_rotary_emb=rope
    )
    local = fused[0] if block == "dual" else fused[:, text:]
    reference = masked_local_attention(attn, attn.processor, hidden, enc, rope, (8, 8), (4, 4), text, block == "single")
    assert torch.allclose(local, reference, atol=1e-5), float((local - reference).abs().max())
    plain = attn.processor(attn, hidden, encoder_hidden_states=enc, image_rotary_emb=rope)
    if block == "single":
        assert torch.equal(fused[:, :text], plain[:, :text])  # text tokens keep their global output
    covering = JointFusionProcessor(attn.processor, ScaleFusionConfig(), fusion_context((16, 16), (16, 16)), 0, 2)
    same = covering(attn, hidden, encoder_hidden_states=enc, image_rotary_emb=rope)
    assert all(torch.equal(a, b) for a, b in zip(same, plain)) if block == "dual" else torch.equal(same, plain)


# ---- bad input before any transformer call ------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind,kwargs,message",
    [
        ("flux", dict(height=30, width=32), r"height must be a positive multiple of 4"),
        ("sd3", dict(height=32, width=34), r"width must be a positive multiple of 4"),
        ("flux", dict(height=24, width=24, recipe="ug"), r"factor|integer"),
        ("flux", dict(height=32, width=32, recipe="freescale", trained_size=15), r"trained_size"),
    ],
)
def test_bad_input_is_refused_before_any_transformer_call(kind, kwargs, message):
    pipe = load(kind)
    calls = []
    handle = pipe.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ValueError, match=message):
            hiresdiff.generate(pipe, PROMPT, steps=STEPS, **{"recipe": None, **kwargs}, **CALL[kind])
    finally:
        handle.remove()
    assert not calls


def test_positions_on_a_unet_and_upsamplers_on_a_transformer_are_refused():
    with pytest.raises(ValueError, match="positions: rescales a transformer"):
        hiresdiff.generate(
            load("sd15"), PROMPT, height=32, width=32, steps=2, recipe=Recipe(positions=PositionConfig())
        )
    with pytest.raises(ValueError, match="upsamplers: .*transformer"):
        hiresdiff.generate(
            load("flux"),
            PROMPT,
            height=32,
            width=32,
            steps=2,
            recipe=Recipe.self_cascade(upsamplers=EMBEDDED_UPSAMPLERS_DIR),
        )


def test_the_cli_writes_a_grid_for_a_flux_folder(tmp_path):
    """``hiresdiff generate --model FOLDER`` on a FLUX folder whose hiresdiff.json gives its trained size and prompt
    length: every method column at 2×, after the trained-size column."""
    import json
    import shutil

    from PIL import Image
    from tiny_pipelines import saved

    from hiresdiff.cli import main

    folder = tmp_path / "flux"
    shutil.copytree(saved("flux"), folder)
    (folder / "hiresdiff.json").write_text(json.dumps({"trained_size": 16, "call": {"max_sequence_length": 16}}))
    out = tmp_path / "grid.png"
    code = main(
        [
            "generate",
            "--model",
            str(folder),
            "--prompt",
            PROMPT,
            "--method",
            "naive",
            "ug",
            "self-cascade",
            "freescale",
            "--scale",
            "2",
            "--steps",
            "4",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    assert code == 0 and out.exists()
    assert Image.open(out).width >= 5 * 32  # the trained column and four methods, 32 px each
    code = main(
        [
            "generate",
            "--model",
            str(folder),
            "--prompt",
            PROMPT,
            "--method",
            "naive",
            "--positions",
            "yarn",
            "--scale",
            "2",
            "--steps",
            "2",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--force",
        ]
    )
    assert code == 0


def test_a_diffusion_scheduler_is_refused_for_a_flow_model_before_sampling(capsys):
    """--scheduler euler would build an ε-prediction EulerDiscreteScheduler from FLUX's flow config and sample
    garbage without an error; it is refused in one line naming the option."""
    from hiresdiff.sampling.schedulers import make_scheduler

    for kind in KINDS:
        with pytest.raises(ValueError, match="flow-matching .* --scheduler"):
            make_scheduler("euler", load(kind).scheduler.config)
