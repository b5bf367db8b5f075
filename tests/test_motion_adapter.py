"""emoji-video's motion adapter: AnimateDiff's recipe on the frozen emoji-latent UNet, on clips of a small synthetic
image cache (the clip code is the real one's)."""

import json

import pytest
import torch
from diffusers import AnimateDiffPipeline, StableDiffusionPipeline
from fake_emoji import fake_image_cache

from hiresdiff.cli import main
from hiresdiff.core.noise import frame_shared_noise
from hiresdiff.data import emoji_clips
from hiresdiff.models import EMOJI_LATENT_DIR, model_settings
from hiresdiff.training import loop
from hiresdiff.training.motion_adapter import FRAME_NOISE_SHARE, clip_loss, motion_modules, motion_unet


@pytest.fixture(scope="module")
def base():
    return StableDiffusionPipeline.from_pretrained(EMOJI_LATENT_DIR, torch_dtype=torch.float32)


def test_only_the_motion_modules_train_and_they_start_as_the_image_model(base):
    """At step 0 the motion UNet is the image UNet on every frame (zero-initialised output projections); the
    motion modules are the only trainable parameters."""
    unet = motion_unet(base)
    trainable = {id(p) for p in unet.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in motion_modules(unet).parameters()} and trainable
    torch.manual_seed(0)
    x, text = torch.randn(2, 4, 3, 16, 16), torch.randn(2, 77, 128)
    with torch.no_grad():
        per_frame = text.repeat_interleave(3, 0)  # as AnimateDiffPipeline gives the UNet its prompts
        video = unet(x, 500, encoder_hidden_states=per_frame).sample
        frames = base.unet(x.transpose(1, 2).flatten(0, 1), 500, encoder_hidden_states=per_frame)
    assert torch.allclose(video.transpose(1, 2).flatten(0, 1), frames.sample, atol=1e-5)


def test_training_steps_lower_the_loss_on_a_fixed_batch(base):
    unet = motion_unet(base)
    generator = torch.Generator().manual_seed(0)
    latents, text = torch.randn(2, 8, 4, 16, 16, generator=generator), torch.randn(2, 77, 128, generator=generator)
    opt = torch.optim.AdamW(motion_modules(unet).parameters(), lr=1e-3)

    def fixed_loss():
        return clip_loss(unet, base.scheduler, latents, text, torch.Generator().manual_seed(1))

    before = float(fixed_loss())
    for _ in range(5):
        opt.zero_grad()
        fixed_loss().backward()
        opt.step()
    assert float(fixed_loss()) < 0.9 * before


def test_the_clip_loss_trains_on_noise_shared_between_frames(base):
    """With ``share`` s the loss is the min-SNR v-loss of noise mixed by PYoCo's prior, written out here from the
    scheduler's ᾱ: the same draws (t, then ε) mixed between frames."""
    unet = motion_unet(base)
    generator = torch.Generator().manual_seed(0)
    latents, text = torch.randn(2, 4, 4, 16, 16, generator=generator), torch.randn(2, 77, 128, generator=generator)
    with torch.no_grad():
        loss = clip_loss(unet, base.scheduler, latents, text, torch.Generator().manual_seed(3), share=0.6)
        draws = torch.Generator().manual_seed(3)
        t = torch.randint(0, 1000, (2,), generator=draws)
        x0 = latents.transpose(1, 2)  # (B, C, F, h, w)
        eps = frame_shared_noise(torch.randn(x0.shape, generator=draws), 0.6, frame_dim=2)
        a = base.scheduler.alphas_cumprod[t].view(2, 1, 1, 1, 1)
        v = a.sqrt() * eps - (1 - a).sqrt() * x0
        pred = unet(a.sqrt() * x0 + (1 - a).sqrt() * eps, t, encoder_hidden_states=text.repeat_interleave(4, 0))
        weight = torch.clamp(a / (1 - a), max=5) / (a / (1 - a) + 1)
        assert torch.allclose(loss, (weight * (pred.sample - v) ** 2).mean(), rtol=1e-5)


def test_training_resumes_exactly_and_exports_an_animatediff_pipeline(tmp_path, monkeypatch):
    """Four steps straight, and four steps interrupted after the state saved at step 2 then resumed, give the same
    exported adapter bit for bit; the export loads as an AnimateDiffPipeline that makes a clip."""
    fake_image_cache(tmp_path, count=12)
    clips = emoji_clips.build(tmp_path)

    def train(run, steps=4, *extra):
        argv = ["train-motion", "--data", str(clips), "--run-dir", str(run), "--steps", str(steps), "--batch-size",
                "2", "--save-every", "2", "--log-every", "1", "--threads", "1", *extra]  # fmt: skip
        return main(argv)

    assert train(tmp_path / "straight") == 0
    real_save = loop.save_state

    def save_then_stop(path, state):
        real_save(path, state)
        raise KeyboardInterrupt  # interrupted right after the first saved state

    monkeypatch.setattr(loop, "save_state", save_then_stop)
    assert train(tmp_path / "resumed") == 130  # the CLI's status for an interrupted run
    monkeypatch.setattr(loop, "save_state", real_save)
    assert train(tmp_path / "resumed") == 0
    straight, resumed = (
        AnimateDiffPipeline.from_pretrained(tmp_path / run / "export") for run in ("straight", "resumed")
    )
    a, b = straight.motion_adapter.state_dict(), resumed.motion_adapter.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(v.abs().sum() > 0 for k, v in a.items() if "proj_out" in k)  # trained away from zero
    unet_motion = {k: v for k, v in straight.unet.state_dict().items() if "motion_modules" in k}
    assert all(torch.equal(unet_motion[k], a[k]) for k in a)  # the UNet carries the adapter it names
    settings = model_settings(str(tmp_path / "straight" / "export"))  # sampled from the prior it was trained on
    assert settings.arguments(straight)["frame_noise_share"] == FRAME_NOISE_SHARE > 0
    assert straight.scheduler.config.algorithm_type == "dpmsolver++"  # no independent per-step noise
    # a new run from the export (its state gone) starts from its adapter at its step: with lr 0 it re-exports it
    assert train(tmp_path / "continued", 5, "--init-from", str(tmp_path / "straight" / "export"), "--lr", "0") == 0
    continued = AnimateDiffPipeline.from_pretrained(tmp_path / "continued" / "export").motion_adapter.state_dict()
    assert all(torch.equal(continued[k], a[k]) for k in a)
    assert json.loads((tmp_path / "continued" / "export" / "training.json").read_text())["step"] == 5
    call = dict(num_frames=8, height=32, width=32, num_inference_steps=2, output_type="pt")
    frames = straight("emoji 0", generator=torch.Generator().manual_seed(0), **call).frames
    assert frames.shape == (1, 8, 3, 32, 32) and torch.isfinite(frames).all()
