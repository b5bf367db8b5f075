import pytest
import torch
from diffusers import DDPMScheduler

from hiresdiff import UpsampleGuidanceConfig, lowres_noise
from hiresdiff.integrations.pixel import initial_noise, load_pixel_model, sample, to_pil
from hiresdiff.integrations.schedulers import SCHEDULERS, make_scheduler

from conftest import tiny_pixel_unet


class CountingUNet(torch.nn.Module):
    """Wraps a UNet and records the spatial size of every call."""

    def __init__(self, unet):
        super().__init__()
        self.unet, self.sizes = unet, []
        self.config, self.dtype = unet.config, unet.dtype

    def forward(self, x, t, class_labels=None):
        self.sizes.append(tuple(x.shape[-2:]))
        return self.unet(x, t, class_labels=class_labels)


def test_load_pixel_model_reads_schedule_from_folder(tiny_pixel_model_dir):
    unet, scheduler = load_pixel_model(tiny_pixel_model_dir, "dpm++")
    assert type(scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert scheduler.config.prediction_type == "v_prediction" and scheduler.config.beta_schedule == "squaredcos_cap_v2"
    assert unet.dtype == torch.float32


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_theta_zero_equals_naive_and_lowres_calls_follow_the_weight(tiny_pixel_model_dir, name):
    unet, _ = load_pixel_model(tiny_pixel_model_dir)
    scheduler = make_scheduler(name, DDPMScheduler.load_config(tiny_pixel_model_dir))
    kw = dict(height=16, width=16, num_images=2, seed=3, steps=4, progress=False)
    naive = sample(unet, scheduler, **kw)
    assert torch.equal(sample(unet, scheduler, ug=UpsampleGuidanceConfig(theta=0.0), **kw), naive)
    counter = CountingUNet(unet)
    guided = sample(counter, scheduler, ug=UpsampleGuidanceConfig(theta=1.0, eta=0.5), **kw)
    scheduler.set_timesteps(4)
    expected_low = int((scheduler.timesteps >= 500).sum())  # one UNet call per entry, also for Heun's doubled list
    assert counter.sizes.count((8, 8)) == expected_low > 0
    assert counter.sizes.count((16, 16)) == len(counter.sizes) - expected_low
    assert not torch.equal(guided, naive) and torch.isfinite(guided).all()


def test_nested_levels_call_every_size_and_check_divisibility(tiny_pixel_model_dir):
    unet, scheduler = load_pixel_model(tiny_pixel_model_dir, "ddim")
    counter = CountingUNet(unet)
    level = UpsampleGuidanceConfig(factor=2, theta=1.0)
    out = sample(counter, scheduler, height=16, width=16, num_images=1, steps=3, ug=[level, level], progress=False)
    assert counter.sizes == [(16, 16), (8, 8), (4, 4)] * 3 and torch.isfinite(out).all()
    one = sample(unet, scheduler, height=16, width=16, num_images=1, steps=3, ug=level, progress=False)
    assert not torch.equal(out, one)
    with pytest.raises(ValueError, match="gives 3x3, which is not divisible by 2"):
        sample(ExplodingUNet(unet), scheduler, height=12, width=12, steps=2, ug=[level, level], progress=False)
    with pytest.raises(TypeError, match="ug must be an UpsampleGuidanceConfig"):
        sample(ExplodingUNet(unet), scheduler, height=8, width=8, steps=2, ug=[2], progress=False)


def test_stochastic_step_noise_is_resolution_consistent(tiny_pixel_model_dir):
    unet, scheduler = load_pixel_model(tiny_pixel_model_dir, "sde-dpm++")
    drawn = {}
    step = scheduler.step

    def recording_step(*args, variance_noise=None, **kwargs):
        drawn.setdefault(args[2].shape[-1], []).append(variance_noise.clone())
        return step(*args, variance_noise=variance_noise, **kwargs)

    scheduler.step = recording_step
    kw = dict(num_images=2, seed=4, steps=3, noise_size=(16, 16), progress=False)
    a = sample(unet, scheduler, height=16, width=16, **kw)
    sample(unet, scheduler, height=8, width=8, **kw)
    assert len(drawn[16]) == len(drawn[8]) == 3
    for big, small in zip(drawn[16], drawn[8]):
        assert torch.equal(small, lowres_noise(big, 2))
    assert not torch.equal(drawn[16][0], drawn[16][1])  # fresh noise every step
    assert torch.equal(sample(unet, scheduler, height=16, width=16, **kw), a)  # seeded
    assert not torch.equal(sample(unet, scheduler, height=16, width=16, **{**kw, "seed": 5}), a)


def test_same_seed_same_image_and_consistent_noise(tiny_pixel_model_dir):
    unet, scheduler = load_pixel_model(tiny_pixel_model_dir)
    kw = dict(height=16, width=16, num_images=2, steps=3, progress=False, ug=UpsampleGuidanceConfig())
    assert torch.equal(sample(unet, scheduler, seed=5, **kw), sample(unet, scheduler, seed=5, **kw))
    assert not torch.equal(sample(unet, scheduler, seed=5, **kw), sample(unet, scheduler, seed=6, **kw))
    big = initial_noise(2, 3, 32, 32, seed=7)
    assert torch.equal(initial_noise(2, 3, 8, 8, seed=7, noise_size=(32, 32)), lowres_noise(big, 4))


def test_class_conditional_model_and_pil_output(tmp_path):
    unet = tiny_pixel_unet(num_class_embeds=3)
    unet.save_pretrained(tmp_path)
    unet, scheduler = load_pixel_model(tmp_path)
    labels = torch.tensor([0, 2])
    a = sample(unet, scheduler, height=16, width=16, num_images=2, steps=2, class_labels=labels, progress=False)
    b = sample(unet, scheduler, height=16, width=16, num_images=2, steps=2, class_labels=labels.flip(0), progress=False)
    assert not torch.equal(a, b)
    images = to_pil(a)
    assert len(images) == 2 and images[0].size == (16, 16) and images[0].mode == "RGB"
    with pytest.raises(ValueError, match="class_labels"):
        sample(unet, scheduler, height=16, width=16, num_images=2, steps=2, progress=False)


class ExplodingUNet(CountingUNet):
    def forward(self, *args, **kwargs):
        raise AssertionError("the UNet must not be called before the inputs are validated")


@pytest.mark.parametrize("kwargs,match", [
    (dict(height=15, width=16), "height=15 is not divisible by 2"),
    (dict(height=16, width=18, ug=UpsampleGuidanceConfig(factor=2)), "width"),
    (dict(height=18, width=16, ug=UpsampleGuidanceConfig(factor=4)), "not divisible by the factor"),
    (dict(height=20, width=20, ug=UpsampleGuidanceConfig(factor=4)), "gives 5x5, which is not divisible by 2"),
    (dict(height=16, width=16, steps=0), "steps"),
    (dict(height=16, width=16, noise=torch.full((1, 3, 16, 16), float("nan"))), "NaN"),
])
def test_bad_input_fails_before_any_unet_call(tiny_pixel_model_dir, kwargs, match):
    unet, scheduler = load_pixel_model(tiny_pixel_model_dir)
    with pytest.raises(ValueError, match=match):
        sample(ExplodingUNet(unet), scheduler, progress=False, **{"steps": 2, **kwargs})


def test_bad_model_paths_and_scheduler_names(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_pixel_model(tmp_path / "missing")
    DDPMScheduler().save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"_class_name": "UNet2DConditionModel"}')
    with pytest.raises(ValueError, match="UNet2DModel"):
        load_pixel_model(tmp_path)
    with pytest.raises(ValueError, match="scheduler must be one of"):
        make_scheduler("plms-ish", DDPMScheduler().config)
