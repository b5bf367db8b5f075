import shutil
import subprocess

import pytest
from PIL import Image



def run_cli(*args, cwd=None):
    exe = shutil.which("hiresdiff")
    assert exe, "the hiresdiff console script is not installed: run the README's install command"
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_generate_writes_a_labelled_grid_and_refuses_to_overwrite(tiny_pixel_model_dir, tmp_path):
    out = tmp_path / "grid.png"
    args = ["generate", "--model", str(tiny_pixel_model_dir), "--steps", "2", "--num-images", "2", "--out", str(out)]
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    # columns: 8² trained, 16² naive, 16² UG, 32² naive, 32² UG; cells of max(32, 96) px
    width, height = Image.open(out).size
    assert width == 5 * 96 and 2 * 96 + 14 < height < 2 * 96 + 60
    before = out.read_bytes()
    refused = run_cli(*args)
    assert refused.returncode != 0 and "--force" in refused.stderr and out.read_bytes() == before
    forced = run_cli(*args, "--force", "--seed", "1")
    assert forced.returncode == 0 and out.read_bytes() != before


def test_generate_single_method_and_scale(tiny_pixel_model_dir, tmp_path):
    out = tmp_path / "ug.png"
    done = run_cli("generate", "--model", str(tiny_pixel_model_dir), "--steps", "2", "--num-images", "1",
                   "--scale", "2", "--method", "ug", "--theta", "1.2", "--out", str(out))
    assert done.returncode == 0, done.stderr
    width, height = Image.open(out).size
    assert width == 2 * 96 and 96 + 14 < height < 96 + 60


@pytest.mark.parametrize("make_bad_model,message", [
    (lambda p: p / "missing", "no config.json"),
    (lambda p: (p / "config.json").write_text('{"_class_name": "UNet2DConditionModel"}') and p, "UNet2DModel"),
])
def test_generate_with_a_bad_model_path_fails_clearly(tmp_path, make_bad_model, message):
    done = run_cli("generate", "--model", str(make_bad_model(tmp_path)), "--out", str(tmp_path / "x.png"))
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("args,message", [(["--scale", "1"], "scale must be an int >= 2"), (["--theta", "-1"], "theta"), (["--eta", "2"], "eta")])
def test_generate_bad_options_fail_clearly(tiny_pixel_model_dir, tmp_path, args, message):
    done = run_cli("generate", "--model", str(tiny_pixel_model_dir), "--out", str(tmp_path / "x.png"), *args)
    assert done.returncode == 2 and message in done.stderr


def test_generate_with_a_prompt_runs_a_pipeline_folder(tmp_path):
    from tiny_pipelines import saved

    out = tmp_path / "sd.png"
    done = run_cli("generate", "--model", str(saved("sd15")), "--prompt", "a red cat", "--height", "32", "--width", "32",
                   "--steps", "2", "--eta", "0.6", "--out", str(out))
    assert done.returncode == 0, done.stderr
    width, height = Image.open(out).size
    assert width == 2 * 96 and height > 96  # naive and UG columns, one image each
    video = run_cli("generate", "--model", str(saved("animatediff")), "--prompt", "a cat", "--height", "32", "--width", "32",
                    "--num-frames", "4", "--factor", "2,1,1", "--method", "ug", "--steps", "2", "--out", str(tmp_path / "v.png"))
    assert video.returncode == 0, video.stderr
    assert Image.open(tmp_path / "v.png").size[1] > 4 * 96  # one row per frame


def test_generate_with_a_prompt_needs_a_size_and_a_unet_pipeline(tmp_path):
    done = run_cli("generate", "--prompt", "a cat", "--out", str(tmp_path / "x.png"))
    assert done.returncode == 2 and "--height" in done.stderr


def test_generate_with_a_prompt_rejects_a_transformer_pipeline(tmp_path):
    from tiny_pipelines import saved

    done = run_cli("generate", "--model", str(saved("dit")), "--prompt", "a cat", "--height", "32", "--width", "32",
                   "--method", "ug", "--out", str(tmp_path / "x.png"))
    assert done.returncode == 2 and "UNet" in done.stderr and "Traceback" not in done.stderr
