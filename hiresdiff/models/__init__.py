"""The embedded default model (``emoji32/``), its Self-Cascade feature upsamplers, and the recipes that trained them."""

from pathlib import Path
from typing import Optional

EMBEDDED_MODEL_DIR = Path(__file__).parent / "emoji32"
EMBEDDED_UPSAMPLERS_DIR = Path(__file__).parent / "emoji32_upsamplers_64"  # 32² → 64², see its README.md


def shipped_upsamplers(model) -> Optional[dict]:
    """The feature upsamplers a run on ``model`` uses for plain Self-Cascade by default: for the embedded model
    (``model`` is ``None``) the shipped folder at its 2× stage (other stages run tuning-free), none for a user's model."""
    return {2: str(EMBEDDED_UPSAMPLERS_DIR)} if model is None else None
