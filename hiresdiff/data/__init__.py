"""Data sets with ground truth at several resolutions."""
