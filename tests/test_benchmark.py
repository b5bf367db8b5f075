import dataclasses
import json
import math
import shutil
import subprocess

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel
from markers import needs_emoji_data

from hiresdiff.data import emoji
from hiresdiff.eval import metrics
from hiresdiff.eval.benchmark import (
    cascade_methods_for,
    enlarge,
    flow_methods_for,
    headline_methods_for,
    latent_methods_for,
    methods_for,
    per_image_statistics,
    real_side,
    score,
)
from hiresdiff.eval.report import markdown_table
from hiresdiff.recipe import Recipe


def test_methods_cover_naive_enlargements_sweep_and_ablations():
    methods = methods_for(2, (0, 0.5, 1.0), (0.3, 1.0))
    ug = {m.name: m.recipe.ug for m in methods if m.recipe is not None and m.recipe.ug is not None}
    assert [m.recipe for m in methods if m.name == "naive 2x"] == [Recipe.naive()]
    assert {m.resize for m in methods if m.recipe is None} == {"bicubic", "nearest"}
    plain = [c for c in ug.values() if c.eta == 1 and c.schedule == "step" and c.adjust_time and c.adjust_power]
    assert sorted(c.theta for c in plain) == [0.5, 1.0]
    assert [c.eta for c in ug.values() if c.eta != 1] == [0.3]
    assert {(c.adjust_time, c.adjust_power) for n, c in ug.items() if "without" in n} == {
        (False, True),
        (True, False),
        (False, False),
    }
    assert [c.theta for c in ug.values() if c.schedule == "linear"] == [1.0]
    stage = methods_for(2, (1.0,), ())[3].recipe.stages((32, 32), (64, 64), 4)[-1]
    assert [c.factor for c in stage.ug_levels] == [(2, 2)]
    assert not any("nested" in m.name for m in methods)  # ×2 nested only above 2×


def test_nested_methods_at_power_of_two_scales():
    [nested] = [m for m in methods_for(4, (1.0,), ()) if "nested" in m.name]
    assert [(c.factor, c.theta) for c in nested.recipe.stages((32, 32), (128, 128), 4)[-1].ug_levels] == [(2, 1.0)] * 2
    direct = [m for m in methods_for(4, (1.0,), ()) if m.name == "UG θ=1"][0]
    assert [c.factor for c in direct.recipe.stages((32, 32), (128, 128), 4)[-1].ug_levels] == [(4, 4)]
    assert not any("nested" in m.name for m in methods_for(3, (1.0,), ()))


def test_cascade_suite_has_every_preset_composition_and_ablation():
    from hiresdiff.models import EMBEDDED_UPSAMPLERS_DIR

    table = {2: str(EMBEDDED_UPSAMPLERS_DIR)}
    methods = {m.name: m.recipe for m in cascade_methods_for(4, (0.5, 0.7), upsamplers=table)}
    assert methods["FreeScale"] == Recipe.freescale() and methods["FreeScale+UG"] == Recipe.preset("freescale+ug")
    assert [methods[f"Self-Cascade s={s}"].cascade.strength for s in (0.5, 0.7)] == [0.5, 0.7]
    assert methods["FreeScale without dilation"].dilation is None and methods["FreeScale without fusion"].fusion is None
    assert methods["FreeScale without detail control"].cascade.detail_alpha is None
    assert methods["FreeScale latent φ"].cascade.space == "latent"
    assert {methods[f"FreeScale α={a}"].cascade.detail_alpha for a in (1, 3)} == {1.0, 3.0}
    assert methods["Self-Cascade tuned"].upsamplers == table  # a table per stage: the 4x run's 2x stage is tuned
    assert "Self-Cascade tuned" not in {m.name for m in cascade_methods_for(4, (0.7,))}


