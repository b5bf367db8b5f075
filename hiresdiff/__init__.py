"""hiresdiff: generate above the trained resolution with pretrained diffusion models.

Public API:
    upsample_guidance, UpsampleGuidanceConfig   Upsample Guidance (eq. 4) for any denoiser
    guided_prediction, nested_guided_prediction eq. 4 in a model's own prediction type; nested levels
    matched_timestep, power                     the SNR-matched time τ and the power P
    downsample, upsample_nearest, lowres_noise  the operators D and U and consistent noise
    apply_upsample_guidance, remove_upsample_guidance
                                                UG on a diffusers pipeline or UNet, exactly reversible
"""

from hiresdiff.core.noise import lowres_noise
from hiresdiff.core.resample import downsample, upsample_nearest
from hiresdiff.core.schedule import matched_timestep, power
from hiresdiff.methods.upsample_guidance import (
    UpsampleGuidanceConfig,
    guided_prediction,
    nested_guided_prediction,
    upsample_guidance,
)

_LAZY = {  # these import diffusers: loaded on first use, so `import hiresdiff` stays light
    "apply_upsample_guidance": "hiresdiff.integrations.hooks",
    "remove_upsample_guidance": "hiresdiff.integrations.hooks",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hiresdiff' has no attribute {name!r}")


__all__ = [
    "UpsampleGuidanceConfig",
    "apply_upsample_guidance",
    "remove_upsample_guidance",
    "downsample",
    "guided_prediction",
    "lowres_noise",
    "matched_timestep",
    "nested_guided_prediction",
    "power",
    "upsample_guidance",
    "upsample_nearest",
]
__version__ = "0.1.0"
