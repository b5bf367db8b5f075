"""Confidence intervals over images: the percentile bootstrap (Efron & Tibshirani 1993, ch. 13).

A table's number is a statistic of a set of images; with another draw of images it would move. :func:`bootstrap`
resamples the images with replacement ``resamples`` times, recomputes the statistic on each resample, and returns the
estimate on all images with the (α/2, 1 − α/2) percentiles of the resampled values. :func:`tie` says whether two
such intervals overlap, in which case a table writes the difference as a tie.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from hiresdiff.checks import check_int


class Interval(NamedTuple):
    estimate: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.estimate:.3g} [{self.low:.3g}, {self.high:.3g}]"


def bootstrap(
    statistic: Callable[[torch.Tensor], float], count: int, resamples: int = 200, level: float = 0.95, seed: int = 0
) -> Interval:
    """The ``level`` percentile-bootstrap interval of ``statistic(indices)`` over ``count`` images: ``statistic`` takes
    a LongTensor of image indices (with repeats) and returns the number computed on those images."""
    check_int(count, "count", 2)
    check_int(resamples, "resamples", 2)
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1); got {level!r}")
    generator = torch.Generator().manual_seed(seed)
    values = torch.tensor([statistic(torch.randint(count, (count,), generator=generator)) for _ in range(resamples)])
    alpha = (1 - level) / 2
    low, high = torch.quantile(values.double(), torch.tensor([alpha, 1 - alpha], dtype=torch.double)).tolist()
    return Interval(statistic(torch.arange(count)), low, high)


def tie(a: Interval, b: Interval) -> bool:
    """Whether two intervals overlap (a difference between them is not established)."""
    return a.low <= b.high and b.low <= a.high
