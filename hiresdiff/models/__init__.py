"""The embedded default model (``emoji32/``), its Self-Cascade feature upsamplers, and the recipes that trained them."""

from pathlib import Path
from typing import Optional

EMBEDDED_MODEL_DIR = Path(__file__).parent / "emoji32"
EMBEDDED_UPSAMPLERS_DIR = Path(__file__).parent / "emoji32_upsamplers_64"  # 32² → 64², see its README.md


def shipped_upsamplers(model) -> Optional[str]:
    """The feature upsamplers a run on ``model`` uses for plain Self-Cascade by default: the shipped folder for
    the embedded model (``model`` is ``None``), none for a user's model."""
    return str(EMBEDDED_UPSAMPLERS_DIR) if model is None else None
