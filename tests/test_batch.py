"""``hiresdiff batch``: stable names, resume after a crash, and a 2-process accelerate run on a tiny pipeline."""

import json
import shutil
import subprocess

import pytest
from tiny_pipelines import load

from hiresdiff.batch import BatchSettings, Job, jobs_for, pending, read_prompts, run_batch
from hiresdiff.models import ModelSettings
from hiresdiff.recipe import Recipe

SETTINGS = BatchSettings(model="tiny", method="self-cascade", height=32, width=32, steps=2)


def sd15_loader(device):
    """A ``pipe_loader``: the tiny SD 1.5 pipeline and its call's arguments under the batch's guidance."""
    pipe = load("sd15")
    return pipe, ModelSettings().arguments(pipe, SETTINGS.guidance_scale, SETTINGS.negative_prompt)


def test_names_are_stable_hashes_of_prompt_seed_and_settings():
    a = SETTINGS.key(Job("a cat", 0))
    assert a == BatchSettings(model="tiny", method="self-cascade", height=32, width=32, steps=2).key(Job("a cat", 0))
    others = {
        SETTINGS.key(Job("a cat", 1)),
        SETTINGS.key(Job("a dog", 0)),
        BatchSettings(model="tiny", method="freescale", height=32, width=32, steps=2).key(Job("a cat", 0)),
        BatchSettings(model="tiny", method="self-cascade", height=32, width=32, steps=3).key(Job("a cat", 0)),
    }
    assert len(a) == 16 and a not in others and len(others) == 4


def test_prompts_file_skips_comments_and_blank_lines(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("a cat\n\n# not a prompt\n  a dog  \n")
    assert read_prompts(path) == ["a cat", "a dog"]
    assert jobs_for(["a", "b"], [0, 1]) == [Job("a", 0), Job("a", 1), Job("b", 0), Job("b", 1)]
    path.write_text("# nothing\n")
    with pytest.raises(ValueError, match="no prompts"):
        read_prompts(path)
    with pytest.raises(FileNotFoundError):
        read_prompts(tmp_path / "missing.txt")


def test_a_crashed_run_resumes_without_redoing_or_leaving_partial_outputs(tmp_path, monkeypatch):
    import hiresdiff.batch as driver  # run_batch's own reference to generate

    jobs = jobs_for(["p1", "p2", "p3", "p4"], [0])
    real, calls = driver.generate, []

    def crash_on_third(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 3:
            raise KeyboardInterrupt  # the run is killed during the third image
        return real(*args, **kwargs)

    monkeypatch.setattr(driver, "generate", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_batch(SETTINGS, jobs, tmp_path, recipe=Recipe.self_cascade(), pipe_loader=sd15_loader, progress=False)
    done_first = sorted(p.name for p in tmp_path.iterdir())
    assert len(done_first) == 4 and not [n for n in done_first if n.startswith(".")]  # 2 PNGs + 2 logs, no temporaries
    (tmp_path / f"{SETTINGS.key(jobs[1])}.json").unlink()  # as if killed between the PNG and its log
    assert pending(jobs, SETTINGS, tmp_path) == jobs[1:]
    monkeypatch.setattr(driver, "generate", real)
    written = run_batch(SETTINGS, jobs, tmp_path, recipe=Recipe.self_cascade(), pipe_loader=sd15_loader, progress=False)
    assert written == [SETTINGS.key(j) for j in jobs[1:]] and pending(jobs, SETTINGS, tmp_path) == []
    log = json.loads((tmp_path / f"{SETTINGS.key(jobs[0])}.json").read_text())
    assert log["prompt"] == "p1" and log["seed"] == 0 and log["seconds"] > 0 and log["file"].endswith(".png")


def test_two_accelerate_processes_split_the_prompts_and_each_is_done_once(tmp_path):
    exe = shutil.which("accelerate")
    assert exe, "accelerate's launcher is not installed (it is a hiresdiff dependency)"
    load("sd15").save_pretrained(tmp_path / "tiny")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"prompt {i}\n" for i in range(5)))
    out = tmp_path / "out"
    command = [
        exe,
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "-m",
        "hiresdiff",
        "batch",
        str(prompts),
        "--model",
        str(tmp_path / "tiny"),
        "--height",
        "32",
        "--width",
        "32",
        "--steps",
        "2",
        "--seeds",
        "0",
        "1",
        "--out-dir",
        str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    logs = [json.loads(p.read_text()) for p in out.glob("*.json")]
    assert sorted((log["prompt"], log["seed"]) for log in logs) == [
        (f"prompt {i}", s) for i in range(5) for s in (0, 1)
    ]
    assert {log["process"] for log in logs} == {0, 1} and all(log["num_processes"] == 2 for log in logs)
    assert len(list(out.glob("*.png"))) == 10 and not list(out.glob(".*"))
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("wrote 0 of 10") == 2  # everything was done: nothing redone


def test_a_sweep_over_a_method_option_writes_one_file_per_value(tmp_path):
    """Every option that changes the image is in the key: a strength sweep into one folder writes one file per
    strength, never returns the first run's image for the second."""
    import dataclasses

    from test_cli import run_cli  # the command line in this process
    from tiny_pipelines import saved

    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n")
    for strength in ("0.5", "0.9"):
        done = run_cli(
            "batch",
            prompts,
            "--model",
            saved("sd15"),
            "--recipe",
            "self-cascade",
            "--height",
            "32",
            "--width",
            "32",
            "--steps",
            "2",
            "--strength",
            strength,
            "--out-dir",
            tmp_path / "out",
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("wrote 1 of 1 outputs")
    logs = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("*.json")]
    assert sorted(log["strength"] for log in logs) == [0.5, 0.9] and len(list((tmp_path / "out").glob("*.png"))) == 2
    keys = {
        dataclasses.replace(SETTINGS, **{name: value}).key(Job("a cat", 0))
        for name, value in (("theta", 2.0), ("eta", 0.3), ("alpha", 1.0), ("upsamplers", "x"))
    }
    assert len(keys) == 4 and SETTINGS.key(Job("a cat", 0)) not in keys
