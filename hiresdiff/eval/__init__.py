"""Evaluation: image-set metrics (SWD, FD/FID, KID, cross-resolution consistency, crop distances, semantic agreement,
bootstrap intervals) and benchmarks."""

from hiresdiff.eval.metrics.semantic import condition_agreement, semantic_agreement

__all__ = ["semantic_agreement", "condition_agreement"]
