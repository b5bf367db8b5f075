"""Emoji clips: short videos of the real emoji with known motion, exact at 128², 64² and 32².

Each clip moves one emoji of the image data set (:mod:`hiresdiff.data.emoji`) on white for :data:`FRAMES` frames in
one of :data:`MOTIONS`:

- ``pan``: the emoji at full size slides :data:`PAN_STEP` pixels per frame (at 128²) in one of eight directions;
- ``zoom``: it grows from 0.7 to 1.0 of the frame, or shrinks back;
- ``rotate``: it turns from −20° to +20°, or back;
- ``bounce``: at 0.75 size it falls, bounces off the bottom edge and lands again (height |cos 1.5πt|);
- ``cross``: two emoji at 0.6 size pass each other horizontally, one in the upper half, one in the lower;
  the prompt names both ("A and B").

Every frame is drawn at 128² with Pillow; the 64² and 32² clips are its block averages (``D[frame128]``), exactly
as the image set's sizes are, so a 2× or 4× generated clip has an exact real counterpart and a pan of k pixels per
frame at 128² is one of k/4 at 32². Clips follow the image set's split (held-out emoji families make the held-out
clips), and their prompt is the emoji's name. :func:`build` caches the clips' specifications and their 32² frames
(``emoji-clips-v1.npz`` beside the image cache, by ``hiresdiff data``); :func:`load` reads them, rendering 64² and 128²
from the specifications.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from hiresdiff.core.resample import downsample
from hiresdiff.data import emoji

FRAMES = 8
MOTIONS = ("pan", "zoom", "rotate", "bounce", "cross")
PAN_STEP = 4  # pixels per frame at 128²: one pixel at 32², so a pan stays exact at every size
CACHE_NAME = "emoji-clips-v1.npz"
WHITE = (255, 255, 255)


@dataclass(frozen=True)
class ClipSpec:
    """One clip: ``motion`` (one of :data:`MOTIONS`) of the emoji at image-set index ``first`` (and ``second`` for
    ``cross``), with ``direction`` (pan: an index into the eight compass directions; zoom, rotate: ±1)."""

    motion: str
    first: int
    second: int = -1
    direction: int = 1


#: The eight pan directions (dx, dy), unit steps.
PAN_DIRECTIONS = ((1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1))


def _sprite(image: np.ndarray, size: int, angle: float = 0.0) -> Image.Image:
    """The emoji (a 128² RGB array on white) at ``size``² and turned by ``angle`` degrees, as RGBA whose alpha marks
    the non-white pixels (so that two emoji can overlap)."""
    sprite = Image.fromarray(image)
    if size != emoji.SIZE:
        sprite = sprite.resize((size, size), Image.LANCZOS)
    if angle:
        sprite = sprite.rotate(angle, Image.BICUBIC, fillcolor=WHITE)
    alpha = Image.fromarray(((np.asarray(sprite) < 250).any(-1) * 255).astype(np.uint8))
    sprite.putalpha(alpha)
    return sprite


def _frame(sprites: list[tuple[Image.Image, int, int]]) -> np.ndarray:
    """A 128² white frame with each sprite pasted with its top-left corner at (x, y)."""
    canvas = Image.new("RGB", (emoji.SIZE, emoji.SIZE), WHITE)
    for sprite, x, y in sprites:
        canvas.paste(sprite, (x, y), sprite)
    return np.asarray(canvas)


def pan_offsets(direction: int, frames: int = FRAMES) -> list[tuple[int, int]]:
    """Top-left corners of a pan: :data:`PAN_STEP` pixels per frame along ``PAN_DIRECTIONS[direction]``, centred on
    the middle of the clip."""
    dx, dy = PAN_DIRECTIONS[direction]
    half = (frames - 1) * PAN_STEP // 2
    return [(dx * (PAN_STEP * t - half), dy * (PAN_STEP * t - half)) for t in range(frames)]


def render_clip(spec: ClipSpec, images: np.ndarray, frames: int = FRAMES) -> np.ndarray:
    """The clip ``spec`` of the 128² emoji ``images`` (N, 128, 128, 3) uint8, as (frames, 128, 128, 3) uint8."""
    full, image = emoji.SIZE, images[spec.first]
    ramp = [t / (frames - 1) for t in range(frames)]  # 0 → 1 over the clip
    if spec.motion == "pan":
        sprite = _sprite(image, full)
        return np.stack([_frame([(sprite, x, y)]) for x, y in pan_offsets(spec.direction, frames)])
    if spec.motion == "zoom":
        sizes = [round(full * (0.7 + 0.3 * (r if spec.direction > 0 else 1 - r))) for r in ramp]
        return np.stack([_frame([(_sprite(image, s), (full - s) // 2, (full - s) // 2)]) for s in sizes])
    if spec.motion == "rotate":
        angles = [20.0 * spec.direction * (2 * r - 1) for r in ramp]
        return np.stack([_frame([(_sprite(image, full, a), 0, 0)]) for a in angles])
    if spec.motion == "bounce":
        size = round(full * 0.75)
        sprite, floor = _sprite(image, size), full - size
        heights = [abs(math.cos(1.5 * math.pi * r)) for r in ramp]  # falls, bounces up, lands again
        return np.stack([_frame([(sprite, (full - size) // 2, round(floor * (1 - h)))]) for h in heights])
    if spec.motion == "cross":
        size = round(full * 0.6)
        top, bottom = _sprite(image, size), _sprite(images[spec.second], size)
        travel = full - size
        xs = [round(travel * r) for r in ramp]
        return np.stack([_frame([(top, x, 0), (bottom, travel - x, full - size)]) for x in xs])
    raise ValueError(f"motion must be one of {MOTIONS}; got {spec.motion!r}")


def clip_specs(is_test: np.ndarray, seed: int = 0) -> list[ClipSpec]:
    """One clip per emoji of the image set (``is_test``: its split mask), the motions cycling through
    :data:`MOTIONS` in a seeded order; a ``cross`` partner is another emoji of the same split."""
    rng = np.random.default_rng(seed)
    motions = rng.permutation(np.arange(len(is_test)) % len(MOTIONS))
    specs = []
    for i, m in enumerate(motions):
        motion = MOTIONS[m]
        partners = np.flatnonzero((is_test == is_test[i]) & (np.arange(len(is_test)) != i))
        second = int(rng.choice(partners)) if motion == "cross" else -1
        direction = int(rng.integers(len(PAN_DIRECTIONS))) if motion == "pan" else int(rng.choice([-1, 1]))
        specs.append(ClipSpec(motion, i, second, direction))
    return specs


def to_sizes(frames: np.ndarray) -> dict[int, torch.Tensor]:
    """128² uint8 frames (..., 128, 128, 3) as {128, 64, 32: (..., 3, S, S) float in [-1, 1]}, the smaller ones
    block averages (the image set's ``D``)."""
    x = torch.from_numpy(frames).movedim(-1, -3).float()
    lead = x.shape[:-3]
    x = x.reshape(-1, *x.shape[-3:])
    out = {128: x}
    out[64] = downsample(x, 2)
    out[32] = downsample(out[64], 2)
    return {s: (v / 127.5 - 1.0).reshape(*lead, *v.shape[-3:]) for s, v in out.items()}


@dataclass
class EmojiClips:
    """One split's clips at one size: ``frames`` (N, F, 3, S, S) in [-1, 1], their prompts and specifications."""

    frames: torch.Tensor
    prompts: list[str]
    specs: list[ClipSpec]


def build(data_dir: Path | None = None, force: bool = False, seed: int = 0) -> Path:
    """Cache every emoji's clip (its specification and 32² frames) from the image set's cache, built first if
    missing (:func:`hiresdiff.data.emoji.build`); returns the cache path."""
    data_dir = Path(data_dir or emoji.default_data_dir())
    out = data_dir / CACHE_NAME
    if out.exists() and not force:
        return out
    with np.load(emoji.build(data_dir)) as f:
        images, is_test = f["img128"], f["is_test"]
    specs = clip_specs(is_test, seed)
    small = np.stack([to_sizes(render_clip(spec, images))[32].numpy() for spec in tqdm(specs, desc="rendering clips")])
    tmp = out.with_suffix(".tmp.npz")
    np.savez_compressed(
        tmp,
        frames32=small,
        motion=np.array([MOTIONS.index(s.motion) for s in specs]),
        first=np.array([s.first for s in specs]),
        second=np.array([s.second for s in specs]),
        direction=np.array([s.direction for s in specs]),
    )
    os.replace(tmp, out)
    return out


def load(resolution: int = 32, split: str = "train", path: Path | None = None) -> EmojiClips:
    """The clips of a split ('train', 'test' or 'all') at 32², 64² or 128² from the clip cache ``path`` (default: the
    one :func:`build` writes; the image cache beside it): 32² read, 64² and 128² rendered from the specifications."""
    if resolution not in emoji.RESOLUTIONS:
        raise ValueError(f"resolution must be one of {', '.join(map(str, emoji.RESOLUTIONS))}; got {resolution}")
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all'; got {split!r}")
    path = Path(path or emoji.default_data_dir() / CACHE_NAME)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: build the clips with `hiresdiff data` first")
    with np.load(path.parent / emoji.CACHE_NAME) as f:
        is_test, names = f["is_test"], [str(n) for n in f["name"]]
        images = f["img128"] if resolution > 32 else None
    with np.load(path) as f:
        specs = [
            ClipSpec(MOTIONS[m], int(a), int(b), int(d))
            for m, a, b, d in zip(f["motion"], f["first"], f["second"], f["direction"])
        ]
        frames32 = f["frames32"] if resolution == 32 else None
    keep = {"train": ~is_test, "test": is_test, "all": np.ones_like(is_test)}[split]
    index = np.flatnonzero(keep)
    specs = [specs[i] for i in index]
    if resolution == 32:
        frames = torch.from_numpy(frames32[index])
    else:
        frames = torch.stack([to_sizes(render_clip(s, images))[resolution] for s in specs])
    prompts = [names[s.first] if s.motion != "cross" else f"{names[s.first]} and {names[s.second]}" for s in specs]
    return EmojiClips(frames, prompts, specs)
