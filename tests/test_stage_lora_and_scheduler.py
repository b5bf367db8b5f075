"""A cascade's later stages with their own scheduler (``stage_scheduler``) and their own LoRA (``stage_lora``):
active for those stages only, the pipeline left as found, also after an exception."""

import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler, LCMScheduler, StableDiffusionPipeline
from peft import LoraConfig, get_peft_model_state_dict
from tiny_pipelines import load

import hiresdiff
from hiresdiff.loading.pixel_pipeline import PixelPipeline
from hiresdiff.recipe import Recipe

PROMPT = "a cat"


def make_lora(pipe, folder) -> str:
    """A LoRA of random, non-zero weights on the UNet's attention projections, saved as diffusers saves one."""
    unet = type(pipe.unet).from_config(pipe.unet.config)
    unet.load_state_dict(pipe.unet.state_dict())
    config = LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False)
    torch.manual_seed(0)
    unet.add_adapter(config)
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=get_peft_model_state_dict(unet))
    return str(folder)


def state(pipe) -> dict:
    return {
        "weights": {k: v.clone() for k, v in pipe.unet.state_dict().items()},
        "modules": [type(m).__name__ for m in pipe.unet.modules()],
        "attributes": sorted(vars(pipe.unet)),
        "scheduler": (type(pipe.scheduler).__name__, dict(pipe.scheduler.config)),
    }


def assert_same(a, b):
    assert a["weights"].keys() == b["weights"].keys()
    assert all(torch.equal(a["weights"][k], b["weights"][k]) for k in a["weights"])
    assert (a["modules"], a["attributes"], a["scheduler"]) == (b["modules"], b["attributes"], b["scheduler"])


def stages(pipe, recipe, **kw):
    return hiresdiff.generate(
        pipe, PROMPT, height=32, width=32, steps=4, recipe=recipe, return_stages=True, output_type="latent", **kw
    )


def test_a_stage_lora_acts_in_the_later_stages_only_and_is_removed(tmp_path):
    pipe = load("sd15")
    lora = make_lora(pipe, tmp_path / "lora")
    before = state(pipe)
    seen = []
    handle = pipe.unet.conv_in.register_forward_pre_hook(
        lambda m, a: seen.append((a[0].shape[-1], bool(getattr(pipe.unet, "peft_config", None))))
    )
    try:
        plain = stages(pipe, Recipe.self_cascade())
        seen.clear()
        with_lora = stages(pipe, Recipe.self_cascade(stage_lora=lora))
    finally:
        handle.remove()
    assert torch.equal(with_lora[0], plain[0]) and not torch.equal(with_lora[1], plain[1])
    assert {active for size, active in seen if size == 8} == {False}  # the trained-size stage: without it
    assert {active for size, active in seen if size == 16} == {True}
    assert_same(state(pipe), before)


def test_the_pipelines_own_lora_stays_active_and_comes_back_as_it_was(tmp_path):
    pipe = load("sd15")
    own, stage = make_lora(pipe, tmp_path / "own"), make_lora(pipe, tmp_path / "stage")
    pipe.load_lora_weights(own, adapter_name="own")
    before = state(pipe)
    stages(pipe, Recipe.self_cascade(stage_lora=stage))
    assert_same(state(pipe), before)
    assert pipe.get_active_adapters() == ["own"]


def test_a_failing_later_stage_leaves_the_lora_removed(tmp_path):
    pipe = load("sd15")
    lora = make_lora(pipe, tmp_path / "lora")
    before = state(pipe)

    def fail_at_16(module, args):
        if args[0].shape[-1] == 16:
            raise RuntimeError("boom")

    handle = pipe.unet.conv_in.register_forward_pre_hook(fail_at_16)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            stages(pipe, Recipe.self_cascade(stage_lora=lora))
    finally:
        handle.remove()
    assert_same(state(pipe), before)


@pytest.mark.parametrize("stage_scheduler", [DDIMScheduler, LCMScheduler])
def test_a_stage_scheduler_samples_the_later_stages_as_if_it_were_the_pipelines(stage_scheduler):
    """Upscaling a given image runs only the later stages: with the pipeline on Euler and ``stage_scheduler`` S, the
    result is the one the pipeline gives with S as its own scheduler, bit for bit; the pipeline's and the caller's
    schedulers are left as they were."""
    pipe = load("sd15")
    image = torch.rand(1, 3, 16, 16) * 2 - 1
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    mine = stage_scheduler.from_config(pipe.scheduler.config)
    mine_config = dict(mine.config)
    before = state(pipe)
    out = stages(pipe, Recipe.self_cascade(stage_scheduler=mine), init_image=image)
    assert_same(state(pipe), before)
    assert dict(mine.config) == mine_config and mine.num_inference_steps is None  # a copy sampled, not the caller's
    pipe.scheduler = stage_scheduler.from_config(pipe.scheduler.config)
    reference = stages(pipe, Recipe.self_cascade(), init_image=image)
    assert torch.equal(out[-1], reference[-1])


