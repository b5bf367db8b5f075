"""Labelled image grids: one column per method or resolution, one row per seed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

LINE_HEIGHT = 14


def label_font():
    """DejaVu Sans from matplotlib's bundled fonts (it has ², θ, η, √, τ), at the label size."""
    from matplotlib import font_manager

    return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), LINE_HEIGHT - 3)


def wrap(label: str, font, width: int) -> list[str]:
    """Split ``label`` at spaces into lines no wider than ``width`` pixels (a long word keeps its own line)."""
    lines = [""]
    for word in label.split():
        candidate = f"{lines[-1]} {word}".strip()
        if lines[-1] and font.getlength(candidate) > width:
            lines.append(word)
        else:
            lines[-1] = candidate
    return lines


def labelled_grid(columns: Sequence[Sequence[Image.Image]], labels: Sequence[str], cell: int) -> Image.Image:
    """Place ``columns[j][i]`` at row i, column j, under its wrapped ``labels[j]``: each image resized (nearest) to
    fit ``cell``² with its aspect ratio kept, centred on white."""
    if len(columns) != len(labels):
        raise ValueError(f"got {len(columns)} columns but {len(labels)} labels")
    font = label_font()
    wrapped = [wrap(label, font, cell - 4) for label in labels]
    top = LINE_HEIGHT * max(len(lines) for lines in wrapped) + 6
    rows = max(len(c) for c in columns)
    grid = Image.new("RGB", (cell * len(columns), top + cell * rows), "white")
    draw = ImageDraw.Draw(grid)
    for j, (column, lines) in enumerate(zip(columns, wrapped)):
        for n, line in enumerate(lines):
            draw.text((j * cell + cell // 2, 3 + LINE_HEIGHT * n + LINE_HEIGHT // 2), line, fill="black", font=font, anchor="mm")
        for i, image in enumerate(column):
            fit = cell / max(image.width, image.height)  # keep the aspect ratio, centred in its cell
            w, h = max(1, round(image.width * fit)), max(1, round(image.height * fit))
            grid.paste(image.resize((w, h), Image.NEAREST), (j * cell + (cell - w) // 2, top + i * cell + (cell - h) // 2))
    return grid


def save_png(image: Image.Image, path, force: bool = False) -> Path:
    """Write ``image`` to ``path`` as PNG atomically; refuse to replace an existing file unless ``force``."""
    return _save_atomically(path, force, lambda tmp: image.save(tmp, format="PNG"))


def save_gif(frames: Sequence[Image.Image], path, force: bool = False, fps: float = 8) -> Path:
    """Write ``frames`` to ``path`` as a looping animated GIF atomically (same rules as :func:`save_png`)."""
    if not frames:
        raise ValueError("frames must not be empty")
    return _save_atomically(path, force, lambda tmp: frames[0].save(
        tmp, format="GIF", save_all=True, append_images=list(frames[1:]), duration=round(1000 / fps), loop=0))


def _save_atomically(path, force: bool, write) -> Path:
    """``write(tmp)`` next to ``path``, then rename it onto ``path`` (no partial file is ever visible)."""
    path = Path(path)
    check_writable(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def check_writable(path, force: bool) -> None:
    """Raise ``FileExistsError`` if ``path`` exists and ``force`` is not set (call before heavy work)."""
    if Path(path).exists() and not force:
        raise FileExistsError(f"{path} exists; pass --force (force=True) to overwrite it")
