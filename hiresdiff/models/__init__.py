"""The owned models: the embedded pixel model (``emoji32/``) with its Self-Cascade feature upsamplers, the
``emoji-latent`` text-to-image pipeline (``emoji_latent/``), the ``emoji-flux`` FLUX-architecture pipeline
(``emoji_flux/``), and the recipes that trained them."""

from pathlib import Path
from typing import Optional

EMBEDDED_MODEL_DIR = Path(__file__).parent / "emoji32"
EMBEDDED_UPSAMPLERS_DIR = Path(__file__).parent / "emoji32_upsamplers_64"  # 32² → 64², see its README.md
EMOJI_LATENT_DIR = Path(__file__).parent / "emoji_latent"  # a StableDiffusionPipeline folder, see its README.md
EMOJI_LATENT_UPSAMPLERS_DIR = Path(__file__).parent / "emoji_latent_upsamplers_64"  # its 2× stage
EMOJI_FLUX_DIR = Path(__file__).parent / "emoji_flux"  # a FluxPipeline folder (rectified flow), see its README.md
MODEL_NAMES = {"emoji-latent": EMOJI_LATENT_DIR, "emoji-flux": EMOJI_FLUX_DIR}  # short names --model takes


def resolve_model(model: Optional[str]) -> Optional[str]:
    """The folder of a short name of :data:`MODEL_NAMES`; any other ``model`` (a folder, a hub id) unchanged."""
    return str(MODEL_NAMES[model]) if model in MODEL_NAMES else model


def model_settings(model: Optional[str]) -> dict:
    """What a pipeline folder's ``hiresdiff.json`` says about it (``{}`` without one): ``trained_size`` (pixels, for
    pipelines that cannot know it, such as FLUX's) and ``call`` (arguments its calls need); emoji-flux ships one."""
    import json

    path = Path(resolve_model(model)) / "hiresdiff.json" if model is not None else None
    return json.loads(path.read_text()) if path is not None and path.is_file() else {}


def is_pipeline(model: Optional[str]) -> bool:
    """Whether ``model`` (a short name or folder) is a local diffusers pipeline folder (has ``model_index.json``)."""
    return model is not None and (Path(resolve_model(model)) / "model_index.json").is_file()


def shipped_upsamplers(model) -> Optional[dict]:
    """The feature upsamplers a run on ``model`` uses for plain Self-Cascade by default: for the embedded model
    (``model`` is ``None``) and emoji-latent the shipped folder at their 2× stage (other stages run tuning-free),
    none for a user's model."""
    if model is None:
        return {2: str(EMBEDDED_UPSAMPLERS_DIR)}
    if resolve_model(model) == str(EMOJI_LATENT_DIR) and EMOJI_LATENT_UPSAMPLERS_DIR.is_dir():
        return {2: str(EMOJI_LATENT_UPSAMPLERS_DIR)}
    return None
