import math

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from hiresdiff import UpsampleGuidanceConfig, guided_prediction, nested_guided_prediction, upsample_guidance
from hiresdiff.core.prediction import from_epsilon, to_epsilon
from hiresdiff.core.schedule import alpha_bar_at, matched_timestep
from hiresdiff.methods.upsample_guidance import is_power_of_two, lowres_input, nested_levels

AC = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).alphas_cumprod
S2 = 0.5  # variance of the Gaussian data distribution


def gaussian_eps(x, t):
    """Exact ε-predictor E[ε | x_t] for data x0 ~ N(0, S2·I): ε* = √(1-ᾱ) x_t / (ᾱ·S2 + 1 - ᾱ)."""
    a = alpha_bar_at(AC, t).to(x.dtype).view(-1, *[1] * (x.ndim - 1))
    return (1 - a).sqrt() * x / (a * S2 + 1 - a)


class Recorder:
    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, x, t):
        self.calls.append((x.clone(), t.clone()))
        return self.fn(x, t)


def test_weight_zero_is_bit_exact_and_skips_the_lowres_pass():
    x = torch.randn(2, 3, 16, 16)
    rec = Recorder(gaussian_eps)
    out = upsample_guidance(rec, x, 600, AC, factor=2, weight=0.0)
    assert torch.equal(out, gaussian_eps(x, torch.full((2,), 600.0)))
    assert len(rec.calls) == 1


def test_lowres_input_has_the_noise_level_of_tau():
    # x0 = U[z] is block-constant, so D[x_t]/√P = √ᾱ(τ)·z + √(1-ᾱ(τ))·(√k·D[ε]) exactly.
    g = torch.Generator().manual_seed(0)
    m, k = 2, 4
    z = torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64)
    eps = torch.randn(4, 3, 16, 16, generator=g, dtype=torch.float64)
    t = torch.tensor([100.0, 400.0, 700.0, 950.0])
    a = AC[t.long()].double().view(-1, 1, 1, 1)
    x_t = a.sqrt() * F.interpolate(z, scale_factor=m, mode="nearest") + (1 - a).sqrt() * eps
    x_low, tau = lowres_input(x_t, t, AC, m)
    a_tau = alpha_bar_at(AC, tau).view(-1, 1, 1, 1)
    assert torch.allclose(a_tau, k * a / (1 + (k - 1) * a), rtol=1e-5)
    expected = a_tau.sqrt() * z + (1 - a_tau).sqrt() * math.sqrt(k) * F.avg_pool2d(eps, m)
    assert torch.allclose(x_low, expected, atol=1e-5)


@pytest.mark.parametrize("factor,shape", [(2, (2, 3, 16, 16)), (3, (2, 3, 18, 12)), ((2, 3), (1, 4, 8, 12))])
def test_guided_eps_equals_hand_computation_with_exact_gaussian_denoiser(factor, shape):
    fh, fw = (factor, factor) if isinstance(factor, int) else factor
    k = fh * fw
    x = torch.randn(shape, dtype=torch.float64)
    t, w = 500, 1.3
    a = AC[t].double()
    # by hand: P, ᾱ(τ) in closed form, D = avg_pool2d, U = nearest interpolate
    P = a + (1 - a) / k
    a_tau = k * a / (1 + (k - 1) * a)
    c = lambda ab: (1 - ab).sqrt() / (ab * S2 + 1 - ab)  # noqa: E731
    eps_high = c(a) * x
    eps_low = c(a_tau) * F.avg_pool2d(x, (fh, fw)) / P.sqrt()
    guide = F.interpolate(
        eps_low / math.sqrt(k) - F.avg_pool2d(eps_high, (fh, fw)), scale_factor=(fh, fw), mode="nearest"
    )
    expected = eps_high + w * guide
    got = upsample_guidance(gaussian_eps, x, t, AC, factor=factor, weight=w)
    assert got.shape == shape
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_video_factors_give_right_shapes_and_pass_lowres_grid():
    x = torch.randn(1, 4, 8, 16, 16)
    for factor, low_shape in [((2, 1, 1), (1, 4, 4, 16, 16)), ((2, 2, 2), (1, 4, 4, 8, 8)), (2, (1, 4, 8, 8, 8))]:
        rec = Recorder(lambda x, t: 0.1 * x)
        out = upsample_guidance(rec, x, 500, AC, factor=factor)
        assert out.shape == x.shape and tuple(rec.calls[1][0].shape) == low_shape


