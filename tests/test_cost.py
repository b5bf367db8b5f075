"""Cost without running: the FLOP and live-memory counts (hand counts, a measured CPU run), runs on ``meta`` (the
stage plan's closed form), and ``hiresdiff plan`` (its answers and its refusals)."""

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from diffusers import StableDiffusionPipeline
from test_low_memory import needs_torchao
from tiny_pipelines import load
from torch.utils.flop_counter import FlopCounterMode

from hiresdiff.cost.counting import ALLOCATOR_TOLERANCE, Counter
from hiresdiff.cost.meta_run import meta_twin, models_on_meta
from hiresdiff.cost.plan import count_run, enlargement_relative_flops, plan
from hiresdiff.loading.pixel_pipeline import PixelPipeline
from hiresdiff.recipe import Recipe
from hiresdiff.sampling.schedulers import make_scheduler
from hiresdiff.unet.feature_upsamplers import FeatureUpsamplers


def test_flops_of_a_conv_a_linear_and_attention_match_a_hand_count():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, device="meta")
    linear = torch.nn.Linear(8, 4, device="meta")
    with torch.inference_mode(), Counter() as counter:
        x = conv(torch.empty(1, 3, 16, 16, device="meta"))
        y = linear(x.flatten(2).transpose(1, 2))
        q = torch.empty(1, 2, 64, 16, device="meta")
        F.scaled_dot_product_attention(q, q, q)
    conv_flops = 2 * (3 * 3 * 3) * 8 * 16 * 16  # 2 · (C_in·k²) · C_out · H · W
    linear_flops = 2 * 256 * 8 * 4  # 2 · tokens · in · out
    attention_flops = 2 * 2 * 2 * 64 * 64 * 16  # QKᵀ and PV, 2 FLOPs per multiply-add: 2 · 2 · heads · N² · d
    assert counter.total.flops == conv_flops + linear_flops + attention_flops
    assert y.shape == (1, 256, 4)


def test_live_memory_counts_new_storages_once_while_a_view_of_them_lives():
    with torch.inference_mode(), Counter() as counter:
        outside = torch.empty(1000, device="meta")  # made inside: 4,000 B
        x = torch.empty(8, 1000, device="meta")  # 32,000 B
        view = x.view(8000)[:10]  # a view adds nothing and keeps x's storage alive
        del x
        x2 = view.add_(1)  # in place: nothing new
        first = counter.split()
        y = torch.empty(4000, device="meta")  # 16,000 B
        del view, x2  # x's storage is freed only now
        z = torch.empty(1000, device="meta")  # 4,000 B
        second = counter.split()
    assert first.peak_bytes == 4000 + 32000
    assert second.peak_bytes == 4000 + 32000 + 16000  # the split started from what was held
    assert counter.total.peak_bytes == 52000 and counter.total.flops == 0
    del outside, y, z
    weight = torch.empty(1000, device="meta")  # made before counting: its views are not counted
    with Counter() as counter:
        weight.t()
        weight[:10].unsqueeze(0)
    assert counter.total.peak_bytes == 0


def _pixel_pipe():
    return PixelPipeline(load("pixel").unet, make_scheduler("ddim", load("pixel").scheduler.config))


def _call_flops(unet, size: int, batch: int = 1) -> int:
    """FLOPs of one direct call of ``unet`` at ``size``² (on meta: on the CPU, PyTorch's counter has no formula for
    its flash attention kernel and would count the attention as free)."""
    twin = torch.nn.Module.to(type(unet).from_config(unet.config), "meta")
    with torch.inference_mode(), FlopCounterMode(display=False) as flops:
        twin(torch.empty(batch, 3, size, size, device="meta"), 500)
    return flops.get_total_flops()


