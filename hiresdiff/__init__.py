"""hiresdiff: generate above the trained resolution with pretrained diffusion models.

Public API:
    upsample_guidance, UpsampleGuidanceConfig   Upsample Guidance (eq. 4) for any denoiser
    guided_prediction, nested_guided_prediction eq. 4 in a model's own prediction type; nested levels
    matched_timestep, power                     the SNR-matched time τ and the power P
    downsample, upsample_nearest, lowres_noise  the operators D and U and consistent noise
    apply_upsample_guidance, remove_upsample_guidance
                                                UG on a diffusers pipeline or UNet, exactly reversible
    Recipe, CascadeConfig, DilationConfig, ScaleFusionConfig, PositionConfig
                                                the composition spine: which parts a run uses (presets
                                                naive, ug, self-cascade, freescale and their compositions)
    flow_upsample_guidance                      UG for rectified flow (FLUX, SD3) on any velocity predictor
    generate                                    any recipe on a diffusers pipeline (SD 1.x/2.x, SDXL, AnimateDiff,
                                                FLUX.1, SD3/3.5)
    load_pipeline, ModelSettings                a pipeline by folder, hub id or short name (emoji-latent, emoji-flux),
                                                and what its folder says of it (trained size, call defaults)
    sample                                      any recipe on a pixel-space UNet2DModel and its scheduler
    upscale                                     an existing image through a cascade's later stages (pixel or pipeline)
    FeatureUpsamplers, train_feature_upsamplers Self-Cascade's trainable feature upsamplers
"""

import logging


class _NoTorchvisionFallbackNotice(logging.Filter):
    """transformers says, once per image processor the diffusers pipelines import, that without torchvision it falls
    back to the PIL one; hiresdiff never uses image processors (torchvision is not a dependency), so the notice is noise
    on every run. Only that message is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed)" not in record.getMessage()


logging.getLogger("transformers.utils.import_utils").addFilter(_NoTorchvisionFallbackNotice())

_LAZY = {  # loaded on first use, so that `import hiresdiff` (and the CLI's --help) does not load torch or diffusers
    "lowres_noise": "hiresdiff.core.noise",
    "downsample": "hiresdiff.core.resample",
    "upsample_nearest": "hiresdiff.core.resample",
    "matched_timestep": "hiresdiff.core.schedule",
    "power": "hiresdiff.core.schedule",
    "DilationConfig": "hiresdiff.methods.freescale",
    "ScaleFusionConfig": "hiresdiff.methods.freescale",
    "CascadeConfig": "hiresdiff.methods.self_cascade",
    "PositionConfig": "hiresdiff.methods.positions",
    "flow_upsample_guidance": "hiresdiff.methods.upsample_guidance_flow",
    "UpsampleGuidanceConfig": "hiresdiff.methods.upsample_guidance",
    "guided_prediction": "hiresdiff.methods.upsample_guidance",
    "nested_guided_prediction": "hiresdiff.methods.upsample_guidance",
    "upsample_guidance": "hiresdiff.methods.upsample_guidance",
    "Recipe": "hiresdiff.recipe",
    "apply_upsample_guidance": "hiresdiff.sampling.family_parts",
    "remove_upsample_guidance": "hiresdiff.sampling.family_parts",
    "generate": "hiresdiff.sampling.generate",
    "load_pipeline": "hiresdiff.loading.pipelines",
    "ModelSettings": "hiresdiff.models",
    "sample": "hiresdiff.loading.pixel_model",
    "upscale": "hiresdiff.image_upscale",
    "FeatureUpsamplers": "hiresdiff.unet.feature_upsamplers",
    "train_feature_upsamplers": "hiresdiff.training.feature_upsamplers",
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
    "PositionConfig",
    "Recipe",
    "ScaleFusionConfig",
    "UpsampleGuidanceConfig",
    "apply_upsample_guidance",
    "remove_upsample_guidance",
    "sample",
    "downsample",
    "flow_upsample_guidance",
    "generate",
    "load_pipeline",
    "ModelSettings",
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
