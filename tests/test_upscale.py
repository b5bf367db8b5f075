"""``hiresdiff.upscale``: an existing image as a cascade's first stage, on the embedded model and on a pipeline."""

import pytest
import torch
from conftest import tiny_pixel_unet
from hook_helpers import PROMPT
from PIL import Image
from tiny_pipelines import load

import hiresdiff
from hiresdiff.eval.metrics import paired_rmse
from hiresdiff.image_upscale import image_tensor, likely_class_labels, target_size
from hiresdiff.loading.pixel_model import load_pixel_model, sample, to_pil
from hiresdiff.models import EMBEDDED_MODEL_DIR
from hiresdiff.recipe import Recipe, stages_after


def test_stages_after_an_image_skip_the_stages_up_to_its_size():
    stages = Recipe.self_cascade().stages((32, 32), (128, 128), 4)
    assert [s.size for s in stages_after(stages, (32, 32))] == [(64, 64), (128, 128)]
    assert [s.size for s in stages_after(stages, (64, 64))] == [(128, 128)]
    for size in ((128, 128), (40, 40)):
        with pytest.raises(ValueError, match="image size"):
            stages_after(stages, size)
    with pytest.raises(ValueError, match="without a cascade"):
        stages_after(Recipe().stages((32, 32), (64, 64), 4), (32, 32))


def test_image_tensor_and_target_size():
    im = Image.new("RGB", (6, 4), (255, 0, 127))
    x = image_tensor([im, im])
    assert x.shape == (2, 3, 4, 6) and torch.allclose(x[0, :, 0, 0], torch.tensor([1.0, -1.0, 127 / 127.5 - 1]))
    assert (
        target_size(32, 48, 2) == (64, 96)
        and target_size(32, 32, 1.5) == (48, 48)
        and target_size(32, 32, (1, 2)) == (32, 64)
    )
    for bad in (1, 0.5, 1.1):
        with pytest.raises(ValueError, match="scale"):
            target_size(32, 32, bad)


def test_upscaled_emoji_keep_the_input_as_their_first_stage(emoji_samples):
    """D[result] stays close to the input: the 2× benchmark (benchmarks/results/methods_2x) measured a median
    paired RMSE of 0.17-0.30 for Self-Cascade at strength 0.7 against 0.57 for an independent naive sample of
    the same seed, so 0.35 tells "the same image, refined" from "another image"."""
    unet, scheduler = load_pixel_model(EMBEDDED_MODEL_DIR, "sde-dpm++")
    x, y = emoji_samples
    out = sample(
        unet,
        scheduler,
        height=64,
        width=64,
        image=x,
        class_labels=y,
        steps=10,
        recipe=Recipe.self_cascade(),
        progress=False,
    )
    assert out.shape == (4, 3, 64, 64)
    assert paired_rmse(out, x).median() < 0.35
    assert paired_rmse(out, x.roll(1, 0)).median() > 0.35  # and not close to other images
    stages = sample(
        unet,
        scheduler,
        height=128,
        width=128,
        image=x[:1],
        class_labels=y[:1],
        steps=4,
        recipe=Recipe.self_cascade(),
        return_stages=True,
        progress=False,
    )
    assert [s.shape[-1] for s in stages] == [32, 64, 128] and torch.equal(stages[0], x[:1])


def test_upscale_front_door_on_the_embedded_model_picks_a_class_and_refuses_bad_sizes(emoji_samples):
    unet, scheduler = load_pixel_model(EMBEDDED_MODEL_DIR, "sde-dpm++")
    im = to_pil(emoji_samples[0][:1])[0]
    out = hiresdiff.upscale(unet, im, scale=2, scheduler=scheduler, steps=4, progress=False)
    assert len(out) == 1 and out[0].size == (64, 64)
    assert (
        hiresdiff.upscale(unet, im, scale=2, scheduler=scheduler, steps=4, progress=False)[0].tobytes()
        == out[0].tobytes()
    )
    with pytest.raises(ValueError, match="image size"):
        hiresdiff.upscale(unet, im.resize((40, 40)), scale=2, scheduler=scheduler)
    with pytest.raises(ValueError, match="cascade"):
        hiresdiff.upscale(unet, im, scale=2, scheduler=scheduler, recipe=Recipe.upsample_guidance())
    with pytest.raises(ValueError, match="scheduler"):
        hiresdiff.upscale(unet, im, scale=2)


def test_likely_class_labels_is_the_argmin_of_the_denoising_error():
    torch.manual_seed(0)
    unet = tiny_pixel_unet(num_class_embeds=3).eval()
    _, scheduler = load_pixel_model(EMBEDDED_MODEL_DIR, "ddpm")
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    got = likely_class_labels(unet, scheduler, images, seed=5, draws=3)
    gen = torch.Generator().manual_seed(5)  # the same draws, class by class
    t = torch.linspace(0.1, 0.6, 3).mul(len(scheduler.alphas_cumprod)).long()
    errors = torch.zeros(2, 3)
    for k in range(3):
        noise = torch.randn(images.shape, generator=gen)
        a = scheduler.alphas_cumprod[t[k]]
        target = a.sqrt() * noise - (1 - a).sqrt() * images  # the embedded schedule is v-prediction
        for c in range(3):
            with torch.no_grad():
                pred = unet(
                    a.sqrt() * images + (1 - a).sqrt() * noise, t[k].expand(2), class_labels=torch.full((2,), c)
                ).sample
            errors[:, c] += (pred - target).pow(2).mean(dim=(1, 2, 3))
    assert torch.equal(got, errors.argmin(dim=1))


