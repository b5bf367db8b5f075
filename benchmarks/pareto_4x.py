"""One Pareto plot per owned model at 4×: every method and every part's ablation measured at 128² on the same seeds.

    python benchmarks/pareto_4x.py

Merges the 4× rows of the headline, sr and refine suites of each model (``benchmarks/results/{headline,sr,refine}_
{pixel,latent,flux}*/…_benchmark.json``: the same seeds, so the same trained-size samples and the same images for a
method they share) and draws semantic agreement, the finest level's SWD and FD against FLOPs relative to direct
sampling (:func:`hiresdiff.eval.report.quality_time_plot`), the enlargements and SR alone included, into
``benchmarks/results/pareto_4x_{model}.png``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from headline_summary import MODELS, merged

from hiresdiff.eval.report import quality_time_plot

SUITES = ("headline", "sr", "refine")


def main() -> None:
    results_dir = Path("benchmarks/results")
    command = " ".join(["python benchmarks/pareto_4x.py", *sys.argv[1:]])
    for model in MODELS:
        paths = [p for suite in SUITES for p in sorted(results_dir.glob(f"{suite}_{model}*/{suite}_benchmark.json"))]
        results = merged([p for p in paths if "_8x" not in str(p)])
        keep = {key for key in results["rows"] if key.startswith("128|")}
        results = {part: {k: v for k, v in results[part].items() if k in keep} for part in ("rows", "flops")}
        results["settings"] = {"command": f"{command} ({model}: {', '.join(str(p.parent.name) for p in paths)})"}
        out = results_dir / f"pareto_4x_{model}.png"
        quality_time_plot(results, out, cost="flops")
        print(f"wrote {out}: {len(keep)} rows")


if __name__ == "__main__":
    main()
