"""The README's "Where each method stands" tables, built from the headline suites of the three ground-truth models.

    python benchmarks/headline_summary.py

Reads ``benchmarks/results/headline_{pixel,latent,flux}*/headline_benchmark.json`` (made by ``hiresdiff bench
--suite headline``, each names its command; a model's scales may come from separate runs, one folder each), and the
"SR alone" rows of ``benchmarks/results/sr_{pixel,latent,flux}/sr_benchmark.json`` (``--suite sr``: the same seeds, so
the same trained-size samples, enlarged by the SR network; measured at 4× only), and
writes ``benchmarks/results/headline_summary.md``: first the README's three compact tables (semantic agreement, FD,
crop FD: a column per model and scale), then per model every method's semantic agreement with its trained-size
sample and with the condition asked for, its FD and crop FD to the held-out real images, each with its 95 % bootstrap
interval and its value on each of the two image sets, and its FLOPs relative to direct sampling. ★ marks the best
row of a column (among generated and enlarged rows), ≈ a row whose interval overlaps the best's (a tie).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hiresdiff.eval.report import cell_text, tie_marks

MODELS = {"pixel": "embedded pixel model", "latent": "emoji-latent", "flux": "emoji-flux"}
COLUMNS = ("semantic", "condition", "FD rand", "crop FD")
COMPACT = ("semantic", "FD rand", "crop FD")


def merged(paths: list[Path], only: str = "") -> dict:
    """The results of one model's runs as one: their rows, intervals, FLOPs and image counts (keys name the size), and
    their commands; ``only``: just the rows whose name contains it (and the image counts)."""
    out = {"commands": [], "rows": {}, "intervals": {}, "flops": {}, "images": {}}
    for path in paths:
        results = json.loads(path.read_text())
        out["commands"].append(results["settings"]["command"])
        out["images"].update(results["images"])
        for part in ("rows", "intervals", "flops"):
            out[part].update({k: v for k, v in results.get(part, {}).items() if only in k.split("|", 1)[-1]})
    return out


def scales_of(results: dict) -> list[int]:
    return sorted(int(r) // 32 for r in results["images"] if r != "32")


def cells_at(results: dict, scale: int, full: bool) -> dict[str, dict[str, str]]:
    """``{method: {column: cell}}`` at one scale (method names with ``M×`` for the scale): the value with its ★/≈ mark,
    and with ``full`` its interval and image-set values too; ``"FLOPs"`` relative to direct sampling."""
    res = str(32 * scale)
    rows = [(key.split("|", 1)[1], row) for key, row in results["rows"].items() if key.split("|")[0] == res]
    intervals = {name: results["intervals"].get(f"{res}|{name}", {}) for name, _ in rows}
    marks = {c: tie_marks([(n, r) for n, r in rows if "real" not in n], intervals, c) for c in COLUMNS}
    out = {}
    for name, row in rows:
        shown = intervals[name] if full else {}
        flops = results["flops"].get(f"{res}|{name}")
        out[name.replace(f"{scale}x", "M×")] = {
            **{c: cell_text(row.get(c), shown, c, marks[c].get(name, "")) for c in COLUMNS},
            "FLOPs": "—" if flops is None else f"{flops:.2f}",
        }
    return out


def table(columns: list[tuple[str, dict, str]]) -> list[str]:
    """A markdown table: a row per method in first-seen order; a column per (title, cells of one scale, key)."""
    names = list(dict.fromkeys(name for _, cells, _ in columns for name in cells))
    lines = ["| method | " + " | ".join(title for title, _, _ in columns) + " |", "|---" * (1 + len(columns)) + "|"]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(cells.get(name, {}).get(key, "—") for _, cells, key in columns) + " |")
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default="benchmarks/results")
    args = p.parse_args(argv)
    command = " ".join(["python benchmarks/headline_summary.py", *(sys.argv[1:] if argv is None else argv)])
    results = {}
    for model in MODELS:
        paths = sorted(Path(args.results).glob(f"headline_{model}*/headline_benchmark.json"))
        if not paths:
            raise SystemExit(f"no headline results for {model} under {args.results}: see this script's docstring")
        results[model] = merged(paths)
        sr = merged(sorted(Path(args.results).glob(f"sr_{model}/sr_benchmark.json")), only="SR alone")
        if sr["rows"]:  # the sr suite's trained-size samples are the headline's (same seeds): its SR-alone row joins
            for part in ("rows", "intervals", "flops"):
                results[model][part].update(sr[part])
            results[model]["commands"] += sr["commands"]
    lines = [
        "# Where each method stands: the headline suites",
        "",
        f"Made by `{command}` from the `headline_*/headline_benchmark.json` of the three models. semantic: the "
        "fraction of results whose predicted emoji subgroup is their trained-size sample's (higher is better; the "
        "enlargements score 1 by construction); condition: the fraction whose prediction is what was asked for (the "
        "pixel model's class label: its group; a prompt: its emoji's subgroup); FD rand: Fréchet distance to the "
        "held-out real images in the random-conv feature space; crop FD: the same on 32² crops (detail at the native "
        "scale); lower is better for both. [low, high]: 95 % bootstrap interval over images (FD's sits above its "
        "estimate: compare rows, not the estimate); (a / b): the value on each of two disjoint image sets with their "
        "own noise seeds; ★ best row of the column, ≈ tied with it. FLOPs: relative to direct sampling at the same "
        "size, counted on a meta twin. M×: the row's scale.",
    ]
    compact = {(m, s): cells_at(r, s, full=False) for m, r in results.items() for s in scales_of(r)}
    for metric in COMPACT:
        lines += ["", f"## {metric}", ""]
        lines += table([(f"{m} {s}×", cells, metric) for (m, s), cells in compact.items()])
    for model, one in results.items():
        scales = scales_of(one)
        full = {s: cells_at(one, s, full=True) for s in scales}
        lines += [
            "",
            f"## {MODELS[model]}",
            "",
            "Made by "
            + " and ".join(f"`{c}`" for c in one["commands"])
            + "; images per method: "
            + ", ".join(f"{one['images'][str(32 * s)]} at {32 * s}²" for s in scales)
            + ".",
            "",
        ]
        lines += table([(f"{c} {s}×", full[s], c) for s in scales for c in (*COLUMNS, "FLOPs")])
    out = Path(args.results) / "headline_summary.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
