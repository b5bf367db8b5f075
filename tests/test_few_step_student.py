"""emoji-latent's few-step student (latent consistency distillation into a LoRA) and the SR network's training."""

import json

import pytest
import torch
from diffusers import LCMScheduler, StableDiffusionPipeline
from markers import needs_emoji_data, needs_spandrel

from hiresdiff.cli import main
from hiresdiff.core.prediction import PREDICTION_TYPES, prediction_target
from hiresdiff.data import emoji
from hiresdiff.models import EMOJI_LATENT_DIR
from hiresdiff.training.few_step_student import boundary_scalings, x0_and_eps


def test_the_consistency_functions_boundary_condition_holds():
    c_skip, c_out = boundary_scalings(torch.tensor([0, 999]))
    assert (float(c_skip[0]), float(c_out[0])) == (1.0, 0.0)  # f(x, 0) = x
    assert float(c_skip[1]) < 1e-7 and abs(float(c_out[1]) - 1) < 1e-7  # far from 0: the model's x₀


@pytest.mark.parametrize("prediction", PREDICTION_TYPES)
def test_x0_and_eps_invert_each_prediction_type(prediction):
    torch.manual_seed(0)
    x0, eps = torch.randn(4, 4, 8, 8, dtype=torch.float64), torch.randn(4, 4, 8, 8, dtype=torch.float64)
    alpha_bar = torch.tensor([0.999, 0.5, 0.1, 1e-4], dtype=torch.float64).view(-1, 1, 1, 1)
    x = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps
    got_x0, got_eps = x0_and_eps(prediction_target(x0, eps, alpha_bar, prediction), x, alpha_bar, prediction)
    tolerance = 1e-6 if prediction != "epsilon" else 1e-3  # ε-prediction's x₀ divides by √ᾱ = 0.01 at the last
    assert torch.allclose(got_x0, x0, atol=tolerance) and torch.allclose(got_eps, eps, atol=1e-6)


def run_args(data, run, steps):
    return ["--data", str(data), "--run-dir", str(run), "--batch-size", "2", "--save-every", "2", "--log-every", "1",
            "--threads", "1", "--steps", str(steps)]  # fmt: skip


@needs_emoji_data
def test_the_student_trains_resumes_and_exports_a_lora_its_teacher_loads(tmp_path):
    data = emoji.build(tmp_path / "data", limit=40, progress=False)
    run = tmp_path / "run"
    assert main(["train-student", *run_args(data, run, 2)]) == 0
    assert main(["train-student", *run_args(data, run, 3)]) == 0
    assert [int(r.split(",")[0]) for r in (run / "student_loss.csv").read_text().splitlines()] == [1, 2, 3]
    assert json.loads((run / "export" / "training.json").read_text())["step"] == 3
    pipe = StableDiffusionPipeline.from_pretrained(EMOJI_LATENT_DIR)
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    call = dict(num_inference_steps=2, guidance_scale=1.0, output_type="np", generator=torch.Generator().manual_seed(0))
    plain = pipe("grinning face", **call).images
    pipe.load_lora_weights(run / "export")
    call["generator"] = torch.Generator().manual_seed(0)
    assert not (pipe("grinning face", **call).images == plain).all()  # the LoRA acts (it starts at zero: 3 steps)


@needs_spandrel
@needs_emoji_data
def test_the_sr_network_trains_resumes_and_exports_a_file_spandrel_loads(tmp_path):
    from hiresdiff.loading.upscaler import load_upscaler
    from hiresdiff.training.sr_model import WEIGHTS_NAME

    data = emoji.build(tmp_path / "data", limit=40, progress=False)
    run = tmp_path / "run"
    assert main(["train-sr", *run_args(data, run, 2), "--crop", "16"]) == 0
    assert main(["train-sr", *run_args(data, run, 3), "--crop", "16"]) == 0
    info = json.loads((run / "export" / "training.json").read_text())
    assert info["step"] == 3 and set(info["held_out_psnr_db"]) == {"32->64", "64->128"}
    upscaler = load_upscaler(run / "export" / WEIGHTS_NAME)
    assert upscaler.scale == 2 and upscaler(torch.zeros(1, 3, 8, 8), (16, 16)).shape == (1, 3, 16, 16)
