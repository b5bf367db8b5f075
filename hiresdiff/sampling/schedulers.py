"""The diffusers schedulers hiresdiff offers by short name, built from a model's scheduler config."""

from __future__ import annotations

# short name -> (diffusers class, config overrides)
SCHEDULERS = {
    "ddpm": ("DDPMScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),  # not a model's SDE default
    "sde-dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),  # SD 1.5's default
    "lms": ("LMSDiscreteScheduler", {}),
    "kdpm2": ("KDPM2DiscreteScheduler", {}),
    "kdpm2_a": ("KDPM2AncestralDiscreteScheduler", {}),
    "dpm++_karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "dpm++_single": ("DPMSolverSinglestepScheduler", {}),
    "deis": ("DEISMultistepScheduler", {}),
    "lcm": ("LCMScheduler", {}),
    "tcd": ("TCDScheduler", {}),
    "edm-dpm++": ("EDMDPMSolverMultistepScheduler", {}),  # for models trained with EDM's preconditioning only
}


EDM_ONLY = ("edm-dpm++",)  # these need a model trained with EDM's preconditioning (its scheduler config has sigma_data)


def make_scheduler(name: str, config):
    """A fresh scheduler of kind ``name`` (a key of ``SCHEDULERS``) sharing the training schedule in ``config``.

    ``ValueError`` naming ``scheduler`` for an unknown name, an EDM scheduler for a model whose schedule is not EDM's,
    or any of them for a flow-matching model (FLUX, SD3): these samplers are for diffusion schedules (ε, v or x₀
    prediction) and would misread its velocity; it samples with its own flow-matching scheduler.
    """
    import diffusers

    if name not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {sorted(SCHEDULERS)}; got {name!r}")
    if str(config.get("_class_name", "")).startswith("FlowMatch"):
        raise ValueError(
            f"scheduler {name!r}: this model is flow-matching ({config['_class_name']}) and samples with its "
            "own scheduler; the --scheduler choices are for diffusion models: leave --scheduler out"
        )
    if name in EDM_ONLY and "sigma_data" not in config:
        raise ValueError(
            f"scheduler {name!r} is for models trained with EDM's preconditioning (a scheduler config with "
            f"sigma_data); this model's schedule is not: choose one of "
            f"{sorted(n for n in SCHEDULERS if n not in EDM_ONLY)}"
        )
    class_name, overrides = SCHEDULERS[name]
    return getattr(diffusers, class_name).from_config(config, **overrides)
