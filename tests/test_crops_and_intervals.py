"""The crop metric (detail at the native scale) and bootstrap intervals, against what they must see."""

import pytest
import torch
import torch.nn.functional as F
from markers import needs_emoji_data

from hiresdiff.data import emoji
from hiresdiff.eval.metrics import (
    bootstrap,
    crop_fd,
    crop_swd,
    frechet_distance,
    frechet_distance_to,
    gaussian_stats,
    random_crops,
    tie,
)
from hiresdiff.eval.metrics.intervals import Interval


def test_random_crops_take_the_same_positions_for_the_same_seed_and_cut_what_they_say():
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8) / 384 - 1
    crops = random_crops(images, 4, per_image=3, seed=5)
    assert crops.shape == (6, 3, 4, 4) and torch.equal(crops, random_crops(images, 4, per_image=3, seed=5))
    for k, crop in enumerate(crops):  # every crop is a window of its own image
        source = images[k // 3]
        assert any(
            torch.equal(crop, source[:, top : top + 4, left : left + 4]) for top in range(5) for left in range(5)
        )
    with pytest.raises(ValueError, match="size 9 is larger"):
        random_crops(images, 9)


@needs_emoji_data
def test_crop_distances_are_near_their_floor_for_real_vs_real_and_far_for_a_blurred_set(tmp_path):
    data = emoji.load(128, "all", emoji.build(tmp_path / "data", limit=600, progress=False))
    order = torch.randperm(len(data.images), generator=torch.Generator().manual_seed(0))
    a, b = data.images[order[:120]], data.images[order[120:240]]  # two draws of the same kinds of emoji
    blurred = F.interpolate(F.interpolate(b, size=(32, 32), mode="area"), size=(128, 128), mode="bilinear").clamp(-1, 1)
    floor, blur = crop_fd(a, b, 32), crop_fd(a, blurred, 32)
    assert blur > 3 * floor
    assert crop_swd(a, blurred, 32) > 2 * crop_swd(a, b, 32)


def test_bootstrap_intervals_cover_the_true_mean_at_about_their_level():
    """A synthetic metric: the mean of 40 draws of N(0.3, 1). Over 150 data sets the 90 % interval holds 0.3 about
    90 % of the time (the percentile bootstrap undercovers a little at n = 40)."""
    generator = torch.Generator().manual_seed(0)
    covered = 0
    for trial in range(150):
        values = 0.3 + torch.randn(40, generator=generator)
        interval = bootstrap(lambda idx: float(values[idx].mean()), 40, resamples=300, level=0.9, seed=trial)
        covered += interval.low <= 0.3 <= interval.high
        assert interval.low <= interval.estimate <= interval.high
    assert 0.8 <= covered / 150 <= 0.97


def test_ties_are_overlapping_intervals_and_bad_input_is_named():
    assert tie(Interval(1.0, 0.8, 1.2), Interval(1.3, 1.1, 1.5)) and not tie(
        Interval(1.0, 0.8, 1.0), Interval(2, 1.5, 2.5)
    )
    with pytest.raises(ValueError, match="level"):
        bootstrap(lambda idx: 0.0, 10, level=1.5)
    with pytest.raises(ValueError, match="count"):
        bootstrap(lambda idx: 0.0, 1)


def test_the_distance_to_fixed_reference_statistics_is_the_frechet_distance():
    """The bootstrap's FD (one N×N eigendecomposition) equals the closed form on the full covariances, with fewer
    samples than dimensions as in the suites (96 images, 528 features) and with more."""
    generator = torch.Generator().manual_seed(0)
    reference = 1.1 * torch.randn(480, 64, generator=generator, dtype=torch.float64) + 0.05
    mu, sigma = gaussian_stats(reference)
    for n in (24, 200):
        feats = torch.randn(n, 64, generator=generator, dtype=torch.float64)
        assert frechet_distance_to(feats, mu, sigma) == pytest.approx(frechet_distance(feats, reference), rel=1e-6)
    with pytest.raises(ValueError, match="same dimension"):
        frechet_distance_to(torch.randn(8, 3, dtype=torch.float64), mu, sigma)
