"""hiresdiff: generate above the trained resolution with pretrained diffusion models.

Public API:
    upsample_guidance, UpsampleGuidanceConfig   Upsample Guidance (eq. 4) for any denoiser
    matched_timestep, power                     the SNR-matched time τ and the power P
    downsample, upsample_nearest, lowres_noise  the operators D and U and consistent noise
"""

from hiresdiff.core.noise import lowres_noise
from hiresdiff.core.resample import downsample, upsample_nearest
from hiresdiff.core.schedule import matched_timestep, power
from hiresdiff.methods.upsample_guidance import UpsampleGuidanceConfig, guided_prediction, upsample_guidance

__all__ = [
    "UpsampleGuidanceConfig",
    "downsample",
    "guided_prediction",
    "lowres_noise",
    "matched_timestep",
    "power",
    "upsample_guidance",
    "upsample_nearest",
]
__version__ = "0.1.0"
