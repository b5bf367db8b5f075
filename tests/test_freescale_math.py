"""FreeScale's pure math: detail control, dilation settings, Gaussian blur, windows; checked against
independent computations (math.cos, numpy Gaussians, F.conv2d)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hiresdiff.methods.freescale import (
    DilationConfig,
    ScaleFusionConfig,
    blend_detail,
    check_detail_alpha,
    detail_alpha_map,
    detail_weight,
    dilated_padding,
    downsampled_size,
    fuse,
    gaussian_blur,
    gaussian_blur_tokens,
    gaussian_kernel_2d,
    resize_alpha,
    token_level,
    window_starts,
)

T = 1000


def expected_c(t, alpha):
    """The paper's c at time t of T; its step fraction on a uniform grid is p = (T − t)/T."""
    return ((1 + math.cos(math.pi * (T - t) / T)) / 2) ** alpha


@pytest.mark.parametrize("t", [0, 1, 250, 500, 700, 999, 1000])
@pytest.mark.parametrize("alpha", [0.5, 1, 2.0, 3])
def test_detail_weight_matches_the_scaled_cosine(t, alpha):
    p = (T - t) / T
    assert detail_weight(p, alpha).item() == pytest.approx(expected_c(t, alpha), rel=1e-6, abs=1e-7)
    assert detail_weight(torch.tensor(p), alpha).item() == pytest.approx(expected_c(t, alpha), abs=1e-7)


def test_detail_weight_ends_and_alpha_map():
    assert detail_weight(0.0, 2.0).item() == 1.0  # the first step: all pivot
    assert detail_weight(1.0, 2.0).item() == 0.0  # the end: all sample
    alpha = torch.tensor([[0.5, 1.0, 3.0], [2.0, 0.0, 1.5]])
    c = detail_weight(0.6, alpha)
    assert c.shape == alpha.shape and c.dtype == torch.float32
    expected = torch.tensor([[expected_c(400, a) for a in row] for row in alpha.tolist()])
    assert torch.allclose(c, expected, atol=1e-7)
    with pytest.raises(ValueError, match=r"progress must be a number in \[0, 1\]"):
        detail_weight(400, 2.0)  # a time, not a step fraction
    assert c[1, 1] == 1.0  # alpha 0: c = 1 everywhere


def test_blend_detail_broadcasts_a_map_over_images_and_videos():
    c = torch.rand(4, 6)
    for shape in [(2, 3, 4, 6), (2, 3, 5, 4, 6)]:
        z, z_tilde = torch.randn(shape), torch.randn(shape)
        out = blend_detail(z, z_tilde, c)
        assert torch.allclose(out, z + c * (z_tilde - z), atol=1e-6)
        assert torch.equal(blend_detail(z, z_tilde, torch.tensor(0.0)), z)
        assert torch.equal(blend_detail(z, z_tilde, torch.tensor(1.0)), z_tilde)
    with pytest.raises(ValueError, match=r"c must be a number or a map of the sample's \(H, W\) \(4, 6\)"):
        blend_detail(torch.randn(1, 3, 4, 6), torch.randn(1, 3, 4, 6), torch.rand(4, 5))
    with pytest.raises(ValueError, match="c must be a number or a map"):
        blend_detail(torch.randn(1, 3, 4, 6), torch.randn(1, 3, 4, 6), torch.rand(3, 4, 6))


def test_detail_alpha_map_from_a_mask():
    mask = torch.tensor([[0.0, 1.0], [0.5, 0.25]])
    assert torch.allclose(detail_alpha_map(mask), torch.tensor([[0.5, 3.0], [1.75, 1.125]]))
    assert torch.allclose(detail_alpha_map(mask, 2.0, 1.0), 1 + mask)
    with pytest.raises(ValueError, match="mask must be a tensor"):
        detail_alpha_map(torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match=r"mask must be .* in \[0, 1\]"):
        detail_alpha_map(torch.full((2, 2), 1.5))
    with pytest.raises(ValueError, match="background must be a finite number >= 0"):
        detail_alpha_map(mask, background=-1.0)


def test_resize_alpha_to_a_stage_size():
    alpha = torch.rand(8, 12) * 3
    assert resize_alpha(alpha, (8, 12)) is alpha
    up = resize_alpha(alpha, (16, 24))
    assert up.shape == (16, 24)
    assert torch.allclose(up, F.interpolate(alpha[None, None], size=(16, 24), mode="bilinear")[0, 0])
    assert torch.allclose(resize_alpha(torch.full((64, 40), 2.0), (8, 5)), torch.full((8, 5), 2.0))
    assert (resize_alpha(alpha, (3, 7)) >= 0).all()


