"""A super-resolution network as the cascade's φ (``CascadeConfig(upscaler=…)``, ``--upscaler FILE``).

The plumbing is tested with plain callables everywhere; the spandrel loader with models built here from spandrel's own
architecture classes (random weights, saved as a user's file), in the environment with the 'sr' extra (``.ci/run``
makes one; without spandrel those tests skip, saying so).
"""

import subprocess
import sys

import pytest
import torch
from markers import needs_spandrel
from safetensors.torch import save_file
from tiny_pipelines import load

import hiresdiff
from hiresdiff.core.tiling import in_tiles
from hiresdiff.loading.pixel_pipeline import PixelPipeline
from hiresdiff.loading.upscaler import load_upscaler
from hiresdiff.methods.self_cascade import CascadeConfig, resize
from hiresdiff.recipe import Recipe

PROMPT = "a cat"


def bicubic(images, size):
    return resize(images, size, "bicubic").clamp(-1, 1)


def run(pipe, recipe, size=32, **kw):
    frames = {"num_frames": 2} if "motion_adapter" in pipe.components else {}
    args = {} if isinstance(pipe, PixelPipeline) else {"prompt": PROMPT}
    out = hiresdiff.generate(
        pipe, **args, height=size, width=size, recipe=recipe, steps=4, seed=0, output_type="latent", **frames, **kw
    )
    return torch.as_tensor(out)


# ---- φ through an upscaler, on every family -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sd15", "sdxl", "flux", "sd3"])
def test_an_upscaler_is_the_rgb_phi_it_computes(kind):
    """A callable doing what space="rgb" does (bicubic resize of the decoded image, clamped) gives that cascade bit
    for bit: the upscaler sits exactly where the RGB resize did, in every image family."""
    pipe = load(kind)
    rgb = run(pipe, Recipe.freescale(space="rgb", upsample="bicubic"))
    assert torch.equal(run(pipe, Recipe.freescale(upscaler=bicubic)), rgb)


def test_a_pixel_models_upscaler_acts_on_its_samples():
    pipe = load("pixel")
    pixel = PixelPipeline(pipe.unet, pipe.scheduler)
    sizes = []

    def nearest(images, size):
        sizes.append((tuple(images.shape), tuple(size)))
        return resize(images, size, "nearest")

    out = run(pixel, Recipe.self_cascade(upscaler=nearest))
    assert torch.equal(out, run(pixel, Recipe.self_cascade(upsample="nearest")))
    assert sizes == [((1, 3, 16, 16), (32, 32))]


def test_a_video_upscaler_gets_the_frames_as_images():
    pipe = load("animatediff")
    seen = []

    def record(images, size):
        seen.append(tuple(images.shape))
        return bicubic(images, size)

    out = run(pipe, Recipe.self_cascade(upscaler=record))
    assert seen == [(2, 3, 16, 16)]  # one clip of two frames, upscaled as two images
    assert out.shape == run(pipe, Recipe.self_cascade()).shape


def test_a_cascade_refuses_an_upscaler_that_is_not_callable():
    with pytest.raises(ValueError, match="upscaler must be None or a callable"):
        CascadeConfig(upscaler="4x.pth")


# ---- tiles --------------------------------------------------------------------------------------------------


def conv_stack(depth: int, scale: int) -> torch.nn.Module:
    """``depth`` 3×3 convolutions then a pixel shuffle: receptive radius ``depth``."""
    torch.manual_seed(0)
    layers = [torch.nn.Conv2d(3, 8, 3, padding=1)]
    layers += [torch.nn.Conv2d(8, 8, 3, padding=1) for _ in range(depth - 2)]
    layers += [torch.nn.Conv2d(8, 3 * scale**2, 3, padding=1), torch.nn.PixelShuffle(scale)]
    return torch.nn.Sequential(*layers).double()


@pytest.mark.parametrize("scale", [2, 4])
def test_tiles_with_a_margin_of_the_receptive_radius_give_the_untiled_result(scale):
    network = conv_stack(5, scale)
    images = torch.randn(2, 3, 37, 50, dtype=torch.float64)
    with torch.no_grad():
        whole = network(images)
        assert torch.allclose(in_tiles(network, images, 16, 5, scale), whole, atol=1e-12, rtol=0)
        assert not torch.allclose(in_tiles(network, images, 16, 3, scale), whole, atol=1e-6)  # too little context


# ---- spandrel ------------------------------------------------------------------------------------------------


