"""The README's "Where each method stands" table, built from the headline suites of the three ground-truth models.

    python benchmarks/headline_summary.py

Reads ``benchmarks/results/headline_{pixel,latent,flux}*/headline_benchmark.json`` (made by ``hiresdiff bench
--suite headline``, each names its command; a model's scales may come from separate runs, one folder each) and
writes ``benchmarks/results/headline_summary.md``: per model and scale, each method's semantic agreement with its
trained-size sample, its FD and crop FD to the held-out real images, each with its 95 % bootstrap interval and its
value on each of the two image sets, and its FLOPs relative to direct sampling; ★ marks the best row of a column,
≈ a row whose interval overlaps the best's (a tie).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hiresdiff.eval.report import cell_text, tie_marks

MODELS = {"pixel": "embedded pixel model", "latent": "emoji-latent", "flux": "emoji-flux"}
COLUMNS = ("semantic", "FD rand", "crop FD")


def merged(paths: list[Path]) -> dict:
    """The results of one model's runs as one: their rows, intervals, FLOPs and image counts (keys name the size), and
    their commands."""
    out = {"commands": [], "rows": {}, "intervals": {}, "flops": {}, "images": {}}
    for path in paths:
        results = json.loads(path.read_text())
        out["commands"].append(results["settings"]["command"])
        for part in ("rows", "intervals", "flops", "images"):
            out[part].update(results.get(part, {}))
    return out


def model_table(results: dict, model: str) -> list[str]:
    scales = sorted(int(r) // 32 for r in results["images"] if r != "32")
    lines = [
        f"\n### {MODELS[model]}\n",
        "Made by "
        + " and ".join(f"`{c}`" for c in results["commands"])
        + "; images per method: "
        + ", ".join(f"{results['images'][str(32 * s)]} at {32 * s}²" for s in scales)
        + ".\n",
        "| method | " + " | ".join(f"{c} {s}×" for s in scales for c in (*COLUMNS, "FLOPs")) + " |",
        "|---" * (1 + (len(COLUMNS) + 1) * len(scales)) + "|",
    ]
    cells: dict[str, dict[int, list[str]]] = {}
    for scale in scales:
        res = str(32 * scale)
        rows = [(key.split("|", 1)[1], row) for key, row in results["rows"].items() if key.split("|")[0] == res]
        intervals = {name: results["intervals"].get(f"{res}|{name}", {}) for name, _ in rows}
        generated = [(name, row) for name, row in rows if "real" not in name]
        marks = {c: tie_marks(generated, intervals, c) for c in COLUMNS}
        for name, row in rows:
            flops = results["flops"].get(f"{res}|{name}")
            cells.setdefault(name.replace(f"{scale}x", "M×"), {})[scale] = [
                cell_text(row.get(c), intervals[name], c, marks[c].get(name, "")) for c in COLUMNS
            ] + ["—" if flops is None else f"{flops:.2f}"]
    blank = ["—"] * (len(COLUMNS) + 1)
    for name, by_scale in cells.items():
        lines.append(f"| {name} | " + " | ".join(" | ".join(by_scale.get(s, blank)) for s in scales) + " |")
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default="benchmarks/results")
    args = p.parse_args(argv)
    command = " ".join(["python benchmarks/headline_summary.py", *(sys.argv[1:] if argv is None else argv)])
    lines = [
        "# Where each method stands: the headline suites",
        "",
        f"Made by `{command}` from the three `headline_*/headline_benchmark.json`. semantic: the fraction of results "
        "whose predicted emoji subgroup is their trained-size sample's (higher is better; the enlargements score 1 by "
        "construction); FD rand: Fréchet distance to the held-out real images in the random-conv feature space; crop "
        "FD: the same on 32² crops (detail at the native scale); lower is better for both. [low, high]: 95 % "
        "bootstrap interval over images (FD's sits above its estimate: compare rows, not the estimate); (a / b): the "
        "value on each of two disjoint image sets with their own noise seeds; ★ best row, ≈ tied with it. FLOPs: "
        "relative to direct sampling at the same size, counted on a meta twin. M×: the row's scale.",
    ]
    for model in MODELS:
        paths = sorted(Path(args.results).glob(f"headline_{model}*/headline_benchmark.json"))
        if not paths:
            raise SystemExit(
                f"no headline results for {model} under {args.results}: run hiresdiff bench --suite headline"
            )
        lines += model_table(merged(paths), model)
    out = Path(args.results) / "headline_summary.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
