"""The Noto colour emoji data set: real images with exact ground truth at 128², 64² and 32².

Every fully-qualified emoji listed in Unicode's ``emoji-test.txt`` (Debian package
``unicode-data``) is rendered with the colour bitmap font of Debian's
``fonts-noto-color-emoji`` onto white at 128², duplicates are dropped, and the 64² and 32²
versions are block averages: ``img32 = D[img64] = D²[img128]`` exactly.

The train/test split is seeded and keeps every variant of one emoji (skin tones, genders that
share a base name) on the same side, so held-out images are really unseen.

Images are Apache-2.0 licensed (Noto Emoji). Rebuild with ``hiresdiff data``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from hiresdiff.core.resample import downsample

FONT_PATH = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
EMOJI_TEST_PATH = Path("/usr/share/unicode/emoji/emoji-test.txt")
FONT_SIZE = 109  # the only size the colour bitmap font renders
SIZE = 128
CACHE_NAME = "emoji-v2.npz"  # v2: with Unicode subgroups (v1 had groups only; same images and split)


def default_data_dir() -> Path:
    """``$HIRESDIFF_DATA_DIR``, else ``~/.cache/hiresdiff``."""
    return Path(os.environ.get("HIRESDIFF_DATA_DIR", Path.home() / ".cache" / "hiresdiff"))


@dataclass(frozen=True)
class EmojiEntry:
    text: str
    name: str
    group: str
    subgroup: str = ""


def read_emoji_list(path: Path = EMOJI_TEST_PATH) -> list[EmojiEntry]:
    """The fully-qualified emoji of ``emoji-test.txt`` with their name, Unicode group and subgroup."""
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: install the Debian package 'unicode-data' (apt-get install -y unicode-data)"
        )
    entries, group, subgroup = [], "", ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif "; fully-qualified" in line and group != "Component":
            codes, comment = line.split(";")[0], line.split("#", 1)[1]
            text = "".join(chr(int(c, 16)) for c in codes.split())
            name = comment.strip().split(" ", 2)[2]  # "<emoji> E1.0 grinning face"
            entries.append(EmojiEntry(text, name, group, subgroup))
    return entries


def render_emoji(text: str, font) -> np.ndarray:
    """One emoji drawn on white, centred in a 128² RGB uint8 array (shrunk to fit if wider)."""
    left, top, right, bottom = font.getbbox(text)
    glyph = Image.new("RGBA", (right - left, bottom - top), (255, 255, 255, 0))
    ImageDraw.Draw(glyph).text((-left, -top), text, font=font, embedded_color=True)
    box = glyph.getchannel("A").getbbox()
    canvas = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
    if box is None:
        return np.asarray(canvas)
    glyph = glyph.crop(box)
    if max(glyph.size) > SIZE:
        scale = SIZE / max(glyph.size)
        glyph = glyph.resize((max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale))), Image.LANCZOS)
    canvas.paste(glyph, ((SIZE - glyph.width) // 2, (SIZE - glyph.height) // 2), glyph)
    return np.asarray(canvas)


def load_font():
    if not FONT_PATH.exists():
        raise FileNotFoundError(
            f"{FONT_PATH} not found: install the Debian package 'fonts-noto-color-emoji' "
            "(apt-get install -y fonts-noto-color-emoji)"
        )
    return ImageFont.truetype(str(FONT_PATH), FONT_SIZE)


def render_dataset(entries: list[EmojiEntry], progress: bool = True) -> tuple[np.ndarray, list[EmojiEntry]]:
    """Render ``entries``, dropping blank renders and exact duplicates; returns (N, 128, 128, 3) uint8."""
    font = load_font()
    images, kept, seen = [], [], set()
    for entry in tqdm(entries, desc="rendering emoji", disable=not progress):
        img = render_emoji(entry.text, font)
        digest = hashlib.sha1(img.tobytes()).digest()
        if digest in seen or img.min() == 255:
            continue
        seen.add(digest)
        images.append(img)
        kept.append(entry)
    return np.stack(images), kept


def split_by_base_name(entries: list[EmojiEntry], num_test: int, seed: int) -> np.ndarray:
    """Boolean test mask: whole base-name families (text before ':') go to test until ``num_test`` is reached."""
    bases = sorted({e.name.split(":")[0] for e in entries})
    order = np.random.default_rng(seed).permutation(len(bases))
    base_of = np.array([bases.index(e.name.split(":")[0]) for e in entries])
    is_test = np.zeros(len(entries), dtype=bool)
    for b in order:
        if is_test.sum() >= num_test:
            break
        is_test |= base_of == b
    return is_test


def build(
    data_dir: Path | None = None,
    num_test: int = 480,
    seed: int = 0,
    limit: int | None = None,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Render, deduplicate, split and cache the data set; returns the cache file path."""
    data_dir = Path(data_dir or default_data_dir())
    out = data_dir / CACHE_NAME if limit is None else data_dir / f"{Path(CACHE_NAME).stem}-first{limit}.npz"
    if out.exists() and not force:
        return out
    entries = read_emoji_list()[:limit]
    images, kept = render_dataset(entries, progress)
    groups = sorted({e.group for e in kept})
    subgroups = sorted({e.subgroup for e in kept})
    img128 = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    img64 = downsample(img128, 2)
    img32 = downsample(img64, 2)
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        img128=images,
        img64=img64.permute(0, 2, 3, 1).numpy(),
        img32=img32.permute(0, 2, 3, 1).numpy(),
        is_test=split_by_base_name(kept, min(num_test, len(kept) // 2), seed),
        group=np.array([groups.index(e.group) for e in kept]),
        group_names=np.array(groups),
        subgroup=np.array([subgroups.index(e.subgroup) for e in kept]),
        subgroup_names=np.array(subgroups),
        text=np.array([e.text for e in kept]),
        name=np.array([e.name for e in kept]),
    )
    os.replace(tmp, out)
    return out


@dataclass
class EmojiData:
    """One split at one resolution: images in [-1, 1], (N, 3, S, S) float32, group labels, the emoji's names and their
    Unicode subgroups (e.g. ``face-smiling``, 99 of them: finer than the 9 groups, coarser than the emoji)."""

    images: torch.Tensor
    labels: torch.Tensor
    group_names: list[str]
    names: list[str]  # CLDR short names from emoji-test.txt, e.g. "grinning face with big eyes"
    subgroups: torch.Tensor
    subgroup_names: list[str]


#: The sizes the data set holds every emoji at (128² rendered, the smaller ones its exact block averages).
RESOLUTIONS = (32, 64, 128)


def load(resolution: int = 32, split: str = "train", path: Path | None = None) -> EmojiData:
    """Load a split ('train', 'test' or 'all') at 128, 64 or 32 pixels from the cache (build it first)."""
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {', '.join(map(str, RESOLUTIONS))}; got {resolution}")
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all'; got {split!r}")
    path = Path(path or default_data_dir() / CACHE_NAME)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: build the data set with `hiresdiff data` first")
    with np.load(path) as f:
        if "subgroup" not in f:
            raise ValueError(
                f"{path} is a data cache of an older version (no subgroups): rebuild it with `hiresdiff data`"
            )
        mask = {"train": ~f["is_test"], "test": f["is_test"], "all": np.ones_like(f["is_test"])}[split]
        pixels = torch.from_numpy(f[f"img{resolution}"][mask]).float()
        labels = torch.from_numpy(f["group"][mask]).long()
        group_names = [str(n) for n in f["group_names"]]
        names = [str(n) for n in f["name"][mask]]
        subgroups = torch.from_numpy(f["subgroup"][mask]).long()
        subgroup_names = [str(n) for n in f["subgroup_names"]]
    images = pixels.permute(0, 3, 1, 2).contiguous() / 127.5 - 1.0
    return EmojiData(images, labels, group_names, names, subgroups, subgroup_names)