def test_fast_suite_has_every_preset_and_the_design_space():
    from hiresdiff.eval.benchmark import fast_methods_for

    methods = {m.name: m.recipe for m in fast_methods_for(4)}
    assert {"naive 4x", "nearest 1x->4x", "UG", "Self-Cascade", "FreeScale", "FreeScale+UG"} <= set(methods)
    for k in (2, 3, 4):
        for s in (0.3, 0.5):
            assert methods[f"fast k={k} s={s:g}"] == Recipe.fast(stage_steps=k, strength=s)
    assert methods["fast k=3 s=0.5 one jump"].cascade.stage_ratio == 4
    assert methods["fast k=3 s=0.5 plain cascade"].dilation is None and methods["fast k=3 s=0.5 with fusion"].fusion


def test_latent_suite_has_the_latent_questions():
    from hiresdiff.models import EMBEDDED_UPSAMPLERS_DIR

    table = {2: str(EMBEDDED_UPSAMPLERS_DIR)}  # any saved upsamplers: the suite only passes the table on
    methods = {m.name: m for m in latent_methods_for(4, upsamplers=table)}
    assert [methods[f"UG θ=1 η={e}"].recipe.ug.eta for e in (1, 0.6, 0.3)] == [1.0, 0.6, 0.3]
    assert methods["FreeScale (RGB φ)"].recipe == Recipe.freescale()
    assert methods["FreeScale latent φ"].recipe.cascade.space == "latent"
    assert (
        methods["Self-Cascade tuned"].recipe.upsamplers == table and methods["Self-Cascade"].recipe.upsamplers is None
    )
    assert methods["FreeScale+UG"].recipe == Recipe.preset("freescale+ug")  # UG's η the model family's (0.6 here)
    assert methods["Self-Cascade+UG"].recipe == Recipe.preset("self-cascade+ug")
    assert dict(methods["naive 4x CFG 1"].call) == {"guidance_scale": 1.0} and not methods["naive 4x"].call
    tiled = [m for m in methods.values() if m.tiled_vae]
    assert len(tiled) == 2 and all(m.same_as in methods and m.recipe == methods[m.same_as].recipe for m in tiled)
    assert "Self-Cascade tuned" not in {m.name for m in latent_methods_for(2)}


def test_flow_suite_has_ug_the_position_rescalings_and_freescale_ablations():
    from hiresdiff.methods.positions import PositionConfig

    methods = {m.name: m for m in flow_methods_for(2)}
    assert [methods[f"UG θ=1 η={e}"].recipe.ug.eta for e in (1, 0.6, 0.3)] == [1.0, 0.6, 0.3]
    assert methods["naive 2x + NTK"].recipe.positions == PositionConfig("ntk")
    assert methods["naive 2x + PI + entropy"].recipe.positions.attention_scaling == "entropy"
    assert methods["FreeScale (RGB φ, PI)"].recipe == Recipe.freescale()
    assert methods["FreeScale YaRN"].recipe.positions == PositionConfig("yarn", until=0.88)
    assert methods["FreeScale without positions"].recipe.dilation is None
    assert dict(methods["FreeScale, pipeline shift"].call) == {"shift": "pipeline"}
    assert methods["Self-Cascade"].call == ()
    assert methods["FreeScale+UG"].recipe == Recipe.preset("freescale+ug")  # η 1 on flow: the later stages are guided
    assert not any(m.tiled_vae or (m.recipe is not None and m.recipe.upsamplers) for m in methods.values())


