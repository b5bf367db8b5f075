"""Tests of hiresdiff.eval.metrics on small synthetic image sets (coloured shapes on white)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hiresdiff.eval.metrics import (
    FIDInceptionV3,
    InceptionFeatures,
    KIDResult,
    RandomConvFeatures,
    detail_energy,
    detail_energy_ratio,
    fid,
    frechet_distance,
    frechet_distance_from_stats,
    kernel_inception_distance,
    kid,
    laplacian_pyramid,
    median_paired_rmse,
    paired_rmse,
    sliced_wasserstein,
)
from hiresdiff.eval.metrics.swd import _pyr_up

# ----------------------------------------------------------------------------------------------
# synthetic data


def shapes(n: int, seed: int, size: int = 32, count: int = 1, red_shift: float = 0.0) -> torch.Tensor:
    """``n`` images in [-1, 1]: ``count`` random circles/squares of random dark colours on white.

    ``red_shift`` moves every shape colour towards red (a colour shift of the objects, the
    white background is unchanged).
    """
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    img = torch.ones(n, 3, size, size)
    for _ in range(count):
        r = size * (0.12 + 0.1 * torch.rand(n, generator=g))
        cy = size * (0.25 + 0.5 * torch.rand(n, generator=g))
        cx = size * (0.25 + 0.5 * torch.rand(n, generator=g))
        col = torch.rand(n, 3, generator=g) * 1.2 - 0.9
        col = (col + red_shift * torch.tensor([1.0, -0.5, -0.5])).clamp(-1, 1)
        square = torch.rand(n, generator=g) < 0.5
        dy = (yy[None] - cy[:, None, None]).abs()
        dx = (xx[None] - cx[:, None, None]).abs()
        circle = dy**2 + dx**2 < r[:, None, None] ** 2
        box = (dy < 0.9 * r[:, None, None]) & (dx < 0.9 * r[:, None, None])
        mask = torch.where(square[:, None, None], box, circle)
        img = torch.where(mask[:, None], col[:, :, None, None].expand_as(img), img)
    return img


def blur(x: torch.Tensor) -> torch.Tensor:
    """5-tap binomial blur (σ ≈ 1 px), replicate borders."""
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16
    x = F.pad(x, (2, 2, 2, 2), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, 5).expand(3, 1, 1, 5), groups=3)
    return F.conv2d(x, k.view(1, 1, 5, 1).expand(3, 1, 5, 1), groups=3)


N_SWD = 96  # images per set for SWD
N_FEAT = 256  # images per set for FD / KID in the random feature space
SWD_KW = dict(num_projections=128)


@pytest.fixture(scope="module")
def swd_sets():
    ref, other = shapes(N_SWD, 1), shapes(N_SWD, 2)
    return {
        "ref": ref,
        "same": other,  # a disjoint draw of the same distribution: the noise floor
        "blur": blur(other),
        "colour": shapes(N_SWD, 2, red_shift=0.8),
        "dup": shapes(N_SWD, 2, count=2),
    }


@pytest.fixture(scope="module")
def swd_floor(swd_sets):
    """SWD of two disjoint draws of one distribution, under both normalisation rules."""
    return {
        rule: sliced_wasserstein(swd_sets["ref"], swd_sets["same"], normalize=rule, **SWD_KW)
        for rule in ("per_set", "joint")
    }


@pytest.fixture(scope="module")
def rand_features():
    return RandomConvFeatures()


@pytest.fixture(scope="module")
def feat_sets(rand_features):
    other = shapes(N_FEAT, 2)
    images = {
        "ref": shapes(N_FEAT, 1),
        "same": other,
        "blur": blur(other),
        "colour": shapes(N_FEAT, 2, red_shift=0.8),
        "dup": shapes(N_FEAT, 2, count=2),
    }
    return {k: rand_features(v) for k, v in images.items()}


# ----------------------------------------------------------------------------------------------
# sliced Wasserstein distance


def test_laplacian_pyramid_reconstructs_and_keeps_constants():
    x = shapes(3, 0, size=32) * 0.7
    pyr = laplacian_pyramid(x, 3)
    assert [tuple(p.shape[-2:]) for p in pyr] == [(32, 32), (16, 16), (8, 8)]
    # collapsing the pyramid gives back the image (up() is the pyramid's own upsampler)
    rec = pyr[-1]
    for band in reversed(pyr[:-1]):
        rec = band + _pyr_up(rec, band.shape[-2:])
    torch.testing.assert_close(rec, x, atol=1e-5, rtol=0)
    # a constant image has zero band-pass levels and itself as the low-pass
    const = torch.full((1, 3, 32, 32), 0.3)
    pyr = laplacian_pyramid(const, 3)
    assert all(p.abs().max() < 1e-6 for p in pyr[:-1])
    torch.testing.assert_close(pyr[-1], torch.full((1, 3, 8, 8), 0.3))


@pytest.mark.parametrize(
    "size, levels, names",
    [
        ((32, 32), None, ["32", "16"]),
        ((64, 64), None, ["64", "32", "16"]),
        ((128, 128), None, ["128", "64", "32", "16"]),
        ((32, 32), 3, ["32", "16", "8"]),
        ((32, 48), None, ["32x48", "16x24"]),
    ],
)
def test_swd_level_names(size, levels, names):
    a = torch.rand(3, 3, *size) * 2 - 1
    b = torch.rand(2, 3, *size) * 2 - 1
    out = sliced_wasserstein(a, b, patches_per_image=8, num_projections=16, levels=levels)
    assert list(out) == names + ["mean"]
    assert all(v > 0 and math.isfinite(v) for v in out.values())
    assert out["mean"] == pytest.approx(np.mean([out[n] for n in names]))


def test_swd_identical_sets_are_zero(swd_sets):
    ref = swd_sets["ref"]
    out = sliced_wasserstein(ref, ref.clone(), **SWD_KW)
    assert all(v == 0.0 for v in out.values())


def test_swd_grows_with_blur_and_duplication(swd_sets, swd_floor):
    ref = swd_sets["ref"]
    floor = swd_floor["per_set"]
    blurred = sliced_wasserstein(ref, swd_sets["blur"], **SWD_KW)
    dup = sliced_wasserstein(ref, swd_sets["dup"], **SWD_KW)
    assert floor["mean"] > 0
    # (ratios seen over seeds 1, 11, 21: blur '32' 3.2–4.4, blur mean 1.9–2.4, dup 3.4–4.8)
    assert blurred["32"] > 2.5 * floor["32"]  # blur lives in the finest band
    assert blurred["mean"] > 1.5 * floor["mean"]
    assert dup["mean"] > 2.5 * floor["mean"]


def test_swd_colour_shift_and_normalization_rule(swd_sets, swd_floor):
    ref, colour = swd_sets["ref"], swd_sets["colour"]
    joint_floor, floor = swd_floor["joint"]["mean"], swd_floor["per_set"]["mean"]
    # a shift of the object colours: joint normalisation sees it clearly (3.0–4.6× the floor
    # over seeds), ProGAN's per-set rule only weakly (1.3–1.5×), as it removes each set's
    # per-channel mean and spread
    assert sliced_wasserstein(ref, colour, normalize="joint", **SWD_KW)["mean"] > 2 * joint_floor
    assert sliced_wasserstein(ref, colour, **SWD_KW)["mean"] > 1.1 * floor
    # ProGAN's per-set rule is blind to a global affine colour change of a whole set; joint is not
    affine = 0.8 * ref - 0.1
    assert sliced_wasserstein(ref, affine, **SWD_KW)["mean"] < 1e-3
    assert sliced_wasserstein(ref, affine, normalize="joint", **SWD_KW)["mean"] > 2 * joint_floor


def test_swd_symmetric_and_deterministic(swd_sets):
    a, b = swd_sets["ref"][:40], swd_sets["blur"][:24]  # different set sizes
    ab = sliced_wasserstein(a, b, **SWD_KW)
    assert ab == sliced_wasserstein(b, a, **SWD_KW)
    assert ab == sliced_wasserstein(a, b, **SWD_KW)
    other_seed = sliced_wasserstein(a, b, seed=1, **SWD_KW)
    assert other_seed != ab
    assert other_seed["mean"] == pytest.approx(ab["mean"], rel=0.3)  # same quantity, other draw


def test_swd_different_set_sizes_stay_at_the_floor(swd_sets):
    ref, same = swd_sets["ref"], swd_sets["same"]
    small = sliced_wasserstein(ref, same[:48], **SWD_KW)["mean"]
    blurred = sliced_wasserstein(ref, swd_sets["blur"][:48], **SWD_KW)["mean"]
    assert 0 < small < 0.7 * blurred


def test_swd_validation():
    good = torch.zeros(2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"^a must have shape"):
        sliced_wasserstein(torch.zeros(2, 1, 32, 32), good)
    with pytest.raises(ValueError, match=r"^b must lie in \[-1, 1\]"):
        sliced_wasserstein(good, good + 1.5)
    nan = good.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"^b contains NaN"):
        sliced_wasserstein(good, nan)
    with pytest.raises(ValueError, match="same spatial size"):
        sliced_wasserstein(good, torch.zeros(2, 3, 64, 64))
    with pytest.raises(ValueError, match="levels=4"):
        sliced_wasserstein(good, good, levels=4)  # 4² coarsest level < 7² patches
    with pytest.raises(ValueError, match="patch_size"):
        sliced_wasserstein(good, good, patch_size=0)
    with pytest.raises(ValueError, match="normalize"):
        sliced_wasserstein(good, good, normalize="both")
    with pytest.raises(TypeError, match="^a must be a torch.Tensor"):
        sliced_wasserstein(good.numpy(), good)


# ----------------------------------------------------------------------------------------------
# Fréchet distance


def test_fd_closed_form_diagonal():
    # ||μ1−μ2||² + Σ (σ1 − σ2)² for diagonal covariances: 5 + (1−2)² + (2−1)² + (3−3)² = 7
    mu1, mu2 = np.zeros(3), np.array([1.0, 2.0, 0.0])
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 1.0, 9.0])
    assert frechet_distance_from_stats(mu1, s1, mu2, s2) == pytest.approx(7.0, abs=1e-10)


def test_fd_closed_form_rotated_and_non_commuting():
    # commuting, non-diagonal: same eigenbasis R, FD = Σ (√d1 − √d2)²
    theta = 0.3
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    s1, s2 = rot @ np.diag([1.0, 9.0]) @ rot.T, rot @ np.diag([4.0, 16.0]) @ rot.T
    assert frechet_distance_from_stats(np.zeros(2), s1, np.zeros(2), s2) == pytest.approx(1.0 + 1.0, abs=1e-10)
    # non-commuting 2×2: Tr (Σ1Σ2)^½ = sqrt(tr(Σ1Σ2) + 2 sqrt(det Σ1 det Σ2))
    s1, s2 = np.array([[2.0, 0.5], [0.5, 1.0]]), np.array([[1.0, -0.3], [-0.3, 3.0]])
    tr_sqrt = math.sqrt(np.trace(s1 @ s2) + 2 * math.sqrt(np.linalg.det(s1) * np.linalg.det(s2)))
    expected = 0.5**2 + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert frechet_distance_from_stats(np.zeros(2), s1, np.array([0.5, 0.0]), s2) == pytest.approx(expected, abs=1e-10)


def test_fd_on_samples_matches_the_gaussians():
    g = np.random.default_rng(0)
    a = g.normal(0.0, [1.0, 2.0, 3.0], size=(20000, 3))
    b = g.normal([1.0, 0.0, 0.0], [2.0, 1.0, 3.0], size=(20000, 3))
    assert frechet_distance(a, b) == pytest.approx(1.0 + 1.0 + 1.0, abs=0.1)
    assert frechet_distance(torch.from_numpy(a), torch.from_numpy(b)) == frechet_distance(a, b)


def test_fd_identical_symmetric_and_degradations(feat_sets):
    ref = feat_sets["ref"]
    assert abs(frechet_distance(ref, ref)) < 1e-6
    floor = frechet_distance(ref, feat_sets["same"])
    assert floor > 0
    for name in ("blur", "colour", "dup"):
        value = frechet_distance(ref, feat_sets[name])
        assert value > 3 * floor, name
        assert frechet_distance(feat_sets[name], ref) == pytest.approx(value, rel=1e-6)  # singular Σ: round-off
    # singular covariances (fewer samples than dimensions) still work
    assert frechet_distance(ref[:20], feat_sets["dup"][:20]) > frechet_distance(ref[:20], feat_sets["same"][:20])


def test_fd_validation():
    good = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"^feats_a must have shape \(N, d\)"):
        frechet_distance(np.zeros(4), good)
    with pytest.raises(ValueError, match="same dimension"):
        frechet_distance(good, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="^feats_b needs at least 2 samples"):
        frechet_distance(good, np.zeros((1, 3)))
    bad = good.copy()
    bad[1, 1] = np.inf
    with pytest.raises(ValueError, match="^feats_b contains NaN or infinite"):
        frechet_distance(good, bad)
    with pytest.raises(ValueError, match=r"^sigma2 must have shape \(2, 2\)"):
        frechet_distance_from_stats(np.zeros(2), np.eye(2), np.zeros(2), np.eye(3))


# ----------------------------------------------------------------------------------------------
# KID


def test_kid_hand_case():
    # d = 1, k(x, y) = (xy + 1)³; A = {0, 1}, B = {1, 2}:
    # k(0,1) = 1 ; k(1,2) = 27 ; cross: k(0,1)+k(0,2)+k(1,1)+k(1,2) = 1+1+8+27 = 37
    # MMD²_u = 1 + 27 − 2·37/4 = 9.5
    a, b = np.array([[0.0], [1.0]]), np.array([[1.0], [2.0]])
    assert kernel_inception_distance(a, b, subset_size=2, num_subsets=3) == KIDResult(pytest.approx(9.5), 0.0)
    # d = 2 with x·y/d giving the same products; subset_size above the set sizes is capped
    a2, b2 = np.repeat(a, 2, axis=1), np.repeat(b, 2, axis=1)
    res = kernel_inception_distance(a2, b2, subset_size=1000, num_subsets=2)
    assert res.mean == pytest.approx(9.5) and res.std == pytest.approx(0.0, abs=1e-12)


def test_kid_unbiased_near_zero_for_one_distribution():
    g = np.random.default_rng(0)
    a, b = g.normal(size=(2000, 8)), g.normal(size=(2000, 8))
    same = kernel_inception_distance(a, b, subset_size=500, num_subsets=20)
    shifted = kernel_inception_distance(a, b + 0.25, subset_size=500, num_subsets=20)
    # a biased (V-statistic) estimate would sit near 2·(E k(x,x) − E k(x,y))/m ≈ 0.03 here
    assert abs(same.mean) < 0.005
    assert shifted.mean > 10 * abs(same.mean) and shifted.mean > 0.02
    assert same.std > 0


def test_kid_symmetric_deterministic_and_degradations(feat_sets):
    ref = feat_sets["ref"]
    kw = dict(subset_size=100, num_subsets=20)
    floor = kernel_inception_distance(ref, feat_sets["same"], **kw)
    for name in ("blur", "colour", "dup"):
        value = kernel_inception_distance(ref, feat_sets[name], **kw)
        assert value.mean > abs(floor.mean) + 3 * floor.std, name
        swapped = kernel_inception_distance(feat_sets[name], ref, **kw)
        assert swapped.mean == pytest.approx(value.mean, rel=1e-9)
    dup = kernel_inception_distance(ref, feat_sets["dup"], **kw)
    assert kernel_inception_distance(ref, feat_sets["dup"], **kw) == dup
    assert kernel_inception_distance(ref, feat_sets["dup"], seed=1, **kw) != dup


def test_kid_validation():
    good = np.zeros((4, 3))
    with pytest.raises(ValueError, match="subset_size"):
        kernel_inception_distance(good, good, subset_size=1)
    with pytest.raises(ValueError, match="num_subsets"):
        kernel_inception_distance(good, good, num_subsets=0)
    with pytest.raises(ValueError, match="^feats_a contains NaN"):
        kernel_inception_distance(np.full((4, 3), np.nan), good)


# ----------------------------------------------------------------------------------------------
# feature spaces and helpers


def test_random_conv_features_shape_determinism_and_sizes(rand_features):
    x = shapes(6, 3, size=32)
    f = rand_features(x)
    assert f.shape == (6, rand_features.dim) and rand_features.dim == 528
    assert torch.equal(f, RandomConvFeatures()(x))
    assert not torch.allclose(f, RandomConvFeatures(seed=1)(x))
    # batching does not change the result
    torch.testing.assert_close(RandomConvFeatures(batch_size=1)(x), f, atol=1e-6, rtol=1e-5)
    for size in (64, 128):
        assert rand_features(shapes(2, 3, size=size)).shape == (2, 528)
    with pytest.raises(ValueError, match=r"^images must lie in \[-1, 1\]"):
        rand_features(x * 3)
    with pytest.raises(ValueError, match="^images contains NaN"):
        rand_features(torch.full((1, 3, 32, 32), float("nan")))


def test_fid_and_kid_helpers(rand_features):
    a, b = shapes(32, 5), shapes(32, 6, count=2)
    fa, fb = rand_features(a), rand_features(b)
    assert abs(fid(a, a, rand_features)) < 1e-6
    assert fid(a, b, rand_features) == frechet_distance(fa, fb) > 0
    kw = dict(subset_size=16, num_subsets=5)
    assert kid(a, b, rand_features, **kw) == kernel_inception_distance(fa, fb, **kw)
    with pytest.raises(ValueError, match="^images_b must hold at least 2"):
        fid(a, a[:1], rand_features)


def test_inception_missing_weights_path():
    with pytest.raises(FileNotFoundError, match="weights_path"):
        InceptionFeatures("/nonexistent/pt_inception-2015-12-05-6726825d.pth")
    with pytest.raises(FileNotFoundError, match="weights_path"):
        InceptionFeatures(None)


def test_inception_loads_a_saved_network(tmp_path):
    torch.manual_seed(0)
    net = FIDInceptionV3().eval()
    path = tmp_path / "inception.pth"
    torch.save(net.state_dict(), path)
    feats = InceptionFeatures(path)
    x = shapes(2, 0, size=32)
    f = feats(x)
    assert f.shape == (2, 2048) and torch.isfinite(f).all()
    with torch.no_grad():
        torch.testing.assert_close(f, net(feats.preprocess(x)))
    # a state dict of another network is rejected, naming the parameter
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="weights_path=.*not an FID Inception-v3 state dict"):
        InceptionFeatures(bad)


# ----------------------------------------------------------------------------------------------
# paired RMSE


def test_paired_rmse_hand_computation():
    high = torch.zeros(2, 3, 4, 4)
    high[0, 0, 0, 0] = 1.0  # D: channel 0, pixel (0, 0) = 0.25
    low = torch.zeros(2, 3, 2, 2)
    low[1] = 0.5  # pair 1: D[high] = 0 everywhere, low = 0.5 everywhere
    r = paired_rmse(high, low)
    assert r.shape == (2,)
    torch.testing.assert_close(r, torch.tensor([0.25 / math.sqrt(12), 0.5]))
    # detail inside a block that averages out leaves no error
    detail = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(2, 2) * 0.3
    assert paired_rmse(detail.expand(1, 3, 4, 4), torch.zeros(1, 3, 2, 2)).item() == 0.0
    # per-axis factors (4×8 → 2×2)
    assert paired_rmse(torch.full((1, 3, 4, 8), 0.2), torch.zeros(1, 3, 2, 2)).item() == pytest.approx(0.2)


def test_median_paired_rmse_even_count():
    low = torch.zeros(4, 3, 2, 2)
    high = torch.stack([torch.full((3, 4, 4), c) for c in (0.4, 0.1, 0.3, 0.2)])
    assert median_paired_rmse(high, low) == pytest.approx(0.25)


def test_paired_rmse_validation():
    with pytest.raises(ValueError, match="must be an integer multiple"):
        paired_rmse(torch.zeros(1, 3, 5, 5), torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match="same number of pairs"):
        paired_rmse(torch.zeros(2, 3, 4, 4), torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match=r"^low_res must have shape \(N, 3, H, W\)"):
        paired_rmse(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 2, 2))
    with pytest.raises(ValueError, match=r"^high_res must lie in \[-1, 1\]"):
        paired_rmse(torch.full((1, 3, 4, 4), -2.0), torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match="^high_res contains NaN"):
        paired_rmse(torch.full((1, 3, 4, 4), float("nan")), torch.zeros(1, 3, 2, 2))


# ----------------------------------------------------------------------------------------------
# fine-detail energy (grain / blur)


def test_detail_energy_of_a_checkerboard_is_its_squared_amplitude():
    # the binomial blur removes a ±a checkerboard entirely (1 − 4 + 6 − 4 + 1 = 0, mirror borders keep
    # the pattern), so the finest band is the checkerboard itself: energy a²
    a = 0.3
    y, x = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    checker = (a * (-1.0) ** (y + x)).float().expand(2, 3, 16, 16)
    assert detail_energy(checker) == pytest.approx(a**2, rel=1e-6)
    assert detail_energy(torch.full((2, 3, 16, 16), 0.7)) == pytest.approx(0.0, abs=1e-12)


def test_detail_energy_ratio_scales_quadratically_and_reads_grain_and_blur(swd_sets):
    ref, same = swd_sets["ref"], swd_sets["same"]
    assert detail_energy_ratio(ref, ref) == 1.0
    assert detail_energy_ratio(0.5 * ref, ref) == pytest.approx(0.25, rel=1e-9)  # the band is linear
    floor = detail_energy_ratio(same, ref)
    assert 0.8 < floor < 1.25  # two draws of one distribution
    assert detail_energy_ratio(swd_sets["blur"], ref) < 0.5 * floor
    # independent pixel noise adds its own band energy (the cross term averages out)
    clean = 0.5 * same  # no clipping after adding the noise
    noise = 0.05 * torch.randn(same.shape, generator=torch.Generator().manual_seed(0))
    assert detail_energy(clean + noise) == pytest.approx(detail_energy(clean) + detail_energy(noise), rel=0.02)
    assert detail_energy_ratio(clean + 2 * noise, ref) > 1.5 * detail_energy_ratio(clean, ref)


def test_detail_energy_ratio_validation():
    with pytest.raises(ValueError, match="same spatial size"):
        detail_energy_ratio(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="reference has no fine detail"):
        detail_energy_ratio(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"^images must lie in \[-1, 1\]"):
        detail_energy(torch.full((1, 3, 16, 16), 2.0))
