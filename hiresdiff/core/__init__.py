"""Pure tensor math of hiresdiff: no diffusers import here (DESIGN.md §4)."""
