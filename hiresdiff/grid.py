"""Labelled image grids: one column per method or resolution, one row per seed."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

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
            xy = (j * cell + cell // 2, 3 + LINE_HEIGHT * n + LINE_HEIGHT // 2)
            draw.text(xy, line, fill="black", font=font, anchor="mm")
        for i, image in enumerate(column):
            fit = cell / max(image.width, image.height)  # keep the aspect ratio, centred in its cell
            w, h = max(1, round(image.width * fit)), max(1, round(image.height * fit))
            corner = (j * cell + (cell - w) // 2, top + i * cell + (cell - h) // 2)
            grid.paste(image.resize((w, h), Image.NEAREST), corner)
    return grid


IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}  # by suffix, what Pillow writes


def save_image(image: Image.Image, path, force: bool = False) -> Path:
    """Write ``image`` to ``path`` atomically in the format its suffix names (``IMAGE_FORMATS``); refuse to replace
    an existing file unless ``force``."""
    check_writable(path, force, IMAGE_FORMATS)
    image_format = IMAGE_FORMATS[Path(path).suffix.lower()]
    return _save_atomically(path, force, lambda tmp: image.convert("RGB").save(tmp, format=image_format))


#: animated outputs by suffix: what Pillow writes (GIF, WebP) or imageio through ffmpeg (MP4, H.264)
VIDEO_FORMATS = {".gif": "GIF", ".webp": "WEBP", ".mp4": "MP4"}


def check_video_writer(path) -> None:
    """Before any heavy work: ``ValueError`` naming the packages when ``path``'s format needs what is not installed
    (MP4: imageio and imageio-ffmpeg, the ``video`` extra)."""
    if Path(path).suffix.lower() != ".mp4":
        return
    try:
        import imageio  # noqa: F401
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        raise ValueError(
            f"{path}: writing MP4 needs imageio and imageio-ffmpeg: pip install 'hiresdiff[video]' (or write .gif, "
            ".webp)"
        ) from None


def save_video(frames: Sequence[Image.Image], path, force: bool = False, fps: float = 8) -> Path:
    """Write ``frames`` to ``path`` as a looping animation in the format its suffix names (``VIDEO_FORMATS``: GIF and
    animated WebP by Pillow, MP4 by imageio's ffmpeg writer, H.264 in yuv420p, the frames padded with white to even
    sides), atomically (same rules as :func:`save_image`)."""
    if not frames:
        raise ValueError("frames must not be empty")
    check_writable(path, force, VIDEO_FORMATS)
    check_video_writer(path)
    kind = VIDEO_FORMATS[Path(path).suffix.lower()]
    if kind != "MP4":
        duration = round(1000 / fps)
        return _save_atomically(
            path,
            force,
            lambda tmp: frames[0].save(
                tmp, format=kind, save_all=True, append_images=list(frames[1:]), duration=duration, loop=0
            ),
        )

    def write_mp4(tmp: Path) -> None:
        import imageio.v2 as imageio
        import numpy as np

        width, height = frames[0].width + frames[0].width % 2, frames[0].height + frames[0].height % 2
        padded = []
        for frame in frames:
            canvas = Image.new("RGB", (width, height), "white")
            canvas.paste(frame.convert("RGB"))
            padded.append(np.asarray(canvas))
        imageio.mimwrite(tmp, padded, format="FFMPEG", fps=fps, codec="libx264", macro_block_size=1)

    return _save_atomically(path, force, write_mp4)


def _save_atomically(path, force: bool, write) -> Path:
    """``write(tmp)`` next to ``path``, then rename it onto ``path`` (no partial file is ever visible)."""
    path = Path(path)
    check_writable(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")  # the suffix kept: writers that read the format from it
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def check_writable(
    path, force: bool, formats=None, *, create_folder: bool = True, option: Optional[str] = None
) -> None:
    """Before any heavy work: ``path`` may be written. ``ValueError`` naming it for a suffix not in ``formats``
    (a dict keyed by suffix; ``None``: any) or a folder that cannot be created or written; ``FileExistsError``
    if it exists and ``force`` is not set. A missing folder is created now, or with ``create_folder=False`` (the
    command line's ``--out``: a mistyped folder is no folder to make) refused. ``option``: the command-line option
    the path came from, named in the messages."""
    path = Path(path)
    what = f"{option} {path}" if option else str(path)
    if formats is not None and path.suffix.lower() not in formats:
        raise ValueError(
            f"{what}: the output format comes from the suffix, one of {', '.join(sorted(formats))}; "
            f"got {path.suffix or 'none'!r}"
        )
    if path.exists() and not force:
        raise FileExistsError(f"{what} exists; pass --force{'' if option else ' (force=True)'} to overwrite it")
    folder = path.parent
    if not create_folder and not folder.is_dir():
        if folder.exists():
            raise ValueError(f"{what}: its folder {folder} is a file, not a folder")
        raise ValueError(f"{what}: its folder {folder} does not exist (create it first)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"{what}: cannot create its folder {folder}: {error.strerror or error}") from None
    try:  # a real probe: permission bits say nothing to root, and some folders refuse files whatever they say
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ValueError(f"{what}: its folder {folder} is not writable ({error.strerror or error})") from None
