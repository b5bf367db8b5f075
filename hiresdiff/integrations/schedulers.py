"""The diffusers schedulers hiresdiff offers by short name, built from a model's scheduler config."""

from __future__ import annotations

SCHEDULERS = {
    "ddpm": "DDPMScheduler",
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "heun": "HeunDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
}


def make_scheduler(name: str, config):
    """A fresh scheduler of kind ``name`` (a key of ``SCHEDULERS``) sharing the training schedule in ``config``."""
    import diffusers

    if name not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {sorted(SCHEDULERS)}; got {name!r}")
    return getattr(diffusers, SCHEDULERS[name]).from_config(config)
