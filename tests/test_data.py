import numpy as np
import pytest
import torch
import torch.nn.functional as F
from markers import needs_emoji_data

from hiresdiff.data import emoji

pytestmark = needs_emoji_data


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory):
    return emoji.build(tmp_path_factory.mktemp("emoji"), limit=40, seed=3, progress=False)


def test_shapes_and_exact_box_average_consistency(small_cache):
    with np.load(small_cache) as f:
        img128, img64, img32 = f["img128"], f["img64"], f["img32"]
        assert img128.dtype == np.uint8 and img128.shape[1:] == (128, 128, 3)
        assert img64.shape == (len(img128), 64, 64, 3) and img32.shape == (len(img128), 32, 32, 3)
        assert 30 <= len(img128) <= 40 and len(f["group"]) == len(img128)
        x128 = torch.from_numpy(img128).permute(0, 3, 1, 2).double()
        assert np.array_equal(F.avg_pool2d(x128, 2).permute(0, 2, 3, 1).numpy(), img64)
        x64 = torch.from_numpy(img64).permute(0, 3, 1, 2).double()
        assert np.array_equal(F.avg_pool2d(x64, 2).permute(0, 2, 3, 1).numpy(), img32)
        # emoji on white: the corners are white, the centre is not
        assert (img128[:, :4, :4] == 255).all() and (img128[:, 40:88, 40:88] < 250).any(axis=(1, 2, 3)).all()
        # deduplicated
        assert len({im.tobytes() for im in img128}) == len(img128)


def test_split_is_deterministic_and_keeps_variants_together(tmp_path, small_cache):
    again = emoji.build(tmp_path, limit=40, seed=3, progress=False)
    other = emoji.build(tmp_path / "other", limit=40, seed=4, progress=False)
    with np.load(small_cache) as a, np.load(again) as b, np.load(other) as c:
        assert np.array_equal(a["is_test"], b["is_test"]) and np.array_equal(a["img32"], b["img32"])
        assert not np.array_equal(a["is_test"], c["is_test"])
        assert 0 < a["is_test"].sum() < len(a["is_test"])
        base = [str(n).split(":")[0] for n in a["name"]]
        for name in set(base):
            sides = {bool(t) for t, n in zip(a["is_test"], base) if n == name}
            assert len(sides) == 1, f"variants of {name!r} are split across train and test"


def test_load_returns_scaled_tensors(small_cache):
    train = emoji.load(32, "train", small_cache)
    test = emoji.load(32, "test", small_cache)
    assert train.images.shape[1:] == (3, 32, 32) and train.images.dtype == torch.float32
    assert -1 <= train.images.min() and train.images.max() <= 1
    assert len(train.images) + len(test.images) == len(emoji.load(32, "all", small_cache).images)
    with pytest.raises(ValueError, match="resolution"):
        emoji.load(48, "train", small_cache)
    with pytest.raises(FileNotFoundError, match="hiresdiff data"):
        emoji.load(32, "train", small_cache.parent / "nope.npz")


def test_missing_font_names_the_apt_package(monkeypatch, tmp_path):
    monkeypatch.setattr(emoji, "FONT_PATH", tmp_path / "none.ttf")
    with pytest.raises(FileNotFoundError, match="fonts-noto-color-emoji"):
        emoji.load_font()