def test_stage_parts_a_pipeline_cannot_take_are_refused_before_any_call():
    pixel = load("pixel")
    pipe = PixelPipeline(pixel.unet, pixel.scheduler)
    with pytest.raises(ValueError, match="stage_lora: PixelPipeline loads no LoRA"):
        hiresdiff.generate(pipe, height=32, width=32, steps=2, recipe=Recipe.self_cascade(stage_lora="x"))
    flux = load("flux")
    with pytest.raises(ValueError, match="stage_scheduler: a scheduler instance or name for a UNet pipeline"):
        hiresdiff.generate(
            flux, PROMPT, height=32, width=32, steps=2, recipe=Recipe.self_cascade(stage_scheduler=flux.scheduler)
        )


@pytest.mark.parametrize("name, kind", [("ddim", DDIMScheduler), ("lcm", LCMScheduler)])
def test_a_stage_scheduler_by_name_is_the_one_made_from_the_pipelines_schedule(name, kind):
    """``stage_scheduler="lcm"`` (the CLI's ``--stage-scheduler``) samples as the instance made with
    ``from_config(pipe.scheduler.config)``, bit for bit."""
    pipe = load("sd15")
    image = torch.rand(1, 3, 16, 16) * 2 - 1
    by_name = stages(pipe, Recipe.self_cascade(stage_scheduler=name), init_image=image)
    instance = kind.from_config(pipe.scheduler.config)
    assert torch.equal(by_name[-1], stages(pipe, Recipe.self_cascade(stage_scheduler=instance), init_image=image)[-1])
    with pytest.raises(ValueError, match="stage_scheduler must be one of .*'lcm'.*; got 'nope'"):
        stages(pipe, Recipe.self_cascade(stage_scheduler="nope"), init_image=image)


@pytest.mark.parametrize(
    "name, algorithm, karras", [("dpm++", "dpmsolver++", False), ("dpm++_karras", "dpmsolver++", True)]
)
def test_a_deterministic_dpm_name_is_deterministic_on_a_model_that_ships_the_sde_variant(name, algorithm, karras):
    """emoji-latent and emoji-video ship ``sde-dpmsolver++``: ``--scheduler dpm++`` must not inherit that
    algorithm from the model's config (it did, so "dpm++" sampled with fresh noise every step)."""
    from diffusers import DPMSolverMultistepScheduler

    from hiresdiff.sampling.schedulers import make_scheduler

    shipped = DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++", prediction_type="v_prediction")
    made = make_scheduler(name, shipped.config)
    assert (made.config.algorithm_type, made.config.use_karras_sigmas) == (algorithm, karras)
    assert made.config.prediction_type == "v_prediction"
    assert make_scheduler("sde-dpm++", made.config).config.algorithm_type == "sde-dpmsolver++"


def test_the_cli_options_set_the_later_stages_scheduler_and_lora(tmp_path, capsys, monkeypatch):
    """``--stage-scheduler``/``--stage-lora`` reach the cascade of every method that has one; a method without a
    cascade, and ``--stage-lora shipped`` for a model that ships none, are refused in one line."""
    from hiresdiff.cli import build_parser, main
    from hiresdiff.cli.generate import method_options
    from hiresdiff.models import EMOJI_LATENT_LCM_DIR, shipped_stage_lora
    from hiresdiff.options import recipes_for

    args = build_parser().parse_args(
        ["generate", "--method", "fast,ug", "--stage-scheduler", "lcm", "--stage-lora", str(tmp_path)]
    )
    recipes = recipes_for(["fast", "ug"], method_options(args))
    assert (recipes["fast"].cascade.stage_scheduler, recipes["fast"].cascade.stage_lora) == ("lcm", str(tmp_path))
    assert recipes["ug"].cascade is None
    assert shipped_stage_lora("some/folder") is None and shipped_stage_lora(None) is None
    assert shipped_stage_lora("emoji-latent") == str(EMOJI_LATENT_LCM_DIR)
    assert (EMOJI_LATENT_LCM_DIR / "pytorch_lora_weights.safetensors").is_file()  # shipped with its card

    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--method", "ug", "--stage-scheduler", "lcm"]) == 2
    assert "--stage-scheduler applies to methods with a cascade" in capsys.readouterr().err
    assert main(["generate", "--model", "some/folder", "--prompt", "a cat", "--stage-lora", "shipped"]) == 2
    assert "--stage-lora shipped: some/folder ships no few-step LoRA" in capsys.readouterr().err
