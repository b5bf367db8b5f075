"""Tiled refinement (``CascadeConfig(tiles=overlap)``): a later stage's denoiser calls made on feathered tiles of the
trained size, on every family."""

import pytest
import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.unets.unet_2d import UNet2DOutput
from tiny_pipelines import load

import hiresdiff
from hiresdiff.core.tiling import feathered_tiles, gaussian_ramp, tile_starts
from hiresdiff.cost import architectures
from hiresdiff.cost.meta_run import as_meta_twin
from hiresdiff.cost.plan import count_run, window_edges
from hiresdiff.denoisers.layouts import FluxLayout
from hiresdiff.denoisers.registry import find_denoiser
from hiresdiff.hooks.base import attached
from hiresdiff.hooks.tiled_denoising import TILES_HOOK, attach_tiles, remove_tiles
from hiresdiff.loading.pixel_pipeline import PixelPipeline
from hiresdiff.methods.self_cascade import CascadeConfig
from hiresdiff.recipe import Recipe

# ---- the tiles and their weights -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size,tile,overlap,multiple",
    [((64, 80), (32, 32), (8, 8), 1), ((100, 36), (32, 32), (8, 0), 2), ((16, 16), (16, 16), (4, 4), 1)],
)
def test_feathering_weights_sum_to_one_and_the_tiles_cover_the_image_with_the_overlap(size, tile, overlap, multiple):
    total = torch.zeros(size, dtype=torch.float64)
    for rows, cols, weight in feathered_tiles(size, tile, overlap, multiple):
        assert (rows.stop - rows.start, cols.stop - cols.start) == tile and (weight > 0).all()
        assert rows.start % multiple == 0 and cols.start % multiple == 0
        total[rows, cols] += weight
    assert torch.allclose(total, torch.ones(size, dtype=torch.float64), atol=1e-15, rtol=0)
    for n, t, o in zip(size, tile, overlap):
        starts = tile_starts(n, t, o, multiple)
        assert starts[0] == 0 and starts[-1] == n - t
        assert all(t - (b - a) >= o for a, b in zip(starts, starts[1:]))  # neighbours share at least the overlap


def test_the_feathering_ramp_is_a_gaussian_of_a_quarter_tile_centred_on_the_tile():
    ramp = gaussian_ramp(8)
    centres = torch.arange(8, dtype=torch.float64) + 0.5 - 4  # pixel centres relative to the tile's centre
    assert torch.allclose(ramp, torch.exp(-0.5 * (centres / 2) ** 2), atol=1e-15, rtol=0)
    assert torch.equal(ramp, ramp.flip(0)) and abs(float(gaussian_ramp(1000)[0]) - torch.e**-2) < 1e-3  # edge e^−2


# ---- exactness: a denoiser that acts pixel by pixel ------------------------------------------------------------


class PixelwiseUNet(torch.nn.Module):
    """A "UNet" whose output at each pixel depends on that pixel alone (and the time): tiles change nothing."""

    def forward(self, sample, timestep, return_dict: bool = True):
        out = torch.tanh(sample) * (1 + timestep) + sample**2
        return UNet2DOutput(sample=out) if return_dict else (out,)


class PixelwiseFlux(torch.nn.Module):
    """A FLUX-like transformer acting token by token (a token is a 2×2 latent patch), recording its position ids."""

    def __init__(self):
        super().__init__()
        self.ids = []

    def forward(self, hidden_states, img_ids, timestep, return_dict: bool = True):
        self.ids.append(img_ids)
        out = torch.sin(hidden_states) * timestep - hidden_states
        return Transformer2DModelOutput(sample=out) if return_dict else (out,)


def test_a_pixelwise_unet_gives_the_untiled_result_through_the_tiles():
    unet, z = PixelwiseUNet(), torch.randn(2, 3, 40, 56, dtype=torch.float64)
    whole = unet(z, 0.5).sample
    attach_tiles(unet, (16, 16), 0.25)
    try:
        assert torch.allclose(unet(z, 0.5).sample, whole, atol=1e-14, rtol=0)
        assert torch.allclose(unet(z, 0.5, return_dict=False)[0], whole, atol=1e-14, rtol=0)
    finally:
        remove_tiles(unet)
    assert attached(unet, TILES_HOOK) is None


