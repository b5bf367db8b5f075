"""A clip's noise shared between its frames, for video models trained with PYoCo's mixed prior (emoji-video).

A model trained on noise correlated between frames (:func:`~hiresdiff.core.noise.frame_shared_noise`) must be
sampled from the same prior: stage 0's initial latents and a cascade's restart noise are mixed the same way. A
stochastic scheduler's own per-step noise (``sde-dpm++``, ``euler_a``, DDPM) stays independent between frames, so
such models ship a deterministic one.
"""

from __future__ import annotations

from hiresdiff.core.noise import frame_shared_noise


def share_initial_noise(pipe, share: float) -> None:
    """Make ``pipe`` (a stage's shallow copy, :func:`~hiresdiff.sampling.restart.stage_pipeline`) start from its own
    ``prepare_latents`` draw (B, C, F, h, w) mixed along the frames with correlation ``share``."""
    draw = pipe.prepare_latents

    def prepare_latents(*args, **kwargs):
        return frame_shared_noise(draw(*args, **kwargs), share, frame_dim=2)

    # on the copy only, past DiffusionPipeline.__setattr__, as stage_pipeline sets its scheduler
    object.__setattr__(pipe, "prepare_latents", prepare_latents)
