"""The emoji clips: known motion, exact at every size, split like the images. Built here from a small image cache of
synthetic 128² "emoji" (the real cache needs the Debian font; the clip code is the same)."""

import numpy as np
import pytest
import torch
from fake_emoji import fake_image_cache, synthetic_images

from hiresdiff.core.resample import downsample
from hiresdiff.data import emoji_clips


@pytest.mark.parametrize("direction", range(8))
def test_a_pan_of_k_pixels_at_128_is_one_of_k_over_4_at_32(direction):
    """Consecutive frames of a pan are the same picture shifted by PAN_STEP pixels at 128² and PAN_STEP/4 at 32²,
    exactly, wherever both frames see it."""
    images = synthetic_images(1)
    clip = emoji_clips.to_sizes(emoji_clips.render_clip(emoji_clips.ClipSpec("pan", 0, direction=direction), images))
    dx, dy = emoji_clips.PAN_DIRECTIONS[direction]
    for size in (128, 64, 32):
        k = emoji_clips.PAN_STEP * size // 128
        frames = clip[size]
        h = size - k
        for t in range(emoji_clips.FRAMES - 1):
            before = frames[t][:, max(0, -dy * k) : max(0, -dy * k) + h, max(0, -dx * k) : max(0, -dx * k) + h]
            after = frames[t + 1][:, max(0, dy * k) : max(0, dy * k) + h, max(0, dx * k) : max(0, dx * k) + h]
            assert torch.equal(before, after), (size, t)
        assert not torch.equal(frames[0], frames[1])


def test_every_motion_moves_and_the_smaller_clips_are_block_averages():
    images = synthetic_images(2)
    for motion in emoji_clips.MOTIONS:
        frames = emoji_clips.render_clip(emoji_clips.ClipSpec(motion, 0, 1), images)
        assert frames.shape == (emoji_clips.FRAMES, 128, 128, 3) and frames.dtype == np.uint8
        sizes = emoji_clips.to_sizes(frames)
        # block averages (of the 0..255 values, then mapped to [-1, 1]: equal up to float rounding)
        assert torch.allclose(sizes[64], downsample(sizes[128], 2), atol=1e-6)
        assert torch.allclose(sizes[32], downsample(sizes[64], 2), atol=1e-6)
        steps = (sizes[128][1:] - sizes[128][:-1]).abs().flatten(1).amax(1)
        assert (steps > 0.5).all(), motion  # no frame repeats its predecessor
    with pytest.raises(ValueError, match="motion must be one of"):
        emoji_clips.render_clip(emoji_clips.ClipSpec("spin", 0), images)


def test_clips_cover_every_motion_and_cross_within_their_split():
    is_test = np.arange(40) % 3 == 0
    specs = emoji_clips.clip_specs(is_test, seed=1)
    assert [s.first for s in specs] == list(range(40))
    counts = {m: sum(s.motion == m for s in specs) for m in emoji_clips.MOTIONS}
    assert set(counts.values()) == {8}
    crosses = [s for s in specs if s.motion == "cross"]
    assert all(s.second != s.first and is_test[s.second] == is_test[s.first] for s in crosses)
    assert specs == emoji_clips.clip_specs(is_test, seed=1)


def test_the_cache_holds_the_32_clips_and_the_larger_ones_render_to_match(tmp_path):
    fake_image_cache(tmp_path)
    path = emoji_clips.build(tmp_path, seed=0)
    assert path == tmp_path / emoji_clips.CACHE_NAME and emoji_clips.build(tmp_path) == path  # cached
    test = {size: emoji_clips.load(size, "test", path) for size in (32, 64, 128)}
    train = emoji_clips.load(32, "train", path)
    assert len(test[32].specs) == len(train.specs) == 5 and {s.first for s in test[32].specs} == set(range(5))
    assert test[32].frames.shape == (5, emoji_clips.FRAMES, 3, 32, 32)
    smaller = downsample(downsample(test[128].frames.flatten(0, 1), 2), 2).view_as(test[32].frames)
    assert torch.allclose(test[32].frames, smaller, atol=1e-6)
    for spec, prompt in zip(test[32].specs, test[32].prompts):
        assert prompt == (
            f"emoji {spec.first}" if spec.motion != "cross" else f"emoji {spec.first} and emoji {spec.second}"
        )
    with pytest.raises(ValueError, match="resolution must be one of 32, 64, 128"):
        emoji_clips.load(256, "test", path)
    with pytest.raises(FileNotFoundError, match="hiresdiff data"):
        emoji_clips.load(32, "test", tmp_path / "missing.npz")
