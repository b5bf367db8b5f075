"""Tables and plots of benchmark results (markdown, matplotlib PNG)."""

from __future__ import annotations

import math
from pathlib import Path

from hiresdiff.eval.metrics.intervals import Interval, tie


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


HIGHER_IS_BETTER = ("semantic", "condition")
NO_DIRECTION = ("detail ×real",)  # 1 is right, above is grain and below blur: no row is "best" by its value


def cell_text(value, intervals: dict, metric: str, mark: str = "") -> str:
    """A value, with its bootstrap interval in brackets, its value on each image set in parentheses, and ``mark``."""
    text = _fmt(value)
    if metric in intervals:
        low, high = intervals[metric]
        text += f" [{_fmt(low)}, {_fmt(high)}]"
    if f"{metric} by set" in intervals:
        text += " (" + " / ".join(_fmt(v) for v in intervals[f"{metric} by set"]) + ")"
    return text + mark


def tie_marks(rows: list, intervals: dict, metric: str) -> dict:
    """``{name: mark}`` for one metric of one table: ★ on the best row among those with an interval, ≈ on the rows whose
    interval overlaps the best's (:func:`~hiresdiff.eval.metrics.intervals.tie`: the difference is not established).
    The enlargements (``1x->`` in their names) keep their trained-size sample by construction: they take no part in
    the semantic agreement's ranking."""
    with_interval = [
        (name, row[metric], intervals[name][metric])
        for name, row in rows
        if metric in intervals[name] and not (metric == "semantic" and "1x->" in name)
    ]
    if not with_interval or metric in NO_DIRECTION:
        return {}
    pick = max if metric in HIGHER_IS_BETTER else min
    best, value, (low, high) = pick(with_interval, key=lambda item: item[1])
    marks = {name: " ≈" for name, v, (lo, hi) in with_interval if tie(Interval(v, lo, hi), Interval(value, low, high))}
    return {**marks, best: " ★"}


def markdown_table(results: dict) -> str:
    """One markdown table per resolution: a row per method, a column per metric, plus s/image."""
    s = results["settings"]
    title = "Upsample Guidance" if s.get("suite", "ug") == "ug" else "All methods"
    lines = [
        f"# {title} benchmark ({s.get('model') or 'embedded emoji model'})\n",
        f"Made by `{s['command'] or 'hiresdiff bench'}` — seed {s['seed']}, images per method: "
        + ", ".join(f"{n} at {r}²" for r, n in results["images"].items())
        + ", "
        f"{s['steps']} {s['scheduler']} steps. Real images: held-out test split at each size. "
        "SWD ×1e3 per Laplacian level (finest first); FD/KID in the random-conv feature space; "
        "detail ×real = energy of the finest Laplacian band relative to the real test images (> 1 grainy, < 1 blurry); "
        "paired RMSE = median RMSE(D[sample], trained-size sample from the same noise); crop FD = FD of 32² crops "
        "(detail at the native scale); semantic = fraction whose predicted emoji subgroup is their trained-size "
        "sample's (higher is better); [low, high] = 95 % bootstrap interval over images (FD's resamples repeat "
        "images, which raises FD: its interval sits above the estimate and gives the spread, to compare rows of one "
        "table); (a / b) = the value on each half of the images, two disjoint image sets with their own noise seeds; "
        "★ = the best row among those with an interval, ≈ = its interval overlaps the best's (a tie); lower is "
        "better everywhere else. s/image: wall time per image (the enlarged rows reuse the trained-size samples); "
        "×naive: its ratio to naive sampling at the same size.\n",
    ]
    by_res: dict[str, list] = {}
    for key, row in results["rows"].items():
        res, name = key.split("|", 1)
        by_res.setdefault(res, []).append((name, row))
    for res, rows in sorted(by_res.items(), key=lambda kv: int(kv[0])):
        metrics = list(dict.fromkeys(k for _, row in rows for k in row if k != "θ"))
        lines.append(f"\n## {res}²\n")
        flops = results.get("flops")
        lines.append(
            "| method | " + " | ".join(metrics) + " | s/image | ×naive |" + (" FLOPs ×direct |" if flops else "")
        )
        lines.append("|---" * (len(metrics) + 3 + bool(flops)) + "|")
        naive = results["timing"].get(f"{res}|naive {int(res) // 32}x")
        intervals = {name: results.get("intervals", {}).get(f"{res}|{name}", {}) for name, _ in rows}
        marks = {m: tie_marks(rows, intervals, m) for m in metrics}
        for name, row in rows:
            t = results["timing"].get(f"{res}|{name}")
            ratio = t / naive if t is not None and naive else None
            lines.append(
                f"| {name} | "
                + " | ".join(cell_text(row.get(m), intervals[name], m, marks[m].get(name, "")) for m in metrics)
                + f" | {_fmt(t)} | {_fmt(ratio)} |"
                + (f" {_fmt(flops.get(f'{res}|{name}'))} |" if flops else "")
            )
    return "\n".join(lines) + "\n"


