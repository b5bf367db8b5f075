"""The diffusers schedulers hiresdiff offers by short name, built from a model's scheduler config."""

from __future__ import annotations

# short name -> (diffusers class, config overrides)
SCHEDULERS = {
    "ddpm": ("DDPMScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {}),
    "sde-dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "unipc": ("UniPCMultistepScheduler", {}),
}


def make_scheduler(name: str, config):
    """A fresh scheduler of kind ``name`` (a key of ``SCHEDULERS``) sharing the training schedule in ``config``."""
    import diffusers

    if name not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {sorted(SCHEDULERS)}; got {name!r}")
    class_name, overrides = SCHEDULERS[name]
    return getattr(diffusers, class_name).from_config(config, **overrides)
