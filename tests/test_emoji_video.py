"""The shipped emoji-video model (an ``AnimateDiffPipeline`` folder: emoji-latent with the motion adapter trained here)
loads as diffusers loads AnimateDiff, its untouched image components are emoji-latent's, and ``hiresdiff generate
--model emoji-video`` writes a clip in each output format its --out suffix names."""

import json

import pytest
import torch
from diffusers import AnimateDiffPipeline, MotionAdapter, StableDiffusionPipeline
from PIL import Image
from test_cli import run_cli

from hiresdiff.models import EMOJI_LATENT_DIR, EMOJI_VIDEO_DIR, MODEL_NAMES, model_settings
from hiresdiff.training.motion_adapter import ADAPTER_CONFIG


def test_emoji_video_is_emoji_latent_with_the_trained_adapter_and_loads_both_ways():
    video = AnimateDiffPipeline.from_pretrained(EMOJI_VIDEO_DIR)
    assert MODEL_NAMES["emoji-video"] == EMOJI_VIDEO_DIR
    image = StableDiffusionPipeline.from_pretrained(EMOJI_LATENT_DIR)
    for name in ("vae", "text_encoder"):  # the frozen image components, as emoji-latent ships them
        ours, theirs = getattr(video, name).state_dict(), getattr(image, name).state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    adapter = MotionAdapter.from_pretrained(EMOJI_VIDEO_DIR / "motion_adapter")
    assert {k: adapter.config[k] for k in ADAPTER_CONFIG} == {
        k: list(v) if isinstance(v, tuple) else v for k, v in ADAPTER_CONFIG.items()
    }
    assert any(p.abs().sum() > 0 for n, p in adapter.named_parameters() if n.endswith("proj_out.weight"))  # trained
    # the diffusers way to pair an adapter with an image model gives the same motion UNet
    paired = AnimateDiffPipeline.from_pretrained(EMOJI_LATENT_DIR, motion_adapter=adapter)
    ours, theirs = video.unet.state_dict(), paired.unet.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.allclose(ours[k], theirs[k].to(ours[k].dtype)) for k in ours)
    info = json.loads((EMOJI_VIDEO_DIR / "training.json").read_text())
    assert info["base"] == "emoji-latent" and info["step"] > 0
    # sampled from the prior it was trained on, with a scheduler that adds no independent per-frame noise
    assert model_settings("emoji-video").arguments(video)["frame_noise_share"] == info["frame_noise_share"] > 0
    assert video.scheduler.config.algorithm_type == "dpmsolver++"


@pytest.mark.parametrize("suffix", [".gif", ".webp", ".mp4"])
def test_generate_with_emoji_video_writes_the_clip_in_the_format_its_suffix_names(tmp_path, suffix):
    out = tmp_path / f"clip{suffix}"
    arguments = ["--prompt", "cat face", "--height", "64", "--width", "64", "--method", "naive,freescale"]
    done = run_cli(
        "generate", "--model", "emoji-video", *arguments, "--steps", "2", "--num-frames", "4", "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # the animation alone, no grid beside it
    if suffix == ".mp4":
        import imageio.v2 as imageio

        frames = imageio.mimread(out, format="FFMPEG")
        assert len(frames) == 4 and frames[0].shape[1] == 3 * 96  # the trained-size clip, then the two methods
    else:
        clip = Image.open(out)
        assert clip.n_frames == 4 and clip.size[0] == 3 * 96