def test_ablation_switches_feed_t_and_skip_the_power():
    x = torch.randn(1, 3, 8, 8)
    for adjust_time, adjust_power in [(True, True), (False, True), (True, False), (False, False)]:
        rec = Recorder(gaussian_eps)
        upsample_guidance(rec, x, 500, AC, adjust_time=adjust_time, adjust_power=adjust_power)
        x_low, t_low = rec.calls[1]
        assert (t_low.item() == 500.0) == (not adjust_time)
        p = AC[500] + (1 - AC[500]) / 4
        expected = F.avg_pool2d(x, 2) / (p.sqrt() if adjust_power else 1)
        assert torch.allclose(x_low, expected, atol=1e-6)


@pytest.mark.parametrize("ptype", ["epsilon", "v_prediction", "sample"])
def test_prediction_type_round_trip_and_guidance_in_native_space(ptype):
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    a = torch.tensor([0.3, 0.8], dtype=torch.float64).view(-1, 1, 1, 1)
    pred = torch.randn_like(x)
    assert torch.allclose(to_epsilon(from_epsilon(pred, x, a, ptype), x, a, ptype), pred)
    assert torch.allclose(from_epsilon(to_epsilon(pred, x, a, ptype), x, a, ptype), pred)

    def native_fn(x_in, t_in):  # the Gaussian model answering in its own prediction type
        ab = alpha_bar_at(AC, t_in).view(-1, 1, 1, 1)
        return from_epsilon(gaussian_eps(x_in, t_in), x_in, ab, ptype)

    cfg = UpsampleGuidanceConfig(factor=2, theta=1.0, eta=1.0)
    got = guided_prediction(native_fn, x, 600, AC, cfg, ptype)
    want_eps = upsample_guidance(gaussian_eps, x, 600, AC, factor=2, weight=1.0)
    want = from_epsilon(want_eps, x, alpha_bar_at(AC, 600.0), ptype)
    assert torch.allclose(got, want, atol=1e-6)


def test_v_and_sample_conversions_match_definitions():
    x0, eps = torch.randn(4, 3, 4, 4, dtype=torch.float64), torch.randn(4, 3, 4, 4, dtype=torch.float64)
    a = torch.tensor(0.6, dtype=torch.float64)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    v = a.sqrt() * eps - (1 - a).sqrt() * x0
    assert torch.allclose(to_epsilon(v, x_t, a, "v_prediction"), eps)
    assert torch.allclose(to_epsilon(x0, x_t, a, "sample"), eps)
    assert torch.allclose(from_epsilon(eps, x_t, a, "v_prediction"), v)
    assert torch.allclose(from_epsilon(eps, x_t, a, "sample"), x0)


def test_weight_schedules_on_the_step_fraction():
    p = torch.tensor([1.0, 0.6, 0.55, 0.0])  # step fractions: the end, the window's edge, inside, the first step
    step = UpsampleGuidanceConfig(theta=1.5, eta=0.6).weight(p)
    assert torch.equal(step, torch.tensor([0.0, 0.0, 1.5, 1.5]))  # θ while p < η
    assert torch.equal(UpsampleGuidanceConfig(theta=1.5, eta=0.0).weight(p), torch.zeros(4))
    assert torch.equal(UpsampleGuidanceConfig(theta=1.5, eta=1.0).weight(p), torch.tensor([0.0, 1.5, 1.5, 1.5]))
    assert torch.equal(UpsampleGuidanceConfig(theta=2.0, eta=0.1, schedule="constant").weight(p), torch.full((4,), 2.0))
    assert torch.allclose(UpsampleGuidanceConfig(schedule=lambda p: 1 - p).weight(p), 1 - p)
    # linear: θ at p = 0, falling to 0 at p = η
    linear = UpsampleGuidanceConfig(theta=1.5, eta=0.6, schedule="linear").weight(p)
    torch.testing.assert_close(linear, torch.tensor([0.0, 0.0, 1.5 * 0.05 / 0.6, 1.5]))
    assert torch.allclose(UpsampleGuidanceConfig(theta=2.0, eta=1.0, schedule="linear").weight(p), 2.0 * (1 - p))
    assert torch.equal(UpsampleGuidanceConfig(theta=2.0, eta=0.0, schedule="linear").weight(p), torch.zeros(4))
    with pytest.raises(ValueError, match="eta is None"):
        UpsampleGuidanceConfig().weight(p)


