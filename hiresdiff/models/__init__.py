"""The owned models: the embedded pixel model (``emoji32/``) with its Self-Cascade feature upsamplers, the
``emoji-latent`` text-to-image pipeline (``emoji_latent/``), the ``emoji-flux`` FLUX-architecture pipeline
(``emoji_flux/``), the 2× super-resolution network they name as their upscaler (``emoji_sr/``), emoji-latent's few-step
LCM student for a cascade's later stages (``emoji_latent_lcm_lora/``), the ``emoji-video`` AnimateDiff pipeline
(``emoji_video/``: emoji-latent with a motion adapter trained on the emoji clips), and the recipes that trained them."""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

EMBEDDED_MODEL_DIR = Path(__file__).parent / "emoji32"
EMBEDDED_UPSAMPLERS_DIR = Path(__file__).parent / "emoji32_upsamplers_64"  # 32² → 64², see its README.md
EMOJI_LATENT_DIR = Path(__file__).parent / "emoji_latent"  # a StableDiffusionPipeline folder, see its README.md
EMOJI_LATENT_UPSAMPLERS_DIR = Path(__file__).parent / "emoji_latent_upsamplers_64"  # its 2× stage
EMOJI_FLUX_DIR = Path(__file__).parent / "emoji_flux"  # a FluxPipeline folder (rectified flow), see its README.md
SEMANTIC_CLASSIFIER_DIR = Path(__file__).parent / "emoji_subgroups"  # the semantic metric's classifier, see its README.md
EMOJI_SR_FILE = Path(__file__).parent / "emoji_sr" / "2x_emoji_compact.safetensors"  # 2× super-resolution, see README.md
EMOJI_LATENT_LCM_DIR = Path(__file__).parent / "emoji_latent_lcm_lora"  # emoji-latent's few-step student, README.md
EMOJI_VIDEO_DIR = Path(__file__).parent / "emoji_video"  # an AnimateDiffPipeline folder: emoji-latent that moves
#: short names --model takes
MODEL_NAMES = {"emoji-latent": EMOJI_LATENT_DIR, "emoji-flux": EMOJI_FLUX_DIR, "emoji-video": EMOJI_VIDEO_DIR}


def resolve_model(model: Optional[str]) -> Optional[str]:
    """The folder of a short name of :data:`MODEL_NAMES`; any other ``model`` (a folder, a hub id) unchanged."""
    return str(MODEL_NAMES[model]) if model in MODEL_NAMES else model


DEFAULT_GUIDANCE_SCALE = 7.5


@dataclass(frozen=True)
class ModelSettings:
    """What hiresdiff knows about a model beyond its pipeline: a folder's ``hiresdiff.json`` (emoji-flux ships one).

    Attributes:
        trained_size: the square pixel size the weights were trained at, for pipelines that cannot know it (FLUX's
            pipeline assumes 1024 whatever the weights); ``None``: the denoiser's own ``sample_size``.
        call: arguments its pipeline calls need (``guidance_scale`` recommended for it, ``max_sequence_length``, …).
    """

    trained_size: Optional[int] = None
    call: dict = field(default_factory=dict)

    def guidance_scale(self, guidance_scale: Optional[float] = None) -> float:
        """``guidance_scale`` if given, else the recommended one, else 7.5."""
        return guidance_scale if guidance_scale is not None else self.call.get("guidance_scale", DEFAULT_GUIDANCE_SCALE)

    def arguments(self, pipe, guidance_scale: Optional[float] = None, negative_prompt: Optional[str] = None) -> dict:
        """The keyword arguments of :func:`hiresdiff.generate` for ``pipe`` under these settings: the call defaults,
        the guidance (:meth:`guidance_scale`; a FLUX transformer without a guidance embedding, not guidance-distilled,
        gets classifier-free guidance as ``true_cfg_scale`` with ``negative_prompt``, default "", since its
        ``guidance_scale`` would do nothing), ``negative_prompt`` when one is given, and ``trained_size`` when known."""
        kwargs: dict[str, Any] = {name: value for name, value in self.call.items() if name != "guidance_scale"}
        scale = self.guidance_scale(guidance_scale)
        transformer_config = getattr(getattr(pipe, "transformer", None), "config", {})
        if "guidance_embeds" in transformer_config and not transformer_config["guidance_embeds"]:
            kwargs.update(true_cfg_scale=scale, negative_prompt=negative_prompt if negative_prompt is not None else "")
        else:
            kwargs["guidance_scale"] = scale
            if negative_prompt is not None:
                kwargs["negative_prompt"] = negative_prompt
        if self.trained_size is not None:
            kwargs["trained_size"] = self.trained_size
        return kwargs


def model_settings(model: Optional[str]) -> ModelSettings:
    """The :class:`ModelSettings` of a short name or folder (empty ones without a ``hiresdiff.json``)."""
    path = Path(resolve_model(model)) / "hiresdiff.json" if model is not None else None
    if path is None or not path.is_file():
        return ModelSettings()
    saved = json.loads(path.read_text())
    return ModelSettings(trained_size=saved.get("trained_size"), call=dict(saved.get("call", {})))


def is_pipeline(model: Optional[str]) -> bool:
    """Whether ``model`` (a short name or folder) is a local diffusers pipeline folder (has ``model_index.json``)."""
    return model is not None and (Path(resolve_model(model)) / "model_index.json").is_file()


def shipped_upscaler(model) -> Optional[str]:
    """The super-resolution file the owned models name as their upscaler (``--upscaler shipped``): the emoji
    network for the embedded model (``model`` is ``None``), emoji-latent and emoji-flux; none for a user's model."""
    owned = {str(EMOJI_LATENT_DIR), str(EMOJI_FLUX_DIR)}
    return str(EMOJI_SR_FILE) if model is None or resolve_model(model) in owned else None


def shipped_stage_lora(model) -> Optional[str]:
    """The few-step LoRA an owned model ships for a cascade's later stages (``--stage-lora shipped``): emoji-latent's
    LCM student; none for other models."""
    owned = model is not None and resolve_model(model) == str(EMOJI_LATENT_DIR)
    shipped = (EMOJI_LATENT_LCM_DIR / "pytorch_lora_weights.safetensors").is_file()
    return str(EMOJI_LATENT_LCM_DIR) if owned and shipped else None


def shipped_upsamplers(model) -> Optional[dict]:
    """The feature upsamplers a run on ``model`` uses for plain Self-Cascade by default: for the embedded model
    (``model`` is ``None``) and emoji-latent the shipped folder at their 2× stage (other stages run tuning-free),
    none for a user's model."""
    if model is None:
        return {2: str(EMBEDDED_UPSAMPLERS_DIR)}
    if resolve_model(model) == str(EMOJI_LATENT_DIR) and EMOJI_LATENT_UPSAMPLERS_DIR.is_dir():
        return {2: str(EMOJI_LATENT_UPSAMPLERS_DIR)}
    return None
