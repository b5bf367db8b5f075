"""RoPE rescalings against their closed forms."""

import math

import pytest
import torch

from hiresdiff.core.rope import (
    ROPE_SCALINGS,
    entropy_logit_scale,
    rope_frequencies,
    scaled_rope_frequencies,
    yarn_attention_factor,
)


def test_frequencies_are_theta_to_the_minus_2i_over_d():
    omega = rope_frequencies(8, 10_000.0)
    assert torch.allclose(omega, torch.tensor([1.0, 10.0**-1, 10.0**-2, 10.0**-3], dtype=torch.float64))


@pytest.mark.parametrize("method", ROPE_SCALINGS)
def test_every_scaling_is_the_identity_at_scale_one(method):
    assert torch.equal(scaled_rope_frequencies(56, 1.0, method, trained_length=64), rope_frequencies(56))


def test_position_interpolation_halves_every_angle_at_2x():
    positions = torch.arange(128, dtype=torch.float64)
    angles = torch.outer(positions, scaled_rope_frequencies(16, 2.0, "pi"))
    assert torch.allclose(angles, torch.outer(positions / 2, rope_frequencies(16)))


def test_ntk_changes_the_base_as_stated_keeping_the_highest_and_matching_pi_at_the_lowest_frequency():
    d, s = 56, 4.0
    ntk = scaled_rope_frequencies(d, s, "ntk")
    assert torch.allclose(ntk, rope_frequencies(d, 10_000.0 * s ** (d / (d - 2))))
    assert ntk[0] == 1.0
    assert torch.isclose(ntk[-1], rope_frequencies(d)[-1] / s)


def test_yarn_keeps_fast_dimensions_interpolates_slow_ones_and_ramps_between():
    d, s, length = 56, 2.0, 1024
    omega, yarn = rope_frequencies(d), scaled_rope_frequencies(d, s, "yarn", trained_length=length)
    turns = length * omega / (2 * math.pi)
    fast, slow = turns > 32, turns < 1
    assert fast.any() and slow.any() and torch.equal(yarn[fast], omega[fast])
    assert torch.allclose(yarn[slow], omega[slow] / s)
    between = ~fast & ~slow
    gamma = (turns[between] - 1) / 31
    assert torch.allclose(yarn[between], (1 - gamma) * omega[between] / s + gamma * omega[between])
    with pytest.raises(ValueError, match="trained_length"):
        scaled_rope_frequencies(d, s, "yarn")


def test_attention_factors():
    assert yarn_attention_factor(1.0) == 1.0 and yarn_attention_factor(4.0) == pytest.approx(0.1 * math.log(4) + 1)
    assert entropy_logit_scale(64 * 64 * 4, 64 * 64) == pytest.approx(math.log(4 * 4096) / math.log(4096))
    assert entropy_logit_scale(100, 4096) == 1.0


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(dim=7, scale=2.0, method="pi"), "dim"),
        (dict(dim=8, scale=0.5, method="pi"), "rope scale"),
        (dict(dim=8, scale=2.0, method="dype"), "rope scaling"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        scaled_rope_frequencies(**kwargs)
