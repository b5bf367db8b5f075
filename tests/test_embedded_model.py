"""The shipped emoji model and the no-argument main job."""

import shutil
import subprocess

import pytest
import torch
from PIL import Image

from hiresdiff.comparison import generate, recipe_for
from hiresdiff.integrations.pixel import load_pixel_model, sample
from hiresdiff.models import EMBEDDED_MODEL_DIR
from hiresdiff.recipe import Recipe


def test_shipped_weights_load_in_diffusers_format():
    from diffusers import DDPMScheduler, UNet2DModel

    unet = UNet2DModel.from_pretrained(EMBEDDED_MODEL_DIR)
    scheduler = DDPMScheduler.from_pretrained(EMBEDDED_MODEL_DIR)
    assert unet.config.sample_size == 32 and unet.config.num_class_embeds == 9
    assert scheduler.config.prediction_type == "v_prediction"
    assert (EMBEDDED_MODEL_DIR / "diffusion_pytorch_model.safetensors").stat().st_size <= 20 * 2**20
    assert (EMBEDDED_MODEL_DIR / "README.md").exists()


@pytest.mark.parametrize("size,recipe", [(32, None), (64, Recipe.upsample_guidance(nested=False)),
                                         (128, Recipe.upsample_guidance(nested=False)), (128, Recipe.freescale())])
def test_shipped_model_samples_finite_images_of_the_right_size(size, recipe):
    unet, scheduler = load_pixel_model(EMBEDDED_MODEL_DIR, "dpm++")
    x = sample(unet, scheduler, height=size, width=size, num_images=1, steps=2, recipe=recipe,
               class_labels=torch.tensor([3]), progress=False)
    assert x.shape == (1, 3, size, size) and torch.isfinite(x).all() and x.std() > 0.01


def test_main_job_nests_x2_guidance_for_powers_of_two():
    def levels(scale, theta=1.0, eta=1.0):
        stage = recipe_for("ug", theta, eta).stages((32, 32), (32 * scale, 32 * scale), 4)[-1]
        return [(c.factor, c.theta, c.eta) for c in stage.ug_levels]

    assert levels(4, 1.5, 0.6) == [(2, 1.5, 0.6), (2, 1.5, 0.6)]
    assert levels(2) == [(2, 1.0, 1.0)] and [f for f, _, _ in levels(8)] == [2, 2, 2]
    assert levels(3) == [((3, 3), 1.0, 1.0)]
    assert recipe_for("freescale+ug", 0.5).ug.theta == 0.5 and recipe_for("freescale").ug is None


def test_python_api_returns_pil_images_matching_the_grid_column():
    images = generate(scale=2, method="ug", num_images=2, steps=2, progress=False)
    assert len(images) == 2 and images[0].size == (64, 64)
    again = generate(scale=2, method="ug", num_images=2, steps=2, progress=False)
    assert images[1].tobytes() == again[1].tobytes()


def test_main_job_without_arguments_writes_the_grid(tmp_path):
    exe = shutil.which("hiresdiff")
    assert exe, "the hiresdiff console script is not installed: run the README's install command"
    done = subprocess.run([exe, "generate", "--steps", "2", "--num-images", "1"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    width, height = Image.open(tmp_path / "hiresdiff-grid.png").size
    assert width == 5 * 128 and 128 < height < 128 + 60  # 32², 64² naive/UG, 128² naive/UG; one row
