"""Evaluation: image-set metrics (SWD, FD/FID, KID, cross-resolution consistency) and benchmarks."""
