import pytest
import torch
from conftest import tiny_pixel_unet
from diffusers import DDPMScheduler

from hiresdiff import lowres_noise
from hiresdiff.loading.pixel_model import initial_noise, load_pixel_model, sample, to_pil
from hiresdiff.recipe import Recipe
from hiresdiff.sampling.schedulers import EDM_ONLY, SCHEDULERS, make_scheduler


class CallSizes:
    """Records the (H, W) of every UNet call (its conv_in input) without touching the UNet's forward."""

    def __init__(self, unet):
        self.unet, self.sizes = unet, []

    def __enter__(self):
        self.handle = self.unet.conv_in.register_forward_pre_hook(
            lambda m, a: self.sizes.append(tuple(a[0].shape[-2:]))
        )
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_load_pixel_model_reads_schedule_from_folder(tiny_pixel_model_dir):
    unet, scheduler = load_pixel_model(tiny_pixel_model_dir, "dpm++")
    assert type(scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert scheduler.config.prediction_type == "v_prediction" and scheduler.config.beta_schedule == "squaredcos_cap_v2"
    assert unet.dtype == torch.float32


@pytest.mark.parametrize("name", sorted(set(SCHEDULERS) - set(EDM_ONLY)))
def test_theta_zero_equals_naive_and_lowres_calls_follow_the_weight(tiny_pixel_model_dir, name):
    unet, _ = load_pixel_model(tiny_pixel_model_dir)
    scheduler = make_scheduler(name, DDPMScheduler.load_config(tiny_pixel_model_dir))
    kw = dict(height=16, width=16, num_images=2, seed=3, steps=4, progress=False)
    naive = sample(unet, scheduler, **kw)
    assert torch.equal(sample(unet, scheduler, recipe=Recipe.upsample_guidance(theta=0.0), **kw), naive)
    with CallSizes(unet) as calls:
        guided = sample(unet, scheduler, recipe=Recipe.upsample_guidance(theta=1.0, eta=0.5), **kw)
    scheduler.set_timesteps(4)
    # the window is the first ⌈0.5·4⌉ = 2 of the grid's 4 steps: every UNet call (one per entry, also Heun's doubled
    # ones and KDPM2's and PNDM's interleaved midpoints) at a time above the start of step 2, the third of the grid's
    # 4 step times (its distinct times, every other one of the 7 of KDPM2 and PNDM)
    times = []
    for t in sorted({float(t) for t in scheduler.timesteps}, reverse=True):
        if not times or times[-1] - t > 1e-6 * max(1.0, t):  # KDPM2 ancestral's midpoints may sit on step times
            times.append(t)
    third_start = (times[::2] if len(times) == 7 else times)[2]
    expected_low = int((scheduler.timesteps > third_start * (1 + 1e-6)).sum())
    assert calls.sizes.count((8, 8)) == expected_low > 0
    assert calls.sizes.count((16, 16)) == len(calls.sizes) - expected_low
    assert not torch.equal(guided, naive) and torch.isfinite(guided).all()
    assert sample(unet, scheduler, **kw).equal(naive)  # the hooks are gone


def test_nested_levels_call_every_size(tiny_pixel_model_dir):
    unet, scheduler = load_pixel_model(tiny_pixel_model_dir, "ddim")
    with CallSizes(unet) as calls:
        out = sample(
            unet,
            scheduler,
            height=32,
            width=32,
            num_images=1,
            steps=3,
            recipe=Recipe.upsample_guidance(),
            progress=False,
        )
    assert calls.sizes == [(32, 32), (16, 16), (8, 8)] * 3 and torch.isfinite(out).all()
    one = sample(
        unet,
        scheduler,
        height=32,
        width=32,
        num_images=1,
        steps=3,
        recipe=Recipe.upsample_guidance(nested=False),
        progress=False,
    )
    assert not torch.equal(out, one)


def test_stochastic_step_noise_is_resolution_consistent(tiny_pixel_model_dir, monkeypatch):
    unet, scheduler = load_pixel_model(tiny_pixel_model_dir, "sde-dpm++")
    drawn = {}
    step = type(scheduler).step

    def recording_step(self, *args, variance_noise=None, **kwargs):
        drawn.setdefault(args[2].shape[-1], []).append(variance_noise.clone())
        return step(self, *args, variance_noise=variance_noise, **kwargs)

    monkeypatch.setattr(type(scheduler), "step", recording_step)  # every stage samples with a copy of the scheduler
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
    kw = dict(height=16, width=16, num_images=2, steps=3, progress=False, recipe=Recipe.upsample_guidance())
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


def exploding(unet):
    """``unet``, failing when called: validation must happen before any call."""

    def explode(module, args):
        raise AssertionError("the UNet must not be called before the inputs are validated")

    unet.register_forward_pre_hook(explode)
    return unet


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(height=15, width=16), "height=15 is not divisible by 2"),
        (dict(height=16, width=18, recipe=Recipe.upsample_guidance()), "ug needs integer scales"),
        (dict(height=17, width=16, recipe=Recipe.self_cascade()), "height=17 is not divisible by 2"),
        (dict(height=20, width=20, recipe=Recipe.upsample_guidance(nested=False)), "ug needs integer scales"),
        (dict(height=4, width=4, recipe=Recipe.self_cascade()), "smaller than the trained size"),
        (dict(height=16, width=16, noise=torch.zeros(1, 3, 8, 8)), "noise must have shape"),
        (dict(height=16, width=16, steps=0), "steps"),
        (dict(height=16, width=16, noise=torch.full((1, 3, 16, 16), float("nan"))), "NaN"),
    ],
)
def test_bad_input_fails_before_any_unet_call(tiny_pixel_model_dir, kwargs, match):
    unet, scheduler = load_pixel_model(tiny_pixel_model_dir)
    with pytest.raises(ValueError, match=match):
        sample(exploding(unet), scheduler, progress=False, **{"steps": 2, **kwargs})


def test_bad_model_paths_and_scheduler_names(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_pixel_model(tmp_path / "missing")
    DDPMScheduler().save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"_class_name": "UNet2DConditionModel"}')
    with pytest.raises(ValueError, match="UNet2DModel"):
        load_pixel_model(tmp_path)
    with pytest.raises(ValueError, match="scheduler must be one of"):
        make_scheduler("plms-ish", DDPMScheduler().config)