def test_shift_strength_and_inversion_suites_run_each_setting_on_the_presets():
    import argparse

    from hiresdiff.cli import choices
    from hiresdiff.cli.tools import add_bench_parser
    from hiresdiff.eval.benchmark import (
        SR_SUITES,
        SUITES,
        inversion_methods_for,
        shift_methods_for,
        strength_methods_for,
    )

    shift = {m.name: m for m in shift_methods_for(4)}
    for preset, name in (("naive", "naive 4x"), ("ug", "UG"), ("self-cascade", "Self-Cascade"), ("fast+ug", "fast+UG")):
        for policy in ("trained", "pipeline", "resolution"):
            method = shift[f"{name}, shift {policy}"]
            assert method.recipe == Recipe.preset(preset) and dict(method.call) == {"shift": policy}
    assert {m.resize for m in shift.values() if m.recipe is None} == {"bicubic", "nearest"}
    strength = {m.name: m for m in strength_methods_for(2)}
    assert strength["Self-Cascade s=0.4"].recipe == Recipe.self_cascade(strength=0.4)
    assert strength["FreeScale s=0.3"].recipe.cascade.strength == 0.3 and "naive 2x" in strength
    inversion = {m.name: m.recipe for m in inversion_methods_for(4)}
    assert inversion["fast"] == Recipe.fast() and inversion["fast inversion γ=0"].cascade.inversion == 0.0
    assert inversion["fast inversion γ=0.5"] == Recipe.fast(inversion=0.5) and inversion["bicubic 1x->4x"] is None
    assert inversion["Self-Cascade inversion γ=0.2"].cascade.inversion == 0.2
    sub = argparse.ArgumentParser().add_subparsers()
    add_bench_parser(sub)
    bench = sub.choices["bench"]
    suite = next(a for a in bench._actions if a.dest == "suite")
    assert tuple(suite.choices) == SUITES  # the CLI's light list and the benchmark's agree
    assert choices.SR_SUITES == SR_SUITES