def test_a_pixelwise_flux_transformer_gives_the_untiled_result_and_sees_trained_size_positions():
    layout, flux = FluxLayout(), PixelwiseFlux()
    z = torch.randn(1, 4, 24, 40, dtype=torch.float64)
    ids = layout.with_input({"img_ids": torch.zeros(1, 3)}, z)["img_ids"]
    whole = flux(layout.from_grid(z), ids, 0.3).sample
    flux.ids.clear()
    attach_tiles(flux, (16, 16), 0.25, layout, multiple=2)
    try:
        tiled = flux(layout.from_grid(z), ids, 0.3).sample
    finally:
        remove_tiles(flux)
    assert torch.allclose(tiled, whole, atol=1e-14, rtol=0)
    assert len(flux.ids) > 1 and all(int(i[:, 1:].max()) == 7 for i in flux.ids)  # rows/columns 0..7 of a 16² tile


# ---- through the pipelines --------------------------------------------------------------------------------------


def first_layer(denoiser):
    return getattr(denoiser, "conv_in", None) or getattr(denoiser, "x_embedder", None) or denoiser.pos_embed


@pytest.mark.parametrize("kind", ["pixel", "sd15", "sdxl", "flux", "sd3", "animatediff"])
def test_a_tiled_stage_makes_only_trained_size_calls_and_leaves_the_denoiser_as_found(kind):
    """At 2× with a quarter overlap each side of the 32² target gets tile_starts(32, 16, 4) = 3 tiles: 9 calls per
    call of the untiled stage, all at the trained size (16² pixels)."""
    pipe = load(kind)
    if kind == "pixel":
        pipe = PixelPipeline(pipe.unet, pipe.scheduler)
    denoiser, _ = find_denoiser(pipe)
    kwargs = {} if kind == "pixel" else {"prompt": "a cat"}
    if kind == "animatediff":
        kwargs["num_frames"] = 2
    shapes = []
    handle = first_layer(denoiser).register_forward_pre_hook(lambda m, a: shapes.append(tuple(a[0].shape)))
    try:
        calls = {}
        for tiles in (None, 0.25):
            shapes.clear()
            recipe = Recipe.freescale(tiles=tiles)
            hiresdiff.generate(pipe, **kwargs, height=32, width=32, steps=4, recipe=recipe, output_type="latent")
            calls[tiles] = list(shapes)
    finally:
        handle.remove()
    trained = calls[None][0]
    later = len(calls[None]) - calls[None].count(trained)
    assert set(calls[0.25]) == {trained} and len(calls[0.25]) == calls[None].count(trained) + 9 * later
    assert attached(denoiser, TILES_HOOK) is None and "forward" not in vars(denoiser)


def test_a_failing_tile_leaves_the_denoiser_as_found():
    pipe = load("sd15")
    calls = []

    def fail_on_the_fifth(module, args):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("boom")

    handle = pipe.unet.conv_in.register_forward_pre_hook(fail_on_the_fifth)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            hiresdiff.generate(pipe, "a cat", height=32, width=32, steps=4, recipe=Recipe.freescale(tiles=0.25))
    finally:
        handle.remove()
    assert attached(pipe.unet, TILES_HOOK) is None and "forward" not in vars(pipe.unet)


def test_tiles_are_refused_with_whole_image_parts_before_any_call():
    pipe = load("controlnet")
    with pytest.raises(ValueError, match="tiles: the controlnet of this run works? on the whole image"):
        hiresdiff.generate(pipe, "a cat", height=32, width=32, steps=2, recipe=Recipe.freescale(tiles=0.25))
    with pytest.raises(ValueError, match=r"tiles must be None \(whole\) or the tiles' overlap share in \[0, 1\)"):
        CascadeConfig(tiles=1.0)


# ---- memory ------------------------------------------------------------------------------------------------------


def test_a_tiled_stage_holds_no_more_than_a_trained_size_one_from_4_to_16_tiles():
    """SDXL on meta: the later stage at 2048² (4 tiles) and 4096² (16 tiles) peaks no higher than the 1024² stage
    (within 5 %), where the whole stage's peak grows with the image (over 3× the trained stage's at 4096²)."""
    pipe = as_meta_twin(architectures.build_pipeline("sdxl", device="meta", dtype=torch.float16))
    peaks = {}
    for tiles in (0.0, None):
        for size in (2048, 4096):
            recipe = Recipe(cascade=CascadeConfig(strength=0.5, stage_ratio=size // 1024, tiles=tiles))
            parts = count_run(
                pipe, recipe, size, size, 2, architectures.PROMPT, window_edges(recipe), output_type="latent"
            )
            peaks[tiles, size] = (parts[0].peak_bytes, parts[1].peak_bytes)
    trained = peaks[None, 2048][0]
    assert max(peaks[0.0, 2048][1], peaks[0.0, 4096][1]) <= 1.05 * trained
    assert peaks[None, 4096][1] > 3 * trained
