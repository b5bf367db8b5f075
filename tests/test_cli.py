"""The command line. Most tests run it in this process (:func:`run_cli`: ``hiresdiff.cli.main`` with its output
captured), which states what happened without paying for a fresh interpreter and torch import per run; the tests about
the process itself run it as one: the console script's exit status, Ctrl-C, what ``--help`` and a refused option
import, ``python -m hiresdiff``."""

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import warnings
from dataclasses import dataclass

import pytest
import torch
from PIL import Image

from hiresdiff.cli import main


@dataclass
class Ran:
    """What a run of the command line did, read like ``subprocess.CompletedProcess``."""

    returncode: int
    stdout: str
    stderr: str


def run_cli(*args, cwd=None) -> Ran:
    """``hiresdiff ARGS`` in this process, in the folder ``cwd`` (default: the current one): its exit status and what it
    printed. It must leave the process as it found it (the folder, the SIGINT handler ``main`` sets, torch's thread
    count, the warning filters), which is checked: a leak would make the next run see another process."""
    process = lambda: (os.getcwd(), signal.getsignal(signal.SIGINT), torch.get_num_threads())  # noqa: E731
    before = process()
    out, err = io.StringIO(), io.StringIO()
    try:
        os.chdir(cwd or before[0])
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in args])
    finally:
        os.chdir(before[0])
    assert process() == before, f"hiresdiff {' '.join(map(str, args))} changed the process: {before} -> {process()}"
    return Ran(code, out.getvalue(), err.getvalue())


@pytest.fixture
def heavy_work(monkeypatch):
    """The events a refusal must come before, recorded in order while the test runs: every model or pipeline load by
    diffusers, every weights file read (safetensors, ``torch.load``) and every call of a torch module (a denoiser step,
    a VAE decode). A refusal that leaves this list empty came before any of them, however fast the machine."""
    import diffusers
    import safetensors.torch

    events = []

    def spy(name, real):
        def recorded(*args, **kwargs):
            events.append(name)
            return real(*args, **kwargs)

        return recorded

    for cls in (diffusers.ModelMixin, diffusers.DiffusionPipeline):
        real = cls.__dict__["from_pretrained"].__func__
        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy(f"{cls.__name__}.from_pretrained", real)))
    monkeypatch.setattr(safetensors.torch, "load_file", spy("safetensors.torch.load_file", safetensors.torch.load_file))
    monkeypatch.setattr(torch, "load", spy("torch.load", torch.load))
    module_call = torch.nn.Module.__call__
    monkeypatch.setattr(
        torch.nn.Module,
        "__call__",
        lambda self, *a, **k: spy(f"{type(self).__name__} call", module_call)(self, *a, **k),
    )
    return events


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
    done = run_cli(
        "generate",
        "--model",
        str(tiny_pixel_model_dir),
        "--steps",
        "2",
        "--num-images",
        "1",
        "--scale",
        "2",
        "--method",
        "ug",
        "--theta",
        "1.2",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    width, height = Image.open(out).size
    assert width == 2 * 96 and 96 + 14 < height < 96 + 60


@pytest.mark.parametrize(
    "make_bad_model,message",
    [
        (lambda p: p / "missing", "no config.json"),
        (lambda p: (p / "config.json").write_text('{"_class_name": "UNet2DConditionModel"}') and p, "UNet2DModel"),
    ],
)
def test_generate_with_a_bad_model_path_fails_clearly(tmp_path, make_bad_model, message):
    done = run_cli("generate", "--model", str(make_bad_model(tmp_path)), "--out", str(tmp_path / "x.png"))
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["generate", "--prompt", "a cat", "--height", "64", "--width", "64", "--out", "{tmp}/x.png"],
        ["batch", "{tmp}/prompts.txt", "--height", "64", "--width", "64", "--out-dir", "{tmp}/out"],
        ["ui"],
    ],
    ids=["generate", "batch", "ui"],
)
def test_a_missing_pipeline_folder_gets_one_line_naming_it(tmp_path, command):
    (tmp_path / "prompts.txt").write_text("a cat\n")
    command = [a.format(tmp=tmp_path) for a in command]
    done = run_cli(*command, "--model", str(tmp_path / "missing"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"hiresdiff: error: model '{tmp_path / 'missing'}' is neither a short name (emoji-latent, emoji-flux, "
        "emoji-video), a diffusers pipeline folder (with model_index.json) nor a hub id that can be downloaded or "
        "found in the Hugging Face cache"
    ]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--scale", "1"], "--scale must be a number > 1"),
        (["--theta", "-1"], "--theta"),
        (["--eta", "2"], "--eta"),
    ],
)
def test_generate_bad_options_fail_clearly(tiny_pixel_model_dir, tmp_path, args, message, heavy_work):
    done = run_cli("generate", "--model", str(tiny_pixel_model_dir), "--out", str(tmp_path / "x.png"), *args)
    assert done.returncode == 2 and message in done.stderr and heavy_work == []