def test_upscale_on_a_pipeline_runs_only_the_later_stages_and_refuses_what_it_cannot_do():
    pipe = load("sd15")  # trained 16 px (latent 8): a 16² image is stage 0
    seen = []
    handle = pipe.unet.conv_in.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[-1]))
    image = Image.new("RGB", (16, 16), (200, 30, 30))
    try:
        out = hiresdiff.upscale(
            pipe, image, scale=2, prompt=PROMPT, steps=10, guidance_scale=1.0, recipe=Recipe.self_cascade(strength=0.5)
        )
    finally:
        handle.remove()
    assert out[0].size == (32, 32) and seen == [16] * 5  # no stage-0 call; K = 5 of 10 steps at latent 16
    with pytest.raises(ValueError, match="image size"):
        hiresdiff.upscale(pipe, image.resize((20, 20)), scale=2, prompt=PROMPT)
    with pytest.raises(ValueError, match="one image"):
        hiresdiff.upscale(pipe, [image, image], scale=2, prompt=PROMPT)
    with pytest.raises(ValueError, match="video"):
        hiresdiff.upscale(load("animatediff"), image, scale=2, prompt=PROMPT)


def test_an_image_of_no_stage_size_is_refused_before_the_class_detector_runs(monkeypatch):
    """An image whose size is no stage of the cascade is refused at once with the sizes that would work (the class
    detector used to run on it first)."""
    import hiresdiff.image_upscale as upscale_module

    unet, scheduler = load_pixel_model(EMBEDDED_MODEL_DIR, "sde-dpm++")
    monkeypatch.setattr(upscale_module, "likely_class_labels", lambda *a, **k: pytest.fail("the class detector ran"))
    calls = []
    handle = unet.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape))
    try:
        with pytest.raises(ValueError, match=r"image size \(48, 48\) must be one of .*\(32, 32\), \(64, 64\)"):
            hiresdiff.upscale(unet, Image.new("RGB", (48, 48)), scale=2, scheduler=scheduler)
    finally:
        handle.remove()
    assert calls == []  # refused before any denoiser call


def test_the_class_detector_works_at_the_trained_size(emoji_samples):
    unet, scheduler = load_pixel_model(EMBEDDED_MODEL_DIR, "ddpm")
    x = emoji_samples[0][:2]
    seen = []
    handle = unet.conv_in.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[-1]))
    try:
        likely_class_labels(unet, scheduler, torch.nn.functional.interpolate(x, scale_factor=2), draws=1)
    finally:
        handle.remove()
    assert set(seen) == {32}


def test_images_as_users_have_them():
    """RGBA on white, 16-bit PNGs with their range, grayscale and palette, numpy arrays; wrong ranges named."""
    import numpy as np

    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red: white
    assert torch.allclose(image_tensor(rgba), torch.ones(1, 3, 4, 4))
    half = Image.new("RGBA", (4, 4), (0, 0, 0, 128))  # half-transparent black on white: mid grey
    assert torch.allclose(image_tensor(half), torch.full((1, 3, 4, 4), 2 * (1 - 128 / 255) - 1), atol=1e-6)
    sixteen = Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16))  # mode I;16, mid grey, not clipped to white
    assert sixteen.mode.startswith("I;16") and abs(float(image_tensor(sixteen).mean())) < 0.01
    assert torch.allclose(image_tensor(Image.new("L", (4, 4), 255)), torch.ones(1, 3, 4, 4))
    assert torch.allclose(
        image_tensor(Image.new("RGB", (4, 4), (255, 0, 0)).convert("P")),
        image_tensor(Image.new("RGB", (4, 4), (255, 0, 0))),
    )
    assert torch.allclose(image_tensor(np.full((4, 4, 3), 255, np.uint8)), torch.ones(1, 3, 4, 4))
    assert torch.allclose(image_tensor(np.zeros((2, 4, 4, 3), np.float32)), -torch.ones(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"image: a float numpy array must be in \[0, 1\]; got \[0, 255\]"):
        image_tensor(np.array([[[0.0, 255.0, 0.0]]]))
    with pytest.raises(ValueError, match=r"image: a tensor must be finite and in \[-1, 1\]; got \[0, 255\]"):
        image_tensor(torch.tensor([0.0, 255.0]).view(1, 1, 1, 2).expand(1, 3, 1, 2))
    with pytest.raises(ValueError, match="image must be a PIL image, a list of them, a numpy array or a torch tensor"):
        image_tensor("photo.png")


def test_api_errors_name_their_parameter():
    unet, scheduler = load_pixel_model(EMBEDDED_MODEL_DIR, "ddpm")
    im = Image.new("RGB", (32, 32))
    with pytest.raises(ValueError, match="scale must be a number or a \\(height, width\\) pair"):
        hiresdiff.upscale(unet, im, scale="2", scheduler=scheduler)
    with pytest.raises(ValueError, match="recipe must be a Recipe or a preset name"):
        hiresdiff.upscale(unet, im, scheduler=scheduler, recipe=3)
    with pytest.raises(ValueError, match="method must be one of"):
        hiresdiff.upscale(unet, im, scheduler=scheduler, recipe="warp")
    with pytest.raises(ValueError, match=r"class_labels must lie in \[0, "):
        hiresdiff.upscale(unet, im, scheduler=scheduler, class_labels=torch.tensor([1000]), steps=2)
    out = hiresdiff.upscale(
        unet, im, scheduler=scheduler, recipe="freescale", class_labels=torch.tensor([0]), steps=2, progress=False
    )  # a preset name is a recipe
    assert out[0].size == (64, 64)