def test_eta_defaults_to_the_model_familys_setting():
    from hiresdiff.methods.upsample_guidance import LATENT_ETA, PIXEL_ETA, with_family_eta

    assert (LATENT_ETA, PIXEL_ETA) == (0.6, 1.0)
    assert with_family_eta(UpsampleGuidanceConfig(), latent=True).eta == 0.6
    assert with_family_eta(UpsampleGuidanceConfig(), latent=False).eta == 1.0
    assert with_family_eta(UpsampleGuidanceConfig(eta=0.3), latent=True).eta == 0.3


def test_guided_prediction_skips_lowres_when_weight_is_zero_for_the_step():
    rec = Recorder(gaussian_eps)
    x = torch.randn(2, 3, 8, 8)
    out = guided_prediction(rec, x, 100, AC, UpsampleGuidanceConfig(theta=1, eta=0.5), "epsilon")
    assert len(rec.calls) == 1 and torch.equal(out, gaussian_eps(x, torch.full((2,), 100.0)))


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(factor=1), "factor"),
        (dict(factor=0), "factor"),
        (dict(factor=1.5), "factor"),
        (dict(factor=(2, 2, 2, 2)), "factor"),
        (dict(theta=-0.1), "theta"),
        (dict(theta=float("nan")), "theta"),
        (dict(eta=1.2), "eta"),
        (dict(eta=-0.1), "eta"),
        (dict(schedule="cosine"), "schedule"),
        (dict(prediction_type="x0"), "prediction_type"),
    ],
)
def test_config_rejects_bad_values_naming_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        UpsampleGuidanceConfig(**kwargs)


def test_nested_guidance_is_eq4_with_a_guided_lowres_branch():
    # 4× as ×2 twice: calls at 16², 8² (time τ, SNR ×4) and 4² (time τ', SNR ×16 as for k = 16 directly)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    t, w = torch.full((2,), 500.0), 0.8
    level = UpsampleGuidanceConfig(factor=2, theta=w, eta=1.0)
    rec = Recorder(gaussian_eps)
    got = nested_guided_prediction(rec, x, t, AC, [level, level], "epsilon")
    assert [tuple(c[0].shape[-2:]) for c in rec.calls] == [(16, 16), (8, 8), (4, 4)]
    tau, tau2 = rec.calls[1][1], rec.calls[2][1]
    torch.testing.assert_close(tau.double(), matched_timestep(AC, t, 4), atol=1e-3, rtol=0)
    torch.testing.assert_close(tau2.double(), matched_timestep(AC, t, 16), atol=0.05, rtol=0)
    # by hand: the outer eq. 4 around the single-level guided ε at 8²
    x_low, tau_ = lowres_input(x, t, AC, 2)
    inner = upsample_guidance(gaussian_eps, x_low, tau_, AC, factor=2, weight=w)
    eps_high = gaussian_eps(x, t)
    expected = eps_high + w * F.interpolate(inner / 2 - F.avg_pool2d(eps_high, 2), scale_factor=2, mode="nearest")
    torch.testing.assert_close(got, expected)


def test_nested_guidance_reduces_to_one_level_and_to_the_model():
    x, t = torch.randn(2, 3, 16, 16), torch.full((2,), 700.0)
    outer = UpsampleGuidanceConfig(factor=2, theta=1.2, eta=1.0)
    one = guided_prediction(gaussian_eps, x, t, AC, outer)
    assert torch.equal(
        nested_guided_prediction(gaussian_eps, x, t, AC, [outer, UpsampleGuidanceConfig(theta=0.0, eta=1.0)]), one
    )
    assert torch.equal(nested_guided_prediction(gaussian_eps, x, t, AC, [outer]), one)
    assert torch.equal(nested_guided_prediction(gaussian_eps, x, t, AC, []), gaussian_eps(x, t))


def test_nested_levels_are_factor_two_configs_for_powers_of_two():
    assert [s for s in range(17) if is_power_of_two(s)] == [2, 4, 8, 16] and not is_power_of_two(4.0)
    levels = nested_levels(8, theta=1.5, schedule="linear")
    assert [(c.factor, c.theta, c.schedule) for c in levels] == [(2, 1.5, "linear")] * 3
    assert levels[0] is not levels[1]
    for bad in (1, 3, 6, 2.0):
        with pytest.raises(ValueError, match="scale must be a power of two"):
            nested_levels(bad)