def test_without_spandrel_the_upscaler_says_which_extra_to_install(tmp_path, monkeypatch):
    path = tmp_path / "4x.pth"
    path.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "spandrel", None)  # an import of it fails, as where it is not installed
    with pytest.raises(ImportError, match=r"upscaler: reading .*4x.pth needs spandrel \(pip install 'hiresdiff\[sr\]'"):
        load_upscaler(path)


def test_a_missing_upscaler_file_is_named():
    with pytest.raises(FileNotFoundError, match="upscaler: nowhere.pth is not a file"):
        load_upscaler("nowhere.pth")


def compact(scale: int, convolutions: int = 4):
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(0)
    return Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=convolutions, upscale=scale).eval()


@needs_spandrel
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("scale", [2, 4])
def test_a_users_file_loads_through_spandrel_and_upsamples_in_exact_tiles(tmp_path, scale, suffix):
    """Real-ESRGAN Compact: its receptive radius is its convolutions + 2 (6 here), within the default margin, so
    tiles give the untiled result. (ESRGAN's RRDB stacks hundreds of convolutions and SwinIR/HAT attend across
    windows: tiled, they are approximations, which is why the margin is 32 pixels.)"""
    network = compact(scale)
    path = tmp_path / f"{scale}x{suffix}"
    state = {k: v.contiguous() for k, v in network.state_dict().items()}
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    upscaler = load_upscaler(path, tile=12)
    assert upscaler.scale == scale and upscaler.tiled
    images = torch.rand(2, 3, 30, 20) * 2 - 1
    with torch.no_grad():
        expected = network((images + 1) / 2).clamp(0, 1) * 2 - 1
    tiled = upscaler(images, (30 * scale, 20 * scale))
    assert torch.allclose(tiled, expected, atol=1e-6)
    whole = load_upscaler(path, tile=64)(images, (30 * scale, 20 * scale))
    assert torch.allclose(tiled, whole, atol=1e-6)


@needs_spandrel
def test_a_2x_network_reaches_4x_by_two_passes_and_then_the_exact_size(tmp_path):
    path = tmp_path / "2x.pth"
    torch.save(compact(2).state_dict(), path)
    upscaler = load_upscaler(path)
    images = torch.rand(1, 3, 16, 16) * 2 - 1
    twice = upscaler.once(upscaler.once(images))
    assert torch.equal(upscaler(images, (64, 64)), twice.clamp(-1, 1))
    assert upscaler(images, (48, 40)).shape[-2:] == (48, 40)  # two passes to 64², then down to the size asked


@needs_spandrel
def test_a_file_spandrel_cannot_read_is_one_line_naming_it_before_any_model_loads(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"unknown.weight": torch.zeros(3)}, bad)
    with pytest.raises(ValueError, match=r"upscaler: spandrel cannot read .*bad.pth"):
        load_upscaler(bad)
    result = subprocess.run(
        [sys.executable, "-m", "hiresdiff", "generate", "--model", "nowhere", "--upscaler", str(bad)],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # the default --out is in the working directory, where the main job may have left one
    )
    assert result.returncode == 2
    error = result.stderr.strip()
    assert error.count("\n") == 0 and "spandrel cannot read" in error and "bad.pth" in error


@needs_spandrel
def test_the_upscaler_runs_weightless_on_meta_and_keeps_its_weights(tmp_path):
    path = tmp_path / "2x.pth"
    torch.save(compact(2).state_dict(), path)
    upscaler = load_upscaler(path)
    out = upscaler(torch.empty(1, 3, 16, 16, device="meta"), (32, 32))
    assert out.device.type == "meta" and out.shape == (1, 3, 32, 32)
    assert next(upscaler.descriptor.model.parameters()).device.type == "cpu"


@needs_spandrel
def test_the_owned_models_name_the_shipped_network_which_loads_like_a_users_file():
    from hiresdiff.models import EMOJI_SR_FILE, shipped_upscaler

    assert shipped_upscaler(None) == shipped_upscaler("emoji-latent") == shipped_upscaler("emoji-flux")
    assert shipped_upscaler(None) == str(EMOJI_SR_FILE) and shipped_upscaler("some/folder") is None
    upscaler = load_upscaler(shipped_upscaler(None))
    assert (upscaler.scale, upscaler.descriptor.architecture.name) == (2, "RealESRGAN Compact")


def test_upscaler_shipped_is_refused_for_a_model_that_ships_none(capsys, tmp_path, monkeypatch):
    from hiresdiff.cli import main

    monkeypatch.chdir(tmp_path)  # the default --out is in the working folder, where the README's main job wrote one

    assert main(["generate", "--model", "some/folder", "--prompt", "a cat", "--upscaler", "shipped"]) == 2
    assert "--upscaler shipped: some/folder ships no upscaler" in capsys.readouterr().err
