"""The embedded default model (``emoji32/``), its Self-Cascade feature upsamplers, and the recipes that trained them."""

from pathlib import Path

EMBEDDED_MODEL_DIR = Path(__file__).parent / "emoji32"
EMBEDDED_UPSAMPLERS_DIR = Path(__file__).parent / "emoji32_upsamplers_64"  # 32² → 64², see its README.md