@pytest.mark.parametrize(
    "recipe,stage_calls",
    [
        (None, lambda steps, k: [{64: steps}]),
        # the fast recipe shares the call's 6 steps: each of 2 later stages runs at most ⌊⌊6/2⌋/2⌋ = 1, of 1 at most 3
        (Recipe.fast(stage_steps=2, strength=0.5), lambda steps, k: [{16: steps - 2}, {32: 1}, {64: 1}]),
        (Recipe.fast(stage_steps=3, strength=0.3, stage_ratio=4), lambda steps, k: [{16: steps - 3}, {64: 3}]),
        (Recipe.fast(stage_steps=3, strength=0.5, target_steps=1), lambda s, k: [{16: s - 2}, {32: 1}, {64: 1}]),
        (Recipe.self_cascade(strength=0.5), lambda steps, k: [{16: steps}, {32: k}, {64: k}]),
        (
            Recipe(ug=Recipe.upsample_guidance().ug, nested_ug=False),  # pixel UG: a trained-size call every step
            lambda steps, k: [{64: steps, 16: steps}],
        ),
    ],
)
def test_a_meta_run_costs_its_stage_plans_calls_in_closed_form(recipe, stage_calls):
    """Counted through a whole run on a meta twin, each stage costs (calls it makes) × (FLOPs of one direct UNet call
    at that size): the stage plan, the steps each stage runs and UG's extra trained-size call, in closed form."""
    pipe, steps = _pixel_pipe(), 6
    cascade = recipe.cascade if recipe is not None else None
    k = int(cascade.stage_steps(steps) * cascade.strength) if cascade is not None else 0  # steps of a middle stage
    parts = count_run(meta_twin(pipe), recipe, 64, 64, steps, output_type="latent")
    expected = [sum(n * _call_flops(pipe.unet, size) for size, n in calls.items()) for calls in stage_calls(steps, k)]
    assert [part.flops for part in parts] == expected


class ConvUpscaler:
    """A 2× "super-resolution network": one 3×3 convolution (3 → 12 channels) and a pixel shuffle per pass, its
    weights made on the images' device (so it runs on meta), 2·9·3·12·h·w FLOPs a pass on an h × w image."""

    def __init__(self):
        self.passes = []

    def __call__(self, images, size):
        while images.shape[-1] < size[-1]:
            self.passes.append(images.shape[-1])
            weight = torch.zeros(12, 3, 3, 3, device=images.device)
            images = F.pixel_shuffle(F.conv2d(images, weight, padding=1), 2)
        return images


