"""hiresdiff: generate above the trained resolution with pretrained diffusion models.

Public API:
    upsample_guidance, UpsampleGuidanceConfig   Upsample Guidance (eq. 4) for any denoiser
    guided_prediction, nested_guided_prediction eq. 4 in a model's own prediction type; nested levels
    matched_timestep, power                     the SNR-matched time τ and the power P
    downsample, upsample_nearest, lowres_noise  the operators D and U and consistent noise
    apply_upsample_guidance, remove_upsample_guidance
                                                UG on a diffusers pipeline or UNet, exactly reversible
    Recipe, CascadeConfig, DilationConfig, ScaleFusionConfig
                                                the composition spine: which parts a run uses (presets
                                                naive, ug, self-cascade, freescale and their compositions)
    generate                                    any recipe on a diffusers pipeline (SD 1.x/2.x, SDXL, AnimateDiff)
    sample                                      any recipe on a pixel-space UNet2DModel and its scheduler
    upscale                                     an existing image through a cascade's later stages (pixel or pipeline)
    FeatureUpsamplers, train_feature_upsamplers Self-Cascade's trainable feature upsamplers
"""

from hiresdiff.core.noise import lowres_noise
from hiresdiff.core.resample import downsample, upsample_nearest
from hiresdiff.core.schedule import matched_timestep, power
from hiresdiff.methods.freescale import DilationConfig, ScaleFusionConfig
from hiresdiff.methods.self_cascade import CascadeConfig
from hiresdiff.methods.upsample_guidance import (
    UpsampleGuidanceConfig,
    guided_prediction,
    nested_guided_prediction,
    upsample_guidance,
)
from hiresdiff.recipe import Recipe

_LAZY = {  # these import diffusers: loaded on first use, so `import hiresdiff` stays light
    "apply_upsample_guidance": "hiresdiff.integrations.hooks",
    "remove_upsample_guidance": "hiresdiff.integrations.hooks",
    "generate": "hiresdiff.integrations.pipeline_driver",
    "sample": "hiresdiff.integrations.pixel",
    "upscale": "hiresdiff.integrations.upscale",
    "FeatureUpsamplers": "hiresdiff.integrations.feature_upsamplers",
    "train_feature_upsamplers": "hiresdiff.models.train_upsamplers",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hiresdiff' has no attribute {name!r}")


__all__ = [
    "CascadeConfig",
    "DilationConfig",
    "FeatureUpsamplers",
    "Recipe",
    "ScaleFusionConfig",
    "UpsampleGuidanceConfig",
    "apply_upsample_guidance",
    "remove_upsample_guidance",
    "sample",
    "downsample",
    "generate",
    "guided_prediction",
    "lowres_noise",
    "matched_timestep",
    "nested_guided_prediction",
    "power",
    "train_feature_upsamplers",
    "upsample_guidance",
    "upsample_nearest",
    "upscale",
]
__version__ = "0.1.0"
