"""Upsample Guidance for rectified flow against closed forms and exact Gaussian-world velocities."""

import math

import pytest
import torch
import torch.nn.functional as F

from hiresdiff.methods.upsample_guidance_flow import (
    flow_input_scale,
    flow_lowres_input,
    flow_upsample_guidance,
    matched_flow_time,
)

S2 = 0.5  # variance of the Gaussian data


def gaussian_velocity(x, t, s2=S2):
    """Exact E[ε − x₀ | x_t] for x₀ ~ N(0, s2·I): (t − (1 − t)s2)·x_t / ((1 − t)²s2 + t²)."""
    t = t.to(x.dtype).view(-1, *[1] * (x.ndim - 1))
    return (t - (1 - t) * s2) * x / ((1 - t) ** 2 * s2 + t**2)


def block_constant_velocity(x, t, m):
    """Exact E[ε − x₀ | x_t] for block-constant data x₀ = U[z], z ~ N(0, S2·I) at 1/m the size: only D[x_t]
    carries information on z, with E[z | x_t] = (1 − t)S2·D[x_t] / ((1 − t)²S2 + t²/m²)."""
    tt = t.to(x.dtype).view(-1, 1, 1, 1)
    z_hat = (1 - tt) * S2 * F.avg_pool2d(x, m) / ((1 - tt) ** 2 * S2 + tt**2 / m**2)
    x0_hat = F.interpolate(z_hat, scale_factor=m, mode="nearest")
    eps_hat = (x - (1 - tt) * x0_hat) / tt
    return eps_hat - x0_hat


def test_tau_and_c_have_the_closed_forms_of_the_issue():
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    for m in (2, 3, 4):
        assert torch.allclose(matched_flow_time(t, m * m), t / (t + m * (1 - t)))
        assert torch.allclose(flow_input_scale(t, m * m), 1 / (1 - t + t / m))
    assert torch.allclose(matched_flow_time(t, 2 * 2 * 2), t / (t + math.sqrt(8) * (1 - t)))  # a video's (2, 2, 2)
    assert torch.equal(matched_flow_time(torch.tensor([0.0, 1.0]), 4), torch.tensor([0.0, 1.0], dtype=torch.float64))


