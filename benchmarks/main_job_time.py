"""Where the main job's time goes: `hiresdiff generate` (no arguments) end to end, its imports, the model load and
each column of its grid.

    python benchmarks/main_job_time.py --repeats 3

Run it on an idle machine. End to end: ``hiresdiff generate --force`` in a fresh process, ``--repeats`` times (the
median is the README's number). Imports: a fresh process importing what the command imports before it samples.
The rest in this process, as the command runs it: loading the embedded model, then :func:`hiresdiff.comparison.
comparison` with the command's defaults, timed between its columns. Writes ``benchmarks/results/main_job_time.md``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMPORTS = "import hiresdiff.cli, hiresdiff.comparison, hiresdiff.grid, diffusers, torch"


def wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="benchmarks/results/main_job_time.md")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        grid = str(Path(tmp) / "grid.png")
        totals = [
            wall([sys.executable, "-m", "hiresdiff", "generate", "--force", "--out", grid]) for _ in range(args.repeats)
        ]
    imports = [wall([sys.executable, "-c", IMPORTS]) for _ in range(args.repeats)]
    bare = [wall([sys.executable, "-c", "pass"]) for _ in range(args.repeats)]

    import torch

    from hiresdiff.comparison import comparison
    from hiresdiff.defaults import DEFAULT_SCHEDULER
    from hiresdiff.loading.pixel_model import load_pixel_model
    from hiresdiff.models import EMBEDDED_MODEL_DIR

    start = time.perf_counter()
    load_pixel_model(EMBEDDED_MODEL_DIR, DEFAULT_SCHEDULER, "cpu", torch.float32)
    load = time.perf_counter() - start
    marks = [("start", time.perf_counter())]
    comparison(progress=False, on_column=lambda label, images: marks.append((label, time.perf_counter())))
    columns = [(label, t - marks[i][1]) for i, (label, t) in enumerate(marks[1:])]

    lines = [
        "# Where the main job's time goes\n",
        f"Made by `python benchmarks/main_job_time.py {' '.join(sys.argv[1:])}` ({args.repeats} runs each; medians).\n",
        "| part | seconds |",
        "|---|---|",
        f"| `hiresdiff generate --force`, end to end | {statistics.median(totals):.1f} "
        f"(runs: {', '.join(f'{t:.1f}' for t in totals)}) |",
        f"| Python start-up | {statistics.median(bare):.2f} |",
        f"| imports (`{IMPORTS}`), start-up included | {statistics.median(imports):.2f} |",
        f"| loading the embedded model and its scheduler | {load:.2f} |",
    ]
    lines += [
        f"| column: {label}{' (with the model load inside `comparison`)' if i == 0 else ''} | {seconds:.2f} |"
        for i, (label, seconds) in enumerate(columns)
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
