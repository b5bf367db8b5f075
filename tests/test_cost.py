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
from tiny_pipelines import load
from torch.utils.flop_counter import FlopCounterMode

from hiresdiff.cost.counting import ALLOCATOR_TOLERANCE, Counter
from hiresdiff.cost.meta_run import meta_twin, models_on_meta
from hiresdiff.cost.plan import count_run, plan
from hiresdiff.loading.pixel_pipeline import PixelPipeline
from hiresdiff.loading.schedulers import make_scheduler
from hiresdiff.recipe import Recipe
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
        (Recipe.fast(stage_steps=2, strength=0.5), lambda steps, k: [{16: steps}, {32: k}, {64: k}]),
        (Recipe.fast(stage_steps=3, strength=0.3, stage_ratio=4), lambda steps, k: [{16: steps}, {64: k}]),
        (Recipe.fast(stage_steps=3, strength=0.5, target_steps=1), lambda steps, k: [{16: steps}, {32: k}, {64: 1}]),
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


def test_plan_of_flux1_dev_counts_its_transformer_and_text_encoders():
    """FLUX.1-dev in bf16: the weights are the transformer, VAE, CLIP-L and T5-XXL at their published parameter counts;
    the fast recipe's stage at the target runs 3 transformer calls where direct sampling with 2 steps runs 2."""
    from hiresdiff.cost.plan import TEXT_ENCODER_PARAMETERS

    result = plan("flux1-dev", 2048, method="fast", steps=2, dtype="bf16")
    assert [(s.size, s.steps) for s in result.stages] == [((1024, 1024), 2), ((2048, 2048), 3)]
    assert result.weights_bytes == 2 * (11_901_408_320 + 83_819_683 + TEXT_ENCODER_PARAMETERS["flux1-dev"])
    assert result.stages[1].flops / result.direct_flops == pytest.approx(3 / 2, rel=0.05)  # ± the VAE calls


@pytest.mark.parametrize(
    "argv,match",
    [
        (["--arch", "sd99", "--size", "1024"], "arch must be one of"),
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