@pytest.mark.parametrize("alpha", [None, 0, 2.0, 3, torch.rand(4, 4), lambda image: torch.ones(4, 4)])
def test_check_detail_alpha_accepts(alpha):
    check_detail_alpha(alpha)


@pytest.mark.parametrize(
    "alpha",
    [
        -0.5,
        float("nan"),
        float("inf"),
        True,
        "2",
        [2.0],
        torch.ones(4),
        torch.ones(1, 4, 4),
        torch.tensor([[1.0, -1.0]]),
        torch.tensor([[float("nan")]]),
    ],
)
def test_check_detail_alpha_rejects_naming_the_parameter(alpha):
    with pytest.raises(ValueError, match="detail_alpha must be"):
        check_detail_alpha(alpha)
    if not isinstance(alpha, (str, list)):
        with pytest.raises(ValueError, match="detail_alpha"):
            detail_weight(0.5, alpha)


def test_dilation_config_validation_and_rounding():
    for until in (-0.1, 1.5, float("nan"), "0.7"):
        with pytest.raises(ValueError, match=r"until must be a number in \[0, 1\]"):
            DilationConfig(until=until)
    with pytest.raises(ValueError, match="until is the model family's"):
        DilationConfig().is_active(0.5)  # None = the family's, filled in before sampling
    with pytest.raises(ValueError, match=r"non_integer must be one of \('round',\)"):
        DilationConfig(non_integer="redilate")
    config = DilationConfig()
    assert config.dilation_for_scale((2.0, 2.0)) == (2, 2)
    assert config.dilation_for_scale((2.0, 1.0)) == (2, 1)
    assert config.dilation_for_scale((1.0, 4.0)) == (1, 4)
    assert config.dilation_for_scale((1.5, 2.5)) == (2, 3)  # half up, not banker's rounding
    assert config.dilation_for_scale((1.4, 0.5)) == (1, 1)


def test_dilation_window_is_the_first_until_fraction_of_the_steps():
    config = DilationConfig(until=0.7)
    assert config.is_active(0.0) and config.is_active(0.65)
    assert not config.is_active(0.7) and not config.is_active(1.0)
    assert not DilationConfig(until=0.0).is_active(0.0)
    assert DilationConfig(until=1.0).is_active(0.95)


