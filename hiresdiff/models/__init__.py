"""The embedded default model (``emoji32/``) and the recipe that trained it."""

from pathlib import Path

EMBEDDED_MODEL_DIR = Path(__file__).parent / "emoji32"
