import pytest
from PIL import Image

from hiresdiff.grid import label_font, labelled_grid, save_image, save_video, wrap


def test_wrap_fits_width_and_keeps_words():
    font = label_font()
    lines = wrap("UG θ=1 without 1/√P and more words", font, 60)
    assert " ".join(lines) == "UG θ=1 without 1/√P and more words"
    assert len(lines) > 1 and all(font.getlength(line) <= 60 or " " not in line for line in lines)


def test_labelled_grid_places_cells_nearest_enlarged():
    red, blue = Image.new("RGB", (4, 4), "red"), Image.new("RGB", (8, 8), "blue")
    grid = labelled_grid([[red, red], [blue, blue]], ["a", "b"], cell=16)
    top = grid.height - 2 * 16
    assert grid.width == 32 and top > 0
    assert grid.getpixel((5, top + 20)) == (255, 0, 0) and grid.getpixel((20, top + 5)) == (0, 0, 255)
    with pytest.raises(ValueError, match="labels"):
        labelled_grid([[red]], ["a", "b"], cell=16)


def test_save_image_is_atomic_and_refuses_to_overwrite(tmp_path):
    path = tmp_path / "sub" / "x.png"
    save_image(Image.new("RGB", (2, 2), "red"), path)
    with pytest.raises(FileExistsError, match="--force"):
        save_image(Image.new("RGB", (2, 2), "blue"), path)
    assert Image.open(path).getpixel((0, 0)) == (255, 0, 0)
    save_image(Image.new("RGB", (2, 2), "blue"), path, force=True)
    assert Image.open(path).getpixel((0, 0)) == (0, 0, 255)
    assert [p.name for p in path.parent.iterdir()] == ["x.png"]


def test_save_video_writes_every_frame_atomically_and_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "v.gif"
    frames = [Image.new("RGB", (4, 4), c) for c in ("red", "lime", "blue")]
    save_video(frames, path, fps=10)
    gif = Image.open(path)
    assert gif.n_frames == 3 and gif.info["duration"] == 100 and gif.info["loop"] == 0
    gif.seek(1)
    assert gif.convert("RGB").getpixel((0, 0)) == (0, 255, 0)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        save_video(frames, path)
    with pytest.raises(Exception):
        save_video([object()], path, force=True)  # the write fails half-way: the old file stays whole
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["v.gif"]
    with pytest.raises(ValueError, match="frames"):
        save_video([], tmp_path / "empty.gif")
    with pytest.raises(ValueError, match=r"suffix, one of \.gif, \.mp4, \.webp"):
        save_video(frames, tmp_path / "v.png")


@pytest.mark.parametrize("suffix", [".webp", ".mp4"])
def test_save_video_writes_animated_webp_and_mp4_read_back_frame_by_frame(tmp_path, suffix):
    """Animated WebP (Pillow) and MP4 (imageio's ffmpeg, H.264: lossy, so colours within a margin; odd sides padded
    to even) hold every frame in order."""
    path = tmp_path / f"v{suffix}"
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (17, 9), c) for c in colours]
    save_video(frames, path, fps=10)
    if suffix == ".webp":
        read = Image.open(path)
        assert read.n_frames == 3 and read.is_animated
        decoded = []
        for k in range(3):
            read.seek(k)
            decoded.append(read.convert("RGB").getpixel((8, 4)))
    else:
        import imageio.v2 as imageio

        video = imageio.mimread(path, format="FFMPEG")
        assert len(video) == 3 and video[0].shape == (10, 18, 3)
        decoded = [tuple(int(v) for v in frame[4, 8]) for frame in video]
    assert all(max(abs(a - b) for a, b in zip(got, want)) < 40 for got, want in zip(decoded, colours))


def test_label_font_has_the_symbols_we_print():
    font = label_font()
    tofu = font.getmask("\uffff").getbbox()
    for ch in "²θητ√":
        assert font.getmask(ch).getbbox() != tofu, ch


def test_labelled_grid_keeps_the_aspect_ratio_of_wide_images():
    wide = Image.new("RGB", (8, 4), "red")
    grid = labelled_grid([[wide]], ["w"], cell=16)
    top = grid.height - 16
    assert grid.getpixel((8, top + 8)) == (255, 0, 0)  # the middle rows hold the image
    assert grid.getpixel((8, top + 1)) == (255, 255, 255) and grid.getpixel((8, top + 14)) == (255, 255, 255)
