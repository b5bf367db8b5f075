import argparse
import json

import pytest
import torch
from markers import needs_emoji_data

from hiresdiff.data import emoji
from hiresdiff.training import loop as training
from hiresdiff.training import pixel_model as train_emoji


def test_v_loss_is_min_snr_weighted_v_mse():
    _, scheduler = train_emoji.build_model_and_scheduler()
    x0 = torch.rand(4, 3, 8, 8) * 2 - 1
    pred = torch.randn(1, 3, 8, 8)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    loss = training.v_loss(lambda x_t, t: pred.expand_as(x_t), scheduler, x0, generator=g1)  # a closed form
    # independent computation with the same random draws
    t = torch.randint(0, 1000, (4,), generator=g2)
    noise = torch.randn(x0.shape, generator=g2)
    a = scheduler.alphas_cumprod[t]
    v = a.sqrt().view(-1, 1, 1, 1) * noise - (1 - a).sqrt().view(-1, 1, 1, 1) * x0
    snr = a / (1 - a)
    w = torch.minimum(snr, torch.tensor(5.0)) / (snr + 1)
    per_sample = ((pred.bfloat16().float() - v) ** 2).mean(dim=(1, 2, 3))
    assert torch.allclose(loss, (w * per_sample).mean(), rtol=1e-3)


def test_learning_rate_warms_up_holds_and_decays_to_the_final_value():
    args = train_emoji.add_arguments(argparse.ArgumentParser()).parse_args(
        ["--lr", "2e-4", "--warmup", "10", "--steps", "100", "--decay-steps", "20", "--lr-final", "4e-5"]
    )
    lr = [training.learning_rate(step, args) for step in range(100)]
    assert lr[0] == pytest.approx(2e-5) and lr[9] == pytest.approx(2e-4) and lr[79] == pytest.approx(2e-4)
    assert lr[80] == pytest.approx(2e-4 - 1.6e-4 / 20) and lr[99] == pytest.approx(4e-5)
    assert all(a >= b for a, b in zip(lr[9:], lr[10:]))
    args.decay_steps = 0
    assert training.learning_rate(99, args) == pytest.approx(2e-4)


@needs_emoji_data
def test_training_resumes_exports_and_restarts_from_shipped_weights(tmp_path):
    data = emoji.build(tmp_path / "data", limit=40, progress=False)
    run = tmp_path / "run"
    args = [
        "--data",
        str(data),
        "--run-dir",
        str(run),
        "--batch-size",
        "2",
        "--save-every",
        "2",
        "--log-every",
        "1",
        "--threads",
        "1",
    ]
    train_emoji.main(args + ["--steps", "2"])
    with open(run / "loss.csv", "a") as log:  # an interrupted run logged step 3 after its last saved state
        log.write("3,99.0,1.0\n")
    train_emoji.main(args + ["--steps", "3"])
    rows = [r.split(",") for r in (run / "loss.csv").read_text().splitlines()]
    assert [int(r[0]) for r in rows] == [1, 2, 3] and float(rows[2][1]) != 99.0
    assert torch.load(run / "state.pt", weights_only=False)["step"] == 3
    exported = run / "ema"
    assert json.loads((exported / "training.json").read_text())["step"] == 3
    for name in ("config.json", "diffusion_pytorch_model.safetensors", "scheduler_config.json"):
        assert (exported / name).exists()
    fresh = tmp_path / "fresh"
    train_emoji.main(
        [
            "--data",
            str(data),
            "--run-dir",
            str(fresh),
            "--batch-size",
            "2",
            "--save-every",
            "1",
            "--threads",
            "1",
            "--steps",
            "4",
            "--init-from",
            str(exported),
        ]
    )
    assert torch.load(fresh / "state.pt", weights_only=False)["step"] == 4