@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, 1), (3, 2, 1), (5, 1, 2), (3, 2, 0)])
@pytest.mark.parametrize("dilation", [(2, 2), (2, 1), (1, 3)])
def test_dilated_padding_keeps_the_output_size(kernel, stride, padding, dilation):
    x, w = torch.randn(1, 2, 13, 16), torch.randn(3, 2, kernel, kernel)
    plain = F.conv2d(x, w, stride=stride, padding=padding)
    pad = dilated_padding((kernel, kernel), (padding, padding), dilation)
    assert F.conv2d(x, w, stride=stride, padding=pad, dilation=dilation).shape == plain.shape
    if padding == kernel // 2:
        assert pad == (dilation[0] * (kernel // 2), dilation[1] * (kernel // 2))


def test_scale_fusion_config_validation_and_kernel():
    assert ScaleFusionConfig().kernel_for((2.0, 2.0)) == 3
    assert ScaleFusionConfig().kernel_for((4.0, 2.0)) == 7
    assert ScaleFusionConfig().kernel_for((1.0, 1.0)) == 1
    assert ScaleFusionConfig().kernel_for((1.5, 1.0)) == 3
    assert ScaleFusionConfig(kernel=5).kernel_for((2.0, 2.0)) == 5
    for kwargs, name in [
        ({"sigma": 0}, "sigma"),
        ({"sigma": float("nan")}, "sigma"),
        ({"kernel": 4}, "kernel"),
        ({"kernel": 0}, "kernel"),
        ({"jitter": 1}, "jitter"),
        ({"seed": 1.5}, "seed"),
        ({"windows_per_batch": 0}, "windows_per_batch"),
    ]:
        with pytest.raises(ValueError, match=f"{name} must be"):
            ScaleFusionConfig(**kwargs)


def numpy_gaussian(size, sigma):
    g = np.array([math.exp(-((i - (size - 1) / 2) ** 2) / (2 * sigma**2)) for i in range(size)])
    return np.outer(g, g) / np.outer(g, g).sum()


@pytest.mark.parametrize("size,sigma", [(1, 1.0), (3, 1.0), (7, 1.0), (5, 0.6), (9, 2.5)])
def test_gaussian_kernel_sums_to_one_and_matches_numpy(size, sigma):
    kernel = gaussian_kernel_2d(size, sigma)
    assert kernel.shape == (size, size)
    assert kernel.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert np.allclose(kernel.numpy(), numpy_gaussian(size, sigma), atol=1e-14)
    with pytest.raises(ValueError, match="kernel must be an odd positive int"):
        gaussian_kernel_2d(size + 1, sigma)
    with pytest.raises(ValueError, match="sigma must be"):
        gaussian_kernel_2d(size, -sigma)


@pytest.mark.parametrize("size", [3, 5, 7])
def test_blur_of_a_delta_is_the_kernel(size):
    x = torch.zeros(2, 3, 11, 13, dtype=torch.float64)
    x[:, :, 5, 6] = 1.0
    blurred = gaussian_blur(x, size, 1.0)
    r = size // 2
    expected = torch.zeros_like(x)
    expected[:, :, 5 - r : 5 + r + 1, 6 - r : 6 + r + 1] = torch.from_numpy(numpy_gaussian(size, 1.0))
    assert torch.allclose(blurred, expected, atol=1e-14)
    constant = torch.full((1, 2, 4, 3), 0.7, dtype=torch.float64)  # replicate padding keeps constants, any grid size
    assert torch.allclose(gaussian_blur(constant, 9, 1.0), constant, atol=1e-14)
    assert gaussian_blur(x, 1, 1.0) is x


def test_blur_tokens_is_the_blur_on_the_row_major_grid():
    h, w, c = 5, 7, 4
    tokens = torch.randn(2, h * w, c)
    grid = tokens.transpose(1, 2).reshape(2, c, h, w)
    expected = gaussian_blur(grid, 3, 1.0).reshape(2, c, h * w).transpose(1, 2)
    assert torch.allclose(gaussian_blur_tokens(tokens, (h, w), 3, 1.0), expected)
    with pytest.raises(ValueError, match=r"grid_hw \(7, 5\) does not hold the 30 tokens"):
        gaussian_blur_tokens(torch.randn(1, 30, 2), (7, 5), 3, 1.0)


def test_fuse_is_low_pass_local_plus_high_pass_global():
    g, loc = torch.randn(1, 2, 6, 6), torch.randn(1, 2, 6, 6)
    blur = lambda x: gaussian_blur(x, 3, 1.0)  # noqa: E731
    assert torch.allclose(fuse(g, loc, blur), blur(loc) + g - blur(g))
    assert torch.allclose(fuse(g, g, blur), g, atol=1e-6)
    assert torch.equal(fuse(g, loc, lambda x: torch.zeros_like(x)), g)


@pytest.mark.parametrize("length,window", [(16, 8), (17, 8), (8, 8), (12, 4), (9, 2), (31, 16), (5, 3)])
def test_window_starts_cover_the_axis_with_half_window_stride(length, window):
    stride = window // 2 or 1
    starts = window_starts(length, window, stride)
    assert starts[0] == 0 and starts[-1] == length - window
    assert all(b - a == stride for a, b in zip(starts[:-2], starts[1:-1]))
    assert 0 < starts[-1] - starts[-2] <= stride if len(starts) > 1 else True
    covered = torch.zeros(length, dtype=torch.bool)
    for s in starts:
        covered[s : s + window] = True
    assert covered.all()


def test_jittered_windows_are_seeded_stay_inside_and_cover():
    nominal = window_starts(64, 16, 8)
    seen = set()
    for seed in range(20):
        starts = window_starts(64, 16, 8, 2, torch.Generator().manual_seed(seed))
        assert starts == window_starts(64, 16, 8, 2, torch.Generator().manual_seed(seed))
        assert starts[0] == 0 and starts[-1] == 48 and len(starts) == len(nominal)
        assert all(abs(s - n) <= 2 for s, n in zip(starts, nominal))
        covered = torch.zeros(64, dtype=torch.bool)
        for s in starts:
            covered[s : s + 16] = True
        assert covered.all()
        seen.add(tuple(starts))
    assert len(seen) > 1


def test_window_starts_reject_bad_windows():
    with pytest.raises(ValueError, match=r"window must be an int in \[1, 8\] \(the grid's length\); got 9"):
        window_starts(8, 9, 4)
    with pytest.raises(ValueError, match="stride must be"):
        window_starts(8, 4, 0)
    with pytest.raises(ValueError, match="jitter must be"):
        window_starts(32, 8, 4, 3)


def test_token_grids_of_unet_levels():
    assert downsampled_size((16, 24), 0) == (16, 24)
    assert downsampled_size((16, 24), 2) == (4, 6)
    assert downsampled_size((15, 9), 1) == (8, 5)  # ceil, as a stride-2 conv with padding 1
    assert token_level((16, 24), 16 * 24) == 0
    assert token_level((16, 24), 8 * 12) == 1
    assert token_level((15, 9), 4 * 3) == 2
    with pytest.raises(ValueError, match=r"50 tokens are not a downsampled grid of the call's size \(16, 24\)"):
        token_level((16, 24), 50)
