"""The noise-schedule adapter: what every step of any diffusers scheduler's grid means, read off the scheduler.

Schedulers keep their sample in different parametrisations: DDIM, DDPM, DPM-Solver, UniPC, DEIS, LCM and TCD
in the VP form x = √ᾱ·x₀ + √(1−ᾱ)·ε, Euler, Heun, KDPM2, LMS and the EDM schedulers in the σ form
x = x₀ + σ·ε (scaled by ``scale_model_input`` before the model sees it), the flow-matching ones (FLUX, SD3) in
the rectified-flow form x = (1−σ)·x₀ + σ·ε. Every one of them says how it noises through its own ``add_noise``
(flow matching: ``scale_noise``), which is linear in x₀ and ε. :class:`NoiseLevels` asks it once per grid step,

    a_i = add_noise(1, 0, t_i),   b_i = add_noise(0, 1, t_i)   (with the scheduler's begin index at i),

so that x_i = a_i·x₀ + b_i·ε exactly in the scheduler's own form, whatever it is, and derives from them the
form-free quantities the method math needs: σ_i = b_i / a_i (the VP-equivalent noise level; Karras and EDM
grids are σ directly), ᾱ_i = 1/(1 + σ_i²) and log-SNR λ_i = −2·log σ_i. All of it is float64 on the CPU;
:meth:`NoiseLevels.noised` computes in float32 and casts back once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from hiresdiff.denoisers.layouts import StageGrid


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
    def of(cls, scheduler, steps: int, grid: Optional[StageGrid] = None) -> NoiseLevels:
        """Read the levels of ``scheduler``'s grid for ``steps`` inference steps, ``grid`` a flow stage's (the further
        arguments of its ``set_timesteps``, a static shift); a fresh copy is asked, the scheduler itself is not
        touched."""
        probe = fresh_copy(scheduler)
        if grid is not None:
            grid.prepare(probe)
        probe.set_timesteps(steps, **(grid.arguments if grid is not None else {}))
        timesteps = probe.timesteps.detach().cpu()
        one, zero = torch.ones(1), torch.zeros(1)

        def noise_of(x0, eps, t):
            if hasattr(probe, "add_noise"):
                return float(probe.add_noise(x0, eps, t))
            return float(probe.scale_noise(x0, t, eps))  # flow matching: (1 − σ)·x₀ + σ·ε

        signal, noise = [], []
        for i, t in enumerate(timesteps):
            if hasattr(probe, "set_begin_index"):  # index-based schedulers read the step's σ by its position
                probe.set_begin_index(i)
            signal.append(noise_of(one, zero, t.reshape(1)))
            noise.append(noise_of(zero, one, t.reshape(1)))
        return cls(
            timesteps,
            torch.tensor(signal, dtype=torch.float64),
            torch.tensor(noise, dtype=torch.float64),
            scheduler.config.num_train_timesteps,
        )

    def __len__(self) -> int:
        return len(self.timesteps)

    @property
    def sigma(self) -> torch.Tensor:
        """σ_i = b_i / a_i: the VP-equivalent noise level (SNR = 1/σ²)."""
        return self.noise / self.signal

    @property
    def alpha_bar(self) -> torch.Tensor:
        """ᾱ_i = 1 / (1 + σ_i²)."""
        return 1 / (1 + self.sigma**2)

    @property
    def log_snr(self) -> torch.Tensor:
        """λ_i = log SNR = −2·log σ_i."""
        return -2 * torch.log(self.sigma)

    def at(self, index: int) -> tuple[float, float]:
        """(a_i, b_i) of grid step ``index``: x_i = a_i·x₀ + b_i·ε."""
        return float(self.signal[index]), float(self.noise[index])

    def noised(self, x0: torch.Tensor, eps: torch.Tensor, index: int) -> torch.Tensor:
        """a_i·x₀ + b_i·ε in the scheduler's own form (float32 math, ``x0``'s dtype and device)."""
        a, b = self.at(index)
        return (a * x0.float() + b * eps.float()).to(x0.dtype)