@pytest.mark.parametrize("target", [32, 64, 128], ids=["2x", "4x", "8x"])
@pytest.mark.parametrize("jump", [False, True], ids=["doubling", "one jump"])
def test_the_fast_recipe_with_an_upscaler_costs_its_closed_form(target, jump):
    """Everything the fast recipe spends, counted on meta: the trained-size steps, each later stage's steps at its
    size, and the upscaler's passes from each stage's input size up to its own, at 2×, 4× and 8× of 16²."""
    pipe, steps, k = _pixel_pipe(), 12, 2
    upscaler = ConvUpscaler()
    scale = target // 16
    recipe = Recipe.fast(k, 0.5, stage_ratio=scale if jump else 2, shared_steps=True, upscaler=upscaler)
    parts = count_run(meta_twin(pipe), recipe, target, target, steps, output_type="latent")
    sizes = [target] if jump else [16 * 2**i for i in range(1, scale.bit_length())]
    # shared steps: each later stage runs min(k, ⌊⌊steps/2⌋ / stages⌋), stage 0 the rest
    runs = min(k, (steps // 2) // len(sizes))
    expected = [(steps - runs * len(sizes)) * _call_flops(pipe.unet, 16)]
    expected += [runs * _call_flops(pipe.unet, n) for n in sizes]
    sr = [2 * 9 * 3 * 12 * h * h for h in upscaler.passes]
    assert upscaler.passes == [16 * 2**i for i in range(scale.bit_length() - 1)]  # every pass from 16² up, once
    assert sum(p.flops for p in parts) == sum(expected) + sum(sr)
    assert [p.flops for p in parts][0] == expected[0]


@pytest.mark.parametrize("target", [32, 64, 128], ids=["2x", "4x", "8x"])
def test_the_fast_recipe_with_an_upscaler_by_default_is_one_jump_and_one_step(target):
    """Recipe.fast(upscaler=…)'s defaults: the trained-size sample with all the steps, the upscaler's passes to the
    target, one step there, whatever the scale."""
    pipe, steps, upscaler = _pixel_pipe(), 12, ConvUpscaler()
    parts = count_run(meta_twin(pipe), Recipe.fast(upscaler=upscaler), target, target, steps, output_type="latent")
    sr = [2 * 9 * 3 * 12 * h * h for h in upscaler.passes]
    expected = steps * _call_flops(pipe.unet, 16) + _call_flops(pipe.unet, target) + sum(sr)
    assert sum(p.flops for p in parts) == expected and len(upscaler.passes) == (target // 16).bit_length() - 1


def test_an_enlargement_costs_the_trained_size_sample_and_the_upscalers_passes():
    pipe, steps = _pixel_pipe(), 6
    direct = steps * _call_flops(pipe.unet, 64)
    trained = steps * _call_flops(pipe.unet, 16)
    call = dict(output_type="latent")
    assert enlargement_relative_flops(pipe, None, 16, 64, 64, steps, **call) == trained / direct
    sr = 2 * 9 * 3 * 12 * (16**2 + 32**2)
    assert enlargement_relative_flops(pipe, ConvUpscaler(), 16, 64, 64, steps, **call) == (trained + sr) / direct


def test_a_meta_run_counts_the_tuned_self_cascade_without_moving_the_users_upsamplers():
    """The upsamplers' pivot pass calls the UNet past its hooks: on a meta twin its inputs must follow the UNet to
    ``meta``. Only the stage the set serves costs more than the tuning-free cascade (the pivot pass, the upsamplers),
    by less than one more call at the pivot's size per step."""
    pipe, steps = _pixel_pipe(), 6
    upsamplers = FeatureUpsamplers.for_unet(pipe.unet, threshold=0.0)
    weights = [p.clone() for p in upsamplers.parameters()]
    free = count_run(meta_twin(pipe), Recipe.self_cascade(strength=0.5), 64, 64, steps, output_type="latent")
    tuned = count_run(
        meta_twin(pipe), Recipe.self_cascade(strength=0.5, upsamplers=upsamplers), 64, 64, steps, output_type="latent"
    )
    assert [tuned[0].flops, tuned[2].flops] == [free[0].flops, free[2].flops]
    assert free[1].flops < tuned[1].flops < free[1].flops + steps * _call_flops(pipe.unet, 16)
    assert all(p.device.type == "cpu" and torch.equal(p, w) for p, w in zip(upsamplers.parameters(), weights))


def test_a_meta_run_restores_the_twin_and_leaves_the_users_pipeline_alone():
    pipe = load("sd15")
    before = {
        name: dict(vars(part)) for name, part in [("pipe", pipe), *pipe.components.items()] if hasattr(part, "__dict__")
    }
    twin = meta_twin(pipe)
    assert isinstance(twin, type(pipe)) and all(p.device.type == "meta" for p in twin.unet.parameters())
    assert twin._execution_device == torch.device("cpu")  # its class says so: no class is swapped for a run
    cls = type(twin)
    with models_on_meta(twin):
        assert twin._execution_device == torch.device("cpu")
    assert type(twin) is cls and "decode" not in vars(twin.vae) and not hasattr(twin.unet, "_diffusers_hook")
    with pytest.raises(ValueError, match="meta device"):
        with models_on_meta(pipe):
            pass
    assert type(pipe) is StableDiffusionPipeline and "decode" not in vars(pipe.vae)
    after = {
        name: dict(vars(part)) for name, part in [("pipe", pipe), *pipe.components.items()] if hasattr(part, "__dict__")
    }
    assert after.keys() == before.keys() and all(after[name].keys() == before[name].keys() for name in before)


MEASURE = r"""
import gc, json, sys, torch
from diffusers import DDIMScheduler, UNet2DModel
from hiresdiff.cost.measured import memory_now, peak, reset_peak
from hiresdiff.sampling.generate import generate
from hiresdiff.loading.pixel_pipeline import PixelPipeline
torch.set_num_threads(1)
torch.manual_seed(0)
unet = UNet2DModel(sample_size=16, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(32, 64),
                   norm_num_groups=8, down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2).eval()
pipe = PixelPipeline(unet, DDIMScheduler())
pipe.set_progress_bar_config(disable=True)
size, batch = int(sys.argv[1]), int(sys.argv[2])
with torch.inference_mode():
    generate(pipe, height=32, width=32, steps=1, num_images_per_prompt=1, output_type="latent")  # load the kernels
    gc.collect()
    reset_peak("cpu")
    before = memory_now("cpu")
    out = generate(pipe, height=size, width=size, steps=2, num_images_per_prompt=batch, output_type="latent")
    measured = peak("cpu") - before
with torch.inference_mode():
    from hiresdiff.cost.meta_run import meta_twin
    from hiresdiff.cost.plan import count_run
    parts = count_run(meta_twin(pipe), None, size, size, 2, num_images_per_prompt=batch, output_type="latent")
print(json.dumps({"measured": measured, "predicted": max(p.peak_bytes for p in parts)}))
"""


def test_the_predicted_working_memory_is_within_its_tolerance_of_a_measured_cpu_run():
    """A UNet whose activations are tens of MB (32 channels at 256², batch 4), in a fresh process: the peak resident
    memory of the real run lies within the allocator margin of the live-tensor count (measured: 1.09×, the rest
    being the CPU kernels' workspaces; the real SD 1.5 measured 1.29×, benchmarks/results/plan_check.md).
    glibc keeps freed blocks in the resident set unless its mmap threshold is
    fixed (:data:`hiresdiff.cost.measured.CPU_MEASUREMENT_ENV`; without it 1.3–1.6×, varying run to run)."""
    from hiresdiff.cost.measured import CPU_MEASUREMENT_ENV

    done = subprocess.run(
        [sys.executable, "-c", MEASURE, "256", "4"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **CPU_MEASUREMENT_ENV},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    numbers = json.loads(done.stdout.strip().splitlines()[-1])
    predicted, measured = numbers["predicted"], numbers["measured"]
    assert predicted > 100e6  # large enough to dominate the resident set's noise
    assert (1 - ALLOCATOR_TOLERANCE) * predicted <= measured <= (1 + ALLOCATOR_TOLERANCE) * predicted, numbers


def test_tiling_the_vae_bounds_its_working_memory():
    """The VAE decode, counted on meta: tiled (diffusers' overlapping tiles) it holds less than half of what the
    whole-image decode holds, and both stay linear in pixels: per output byte the tiled decode holds about 4 (its
    decoded tiles, kept until blended, and one tile's activations), whatever the size. For the real VAEs, whose
    widest layers have 512 channels, the whole-image decode holds far more per pixel (``hiresdiff plan``)."""
    vae = meta_twin(load("sd15")).vae

    def decode_bytes(latent_side: int, tiled: bool) -> int:
        if tiled:
            vae.enable_tiling()
            vae.tile_sample_min_size, vae.tile_latent_min_size = 64, 32  # the tiny VAE (factor 2): 64-pixel tiles
        with torch.inference_mode(), Counter() as counter:
            vae.decode(torch.empty(1, 4, latent_side, latent_side, device="meta"))
        vae.disable_tiling()
        return counter.total.peak_bytes

    per_output = []
    for side in (64, 128, 256):
        whole, tiled = decode_bytes(side, False), decode_bytes(side, True)
        output = 3 * (2 * side) ** 2 * 4  # the decoded image itself, fp32
        assert tiled < 0.5 * whole
        per_output.append(tiled / output)
    assert max(per_output) < 4.2 and max(per_output) / min(per_output) < 1.05


def test_plan_of_sd15_prints_the_prediction_and_whether_it_fits(capsys):
    from hiresdiff.cli import main

    result = plan("sd15", 1024, method="fast", steps=10)
    assert [s.size for s in result.stages] == [(512, 512), (1024, 1024)]
    assert 0 < result.relative_flops < 1 and result.peak_bytes > result.weights_bytes > 1.9e9  # fp16 UNet+VAE+CLIP
    assert main(["plan", "--arch", "sd15", "--size", "1024", "--method", "fast", "--steps", "10", "--memory", "1"]) == 0
    out = capsys.readouterr().out
    assert "does NOT fit in 1 GiB" in out and "x direct sampling" in out and "| 1 | 1024x1024 | 3 |" in out
    argv = ["plan", "--arch", "sd15", "--size", "1024", "--method", "fast", "--steps", "10", "--offload", "group"]
    assert main([*argv, "--quant", "int8", "--memory", "8"]) == 0
    out = capsys.readouterr().out
    assert "offload group, quant int8" in out and "GiB per denoiser call" in out and "fits in 8 GiB" in out
    assert (
        main(["plan", "--arch", "sd15", "--size", "1024", "--method", "fast", "--steps", "10", "--tiles", "0.25"]) == 0
    )
    out = capsys.readouterr().out
    # tile_starts(128, 64, 16) = 3 per side: 9 trained-size calls of a quarter of the pixels each per target call
    tiled = plan("sd15", 1024, method=Recipe.fast(tiles=0.25), steps=10)
    assert "fast in tiles (0.25 overlap)" in out and tiled.stages[0].flops == result.stages[0].flops
    assert tiled.stages[1].flops > result.stages[1].flops and tiled.stages[1].peak_bytes <= result.stages[1].peak_bytes


def test_plan_of_flux1_dev_counts_its_transformer_and_text_encoders():
    """FLUX.1-dev in bf16: the weights are the transformer, VAE, CLIP-L and T5-XXL at their published parameter counts;
    the fast recipe shares the call's 2 steps: one at the trained size, one at the target, where direct sampling runs
    2; with group offload and Q8_0 weights its peak is a fraction of the weights."""
    result = plan("flux1-dev", 2048, method="fast", steps=2, dtype="bf16")
    assert [(s.size, s.steps) for s in result.stages] == [((1024, 1024), 1), ((2048, 2048), 1)]
    assert result.weights_bytes == 2 * (11_901_408_320 + 83_819_683 + 123_060_480 + 4_762_310_656)
    # one transformer call of direct's two, plus the RGB φ's VAE round trip (measured 0.58)
    assert 0.5 < result.stages[1].flops / result.direct_flops < 0.65
    small = plan("flux1-dev", 2048, method="fast", steps=2, dtype="bf16", offload="group", quant="gguf-q8")
    assert small.flops == result.flops and small.peak_bytes < result.peak_bytes / 3


def test_plan_of_wan_counts_its_clip_transformer_and_text_encoder(capsys):
    """Wan 2.1 1.3B in bf16 at its 480×832 and 2× with clips of 5 frames (2 latent frames): the weights are the
    transformer, the Wan VAE and UMT5-XXL's encoder at their counted sizes; the fast recipe shares the call's 2 steps,
    one at 480×832 and one at 960×1664, where direct sampling runs 2 (with CFG: 2 transformer calls a step); the
    CLI prints the clip length."""
    from hiresdiff.cli import main

    result = plan("wan2.1-1.3b", 960, 1664, method="fast", steps=2, dtype="bf16", num_frames=5)
    assert result.num_frames == 5
    assert [(s.size, s.steps) for s in result.stages] == [((480, 832), 1), ((960, 1664), 1)]
    assert result.weights_bytes == 2 * (1_418_996_800 + 126_892_531 + 5_680_910_336)
    # one of direct's two steps, and the decode of the clip that both make (measured 0.61)
    assert 0.5 < result.stages[1].flops / result.direct_flops < 0.7
    assert main(["plan", "--arch", "wan2.1-1.3b", "--size", "480", "832", "--steps", "1", "--frames", "5"]) == 0
    assert "wan2.1-1.3b 480x832, 5 frames freescale" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,match",
    [
        (["--arch", "sd99", "--size", "1024"], "arch must be one of"),
        (["--arch", "wan2.1-14b", "--size", "720", "1288"], "--size must be multiples of 16"),
        (["--arch", "wan2.1-14b", "--size", "720", "1280", "--frames", "80"], "--frames for wan2.1-14b takes 4k + 1"),
        (["--arch", "sdxl", "--size", "1024", "--frames", "9"], "--frames for sdxl takes none"),
        (["--arch", "sdxl", "--size", "1000"], "--size must be multiples of 64"),
        (["--arch", "sdxl", "--size", "32768"], "--size must be multiples of 64"),
        (["--arch", "sdxl", "--size", "1024", "--method", "freescal"], "method must be one of"),
        (["--arch", "sdxl", "--size", "1024", "--dtype", "fp8"], "--dtype must be one of"),
    ],
)
def test_plan_refuses_bad_input_with_one_line(argv, match, capsys):
    from hiresdiff.cli import main

    assert main(["plan", *argv]) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1


def test_memory_warning_is_asked_for_not_hidden_in_generate(monkeypatch):
    """``memory_warning`` predicts the run's working memory on a meta twin and warns when the CUDA device's free memory
    will not hold it (here made a few bytes; none with plenty; nothing off CUDA). ``generate`` itself never counts:
    the meta twin's run is the caller's choice (the CLI asks before each pipeline run)."""
    import hiresdiff
    from hiresdiff.cost import plan as cost_plan
    from hiresdiff.cost.plan import fit_warning, memory_warning, predicted_working_bytes

    pipe = load("sd15")
    need = predicted_working_bytes(pipe, Recipe.preset("fast"), 32, 32, prompt="a cat")
    assert need > 0
    assert fit_warning(pipe, "fast", 32, 32, int(2 * need), prompt="a cat") is None
    assert "will likely run out of memory" in fit_warning(pipe, "fast", 32, 32, int(need / 2), prompt="a cat")
    assert memory_warning(pipe, "fast", 32, 32, prompt="a cat") is None  # a CPU device: nothing to predict against
    monkeypatch.setattr(cost_plan, "free_device_memory", lambda denoiser: 1)
    assert "will likely run out of memory" in memory_warning(
        pipe, "fast", 32, 32, prompt="a cat", output_type="pt", callback_on_step_end=lambda *a: {}
    )
    monkeypatch.setattr(cost_plan, "free_device_memory", lambda denoiser: 2**40)
    assert memory_warning(pipe, "fast", 32, 32, prompt="a cat") is None

    def no_counting(*args, **kwargs):
        raise AssertionError("generate must not count a meta run unasked")

    monkeypatch.setattr(cost_plan, "count_run", no_counting)
    monkeypatch.setattr(cost_plan, "free_device_memory", lambda denoiser: 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        hiresdiff.generate(pipe, "a cat", height=32, width=32, recipe="fast", steps=2, output_type="latent")


def test_a_blocks_kind_tells_blocks_apart_by_what_changes_their_work():
    """Blocks of one shape share a kind (the plan counts one of them); another processor, another processor wrapped,
    a hook on one of its modules or another width each make another kind."""
    from diffusers.hooks import ModelHook
    from diffusers.models.attention import BasicTransformerBlock
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    from hiresdiff.cost.meta_run import block_kind
    from hiresdiff.hooks.base import attach

    def block(dim=8):
        made = BasicTransformerBlock(dim, 1, dim)
        made.attn1.set_processor(AttnProcessor2_0())
        return made

    class Wrapper:
        def __init__(self, original):
            self.original = original

    first, second = block(), block()
    assert block_kind(first) == block_kind(second)
    assert block_kind(block(16)) != block_kind(first)
    second.attn1.set_processor(AttnProcessor())
    assert block_kind(second) != block_kind(first)
    second.attn1.set_processor(Wrapper(AttnProcessor()))
    first.attn1.set_processor(Wrapper(AttnProcessor2_0()))
    assert block_kind(second) != block_kind(first)
    third = block()
    attach(third.ff, ModelHook(), "a_part")
    assert block_kind(third) != block_kind(block())


@pytest.mark.parametrize(
    "arch,size,method",
    [
        ("sd15", 1024, "freescale+ug"),
        ("sd15", 1024, "fast"),
        ("sdxl", 2048, "freescale"),
        ("flux1-dev", 1024, "freescale"),
        ("flux1-dev", 2048, "fast"),
        ("wan2.1-1.3b", 512, "freescale"),
    ],
)
def test_counting_each_kind_of_call_once_gives_the_full_count(arch, size, method):
    """The plan's memo (CallMemo) against running every call: the same FLOPs and peak, stage by stage (flux1-dev at
    1024² from a trained 512² set on its meta twin, so that the run has two stages and a position window; at 2048²
    from its own 1024²; wan2.1-1.3b at 512² from 256² with clips of 9 frames and its causal VAE tiled, whose chunk
    cache a repeated call must leave as the call it repeats)."""
    from hiresdiff.cost import architectures
    from hiresdiff.cost.meta_run import as_meta_twin
    from hiresdiff.cost.plan import window_edges
    from hiresdiff.sampling.run_plan import plan_run

    pipe = as_meta_twin(architectures.build_pipeline(arch, device="meta", dtype=torch.float16))
    if arch == "flux1-dev" and size == 1024:
        pipe.default_sample_size = 64  # 512² trained
    recipe = Recipe.preset(method)
    steps, prompt = 5, architectures.PROMPT
    clip = dict(trained_size=256, num_frames=9, vae_tiling=True) if arch.startswith("wan") else {}
    planned = plan_run(
        pipe,
        prompt,
        height=size,
        width=size,
        recipe=recipe,
        steps=steps,
        num_frames=clip.get("num_frames"),
        trained_size=clip.get("trained_size"),
    )
    edges = window_edges(planned.recipe)
    assert edges  # a window to bucket the calls by
    memo = count_run(pipe, recipe, size, size, steps, prompt, edges, output_type="pt", **clip)
    full = count_run(pipe, recipe, size, size, steps, prompt, output_type="pt", **clip)
    assert [(p.flops, p.peak_bytes) for p in memo] == [(p.flops, p.peak_bytes) for p in full]


def quantized_bytes(model) -> int:
    """Bytes a loaded model's parameters take, each quantized tensor subclass by its inner tensors."""
    total = 0
    for p in model.parameters():
        data = p.data if hasattr(p, "data") else p
        if hasattr(data, "__tensor_flatten__"):
            names, _ = data.__tensor_flatten__()
            total += sum(getattr(data, n).numel() * getattr(data, n).element_size() for n in names)
        else:
            total += p.numel() * p.element_size()
    return total


def test_the_plans_quantized_weights_match_the_loaded_ones(tmp_path):
    """The residency's count of quantized denoiser weights against the bytes a loaded quantized tiny FLUX holds: a
    Q8_0 GGUF of it (rows of 32 values quantized, the rest float32)."""
    pytest.importorskip("gguf", reason="needs the gguf package (the test extra has it)")
    from test_low_memory import load as load_flux
    from test_low_memory import write_gguf

    from hiresdiff.cost.residency import weight_bytes

    plain = load_flux()
    assert weight_bytes(plain.transformer, 4) == quantized_bytes(plain.transformer)
    write_gguf(plain.transformer, tmp_path / "q8.gguf")
    gguf = load_flux(quant="gguf-q8", gguf=tmp_path / "q8.gguf")
    assert weight_bytes(plain.transformer, 4, "gguf-q8") == quantized_bytes(gguf.transformer)


@needs_torchao
def test_the_plans_int8_weights_match_torchaos():
    """torchao's int8 weight-only tensors: int8 values, a scale in the compute dtype and an int8 zero point per row."""
    from test_low_memory import load as load_flux

    from hiresdiff.cost.residency import weight_bytes

    plain = load_flux()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # diffusers: torchao's integer kernels prefer bfloat16
        int8 = load_flux(quant="int8")
    assert weight_bytes(plain.transformer, 4, "int8") == quantized_bytes(int8.transformer)


def test_residency_under_each_offload_mode_by_hand():
    """A model of two blocks of 6 weights each and a 3-weight embedding outside them, 2 bytes a weight."""
    from hiresdiff.cost.residency import residency, resident_bytes, text_encoder_bytes

    model = torch.nn.Module()
    model.blocks = torch.nn.ModuleList([torch.nn.Linear(3, 2, bias=False), torch.nn.Linear(2, 3, bias=False)])
    model.embed = torch.nn.Embedding(1, 3)
    assert [resident_bytes(model, mode, 2) for mode in ("none", "model", "sequential", "group")] == [30, 30, 12, 30]
    model.blocks.append(torch.nn.Linear(1, 1, bias=False))  # a third, smaller block: group keeps the two largest
    assert resident_bytes(model, "group", 2) == 2 * (6 + 6 + 3)
    t5 = 4_762_310_656
    assert text_encoder_bytes("flux1-dev", "model", 2) == 2 * t5  # the larger encoder alone
    assert text_encoder_bytes("flux1-dev", "group", 2) == 2 * (2 * t5 // 24)  # two of its 24 layers
    placed = residency("sd15", model, model, "group", "none", 2)
    assert placed.moved_per_call == resident_bytes(model, "none", 2) and placed.moved_per_stage == 0
    assert placed.peak(100) == max(placed.encode, placed.denoise + 100, placed.decode + 100)
