"""Temporal metrics of clips: closed forms on still and flickering clips; real clips with known motion near their
floor, the same clips with shuffled frames far from it."""

import pytest
import torch
from fake_emoji import synthetic_images

from hiresdiff.data import emoji_clips
from hiresdiff.eval.metrics.temporal import flicker, frame_difference_energy, warping_error


def real_clips(size: int) -> torch.Tensor:
    """One clip per motion of the synthetic emoji, at ``size``² (block averages of the 128² frames)."""
    images = synthetic_images(2)
    specs = [emoji_clips.ClipSpec(motion, 0, 1, direction=1) for motion in emoji_clips.MOTIONS]
    return torch.stack([emoji_clips.to_sizes(emoji_clips.render_clip(s, images))[size] for s in specs])


def test_closed_forms_on_a_still_and_a_flickering_clip():
    still = (torch.rand(2, 1, 3, 1, 1) * 0.5 - 0.25).expand(2, 6, 3, 32, 32)  # one colour per clip
    assert frame_difference_energy(still).tolist() == [0.0, 0.0]
    assert flicker(still).tolist() == [0.0, 0.0] and warping_error(still).tolist() == [0.0, 0.0]
    a = 0.1
    flickering = still + a * torch.tensor([1.0, -1.0] * 3).view(1, 6, 1, 1, 1)  # brightness ±a every frame
    assert frame_difference_energy(flickering) == pytest.approx([(2 * a) ** 2] * 2, rel=1e-5)
    assert flicker(flickering) == pytest.approx([2 * a] * 2, rel=1e-5)
    assert warping_error(flickering) == pytest.approx([2 * a] * 2, rel=1e-5)  # no shift explains a brightness jump


@pytest.mark.parametrize("size", [32, 64, 128])
def test_real_clips_sit_near_the_floor_and_shuffled_frames_far_from_it(size):
    """Real motion is mostly explained by block translations (pans and crossings all but exactly); the same clips
    with their frames shuffled score far above them (zoom, rotation and a bounce's jumps less: local shifts explain
    part of any reordering of them)."""
    clips = real_clips(size)
    real = warping_error(clips)
    order = torch.tensor([0, 4, 1, 6, 3, 7, 2, 5])
    shuffled = warping_error(clips[:, order])
    moved = frame_difference_energy(clips).sqrt()
    assert (real < 0.2 * moved).all()  # most of every motion's change is explained by the block translations
    assert shuffled.mean() > 3 * real.mean()
    for motion in ("pan", "cross"):  # translations: explained but where the picture enters; shuffled, far from it
        i = emoji_clips.MOTIONS.index(motion)
        assert real[i] < 0.1 * moved[i] and shuffled[i] > 5 * real[i]


def test_malformed_clips_are_refused():
    with pytest.raises(ValueError, match=r"clips must be a tensor \(N, F >= 2, 3, H, W\)"):
        warping_error(torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match="multiples of 8 pixels"):
        warping_error(torch.zeros(1, 2, 3, 36, 36))