def test_sr_suite_puts_the_upscaler_in_the_fast_recipe_and_sr_alone_beside_the_enlargements():
    from hiresdiff.eval.benchmark import Settings, sr_methods_for, with_sr_alone

    def upscaler(images, size):
        return enlarge(images, size[-1] // images.shape[-1], "nearest")

    methods = {m.name: m for m in with_sr_alone(sr_methods_for(4, upscaler), upscaler)}
    names = list(methods)
    assert names.index("SR alone 1x->4x") == names.index("nearest 1x->4x") + 1
    assert methods["SR alone 1x->4x"].resize is upscaler and methods["SR alone 1x->4x"].recipe is None
    assert methods["fast SR"].recipe == Recipe.fast(3, 0.3, stage_ratio=2, shared_steps=True, upscaler=upscaler)
    assert methods["fast SR"].recipe.cascade == dataclasses.replace(Recipe.fast().cascade, upscaler=upscaler)
    jump = methods["SR jump k=1 s=0.2"].recipe.cascade
    assert (jump.upscaler, jump.stage_ratio, jump.shared_steps, jump.steps, jump.steps_run(20)) == (
        upscaler,
        4,
        False,
        5,
        1,
    )
    assert methods["SR jump k=2 s=0.4 inversion γ=0.5"].recipe.cascade.inversion == 0.5
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(enlarge(x, 4, upscaler), enlarge(x, 4, "nearest"))
    assert with_sr_alone(sr_methods_for(2, upscaler), None) == sr_methods_for(2, upscaler)
    with pytest.raises(ValueError, match="suite 'sr' needs an upscaler"):
        Settings(suite="sr")


def test_refine_suite_refines_the_sr_jump_whole_in_tiles_with_ug_and_with_a_few_step_lora():
    from hiresdiff.eval.benchmark import Settings, refine_methods_for

    def upscaler(images, size):
        return enlarge(images, size[-1] // images.shape[-1], "nearest")

    methods = {m.name: m for m in refine_methods_for(4, upscaler, stage_lora="some/lora")}
    whole, tiles, guided = (methods[f"SR jump k=1 s=0.1{part}"].recipe for part in ("", " tiles", " tiles+UG"))
    assert whole == Recipe.fast(1, 0.1, stage_ratio=4, upscaler=upscaler, shared_steps=False)
    assert tiles.cascade == dataclasses.replace(whole.cascade, tiles=0.25) and tiles.ug is None
    assert guided.cascade == tiles.cascade and guided.ug == Recipe.upsample_guidance().ug
    lcm = methods["SR jump LCM k=2 s=0.5"].recipe.cascade
    assert (lcm.stage_lora, lcm.stage_scheduler, lcm.steps, lcm.steps_run(20)) == ("some/lora", "lcm", 4, 2)
    assert not any("LCM" in m.name for m in refine_methods_for(4, upscaler))
    assert [m.name for m in refine_methods_for(4, upscaler)][:2] == ["bicubic 1x->4x", "nearest 1x->4x"]
    bicubic = methods["bicubic jump k=2 s=0.4"].recipe
    assert bicubic == Recipe.fast(2, 0.4, stage_ratio=4, shared_steps=False) and bicubic.cascade.upscaler is None
    with pytest.raises(ValueError, match="suite 'refine' needs an upscaler"):
        Settings(suite="refine")


def test_headline_suite_runs_the_presets_as_a_user_picks_them():
    from hiresdiff.models import EMBEDDED_UPSAMPLERS_DIR

    table = {2: str(EMBEDDED_UPSAMPLERS_DIR)}
    methods = {m.name: m.recipe for m in headline_methods_for(4, table)}
    presets = {"UG": "ug", "Self-Cascade": "self-cascade", "FreeScale": "freescale", "FreeScale+UG": "freescale+ug"}
    presets.update({"fast": "fast", "fast+UG": "fast+ug"})
    assert all(methods[name] == Recipe.preset(preset) for name, preset in presets.items())
    assert methods["naive 4x"] == Recipe.naive() and methods["bicubic 1x->4x"] is None
    assert methods["Self-Cascade tuned"].upsamplers == table
    assert "Self-Cascade tuned" not in {m.name for m in headline_methods_for(2)}


def test_score_gives_intervals_and_every_metric_on_each_half_of_the_images():
    """The bootstrap resamples exactly the table's metrics (each statistic on all images is the row's value), and
    each image set's value is the metric recomputed on that half alone."""
    generator = torch.Generator().manual_seed(0)
    trained = torch.rand(16, 3, 32, 32, generator=generator) * 2 - 1
    images = (enlarge(trained, 2, "bicubic") + 0.2 * torch.randn(16, 3, 64, 64, generator=generator)).clamp(-1, 1)
    real = torch.rand(24, 3, 64, 64, generator=generator) * 2 - 1
    features, intervals = metrics.RandomConvFeatures(resolution=64, seed=0), {}
    asked = {"subgroups": torch.randint(99, (16,), generator=generator).tolist()}
    row = score(images, real, trained, features, intervals=intervals, condition=asked)
    statistics = per_image_statistics(images, real_side(real, features), trained, features(images), asked)
    assert set(statistics) == {"FD rand", "crop FD", "detail ×real", "paired RMSE", "semantic", "condition"}
    for name, statistic in statistics.items():
        assert statistic(torch.arange(16)) == pytest.approx(row[name], rel=1e-6)
        low, high = intervals[name]
        assert low <= high
    halves = (images[:8], images[8:]), (trained[:8], trained[8:])
    assert intervals["FD rand by set"] == pytest.approx(
        [metrics.frechet_distance(features(h), features(real)) for h in halves[0]]
    )
    assert intervals["semantic by set"] == tuple(metrics.semantic_agreement(h, t) for h, t in zip(*halves))
    assert intervals["crop FD by set"] == tuple(metrics.crop_fd(h, real, 32) for h in halves[0])
    assert intervals["SWD mean by set"] == tuple(metrics.sliced_wasserstein(h, real)["mean"] for h in halves[0])
    assert intervals["condition by set"] == tuple(
        metrics.condition_agreement(h, subgroups=asked["subgroups"][i : i + 8]) for h, i in zip(halves[0], (0, 8))
    )
    assert row["semantic"] == sum(intervals["semantic by set"]) / 2


def test_score_with_a_real_cache_computes_the_real_side_once_and_changes_no_number():
    """Two methods scored against one real set with one cache: the real images go through the feature net once (not
    once per method and per half), and every metric, interval and per-set value is the one scored without it."""
    generator = torch.Generator().manual_seed(1)
    real = torch.rand(20, 3, 64, 64, generator=generator) * 2 - 1
    trained = torch.rand(8, 3, 32, 32, generator=generator) * 2 - 1
    methods = [enlarge(trained, 2, mode) for mode in ("bicubic", "nearest")]
    features = metrics.RandomConvFeatures(resolution=64, seed=0)
    seen = []
    features.register_forward_pre_hook(lambda module, args: seen.append(len(args[0])))
    cache, cached, fresh = {}, [], []
    for images in methods:
        cached.append((score(images, real, trained, features, intervals=(i := {}), real_cache=cache), i))
    assert seen.count(len(real)) == 1
    for images in methods:
        fresh.append((score(images, real, trained, features, intervals=(i := {})), i))
    assert cached == fresh


def test_above_the_data_sets_sizes_score_keeps_what_needs_no_real_images():
    """At 256² (8×) there are no real images: the row has paired RMSE, semantic and condition agreement, with
    their intervals and per-set values, exactly as at a size with real images."""
    generator = torch.Generator().manual_seed(0)
    trained = torch.rand(8, 3, 32, 32, generator=generator) * 2 - 1
    images = (enlarge(trained, 8, "bicubic") + 0.2 * torch.randn(8, 3, 256, 256, generator=generator)).clamp(-1, 1)
    asked = {"subgroups": torch.randint(99, (8,), generator=generator).tolist()}
    intervals = {}
    row = score(images, None, trained, None, intervals=intervals, condition=asked)
    assert set(row) == {"paired RMSE", "semantic", "condition"}
    assert row["semantic"] == metrics.semantic_agreement(images, trained)
    assert row["paired RMSE"] == metrics.median_paired_rmse(images, trained)
    assert {"semantic", "condition", "paired RMSE", "semantic by set"} <= set(intervals)


def test_tables_mark_the_best_row_and_the_rows_tied_with_it():
    """★ on the best row of a metric with intervals (highest semantic, lowest FD), ≈ where a row's interval overlaps
    the best's, nothing where it does not."""
    rows = {"64|a": (0.9, (0.8, 1.0), 2.0, (1.9, 2.2)), "64|b": (0.7, (0.5, 0.85), 1.0, (0.9, 1.2))}
    rows["64|c"] = (0.2, (0.1, 0.3), 1.1, (1.0, 1.3))
    rows["64|nearest 1x->2x"] = (1.0, (1.0, 1.0), 3.0, (2.9, 3.1))  # semantic 1 by construction: not ranked
    results = {
        "settings": {"command": "test", "seed": 0, "steps": 2, "scheduler": "ddim"},
        "images": {"64": 8},
        "timing": {},
        "rows": {k: {"semantic": v[0], "FD rand": v[2]} for k, v in rows.items()},
        "intervals": {k: {"semantic": v[1], "FD rand": v[3]} for k, v in rows.items()},
    }
    cells = {line.split(" | ")[0][2:]: line.split(" | ")[1:3] for line in markdown_table(results).splitlines()[-4:]}
    assert [cells[n][0][-1] for n in "abc"] == ["★", "≈", "]"]  # semantic: a best, b overlaps it, c apart
    assert [cells[n][1][-1] for n in "abc"] == ["]", "★", "≈"]  # FD: b best, c overlaps it, a apart
    assert cells["nearest 1x->2x"] == ["1 [1, 1]", "3 [2.9, 3.1]"]


def test_enlarge_nearest_is_exactly_consistent():
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    assert torch.equal(torch.nn.functional.avg_pool2d(enlarge(x, 2, "nearest"), 2), x)
    assert enlarge(x, 4, "bicubic").shape == (2, 3, 32, 32)


@needs_emoji_data
def test_quick_benchmark_end_to_end(tmp_path):
    data = emoji.build(tmp_path / "data", limit=40, progress=False)
    model = tmp_path / "model"
    torch.manual_seed(0)
    UNet2DModel(
        sample_size=32,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        num_class_embeds=9,
    ).save_pretrained(model)
    DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction").save_pretrained(model)
    out = tmp_path / "results"
    done = subprocess.run(
        [
            shutil.which("hiresdiff"),
            "bench",
            "--quick",
            "--model",
            str(model),
            "--data",
            str(data),
            "--out-dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    for name in ("ug_benchmark.md", "ug_benchmark.json", "ug_theta_sweep.png", "ug_grid_64.png"):
        assert (out / name).stat().st_size > 0
    results = json.loads((out / "ug_benchmark.json").read_text())
    rows = results["rows"]
    assert {
        "32|real train vs test",
        "64|real train vs test",
        "32|trained 1x",
        "64|naive 2x",
        "64|UG θ=1",
        "64|bicubic 1x->2x",
        "64|UG θ=1 without τ",
    } <= set(rows)
    assert rows["64|nearest 1x->2x"]["paired RMSE"] == 0.0  # D[nearest enlargement] is the trained sample itself
    assert all(math.isfinite(rows[k]["SWD mean"]) and rows[k]["FD rand"] >= 0 for k in rows)
    table = (out / "ug_benchmark.md").read_text()
    assert "hiresdiff bench --quick" in table and "| UG θ=1 |" in table
    done = subprocess.run(
        [
            shutil.which("hiresdiff"),
            "bench",
            "--quick",
            "--suite",
            "methods",
            "--model",
            str(model),
            "--data",
            str(data),
            "--out-dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads((out / "methods_benchmark.json").read_text())["rows"]
    assert {"64|FreeScale", "64|Self-Cascade s=0.7", "64|FreeScale+UG"} <= set(rows)
    assert (out / "methods_quality_time.png").stat().st_size > 0 and "×naive" in (
        out / "methods_benchmark.md"
    ).read_text()
    done = subprocess.run(
        [
            shutil.which("hiresdiff"),
            "bench",
            "--quick",
            "--suite",
            "fast",
            "--model",
            str(model),
            "--data",
            str(data),
            "--out-dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "fast_benchmark.json").read_text())
    # --quick runs 2 steps: direct makes 2 at 64²; fast shares them, 1 at 32² (a quarter the pixels) and 1 at 64²
    assert results["flops"]["64|naive 2x"] == 1.0 and 0.5 < results["flops"]["64|fast k=2 s=0.3"] < 0.7
    assert (out / "fast_pareto.png").stat().st_size > 0 and "FLOPs ×direct" in (out / "fast_benchmark.md").read_text()
    done = subprocess.run(
        [shutil.which("hiresdiff"), "bench", "--quick", "--suite", "headline", "--model", str(model)]
        + ["--data", str(data), "--out-dir", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "headline_benchmark.json").read_text())
    assert {"64|UG", "64|fast+UG", "64|nearest 1x->2x"} <= set(results["rows"]) and results["images"]["64"] == 8
    assert {"FD rand", "FD rand by set", "semantic by set", "crop FD by set"} <= set(results["intervals"]["64|fast"])
    assert (out / "headline_grid_64.png").stat().st_size > 0 and "★" in (out / "headline_benchmark.md").read_text()


@needs_emoji_data
def test_quick_pipeline_benchmark_on_a_flux_folder(tmp_path):
    """The pipeline suite on a FLUX folder: its own flow-matching scheduler, CFG as true_cfg_scale, the flow rows."""
    from tiny_pipelines import saved

    from hiresdiff.eval.benchmark import Settings, run

    data = emoji.build(tmp_path / "data", limit=40, progress=False)
    folder = tmp_path / "flux"
    shutil.copytree(saved("flux"), folder)
    (folder / "hiresdiff.json").write_text(json.dumps({"trained_size": 32, "call": {"max_sequence_length": 16}}))
    # the tiny scheduler's μ at this trained size is 3.75 (its range ends at 16 tokens): 2 steps are degenerate
    with pytest.warns(UserWarning, match="steps above σ 0.95"):
        results = run(
            Settings.quick(
                model=str(folder),
                data=str(data),
                suite="latent",
                num_images=2,
                grid_rows=1,
                out_dir=str(tmp_path / "out"),
            ),
            progress=False,
        )
    assert results["settings"]["scheduler"] == "FlowMatchEulerDiscreteScheduler"
    assert {"64|naive 2x + YaRN", "64|FreeScale (RGB φ, PI)", "64|UG θ=1 η=0.6", "64|FreeScale CFG 1"} <= set(
        results["rows"]
    )
    assert all(math.isfinite(row["FD rand"]) for row in results["rows"].values())
