"""Training Self-Cascade's feature upsamplers: the loss, learning, resuming, the CLI's checks."""

import pytest
import torch
from test_pixel_cascade import attention_pixel_unet, scheduler_for

from hiresdiff.cli import main
from hiresdiff.core.prediction import prediction_target
from hiresdiff.training.feature_upsamplers import train_feature_upsamplers, upsampler_loss
from hiresdiff.unet.feature_upsamplers import FeatureUpsamplers


def images(n=4, size=16):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


def fixed_batch_loss(unet, scheduler, upsamplers, x):
    t = torch.tensor([50, 200, 400, 690])
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return upsampler_loss(unet, scheduler, upsamplers, x, t, noise).item()


def test_prediction_targets_match_the_closed_forms():
    x0, eps, a = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), torch.tensor(0.3)
    assert torch.equal(prediction_target(x0, eps, a, "epsilon"), eps)
    assert torch.allclose(prediction_target(x0, eps, a, "v_prediction"), a.sqrt() * eps - (1 - a).sqrt() * x0)
    assert torch.equal(prediction_target(x0, eps, a, "sample"), x0)
    with pytest.raises(ValueError, match="prediction_type"):
        prediction_target(x0, eps, a, "flow")


def test_zero_upsamplers_give_the_frozen_unets_loss_and_training_lowers_it():
    unet, scheduler, x = attention_pixel_unet(), scheduler_for("ddpm"), images()
    zero = FeatureUpsamplers.for_unet(unet)
    t = torch.tensor([50, 200, 400, 690])
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    a = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    with torch.no_grad():
        plain = unet(a.sqrt() * x + (1 - a).sqrt() * noise, t).sample
    expected = torch.nn.functional.mse_loss(plain, prediction_target(x, noise, a, "v_prediction")).item()
    before = fixed_batch_loss(unet, scheduler, zero, x)
    assert before == pytest.approx(expected, rel=1e-6)
    unet.requires_grad_(False)  # as in training: the UNet is frozen, gradients reach the upsamplers through it
    loss = upsampler_loss(unet, scheduler, zero, x, t, noise)  # one gradient step on this fixed batch
    loss.backward()
    assert all(p.grad is None for p in unet.parameters())
    with torch.no_grad():
        for p in zero.parameters():
            p -= 1e-3 * p.grad
    assert fixed_batch_loss(unet, scheduler, zero, x) < before
    trained, losses = train_feature_upsamplers(unet, scheduler, x, steps=3, batch_size=4, progress=False)
    assert len(losses) == 3 and not any(p.requires_grad for p in unet.parameters())
    assert any(p.abs().sum() > 0 for p in (level.proj_out.weight for level in trained.levels))


def test_resuming_gives_the_same_weights_as_training_straight_through(tmp_path):
    unet, scheduler, x = attention_pixel_unet(), scheduler_for("ddpm"), images()
    straight, losses = train_feature_upsamplers(unet, scheduler, x, steps=4, batch_size=2, lr=1e-3, progress=False)
    state = tmp_path / "state.pt"
    train_feature_upsamplers(
        unet, scheduler, x, steps=2, batch_size=2, lr=1e-3, state_path=state, save_every=1, progress=False
    )
    resumed, resumed_losses = train_feature_upsamplers(
        unet, scheduler, x, steps=4, batch_size=2, lr=1e-3, state_path=state, progress=False
    )
    assert resumed_losses == losses
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(steps=0), "steps"),
        (dict(strength=0.0), "strength"),
        (dict(images=torch.full((2, 3, 16, 16), float("nan"))), "images must be finite"),
        (dict(class_labels=torch.zeros(4, dtype=torch.long)), "class_labels"),
    ],
)
def test_bad_arguments_fail_before_training(kwargs, match):
    unet, scheduler = attention_pixel_unet(), scheduler_for("ddpm")
    args = {**dict(images=images(), steps=2), **kwargs}
    with pytest.raises(ValueError, match=match):
        train_feature_upsamplers(unet, scheduler, args.pop("images"), progress=False, **args)


def test_cli_refuses_to_replace_shipped_upsamplers(capsys):
    assert main(["train-upsamplers", "--resolution", "64", "--steps", "1"]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert main(["train-upsamplers", "--resolution", "96"]) == 2


def test_a_later_stage_trains_from_pivots_at_the_previous_stage_size_and_records_its_scale():
    """At 4× (32² images of an 8² model) the pivots are the 16² images of the 2× stage, not the trained 8²."""
    unet, scheduler, x = attention_pixel_unet(), scheduler_for("ddpm"), images(size=32)
    seen = []
    handle = unet.conv_in.register_forward_pre_hook(lambda m, a: seen.append(tuple(a[0].shape[-2:])))
    try:
        trained, _ = train_feature_upsamplers(unet, scheduler, x, steps=1, batch_size=2, progress=False)
    finally:
        handle.remove()
    assert trained.config.scale == 4
    assert (16, 16) in seen and (8, 8) not in seen  # the pivot pass at the 2× stage's size, then the 32² call
    with pytest.raises(ValueError, match="later cascade stage"):
        train_feature_upsamplers(unet, scheduler, images(size=8), steps=1, progress=False)


def test_a_text_conditioned_latent_unet_trains_on_given_pivots_and_prompt_states():
    """Latent models: the pivots are given (the half-size images' latents, not block averages) and every image
    brings its prompt's encoder states; the loss with zero upsamplers is the frozen UNet's own, with those states."""
    import tiny_pipelines

    unet, scheduler = tiny_pipelines.unet(), scheduler_for("ddpm")
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(4, 4, 32, 32, generator=g)
    pivots = torch.randn(4, 4, 16, 16, generator=g)  # deliberately not downsample(latents, 2)
    states = torch.randn(4, 77, unet.config.cross_attention_dim, generator=g)
    t, noise = torch.tensor([50, 200, 400, 690]), torch.randn(latents.shape, generator=g)
    a = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    with torch.no_grad():
        plain = unet(a.sqrt() * latents + (1 - a).sqrt() * noise, t, encoder_hidden_states=states).sample
        zero = upsampler_loss(
            unet,
            scheduler,
            FeatureUpsamplers.for_unet(unet),
            latents,
            t,
            noise,
            pivots=pivots,
            encoder_hidden_states=states,
        )
    assert zero.item() == pytest.approx(
        torch.nn.functional.mse_loss(
            plain, prediction_target(latents, noise, a, scheduler.config.prediction_type)
        ).item(),
        rel=1e-6,
    )
    trained, losses = train_feature_upsamplers(
        unet, scheduler, latents, steps=2, batch_size=2, progress=False, pivots=pivots, encoder_hidden_states=states
    )
    assert len(losses) == 2
    with pytest.raises(ValueError, match="pivots"):
        train_feature_upsamplers(
            unet, scheduler, latents, steps=1, progress=False, pivots=latents, encoder_hidden_states=states
        )
