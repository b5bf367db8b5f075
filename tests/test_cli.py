import shutil
import subprocess
import sys

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
    # columns: 8² trained, then 16²: naive, UG, Self-Cascade, FreeScale, Self-Cascade+UG; cells of max(16, 96) px
    width, height = Image.open(out).size
    assert width == 6 * 96 and 2 * 96 + 14 < height < 2 * 96 + 60
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


@pytest.mark.parametrize("command", [
    ["generate", "--prompt", "a cat", "--height", "64", "--width", "64", "--out", "{tmp}/x.png"],
    ["batch", "{tmp}/prompts.txt", "--height", "64", "--width", "64", "--out-dir", "{tmp}/out"],
    ["ui"],
], ids=["generate", "batch", "ui"])
def test_a_missing_pipeline_folder_gets_one_line_naming_it(tmp_path, command):
    (tmp_path / "prompts.txt").write_text("a cat\n")
    command = [a.format(tmp=tmp_path) for a in command]
    done = run_cli(*command, "--model", str(tmp_path / "missing"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"hiresdiff: error: model '{tmp_path / 'missing'}' is neither a "
                                                "short name (emoji-latent, emoji-flux), a diffusers pipeline folder (with model_index.json) nor a hub id that "
                                                "can be downloaded or found in the Hugging Face cache"]


@pytest.mark.parametrize("args,message", [(["--scale", "1"], "scale must be a number > 1"), (["--theta", "-1"], "theta"), (["--eta", "2"], "eta")])
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
    assert width == 6 * 96 and height > 96  # the trained-size call, then the five default methods, one image each
    video = run_cli("generate", "--model", str(saved("animatediff")), "--prompt", "a cat", "--height", "32", "--width", "32",
                    "--num-frames", "4", "--factor", "2,1,1", "--method", "ug", "--steps", "2", "--out", str(tmp_path / "v.png"))
    assert video.returncode == 0, video.stderr
    assert Image.open(tmp_path / "v.png").size[1] > 4 * 96  # one row per frame


def test_generate_with_a_prompt_needs_a_model_and_takes_scale_like_the_embedded_model(tmp_path):
    from tiny_pipelines import saved

    done = run_cli("generate", "--prompt", "a cat", "--out", str(tmp_path / "x.png"))
    assert done.returncode == 2 and "--model" in done.stderr
    unknown = run_cli("generate", "--prompt", "a cat", "--method", "warp", "--out", str(tmp_path / "x.png"))
    assert unknown.returncode == 2 and "method" in unknown.stderr  # the unknown method first
    out = tmp_path / "scaled.png"
    scaled = run_cli("generate", "--model", str(saved("sd15")), "--prompt", "a cat", "--scale", "2", "--method",
                     "self-cascade", "--steps", "2", "--out", str(out))
    assert scaled.returncode == 0, scaled.stderr
    assert Image.open(out).size[0] == 2 * 96  # the trained 16², then a 32² column; cells at least 96 wide
    two = run_cli("generate", "--model", str(saved("sd15")), "--prompt", "a cat", "--scale", "2", "4", "--method",
                  "naive,freescale", "--steps", "2", "--out", str(tmp_path / "y.png"))
    assert two.returncode == 0, two.stderr
    assert "32² naive, 32² freescale, 64² naive, 64² freescale" in two.stdout.replace("16² trained, ", "")
    assert Image.open(tmp_path / "y.png").size[0] == 5 * 96


def test_generate_with_a_prompt_rejects_a_transformer_pipeline(tmp_path):
    from tiny_pipelines import saved

    done = run_cli("generate", "--model", str(saved("dit")), "--prompt", "a cat", "--height", "32", "--width", "32",
                   "--method", "ug", "--out", str(tmp_path / "x.png"))
    assert done.returncode == 2 and "UNet" in done.stderr and "Traceback" not in done.stderr


ALL_METHODS = "naive,ug,self-cascade,freescale,freescale+ug,self-cascade+ug"


def test_a_comma_list_on_the_embedded_model_makes_one_column_per_method(tmp_path):
    out = tmp_path / "grid.png"
    done = run_cli("generate", "--method", "naive,self-cascade", "--strength", "0.6", "--steps", "2", "--num-images", "1",
                   "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "self-cascade tuned" in done.stdout and Image.open(out).size[0] == 3 * 96
    wide = run_cli("generate", "--method", "naive,ug", "--height", "64", "--width", "96", "--steps", "2",
                   "--num-images", "1", "--out", str(tmp_path / "wide.png"))
    assert wide.returncode == 0, wide.stderr
    assert "64x96 ug" in wide.stdout


@pytest.mark.parametrize("kind", ["sd15", "animatediff"])
def test_every_method_runs_on_a_pipeline_folder(kind, tmp_path):
    from tiny_pipelines import saved

    out = tmp_path / "grid.png"
    frames = ["--num-frames", "2"] if kind == "animatediff" else []
    done = run_cli("generate", "--model", str(saved(kind)), "--prompt", "a cat", "--height", "32", "--width", "32",
                   "--method", ALL_METHODS, "--steps", "2", *frames, "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert Image.open(out).size[0] == 7 * 96  # the trained-size call, then the six methods
    if frames:
        gif = Image.open(out.with_suffix(".gif"))
        assert gif.n_frames == 2 and gif.size[0] == 7 * 96


@pytest.mark.parametrize("args,message", [
    (["--method", "naive", "--strength", "0.5"], "--strength applies to"),
    (["--method", "naive,ug", "--alpha", "2"], "--alpha applies to"),
    (["--method", "naive,wrong"], "'wrong'"),
    (["--height", "64"], "--height and --width go together"),
    (["--num-frames", "4"], "--num-frames"),
    (["--method", "self-cascade", "--upsamplers", "/no/such/folder"], "upsamplers path"),
])
def test_bad_options_and_combinations_fail_in_one_line_before_loading(tmp_path, args, message):
    done = run_cli("generate", "--model", str(tmp_path / "not-a-model"), "--out", str(tmp_path / "x.png"), *args)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.png").exists()


def test_upscale_writes_the_image_and_a_comparison_and_never_overwrites(tmp_path, emoji_samples):
    from hiresdiff.loading.pixel_model import to_pil

    source = tmp_path / "smile.png"
    to_pil(emoji_samples[0][:1])[0].save(source)
    done = run_cli("upscale", str(source), "--steps", "2", "--compare", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "class " in done.stdout and Image.open(tmp_path / "smile-x2.png").size == (64, 64)
    assert Image.open(tmp_path / "smile-x2-compare.png").size[0] == 2 * 96
    before = (tmp_path / "smile-x2.png").read_bytes()
    again = run_cli("upscale", str(source), "--steps", "2", "--class", "3", cwd=tmp_path)
    assert again.returncode == 2 and "--force" in again.stderr and (tmp_path / "smile-x2.png").read_bytes() == before
    forced = run_cli("upscale", str(source), "--steps", "2", "--class", "3", "--method", "freescale", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    Image.open(source).resize((40, 40)).save(tmp_path / "odd.png")
    odd = run_cli("upscale", str(tmp_path / "odd.png"), cwd=tmp_path)
    assert odd.returncode == 2 and "image size" in odd.stderr and not (tmp_path / "odd-x2.png").exists()
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_upscale_with_a_pipeline_folder(tmp_path):
    from tiny_pipelines import saved

    source = tmp_path / "in.png"
    Image.new("RGB", (16, 16), (10, 200, 30)).save(source)
    done = run_cli("upscale", str(source), "--model", str(saved("sd15")), "--prompt", "a cat", "--steps", "2",
                   "--method", "freescale+ug", "--out", str(tmp_path / "out.png"))
    assert done.returncode == 0, done.stderr
    assert Image.open(tmp_path / "out.png").size == (32, 32)


def test_python_m_hiresdiff_is_the_cli():
    import sys

    done = subprocess.run([sys.executable, "-m", "hiresdiff", "generate", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--method" in done.stdout


@pytest.mark.parametrize("args,message", [
    (["generate", "--steps", "0"], "--steps must be at least 1; got 0"),
    (["generate", "--num-images", "0"], "--num-images must be at least 1"),
    (["upscale", "x.png", "--steps", "0"], "--steps must be at least 1"),
    (["generate", "--model", "m", "--prompt", "a cat", "--guidance-scale", "nan"], "--guidance-scale must be a finite"),
    (["generate", "--method", "freescale+freescale"], "composes freescale with itself"),
])
def test_counts_below_one_nan_guidance_and_self_compositions_are_refused_in_one_line(tmp_path, args, message):
    done = run_cli(*args, "--out", str(tmp_path / "x.png"), cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.png").exists()


def test_out_takes_its_format_from_the_suffix_and_its_folder_is_checked_before_sampling(tiny_pixel_model_dir, tmp_path):
    base = ["generate", "--model", str(tiny_pixel_model_dir), "--steps", "2", "--num-images", "1", "--method", "naive"]
    jpeg = tmp_path / "new" / "folder" / "grid.jpg"  # a missing folder is created
    done = run_cli(*base, "--out", str(jpeg))
    assert done.returncode == 0, done.stderr
    assert jpeg.read_bytes()[:2] == b"\xff\xd8" and Image.open(jpeg).format == "JPEG"
    bmp = run_cli(*base, "--out", str(tmp_path / "grid.bmp"))
    assert bmp.returncode == 2 and "suffix" in bmp.stderr and ".png" in bmp.stderr
    (tmp_path / "a_file").write_text("not a folder")
    blocked = run_cli(*base, "--steps", "500", "--out", str(tmp_path / "a_file" / "grid.png"))
    assert blocked.returncode == 2 and "cannot create its folder" in blocked.stderr
    assert len(blocked.stderr.strip().splitlines()) == 1  # refused at once: 500 steps were never sampled
    read_only = run_cli(*base, "--steps", "500", "--out", "/sys/grid.png")  # sysfs takes no files, not even root's
    assert read_only.returncode == 2 and "/sys is not writable" in read_only.stderr, read_only.stderr


def test_upscale_refuses_a_file_that_is_no_image_in_one_line(tmp_path):
    (tmp_path / "fake.png").write_text("not an image")
    done = run_cli("upscale", str(tmp_path / "fake.png"), cwd=tmp_path)
    assert done.returncode == 2 and "cannot be read as an image" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_scale_one_and_a_half_works_with_cascades_and_a_method_that_cannot_says_why(tiny_pixel_model_dir, tmp_path):
    out = tmp_path / "grid.png"
    base = ["generate", "--model", str(tiny_pixel_model_dir), "--steps", "2", "--num-images", "1", "--scale", "1.5"]
    done = run_cli(*base, "--method", "naive,self-cascade,freescale", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "12²" in done.stdout and Image.open(out).size[0] == 4 * 96  # trained 8², three methods at 12²
    ug = run_cli(*base, "--method", "self-cascade,ug", "--out", str(tmp_path / "ug.png"))
    assert ug.returncode == 2 and "method ug cannot make 12x12" in ug.stderr and "integer scales" in ug.stderr
    assert not (tmp_path / "ug.png").exists()


def test_help_answers_within_a_second_without_loading_torch():
    import time

    start = time.perf_counter()
    done = run_cli("--help")
    assert done.returncode == 0 and "generate" in done.stdout
    assert time.perf_counter() - start < 1.0
    loads = subprocess.run([sys.executable, "-c", "import sys, hiresdiff.cli; print('torch' in sys.modules)"],
                           capture_output=True, text=True, timeout=60)
    assert loads.stdout.strip() == "False"
    train = run_cli("train-upsamplers", "--help")  # a training command still gets its options
    assert train.returncode == 0 and "--resolution" in train.stdout


@pytest.mark.parametrize("args", [
    ["generate", "--scale", "100"],
    ["generate", "--height", "100000", "--width", "64"],
    ["generate", "--model", "m", "--prompt", "a cat", "--height", "4096", "--width", "4096"],
    ["upscale", "IMAGE", "--scale", "80"],
])
def test_outputs_above_max_pixels_are_refused_at_once(tmp_path, emoji_samples, args):
    import time

    from hiresdiff.loading.pixel_model import to_pil

    to_pil(emoji_samples[0][:1])[0].save(tmp_path / "in.png")
    args = [str(tmp_path / "in.png") if a == "IMAGE" else a for a in args]
    start = time.perf_counter()
    done = run_cli(*args, "--out", str(tmp_path / "x.png"), cwd=tmp_path)
    assert done.returncode == 2 and "--max-pixels" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert time.perf_counter() - start < 20  # refused before any sampling
    assert not (tmp_path / "x.png").exists()


def test_device_and_dtype_act_on_pixel_models_and_num_images_on_pipelines(tiny_pixel_model_dir, tmp_path):
    from tiny_pipelines import saved

    base = ["generate", "--model", str(tiny_pixel_model_dir), "--steps", "2", "--num-images", "1", "--method", "naive"]
    fp32, bf16 = tmp_path / "fp32.png", tmp_path / "bf16.png"
    assert run_cli(*base, "--out", str(fp32)).returncode == 0
    done = run_cli(*base, "--device", "cpu", "--dtype", "bf16", "--out", str(bf16))
    assert done.returncode == 0, done.stderr
    assert Image.open(fp32).tobytes() != Image.open(bf16).tobytes()  # bf16 was used, not ignored
    missing = run_cli(*base, "--device", "xla", "--out", str(tmp_path / "x.png"))
    assert missing.returncode == 2 and "--device xla: this machine has no xla device" in missing.stderr
    rows = {}
    for n in ("1", "2"):
        out = tmp_path / f"sd{n}.png"
        sd = run_cli("generate", "--model", str(saved("sd15")), "--prompt", "a cat", "--scale", "2", "--method", "naive",
                     "--steps", "2", "--num-images", n, "--out", str(out))
        assert sd.returncode == 0, sd.stderr
        rows[n] = Image.open(out).size[1]
    assert rows["2"] - rows["1"] == 96  # one more row of one 96-pixel cell


def test_ctrl_c_is_one_line_and_exit_130(tmp_path):
    """SIGINT while the command loads its modules or samples: one line, exit 130, no traceback."""
    import signal
    import time

    exe = shutil.which("hiresdiff")
    for delay in (1.0, 5.0):  # while torch and diffusers load, then while sampling
        process = subprocess.Popen([exe, "generate", "--steps", "200", "--out", str(tmp_path / "x.png")], cwd=tmp_path,
                                   stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 130, stderr
        assert stderr.strip().splitlines()[-1] == "hiresdiff: interrupted" and "Traceback" not in stderr
        assert not (tmp_path / "x.png").exists()


def test_truncated_weights_and_garbage_upsamplers_are_one_line_naming_the_file(tiny_pixel_model_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_pixel_model_dir, model)
    weights = model / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    done = run_cli("generate", "--model", str(model), "--out", str(tmp_path / "x.png"))
    assert done.returncode == 2 and str(model) in done.stderr and "cannot be loaded" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    garbage = tmp_path / "ups"
    garbage.mkdir()
    (garbage / "config.json").write_text("[1, 2]")
    bad = run_cli("generate", "--upsamplers", str(garbage), "--method", "self-cascade", "--out", str(tmp_path / "y.png"))
    assert bad.returncode == 2 and "config.json is not a JSON object" in bad.stderr and len(bad.stderr.splitlines()) == 1


def test_upscaling_a_photo_far_above_the_trained_size_is_refused_at_once_with_the_sizes_that_work(tmp_path):
    import time

    Image.new("RGB", (512, 512), "white").save(tmp_path / "photo.png")
    start = time.perf_counter()
    done = run_cli("upscale", str(tmp_path / "photo.png"), cwd=tmp_path)
    assert time.perf_counter() - start < 5
    assert done.returncode == 2 and "beyond 8× the model's trained size 32x32" in done.stderr
    assert "(32, 32), (64, 64), (128, 128)" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_pipeline_with_truncated_weights_is_one_line_naming_it(tmp_path):
    from tiny_pipelines import saved

    model = tmp_path / "sd15"
    shutil.copytree(saved("sd15"), model)
    weights = next((model / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:64])
    done = run_cli("generate", "--model", str(model), "--prompt", "a cat", "--scale", "2", "--out", str(tmp_path / "x.png"))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"hiresdiff: error: model '{model}' cannot be loaded")