def theta_plot(results: dict, path: Path) -> None:
    """Metric vs θ per resolution (θ = 0 is naive), with bicubic enlargement and the real floor as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = ["SWD mean", "FD rand", "detail ×real", "paired RMSE"]
    variants = ("η", "without", "linear", "nested")  # not on the θ curve (step schedule, η = 1)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    resolutions = sorted({int(k.split("|")[0]) for k in results["rows"]} - {32})
    for ax, metric in zip(axes, panels):
        for i, res in enumerate(resolutions):
            color = f"C{i}"
            pts = sorted(
                (row["θ"], row[metric])
                for key, row in results["rows"].items()
                if key.startswith(f"{res}|") and row.get("θ") is not None and not any(v in key for v in variants)
            )
            if pts:
                ax.plot(*zip(*pts), "o-", color=color, label=f"{res}² UG (θ=0: naive)")
            for key, style, label in (
                (f"{res}|bicubic 1x->{res // 32}x", "--", "bicubic 1×"),
                (f"{res}|real train vs test", ":", "real floor"),
            ):
                value = results["rows"].get(key, {}).get(metric)
                if value is not None and not math.isnan(value):
                    ax.axhline(value, color=color, linestyle=style, linewidth=1, label=f"{res}² {label}")
        ax.set_xlabel("θ")
        ax.set_title(metric)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"UG θ sweep — {results['settings']['command'] or 'hiresdiff bench'}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def quality_time_plot(results: dict, path: Path, cost: str = "time") -> None:
    """Quality against cost, one point per method and resolution. ``cost="time"``: FD rand and SWD mean against
    s/image relative to naive (the enlargements, which reuse the trained-size samples, left out). ``"flops"``: the
    Pareto plots — semantic agreement, the finest Laplacian level's SWD and FD rand against the FLOPs relative to direct
    sampling, every row with a count (the enlargements and SR alone included), with the front of the points no other
    point beats on both axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = ["FD rand", "SWD mean"] if cost == "time" else ["semantic", "SWD finest", "FD rand"]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.6))
    resolutions = sorted({int(k.split("|")[0]) for k in results["rows"]} - {32})
    for ax, panel in zip(axes, panels):
        higher = panel == "semantic"
        for i, res in enumerate(resolutions):
            metric = f"SWD {res}" if panel == "SWD finest" else panel
            points = []
            for key, row in results["rows"].items():
                name = key.split("|", 1)[1]
                x = _relative_cost(results, key, res, cost)
                if not key.startswith(f"{res}|") or x is None or row.get(metric) is None:
                    continue
                if cost == "time" and "->" in name:
                    continue
                points.append((x, row[metric]))
                ax.scatter(x, row[metric], color=f"C{i}", s=14)
                ax.annotate(name, (x, row[metric]), fontsize=5.5)
            if cost == "flops" and points:
                sign = -1 if higher else 1
                front = [
                    p for p in sorted(points) if not any(q[0] <= p[0] and sign * q[1] < sign * p[1] for q in points)
                ]
                ax.plot(*zip(*front), color=f"C{i}", linewidth=0.8, label=f"{res}² Pareto front")
            floor = results["rows"].get(f"{res}|real train vs test", {}).get(metric)
            if floor is not None:
                ax.axhline(floor, color=f"C{i}", linestyle=":", linewidth=1, label=f"{res}² real floor")
            nearest = results["rows"].get(f"{res}|nearest 1x->{res // 32}x", {}).get(metric)
            if nearest is not None and cost == "time":
                ax.axhline(nearest, color=f"C{i}", linestyle="--", linewidth=1, label=f"{res}² nearest 1×")
        ax.set_xlabel(
            "s/image ÷ naive at the same size" if cost == "time" else "FLOPs ÷ direct sampling at the same size"
        )
        if cost == "flops":
            ax.set_xscale("log")
        label = "SWD at the finest level" if panel == "SWD finest" else panel
        ax.set_title(f"{label} ({'higher' if higher else 'lower'} is better)")
        ax.legend(fontsize=7)
    fig.suptitle(
        f"quality against {'time' if cost == 'time' else 'FLOPs'} — "
        f"{results['settings']['command'] or 'hiresdiff bench'}",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _relative_cost(results: dict, key: str, res: int, cost: str):
    """A row's time over naive's at its size (``"time"``) or its FLOPs over direct sampling's (``"flops"``)."""
    if cost == "flops":
        return results.get("flops", {}).get(key)
    naive, t = results["timing"].get(f"{res}|naive {res // 32}x"), results["timing"].get(key)
    return t / naive if t is not None and naive else None
