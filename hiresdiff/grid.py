"""Labelled image grids: one column per method or resolution, one row per seed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

LABEL_HEIGHT = 28


def labelled_grid(columns: Sequence[Sequence[Image.Image]], labels: Sequence[str], cell: int) -> Image.Image:
    """Place ``columns[j][i]`` at row i, column j, each resized (nearest) to ``cell``² with ``labels[j]`` on top."""
    if len(columns) != len(labels):
        raise ValueError(f"got {len(columns)} columns but {len(labels)} labels")
    rows = max(len(c) for c in columns)
    grid = Image.new("RGB", (cell * len(columns), LABEL_HEIGHT + cell * rows), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default(size=max(10, min(16, cell // 9)))
    for j, (column, label) in enumerate(zip(columns, labels)):
        draw.text((j * cell + cell // 2, LABEL_HEIGHT // 2), label, fill="black", font=font, anchor="mm")
        for i, image in enumerate(column):
            grid.paste(image.resize((cell, cell), Image.NEAREST), (j * cell, LABEL_HEIGHT + i * cell))
    return grid


def save_png(image: Image.Image, path, force: bool = False) -> Path:
    """Write ``image`` to ``path`` atomically; refuse to replace an existing file unless ``force``."""
    path = Path(path)
    check_writable(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def check_writable(path, force: bool) -> None:
    """Raise ``FileExistsError`` if ``path`` exists and ``force`` is not set (call before heavy work)."""
    if Path(path).exists() and not force:
        raise FileExistsError(f"{path} exists; pass --force (force=True) to overwrite it")