def test_generate_with_a_prompt_runs_a_pipeline_folder(tmp_path):
    from tiny_pipelines import saved

    out = tmp_path / "sd.png"
    done = run_cli(
        "generate",
        "--model",
        str(saved("sd15")),
        "--prompt",
        "a red cat",
        "--height",
        "32",
        "--width",
        "32",
        "--steps",
        "2",
        "--eta",
        "0.6",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    width, height = Image.open(out).size
    assert width == 6 * 96 and height > 96  # the trained-size call, then the five default methods, one image each
    video = run_cli(
        "generate",
        "--model",
        str(saved("animatediff")),
        "--prompt",
        "a cat",
        "--height",
        "32",
        "--width",
        "32",
        "--num-frames",
        "4",
        "--factor",
        "2,1,1",
        "--method",
        "ug",
        "--steps",
        "2",
        "--out",
        str(tmp_path / "v.png"),
    )
    assert video.returncode == 0, video.stderr
    assert Image.open(tmp_path / "v.png").size[1] > 4 * 96  # one row per frame


def test_generate_with_a_prompt_needs_a_model_and_takes_scale_like_the_embedded_model(tmp_path):
    from tiny_pipelines import saved

    done = run_cli("generate", "--prompt", "a cat", "--out", str(tmp_path / "x.png"))
    assert done.returncode == 2 and "--model" in done.stderr
    unknown = run_cli("generate", "--prompt", "a cat", "--method", "warp", "--out", str(tmp_path / "x.png"))
    assert unknown.returncode == 2 and "method" in unknown.stderr  # the unknown method first
    out = tmp_path / "scaled.png"
    scaled = run_cli(
        "generate",
        "--model",
        str(saved("sd15")),
        "--prompt",
        "a cat",
        "--scale",
        "2",
        "--method",
        "self-cascade",
        "--steps",
        "2",
        "--out",
        str(out),
    )
    assert scaled.returncode == 0, scaled.stderr
    assert Image.open(out).size[0] == 2 * 96  # the trained 16², then a 32² column; cells at least 96 wide
    two = run_cli(
        "generate",
        "--model",
        str(saved("sd15")),
        "--prompt",
        "a cat",
        "--scale",
        "2",
        "4",
        "--method",
        "naive,freescale",
        "--steps",
        "2",
        "--out",
        str(tmp_path / "y.png"),
    )
    assert two.returncode == 0, two.stderr
    assert "32² naive, 32² freescale, 64² naive, 64² freescale" in two.stdout.replace("16² trained, ", "")
    assert Image.open(tmp_path / "y.png").size[0] == 5 * 96


def test_generate_with_a_prompt_rejects_a_transformer_pipeline(tmp_path):
    from tiny_pipelines import saved

    done = run_cli(
        "generate",
        "--model",
        str(saved("dit")),
        "--prompt",
        "a cat",
        "--height",
        "32",
        "--width",
        "32",
        "--method",
        "ug",
        "--out",
        str(tmp_path / "x.png"),
    )
    assert done.returncode == 2 and "UNet" in done.stderr and "Traceback" not in done.stderr


ALL_METHODS = "naive,ug,self-cascade,freescale,freescale+ug,self-cascade+ug"


def test_a_comma_list_on_the_embedded_model_makes_one_column_per_method(tmp_path):
    out = tmp_path / "grid.png"
    done = run_cli(
        "generate",
        "--method",
        "naive,self-cascade",
        "--strength",
        "0.6",
        "--steps",
        "2",
        "--num-images",
        "1",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    assert "self-cascade tuned" in done.stdout and Image.open(out).size[0] == 3 * 96
    wide = run_cli(
        "generate",
        "--method",
        "naive,ug",
        "--height",
        "64",
        "--width",
        "96",
        "--steps",
        "2",
        "--num-images",
        "1",
        "--out",
        str(tmp_path / "wide.png"),
    )
    assert wide.returncode == 0, wide.stderr
    assert "64x96 ug" in wide.stdout


@pytest.mark.parametrize("kind", ["sd15", "animatediff"])
def test_every_method_runs_on_a_pipeline_folder(kind, tmp_path):
    from tiny_pipelines import saved

    out = tmp_path / "grid.png"
    frames = ["--num-frames", "2"] if kind == "animatediff" else []
    done = run_cli(
        "generate",
        "--model",
        str(saved(kind)),
        "--prompt",
        "a cat",
        "--height",
        "32",
        "--width",
        "32",
        "--method",
        ALL_METHODS,
        "--steps",
        "2",
        *frames,
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    assert Image.open(out).size[0] == 7 * 96  # the trained-size call, then the six methods
    if frames:
        gif = Image.open(out.with_suffix(".gif"))
        assert gif.n_frames == 2 and gif.size[0] == 7 * 96


@pytest.mark.parametrize(
    "args,message",
    [
        (["--method", "naive", "--strength", "0.5"], "--strength applies to"),
        (["--method", "naive,ug", "--alpha", "2"], "--alpha applies to"),
        (["--method", "naive", "--inversion", "0.2"], "--inversion applies to"),
        (["--method", "naive,wrong"], "'wrong'"),
        (["--height", "64"], "--height and --width go together"),
        (["--num-frames", "4"], "--num-frames"),
        (["--method", "self-cascade", "--upsamplers", "/no/such/folder"], "upsamplers path"),
        (["--shift", "stage"], "--shift must be one of trained, pipeline, resolution or a number > 0"),
        (["--shift", "-3"], "--shift must be one of"),
        (["--quant", "gguf-q4"], "quant 'gguf-q4' reads the denoiser's weights from a GGUF file: pass gguf= (--gguf"),
        (["--quant", "gguf-q8", "--gguf", "/no/such.gguf"], "gguf: no such file"),
        (["--quant", "int8", "--gguf", "/no/such.gguf"], "gguf= is a GGUF file's denoiser"),
    ],
)
def test_bad_options_and_combinations_fail_in_one_line_before_loading(tmp_path, args, message, heavy_work):
    done = run_cli("generate", "--model", str(tmp_path / "not-a-model"), "--out", str(tmp_path / "x.png"), *args)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.png").exists()
    assert heavy_work == []


def test_upscale_writes_the_image_and_a_comparison_and_never_overwrites(tmp_path, emoji_samples):
    from hiresdiff.loading.pixel_model import to_pil

    source = tmp_path / "smile.png"
    to_pil(emoji_samples[0][:1])[0].save(source)
    done = run_cli("upscale", str(source), "--steps", "2", "--compare", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "class label " in done.stdout and "(this model ships no class names): the most likely" in done.stdout
    assert Image.open(tmp_path / "smile-x2.png").size == (64, 64)
    assert Image.open(tmp_path / "smile-x2-compare.png").size[0] == 2 * 96
    before = (tmp_path / "smile-x2.png").read_bytes()
    again = run_cli("upscale", str(source), "--steps", "2", "--class", "3", cwd=tmp_path)
    assert again.returncode == 2 and "--force" in again.stderr and (tmp_path / "smile-x2.png").read_bytes() == before
    assert "class" not in again.stdout  # refused before the class was chosen
    forced = run_cli(
        "upscale", str(source), "--steps", "2", "--class", "3", "--method", "freescale", "--force", cwd=tmp_path
    )
    assert forced.returncode == 0, forced.stderr
    Image.open(source).resize((40, 40)).save(tmp_path / "odd.png")
    odd = run_cli("upscale", str(tmp_path / "odd.png"), cwd=tmp_path)
    assert odd.returncode == 2 and "image size" in odd.stderr and not (tmp_path / "odd-x2.png").exists()
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_upscale_with_a_pipeline_folder(tmp_path):
    from tiny_pipelines import saved

    source = tmp_path / "in.png"
    Image.new("RGB", (16, 16), (10, 200, 30)).save(source)
    done = run_cli(
        "upscale",
        str(source),
        "--model",
        str(saved("sd15")),
        "--prompt",
        "a cat",
        "--steps",
        "2",
        "--method",
        "freescale+ug",
        "--out",
        str(tmp_path / "out.png"),
    )
    assert done.returncode == 0, done.stderr
    assert Image.open(tmp_path / "out.png").size == (32, 32)


def test_python_m_hiresdiff_is_the_cli():
    """A process: ``python -m hiresdiff`` runs the same command line."""
    done = subprocess.run(
        [sys.executable, "-m", "hiresdiff", "generate", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "--method" in done.stdout


def test_the_console_script_exits_with_the_status_main_returns(tmp_path):
    """A process: the installed ``hiresdiff`` script exits with main's status (2: a bad option), one line on stderr."""
    exe = shutil.which("hiresdiff")
    assert exe, "the hiresdiff console script is not installed: run the README's install command"
    done = subprocess.run([exe, "generate", "--steps", "0"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.splitlines() == ["hiresdiff: error: --steps must be at least 1; got 0"]
    assert main(["generate", "--help"]) == 0 and main(["generate", "--no-such-option"]) == 2  # argparse's, returned


NO_TORCH_REFUSALS = [  # (argv, the one line): option values refused before torch loads, as --help is answered
    (
        ["plan", "--arch", "foo", "--size", "1024"],
        "--arch must be one of sd15, sdxl, flux1-dev, wan2.1-1.3b, wan2.1-14b; got 'foo'",
    ),
    (["plan", "--arch", "sdxl", "--size", "1024", "--dtype", "fp8"], "--dtype must be one of fp16, bf16, fp32"),
    (["plan", "--arch", "sdxl", "--size", "1000"], "--size must be multiples of 64"),
    (["plan", "--arch", "sdxl", "--size", "1024", "--method", "warp"], "method must be one of"),
    (["generate", "--steps", "0"], "--steps must be at least 1; got 0"),
    (["generate", "--method", "naive,warp"], "got 'warp'"),
    (["generate", "--method", "ug+ug"], "composes ug with itself"),
    (["generate", "--scale", "1"], "--scale must be a number > 1"),
    (["generate", "--theta", "-1"], "--theta must be a finite number >= 0"),
    (["generate", "--eta", "1.5"], "--eta must lie in [0, 1]"),
    (["generate", "--strength", "0"], "--strength must lie in (0, 1]"),
    (["generate", "--alpha", "inf"], "--alpha must be a finite number >= 0"),
    (["generate", "--inversion", "1.5"], "--inversion must lie in [0, 1] (the share of fresh noise); got 1.5"),
    (["generate", "--tiles", "1"], "--tiles must lie in [0, 1) (the tiles' overlap share); got 1.0"),
    (["generate", "--upscaler", "no_such.pth"], "--upscaler: no_such.pth is not a file"),
    (["plan", "--arch", "sdxl", "--size", "2048", "--tiles", "-0.5"], "--tiles must lie in [0, 1)"),
    (["bench", "--suite", "sr"], "--suite sr needs --upscaler FILE"),
    (["bench", "--suite", "refine"], "--suite refine needs --upscaler FILE"),
    (["generate", "--height", "64", "--width", "0"], "--width must be at least 1"),
    (["generate", "--height", "4096", "--width", "4096"], "--max-pixels"),
    (["generate", "--model", "m", "--prompt", "a cat", "--guidance-scale", "nan"], "--guidance-scale must be a finite"),
    (
        ["generate", "--out", "no_such_folder/x.png"],
        "--out no_such_folder/x.png: its folder no_such_folder does not exist",
    ),
    (["generate", "--out", "x.bmp"], "--out x.bmp: the output format comes from the suffix"),
    (["upscale", "missing.png"], "image 'missing.png' does not exist"),
    (["upscale", "missing.png", "--method", "naive,ug"], "--method: upscale takes one method"),
    (["upscale", "missing.png", "--class", "-1"], "--class must be a class label >= 0"),
    (
        ["batch", "p.txt", "--model", "m", "--height", "64", "--width", "64", "--out-dir", "o", "--steps", "0"],
        "--steps must be at least 1",
    ),
    (["bench", "--num-images", "0"], "--num-images must be at least 1"),
    (["ui", "--port", "70000"], "--port must be in [0, 65535]"),
]


def test_help_and_bad_option_values_are_answered_before_torch_loads(tmp_path):
    """A fresh interpreter: ``--help`` and every refused option value of :data:`NO_TORCH_REFUSALS` (exit 2, one line
    naming the option) come before torch or diffusers is imported."""
    script = textwrap.dedent("""
        import json, sys
        from hiresdiff.cli import main

        for argv in json.loads(sys.argv[1]):
            code = main(argv)
            print("RESULT", json.dumps([code, "torch" in sys.modules or "diffusers" in sys.modules]), flush=True)
            print("--- end of run", file=sys.stderr, flush=True)
    """)
    import json

    runs = [["--help"]] + [argv for argv, _ in NO_TORCH_REFUSALS]
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(runs)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    results = [json.loads(line[len("RESULT ") :]) for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    *errors, rest = done.stderr.split("--- end of run\n")
    assert results[0] == [0, False] and "generate" in done.stdout and errors[0] == "" and rest == ""
    for (argv, line), result, error in zip(NO_TORCH_REFUSALS, results[1:], errors[1:], strict=True):
        assert result == [2, False], (argv, result, error)
        assert len(error.splitlines()) == 1 and error.startswith("hiresdiff: error: ") and line in error, (argv, error)


def test_the_light_lists_of_names_are_the_heavy_modules_lists():
    """The CLI checks --arch, --dtype and method names from :mod:`hiresdiff.cli.choices` (no torch); the modules
    that run them keep their own lists: the two must not drift."""
    from hiresdiff.cli import choices
    from hiresdiff.cost import plan
    from hiresdiff.options import parse_methods

    assert choices.PLAN_ARCHS == plan.PLAN_ARCHS and tuple(choices.DTYPES) == tuple(plan.DTYPES)
    assert all(getattr(torch, name) == plan.DTYPES[key] for key, name in choices.DTYPES.items())
    for items in (
        ["naive,ug"],
        ["freescale+ug", "fast"],
        ["fast+ug"],
        [" naive , "],
        [],
        [","],
        ["warp"],
        ["ug+warp"],
        ["ug+ug"],
        ["naive+freescale+naive"],
        ["self-cascade+freescale"],
        ["Naive"],
    ):
        light, heavy = [], []
        for check, answers in ((choices.check_method_names, light), (parse_methods, heavy)):
            try:
                answers.append(check(items))
            except ValueError as error:
                answers.append(str(error))
        # the same answer, or the light check let through a composition whose presets do not fit together
        assert light == heavy or heavy[0].startswith("cannot compose"), (items, light, heavy)


@pytest.mark.parametrize(
    "name,values",
    [
        ("theta", (-1.0, 0.0, 1.5, float("nan"), float("inf"))),
        ("eta", (-0.1, 0.0, 0.6, 1.0, 1.01)),
        ("strength", (0.0, 0.5, 1.0, 1.5)),
        ("alpha", (-1.0, 0.0, 2.0, float("nan"))),
    ],
)
def test_the_light_range_checks_refuse_what_the_method_configs_refuse(name, values):
    import argparse

    from hiresdiff.cli.choices import check_part_options
    from hiresdiff.options import MethodOptions, recipes_for

    for value in values:
        refused = {}
        try:
            check_part_options(argparse.Namespace(**{name: value}))
        except ValueError:
            refused["cli"] = True
        try:
            recipes_for(["freescale+ug"], MethodOptions(**{name: value}))
        except ValueError:
            refused["configs"] = True
        assert refused.get("cli", False) == refused.get("configs", False), (name, value, refused)


@pytest.mark.parametrize(
    "args,message",
    [
        (["generate", "--steps", "0"], "--steps must be at least 1; got 0"),
        (["generate", "--num-images", "0"], "--num-images must be at least 1"),
        (["upscale", "x.png", "--steps", "0"], "--steps must be at least 1"),
        (
            ["generate", "--model", "m", "--prompt", "a cat", "--guidance-scale", "nan"],
            "--guidance-scale must be a finite",
        ),
        (["generate", "--method", "freescale+freescale"], "composes freescale with itself"),
    ],
)
def test_counts_below_one_nan_guidance_and_self_compositions_are_refused_in_one_line(
    tmp_path, args, message, heavy_work
):
    done = run_cli(*args, "--out", str(tmp_path / "x.png"), cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.png").exists() and heavy_work == []


def test_out_takes_its_format_from_the_suffix_and_its_folder_is_checked_before_sampling(
    tiny_pixel_model_dir, tmp_path, heavy_work
):
    base = ["generate", "--model", str(tiny_pixel_model_dir), "--steps", "2", "--num-images", "1", "--method", "naive"]
    jpeg = tmp_path / "grid.jpg"
    done = run_cli(*base, "--out", str(jpeg))
    assert done.returncode == 0, done.stderr
    assert jpeg.read_bytes()[:2] == b"\xff\xd8" and Image.open(jpeg).format == "JPEG"
    assert "UNet2DModel call" in heavy_work  # the spy sees a run that samples
    heavy_work.clear()
    bmp = run_cli(*base, "--out", str(tmp_path / "grid.bmp"))
    assert bmp.returncode == 2 and "suffix" in bmp.stderr and ".png" in bmp.stderr
    missing = tmp_path / "new" / "folder"  # a mistyped folder is refused, not created
    absent = run_cli(*base, "--steps", "500", "--out", str(missing / "grid.png"))
    assert (
        absent.stderr.splitlines()
        == [f"hiresdiff: error: --out {missing / 'grid.png'}: its folder {missing} does not exist (create it first)"]
        and absent.returncode == 2
    )
    assert not (tmp_path / "new").exists()
    (tmp_path / "a_file").write_text("not a folder")
    blocked = run_cli(*base, "--steps", "500", "--out", str(tmp_path / "a_file" / "grid.png"))
    assert blocked.returncode == 2 and "a_file is a file, not a folder" in blocked.stderr
    assert len(blocked.stderr.strip().splitlines()) == 1
    read_only = run_cli(*base, "--steps", "500", "--out", "/sys/grid.png")  # sysfs takes no files, not even root's
    assert read_only.returncode == 2 and "/sys is not writable" in read_only.stderr, read_only.stderr
    assert heavy_work == []  # each refused at once: no weights read, the 500 steps never sampled
    help_text = io.StringIO()
    with contextlib.redirect_stdout(help_text):
        assert main(["generate", "--help"]) == 0 and main(["upscale", "--help"]) == 0
    assert help_text.getvalue().count("its folder must exist") == 2


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


def test_a_training_command_still_gets_its_options():
    """``hiresdiff --help`` lists the training commands without importing them (see
    test_help_and_bad_option_values_are_answered_before_torch_loads); their own --help has their options."""
    done = run_cli("--help")
    assert done.returncode == 0 and "train-upsamplers" in done.stdout
    train = run_cli("train-upsamplers", "--help")
    assert train.returncode == 0 and "--resolution" in train.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["generate", "--scale", "100"],
        ["generate", "--height", "100000", "--width", "64"],
        ["generate", "--model", "m", "--prompt", "a cat", "--height", "4096", "--width", "4096"],
        ["upscale", "IMAGE", "--scale", "80"],
    ],
)
def test_outputs_above_max_pixels_are_refused_at_once(tmp_path, args, heavy_work):
    Image.new("RGB", (32, 32), (250, 200, 40)).save(tmp_path / "in.png")
    args = [str(tmp_path / "in.png") if a == "IMAGE" else a for a in args]
    done = run_cli(*args, "--out", str(tmp_path / "x.png"), cwd=tmp_path)
    assert done.returncode == 2 and "--max-pixels" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert heavy_work == [] and not (tmp_path / "x.png").exists()  # refused before any model loaded or ran


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
        sd = run_cli(
            "generate",
            "--model",
            str(saved("sd15")),
            "--prompt",
            "a cat",
            "--scale",
            "2",
            "--method",
            "naive",
            "--steps",
            "2",
            "--num-images",
            n,
            "--out",
            str(out),
        )
        assert sd.returncode == 0, sd.stderr
        rows[n] = Image.open(out).size[1]
    assert rows["2"] - rows["1"] == 96  # one more row of one 96-pixel cell


def test_ctrl_c_is_one_line_and_exit_130(tmp_path):
    """A process: SIGINT while the command loads its modules or samples: one line, exit 130, no traceback."""
    import signal
    import time

    exe = shutil.which("hiresdiff")
    for delay in (1.0, 5.0):  # while torch and diffusers load, then while sampling
        process = subprocess.Popen(
            [exe, "generate", "--steps", "200", "--out", str(tmp_path / "x.png")],
            cwd=tmp_path,
            stderr=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
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
    bad = run_cli(
        "generate", "--upsamplers", str(garbage), "--method", "self-cascade", "--out", str(tmp_path / "y.png")
    )
    assert bad.returncode == 2 and "config.json is not a JSON object" in bad.stderr
    assert len(bad.stderr.splitlines()) == 1


def test_upscaling_a_photo_far_above_the_trained_size_is_refused_at_once_with_the_sizes_that_work(tmp_path, heavy_work):
    Image.new("RGB", (512, 512), "white").save(tmp_path / "photo.png")
    done = run_cli("upscale", str(tmp_path / "photo.png"), cwd=tmp_path)
    assert heavy_work == []  # from the model's config: its weights were never read, the class detector never ran
    assert done.returncode == 2 and "beyond 8× the model's trained size 32x32" in done.stderr
    assert "(32, 32), (64, 64), (128, 128)" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_pipeline_with_truncated_weights_is_one_line_naming_it(tmp_path):
    from tiny_pipelines import saved

    model = tmp_path / "sd15"
    shutil.copytree(saved("sd15"), model)
    weights = next((model / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:64])
    done = run_cli(
        "generate", "--model", str(model), "--prompt", "a cat", "--scale", "2", "--out", str(tmp_path / "x.png")
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"hiresdiff: error: model '{model}' cannot be loaded")