@pytest.mark.parametrize("factor,shape", [(2, (3, 2, 8, 8)), ((2, 3), (3, 2, 8, 12)), ((2, 2, 2), (3, 2, 4, 8, 8))])
def test_lowres_input_is_a_clean_flow_sample_at_tau(factor, shape):
    """x₀ = U[z] is block-constant, so c·D[x_t] = (1 − τ)·z + τ·(√k·D[ε]) exactly, √k·D[ε] a unit normal."""
    g = torch.Generator().manual_seed(0)
    low_shape = (
        *shape[:2],
        *[n // f for n, f in zip(shape[2:], factor if isinstance(factor, tuple) else (factor,) * 2)],
    )
    z, eps = (
        torch.randn(low_shape, generator=g, dtype=torch.float64),
        torch.randn(shape, generator=g, dtype=torch.float64),
    )
    scale = factor if isinstance(factor, tuple) else (factor, factor)
    up = z
    for axis, f in enumerate(scale):
        up = up.repeat_interleave(f, dim=2 + axis)
    t = torch.tensor([0.2, 0.6, 0.95], dtype=torch.float64)
    tv = t.view(-1, *[1] * (len(shape) - 1))
    x_t = (1 - tv) * up + tv * eps
    x_low, tau = flow_lowres_input(x_t, t, factor)
    k = math.prod(scale)
    pooled = (F.avg_pool3d if len(scale) == 3 else F.avg_pool2d)(eps, scale)
    tau_v = tau.double().view(-1, *[1] * (len(shape) - 1))
    assert torch.allclose(tau.double(), t / (t + math.sqrt(k) * (1 - t)), atol=1e-6)
    assert torch.allclose(x_low, (1 - tau_v) * z + tau_v * math.sqrt(k) * pooled, atol=1e-6)


@pytest.mark.parametrize("factor,shape", [(2, (3, 3, 16, 16)), (3, (3, 3, 18, 12)), ((2, 3), (3, 4, 8, 12))])
def test_guided_velocity_equals_eq4_on_the_noise_estimate_by_hand(factor, shape):
    """Independent route: ε̂ = x_t + (1 − t)v, ε̂′ = x′ + (1 − τ)v′, ε̃ = ε̂ + w·U[ε̂′/√k − D[ε̂]], ṽ = (ε̃ − x_t)/(1 − t)."""
    fh, fw = (factor, factor) if isinstance(factor, int) else factor
    k = fh * fw
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t, w = torch.tensor([0.3, 0.6, 0.9], dtype=torch.float64), 1.3
    tv = t.view(-1, 1, 1, 1)
    tau = t / (t + math.sqrt(k) * (1 - t))
    x_low = F.avg_pool2d(x, (fh, fw)) / (1 - tv + tv / math.sqrt(k))
    v, v_low = gaussian_velocity(x, t), gaussian_velocity(x_low, tau)
    eps, eps_low = x + (1 - tv) * v, x_low + (1 - tau.view(-1, 1, 1, 1)) * v_low
    guide = F.interpolate(eps_low / math.sqrt(k) - F.avg_pool2d(eps, (fh, fw)), scale_factor=(fh, fw), mode="nearest")
    expected = ((eps + w * guide) - x) / (1 - tv)
    got = flow_upsample_guidance(gaussian_velocity, x, t, factor=factor, weight=w)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_exact_models_of_consistent_data_need_no_guidance():
    """For block-constant data, the exact target-size velocity and the exact trained-size one (of z's law) agree:
    the guidance term is zero at every t and w."""
    m, x = 2, torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for t in (0.05, 0.4, 0.8):
        tt = torch.full((2,), t, dtype=torch.float32).double()  # the times the models are called with (float32)
        v = block_constant_velocity(x, tt, m)
        got = flow_upsample_guidance(
            lambda y, s: block_constant_velocity(y, s.double(), m),
            x,
            tt,
            factor=m,
            weight=1.7,
            lowres_v_fn=lambda y, s: gaussian_velocity(y, s.double()),
        )
        assert torch.allclose(got, v, atol=1e-5)
        assert not torch.allclose(
            flow_upsample_guidance(  # a model of other data is corrected: the test can fail
                lambda y, s: gaussian_velocity(y, s.double()),
                x,
                tt,
                factor=m,
                weight=1.7,
                lowres_v_fn=lambda y, s: gaussian_velocity(y, s.double()),
            ),
            gaussian_velocity(x, tt),
            atol=1e-3,
        )


def test_at_weight_one_the_clean_estimate_takes_the_trained_size_low_frequencies():
    m, t = 2, torch.tensor([0.3, 0.7], dtype=torch.float64)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    wrong = lambda y, s: gaussian_velocity(y, s.double(), s2=2.0)  # noqa: E731  (a target-size model of other data)
    got = flow_upsample_guidance(
        wrong, x, t, factor=m, weight=1.0, lowres_v_fn=lambda y, s: gaussian_velocity(y, s.double())
    )
    x_low, tau = flow_lowres_input(x, t, m)
    x0_low = x_low - tau.double().view(-1, 1, 1, 1) * gaussian_velocity(x_low, tau.double())
    assert torch.allclose(F.avg_pool2d(x - t.view(-1, 1, 1, 1) * got, m), x0_low, atol=1e-6)


def test_weight_zero_skips_the_trained_size_pass():
    calls = []

    def v_fn(y, s):
        calls.append(y.shape)
        return gaussian_velocity(y, s.double())

    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    assert torch.equal(flow_upsample_guidance(v_fn, x, 0.5, weight=0.0), gaussian_velocity(x, torch.tensor([0.5])))
    assert calls == [x.shape]


def test_nested_guidance_at_4x_equals_two_guided_levels_computed_by_hand():
    """4× as ×2 twice: the trained-size branch of the outer level is itself UG-RF-guided one level down. Computed
    here step by step from the derivation (τ, c, the guided velocity), with a non-linear velocity so that no term
    cancels, and half guidance at the outer level so that the weights are applied where they belong."""
    from hiresdiff.methods.upsample_guidance import UpsampleGuidanceConfig
    from hiresdiff.methods.upsample_guidance_flow import nested_flow_upsample_guidance

    def v_fn(x, t):
        return torch.tanh(x) * t.view(-1, 1, 1, 1) + 0.1 * x**2 - 0.3

    def down(x):
        return F.avg_pool2d(x, 2)

    def up(x):
        return x.repeat_interleave(2, 2).repeat_interleave(2, 3)

    def guided(v_high, v_low, x, t, w):  # ṽ = v + w·U[(v′ − (√k − 1)·D[x]) / (t + √k(1 − t)) − D[v]], √k = 2
        tv = t.view(-1, 1, 1, 1)
        return v_high + w * up((v_low - down(x)) / (tv + 2 * (1 - tv)) - down(v_high))

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 16, 16, generator=g, dtype=torch.float64)
    t = torch.tensor([0.3, 0.7, 0.95], dtype=torch.float64)
    tau1 = t / (t + 2 * (1 - t))
    x1 = down(x) / (1 - t + t / 2).view(-1, 1, 1, 1)
    tau2 = tau1 / (tau1 + 2 * (1 - tau1))
    x2 = down(x1) / (1 - tau1 + tau1 / 2).view(-1, 1, 1, 1)
    inner = guided(v_fn(x1, tau1), v_fn(x2, tau2), x1, tau1, 1.0)
    expected = guided(v_fn(x, t), inner, x, t, 0.5)

    configs = [
        UpsampleGuidanceConfig(factor=2, theta=0.5, eta=1.0),
        UpsampleGuidanceConfig(factor=2, theta=1.0, eta=1.0),
    ]
    result = nested_flow_upsample_guidance(lambda xx, tt: v_fn(xx, tt.to(xx.dtype)), x, t.float(), configs)
    assert torch.allclose(result, expected, atol=1e-5)
