import math

import pytest
import torch
from diffusers import DDPMScheduler

from hiresdiff import matched_timestep, power
from hiresdiff.core.schedule import alpha_bar_at, log_snr, matched_alpha_bar


def sd_schedule():
    return DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).alphas_cumprod


def ddpm_linear_schedule():
    return DDPMScheduler(beta_schedule="linear", beta_start=1e-4, beta_end=0.02).alphas_cumprod


def cosine_continuous(s):
    """Nichol & Dhariwal's continuous cosine ᾱ(s), s in [0, 1]."""
    return torch.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2 / math.cos(0.008 / 1.008 * math.pi / 2) ** 2


def test_linear_log_snr_schedule_gives_exact_shift():
    # λ linear in t: λ(τ) = λ(t) + log k has the closed form τ = t − log k / slope.
    T, lam_max, lam_min = 1000, 10.0, -10.0
    lam = torch.linspace(lam_max, lam_min, T, dtype=torch.float64)
    ac = torch.sigmoid(lam)
    t = torch.tensor([300.0, 512.25, 999.0])
    slope = (lam_max - lam_min) / (T - 1)
    for k in (4, 9, 16):
        expected = (t - math.log(k) / slope).double()
        assert torch.allclose(matched_timestep(ac, t, k), expected, atol=1e-6)


@pytest.mark.parametrize("k", [4, 9, 16, 64])
def test_closed_form_on_continuous_cosine_schedule(k):
    # a continuous schedule, tabulated finely enough that log-SNR interpolation is exact to 1e-5
    T = 10_000
    ac = cosine_continuous((torch.arange(T, dtype=torch.float64) + 0.5) / T)
    t = torch.arange(1000, T - 100, 370, dtype=torch.float64)
    tau = matched_timestep(ac, t, k).double()
    inside = (tau > 0) & (tau < T - 1)
    assert inside.sum() > 10
    # evaluate the *continuous* schedule at τ, not the interpolant, against the closed form
    got = cosine_continuous((tau + 0.5) / T)
    want = matched_alpha_bar(cosine_continuous((t + 0.5) / T), k)
    assert torch.allclose(got[inside], want[inside], rtol=1e-5)


@pytest.mark.parametrize("schedule", [sd_schedule, ddpm_linear_schedule])
@pytest.mark.parametrize("k", [2, 4, 16])
def test_closed_form_on_discrete_schedules_at_integer_t(schedule, k):
    ac = schedule()
    t = torch.arange(0, 1000)
    tau = matched_timestep(ac, t, k)
    inside = tau > 0
    a = ac[t].double()
    got = alpha_bar_at(ac, tau)
    assert torch.allclose(got[inside], (k * a / (1 + (k - 1) * a))[inside], rtol=1e-5)
    snr = lambda x: x / (1 - x)  # noqa: E731
    assert torch.allclose(snr(got[inside]), k * snr(a[inside]), rtol=1e-4)


def test_tau_monotone_clamped_and_identity_at_k1():
    ac = sd_schedule()
    t = torch.linspace(0, 999, 4001)
    tau = matched_timestep(ac, t, 4)
    assert torch.all(tau[1:] >= tau[:-1]) and torch.all(tau <= t + 1e-4)
    assert matched_timestep(ac, 0, 4).item() == 0.0  # SNR beyond the schedule's start: clamped
    assert matched_timestep(ac, -5, 4).item() == 0.0
    assert torch.allclose(matched_timestep(ac, t, 1), t.double(), atol=1e-6)
    # batched and scalar agree
    assert torch.equal(matched_timestep(ac, torch.tensor([250.0, 700.0]), 4)[1], matched_timestep(ac, 700.0, 4))


def test_alpha_bar_at_matches_integer_entries_and_interpolates_log_snr():
    ac = sd_schedule()
    assert torch.allclose(alpha_bar_at(ac, torch.arange(1000)), ac.double(), rtol=1e-6)
    mid = alpha_bar_at(ac, 10.5)
    assert torch.allclose(log_snr(mid), (log_snr(ac[10].double()) + log_snr(ac[11].double())) / 2)


def test_power_closed_form():
    a = torch.tensor([0.0, 0.3, 1.0])
    assert torch.allclose(power(a, 4), torch.tensor([0.25, 0.3 + 0.7 / 4, 1.0]))


def test_bad_schedule_and_k():
    with pytest.raises(ValueError, match="k must be"):
        matched_timestep(sd_schedule(), 10, 0.5)
    with pytest.raises(ValueError, match="alphas_cumprod"):
        matched_timestep(torch.tensor([1.0, 0.5]), 1, 2)
