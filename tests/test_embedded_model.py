"""The shipped emoji model and the no-argument main job."""

import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from hiresdiff.comparison import comparison
from hiresdiff.loading.pixel_model import load_pixel_model, sample
from hiresdiff.models import EMBEDDED_MODEL_DIR, EMBEDDED_UPSAMPLERS_DIR, shipped_upsamplers
from hiresdiff.options import MethodOptions, recipes_for
from hiresdiff.recipe import Recipe


def test_shipped_weights_load_in_diffusers_format():
    from diffusers import DDPMScheduler, UNet2DModel

    unet = UNet2DModel.from_pretrained(EMBEDDED_MODEL_DIR)
    scheduler = DDPMScheduler.from_pretrained(EMBEDDED_MODEL_DIR)
    assert unet.config.sample_size == 32 and unet.config.num_class_embeds == 9
    assert scheduler.config.prediction_type == "v_prediction"
    assert (EMBEDDED_MODEL_DIR / "diffusion_pytorch_model.safetensors").stat().st_size <= 20 * 2**20
    assert (EMBEDDED_MODEL_DIR / "README.md").exists()


@pytest.mark.parametrize(
    "size,recipe",
    [
        (32, None),
        (64, Recipe.upsample_guidance(nested=False)),
        (128, Recipe.upsample_guidance(nested=False)),
        (128, Recipe.freescale()),
    ],
)
def test_shipped_model_samples_finite_images_of_the_right_size(size, recipe):
    unet, scheduler = load_pixel_model(EMBEDDED_MODEL_DIR, "dpm++")
    x = sample(
        unet,
        scheduler,
        height=size,
        width=size,
        num_images=1,
        steps=2,
        recipe=recipe,
        class_labels=torch.tensor([3]),
        progress=False,
    )
    assert x.shape == (1, 3, size, size) and torch.isfinite(x).all() and x.std() > 0.01


def test_main_job_nests_x2_guidance_for_powers_of_two():
    def levels(scale, theta=None, eta=None):
        recipe = recipes_for(["ug"], MethodOptions(theta=theta, eta=eta))["ug"]
        stage = recipe.stages((32, 32), (32 * scale, 32 * scale), 4)[-1]
        return [(c.factor, c.theta, c.eta) for c in stage.ug_levels]

    assert levels(4, 1.5, 0.6) == [(2, 1.5, 0.6), (2, 1.5, 0.6)]
    assert levels(2) == [(2, 1.0, None)] and [f for f, _, _ in levels(8)] == [2, 2, 2]  # η: the family's, set on attach
    assert levels(3) == [((3, 3), 1.0, None)]


def test_comparison_columns_are_paired_and_cascades_upscale_the_trained_column():
    unet, scheduler = load_pixel_model(EMBEDDED_MODEL_DIR, "sde-dpm++")
    columns, labels = comparison(methods=["naive", "self-cascade"], num_images=2, steps=3, progress=False)
    assert labels == ["32² trained", "64² naive", "64² self-cascade tuned"]
    assert [c[0].size for c in columns] == [(32, 32), (64, 64), (64, 64)]
    trained = torch.tensor(np.stack([np.asarray(im) for im in columns[0]])).permute(0, 3, 1, 2).float() / 127.5 - 1
    recipe = recipes_for(["self-cascade"], default_upsamplers=str(EMBEDDED_UPSAMPLERS_DIR))["self-cascade"]
    labels_ = torch.randint(9, (2,), generator=torch.Generator().manual_seed(0))
    again = sample(
        unet,
        scheduler,
        height=64,
        width=64,
        steps=3,
        recipe=recipe,
        class_labels=labels_,
        progress=False,
        image=trained,
    )  # the cascade column is the trained column upscaled (up to 8-bit rounding)
    got = torch.tensor(np.asarray(columns[2][1])).permute(2, 0, 1).float() / 127.5 - 1
    assert (got - again[1]).abs().mean() < 0.02
    rerun, _ = comparison(methods=["naive", "self-cascade"], num_images=2, steps=3, progress=False)
    assert all(a.tobytes() == b.tobytes() for x, y in zip(columns, rerun) for a, b in zip(x, y))


def test_main_job_without_arguments_writes_the_grid(tmp_path):
    exe = shutil.which("hiresdiff")
    assert exe, "the hiresdiff console script is not installed: run the README's install command"
    done = subprocess.run(
        [exe, "generate", "--steps", "2", "--num-images", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    width, height = Image.open(tmp_path / "hiresdiff-grid.png").size
    assert width == 6 * 96 and 96 < height < 96 + 60  # 32² trained, then 64²: naive, UG, Self-Cascade, FreeScale, SC+UG


def test_only_the_embedded_model_has_shipped_upsamplers(tmp_path):
    assert shipped_upsamplers(None) == {2: str(EMBEDDED_UPSAMPLERS_DIR)}  # trained for the 2× stage (32² → 64²)
    assert (EMBEDDED_UPSAMPLERS_DIR / "config.json").is_file()
    assert shipped_upsamplers(str(tmp_path)) is None


def test_a_non_square_comparison_shows_the_image_the_cascades_start_from(monkeypatch):
    import hiresdiff.comparison as comparison_module

    calls = []
    real_sample = comparison_module.sample

    def recording_sample(*args, **kwargs):
        out = real_sample(*args, **kwargs)
        calls.append((kwargs, out))
        return out

    monkeypatch.setattr(comparison_module, "sample", recording_sample)
    columns, labels = comparison(
        size=(64, 128), methods=["naive", "self-cascade", "freescale"], num_images=1, steps=2, progress=False
    )
    assert labels[0] == "16x32 trained" and columns[0][0].size == (32, 16)  # stage 0 of 64x128: 16x32, not 32²
    trained = calls[0][1]
    cascades = [kwargs for kwargs, _ in calls[1:] if kwargs.get("recipe") is not None and kwargs["recipe"].cascade]
    assert len(cascades) == 2 and all(kwargs["image"] is trained for kwargs in cascades)
