import math

import pytest
import torch
import torch.nn.functional as F

from hiresdiff import downsample, lowres_noise, upsample_nearest
from hiresdiff.core.resample import axis_factors, factor_product


def test_downsample_matches_avg_pool_on_images_and_videos():
    img = torch.randn(2, 3, 12, 18)
    assert torch.allclose(downsample(img, 3), F.avg_pool2d(img, 3), atol=1e-6)
    assert torch.allclose(downsample(img, (2, 3)), F.avg_pool2d(img, (2, 3)), atol=1e-6)
    vid = torch.randn(2, 4, 6, 8, 10)
    assert torch.allclose(downsample(vid, (3, 2, 5)), F.avg_pool3d(vid, (3, 2, 5)), atol=1e-6)
    assert torch.allclose(downsample(vid, 2), F.avg_pool3d(vid, (1, 2, 2)), atol=1e-6)  # int: spatial only
    assert torch.allclose(downsample(vid, (2, 1, 1)), F.avg_pool3d(vid, (2, 1, 1)), atol=1e-6)  # temporal only


def test_upsample_nearest_matches_interpolate():
    img = torch.randn(2, 3, 4, 5)
    assert torch.equal(upsample_nearest(img, (2, 3)), F.interpolate(img, scale_factor=(2, 3), mode="nearest"))
    vid = torch.randn(1, 2, 3, 4, 5)
    assert torch.equal(upsample_nearest(vid, (2, 1, 3)), F.interpolate(vid, scale_factor=(2, 1, 3), mode="nearest"))


@pytest.mark.parametrize(
    "shape,factor",
    [((2, 3, 12, 18), 3), ((2, 3, 8, 12), (2, 4)), ((1, 2, 4, 6, 6), (2, 3, 3)), ((1, 2, 4, 6, 6), (2, 1, 1))],
)
def test_du_identity_and_ud_orthogonal_projection(shape, factor):
    x, y = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    low = downsample(x, factor)
    assert torch.allclose(downsample(upsample_nearest(low, factor), factor), low)  # D∘U = id
    p = lambda z: upsample_nearest(downsample(z, factor), factor)  # noqa: E731
    assert torch.allclose(p(p(x)), p(x))  # idempotent
    assert torch.allclose((p(x) * y).sum(), (x * p(y)).sum())  # self-adjoint
    assert not torch.allclose(p(x), x)


def test_downsampled_noise_has_variance_one_over_k_and_lowres_noise_is_standard():
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(64, 4, 64, 48, generator=g)
    for factor in (2, (2, 3), 4):
        k = factor_product(factor, 4)
        assert abs(downsample(noise, factor).var().item() - 1 / k) < 0.03 / k
        low = lowres_noise(noise, factor)
        assert abs(low.var().item() - 1) < 0.03 and abs(low.mean().item()) < 0.02
        assert torch.allclose(low, math.sqrt(k) * F.avg_pool2d(noise, factor), atol=1e-5)


def test_factor_product_and_axis_factors():
    assert factor_product(2, 4) == 4 and factor_product(2, 5) == 4
    assert factor_product((2, 2, 2), 5) == 8 and factor_product((3, 2), 4) == 6
    assert axis_factors(3, 5) == (1, 3, 3) and axis_factors((2, 3), 5) == (1, 2, 3)


@pytest.mark.parametrize("factor", [0, -2, 2.5, (2, 0), "2", (1, 2, 2, 2), True])
def test_bad_factor_is_a_clear_error(factor):
    with pytest.raises(ValueError, match="factor"):
        downsample(torch.zeros(1, 1, 8, 8), factor)


def test_size_not_divisible_is_a_clear_error():
    with pytest.raises(ValueError, match=r"not divisible by the factor \(3, 3\)"):
        downsample(torch.zeros(1, 1, 8, 9), 3)
