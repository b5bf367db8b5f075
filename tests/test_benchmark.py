import json
import math
import shutil
import subprocess

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel

from hiresdiff.data import emoji
from hiresdiff.eval.benchmark import Method, enlarge, methods_for

needs_font = pytest.mark.skipif(not (emoji.FONT_PATH.exists() and emoji.EMOJI_TEST_PATH.exists()),
                                reason="needs Debian packages fonts-noto-color-emoji and unicode-data (.ci/run installs them)")


def test_methods_cover_naive_enlargements_sweep_and_ablations():
    methods = methods_for(2, (0, 0.5, 1.0), (0.3, 1.0))
    kinds = [(m.kind, m.theta, m.eta, m.adjust_time, m.adjust_power, m.resize) for m in methods]
    assert ("naive", 0.0, 1.0, True, True, None) in kinds
    assert {m.resize for m in methods if m.kind == "enlarge"} == {"bicubic", "nearest"}
    plain = [m for m in methods if m.kind == "ug" and m.eta == 1 and m.schedule == "step" and m.adjust_time and m.adjust_power]
    assert sorted(m.theta for m in plain) == [0.5, 1.0]
    assert [m.eta for m in methods if m.eta != 1] == [0.3]
    assert {(m.adjust_time, m.adjust_power) for m in methods if "without" in m.name} == {(False, True), (True, False), (False, False)}
    [cfg] = Method("x", 4, "ug", theta=1.5, eta=0.6, schedule="linear", adjust_power=False).ug_levels()
    assert (cfg.factor, cfg.theta, cfg.eta, cfg.schedule, cfg.adjust_power) == (4, 1.5, 0.6, "linear", False)
    assert [m.theta for m in methods if m.schedule == "linear"] == [1.0]
    assert not any(m.nested for m in methods)  # ×2 nested only above 2×


def test_nested_methods_at_power_of_two_scales():
    [nested] = [m for m in methods_for(4, (1.0,), ()) if m.nested]
    assert [(c.factor, c.theta) for c in nested.ug_levels()] == [(2, 1.0), (2, 1.0)]
    assert [c.factor for c in Method("x", 8, "ug", theta=1, nested=True).ug_levels()] == [2, 2, 2]
    assert not any(m.nested for m in methods_for(3, (1.0,), ()))


def test_enlarge_nearest_is_exactly_consistent():
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    assert torch.equal(torch.nn.functional.avg_pool2d(enlarge(x, 2, "nearest"), 2), x)
    assert enlarge(x, 4, "bicubic").shape == (2, 3, 32, 32)


@needs_font
def test_quick_benchmark_end_to_end(tmp_path):
    data = emoji.build(tmp_path / "data", limit=40, progress=False)
    model = tmp_path / "model"
    torch.manual_seed(0)
    UNet2DModel(sample_size=32, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                num_class_embeds=9).save_pretrained(model)
    DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction").save_pretrained(model)
    out = tmp_path / "results"
    done = subprocess.run([shutil.which("hiresdiff"), "bench", "--quick", "--model", str(model), "--data", str(data),
                           "--out-dir", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for name in ("ug_benchmark.md", "ug_benchmark.json", "ug_theta_sweep.png", "ug_grid_64.png"):
        assert (out / name).stat().st_size > 0
    results = json.loads((out / "ug_benchmark.json").read_text())
    rows = results["rows"]
    assert {"32|real train vs test", "64|real train vs test", "32|trained 1x", "64|naive 2x", "64|UG θ=1",
            "64|bicubic 1x->2x", "64|UG θ=1 without τ"} <= set(rows)
    assert rows["64|nearest 1x->2x"]["paired RMSE"] == 0.0  # D[nearest enlargement] is the trained sample itself
    assert all(math.isfinite(rows[k]["SWD mean"]) and rows[k]["FD rand"] >= 0 for k in rows)
    table = (out / "ug_benchmark.md").read_text()
    assert "hiresdiff bench --quick" in table and "| UG θ=1 |" in table
