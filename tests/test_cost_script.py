"""benchmarks/cost.py: the memory probes it uses (hiresdiff.cost.measured) and one real run on a tiny saved pipeline."""

import ctypes
import gc
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from hiresdiff.cost import measured

ROOT = Path(__file__).resolve().parents[1]


def settle_heap() -> None:
    """Free what earlier tests left for collection and return the heap's free pages to the kernel now: pages the
    allocator releases later (by madvise) lower the resident set without the kernel's peak noticing, which made
    the growth below depend on what ran before."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def test_cpu_peak_is_reset_after_loading_and_sees_a_new_allocation():
    big = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    del big
    settle_heap()
    measured.reset_peak("cpu")
    base = measured.peak("cpu")  # the peak right after the reset: the resident set now
    assert base - measured.memory_now("cpu") < 16 * 2**20  # the earlier 64 MiB peak is forgotten
    block = np.ones(96 * 2**20 // 8)
    grown = measured.peak("cpu") - base
    del block
    assert 90 * 2**20 < grown < 140 * 2**20


def test_cost_script_writes_rows_a_table_and_a_plot(tmp_path):
    from tiny_pipelines import load

    folder = tmp_path / "tiny_sd15"
    load("sd15").save_pretrained(folder)
    out = tmp_path / "cost.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "cost.py"),
            "--pipeline-dir",
            str(folder),
            "--sizes",
            "24",
            "32",
            "--recipes",
            "naive",
            "ug",
            "--steps",
            "2",
            "--threads",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    assert data["finished"] is True
    rows = {(r["height"], r["recipe"]): r for r in data["rows"]}
    assert set(rows) == {(24, "naive"), (24, "ug"), (32, "naive"), (32, "ug")}
    for key in ("arch", "recipe", "height", "width", "steps", "seconds", "ratio_to_naive", "working_bytes", "device"):
        assert key in rows[(32, "ug")]
    assert rows[(32, "naive")]["ratio_to_naive"] == 1.0 and rows[(32, "ug")]["seconds"] > 0
    assert rows[(32, "ug")]["working_bytes"] > 0
    assert "integer scales" in rows[(24, "ug")]["error"]  # 1.5x: UG refuses before any UNet call; the row says so
    table = out.with_suffix(".md").read_text()
    assert "cost.py --pipeline-dir" in table and "| 32² | ug |" in table
    assert out.with_suffix(".png").stat().st_size > 0


def test_rows_so_far_are_medians_and_have_no_ratio_before_naive_ran():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import cost

    args = SimpleNamespace(steps=2, device="cpu", dtype="fp32")
    run = lambda seconds: {"seconds": seconds, "working_bytes": 100, "loaded_bytes": 10}  # noqa: E731
    runs = {
        (64, "ug"): [run(3.0), run(5.0), run(4.5)],
        (64, "naive"): [],
        (32, "naive"): [run(2.0)],
        (32, "ug"): [run(3.0)],
        (32, "freescale"): [{"error": "no"}],
    }
    rows = {(r["height"], r["recipe"]): r for r in cost.summarize(runs, args, "tiny")}
    assert set(rows) == {(64, "ug"), (32, "naive"), (32, "ug"), (32, "freescale")}  # nothing for a case not yet run
    assert rows[(64, "ug")]["seconds"] == 4.5 and rows[(64, "ug")]["ratio_to_naive"] is None
    assert rows[(32, "ug")]["ratio_to_naive"] == 1.5 and rows[(32, "freescale")]["error"] == "no"
