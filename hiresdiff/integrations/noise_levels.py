"""The noise-schedule adapter: what every step of any diffusers scheduler's grid means, read off the scheduler.

Schedulers keep their sample in different parametrisations: DDIM, DDPM, DPM-Solver, UniPC, DEIS, LCM and TCD
in the VP form x = √ᾱ·x₀ + √(1−ᾱ)·ε, Euler, Heun, KDPM2, LMS and the EDM schedulers in the σ form
x = x₀ + σ·ε (scaled by ``scale_model_input`` before the model sees it), flow matching in
x = (1−s)·x₀ + s·ε. Every one of them says how it noises through its own ``add_noise`` (``scale_noise``
for flow matching), which is linear in x₀ and ε. :class:`NoiseLevels` asks it once per grid step,

    a_i = add_noise(1, 0, t_i),   b_i = add_noise(0, 1, t_i)   (with the scheduler's begin index at i),

so that x_i = a_i·x₀ + b_i·ε exactly in the scheduler's own form, whatever it is, and derives from them the
form-free quantities the method math needs: σ_i = b_i / a_i (the VP-equivalent noise level; Karras and EDM
grids are σ directly), ᾱ_i = 1/(1 + σ_i²) and log-SNR λ_i = −2·log σ_i. All of it is float64 on the CPU;
:meth:`NoiseLevels.noised` computes in float32 and casts back once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def fresh_copy(scheduler):
    """A new scheduler of the same class and config: the same grid, none of the caller's step state."""
    return type(scheduler).from_config(scheduler.config)


@dataclass(frozen=True)
class NoiseLevels:
    """The scheduler's grid of ``steps`` steps: per index i its model ``timesteps`` t_i and x_i = a_i·x₀ + b_i·ε."""

    timesteps: torch.Tensor
    signal: torch.Tensor
    noise: torch.Tensor
    num_train_timesteps: int

    @classmethod
    def of(cls, scheduler, steps: int) -> "NoiseLevels":
        """Read the levels of ``scheduler``'s grid for ``steps`` inference steps (a fresh copy is asked; the
        scheduler itself is not touched)."""
        probe = fresh_copy(scheduler)
        probe.set_timesteps(steps)
        timesteps = probe.timesteps.detach().cpu()
        noise_fn = probe.add_noise if hasattr(probe, "add_noise") else None
        if noise_fn is None:  # flow matching: scale_noise(sample, timestep, noise)
            noise_fn = lambda x0, eps, t: probe.scale_noise(x0, t, eps)  # noqa: E731
        one, zero = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
        signal, noise = [], []
        for i, t in enumerate(timesteps):
            if hasattr(probe, "set_begin_index"):
                probe.set_begin_index(i)
            signal.append(float(noise_fn(one.float(), zero.float(), t.reshape(1))))
            noise.append(float(noise_fn(zero.float(), one.float(), t.reshape(1))))
        return cls(timesteps, torch.tensor(signal, dtype=torch.float64), torch.tensor(noise, dtype=torch.float64),
                   scheduler.config.num_train_timesteps)

    def __len__(self) -> int:
        return len(self.timesteps)

    @property
    def sigma(self) -> torch.Tensor:
        """σ_i = b_i / a_i: the VP-equivalent noise level (SNR = 1/σ²)."""
        return self.noise / self.signal

    @property
    def alpha_bar(self) -> torch.Tensor:
        """ᾱ_i = 1 / (1 + σ_i²)."""
        return 1 / (1 + self.sigma ** 2)

    @property
    def log_snr(self) -> torch.Tensor:
        """λ_i = log SNR = −2·log σ_i."""
        return -2 * torch.log(self.sigma)

    def time_fraction(self, index: int) -> float:
        """t_i / T: the grid's model time as a fraction of the training schedule (1 = pure noise)."""
        return float(self.timesteps[index]) / self.num_train_timesteps

    def noised(self, x0: torch.Tensor, eps: torch.Tensor, index: int) -> torch.Tensor:
        """a_i·x₀ + b_i·ε in the scheduler's own form (float32 math, ``x0``'s dtype and device)."""
        a, b = float(self.signal[index]), float(self.noise[index])
        return (a * x0.float() + b * eps.float()).to(x0.dtype)
