"""The one sampling core: the stage loop of ``generate``, the restart of a later stage, noise levels, the φ codecs,
memory bounds, schedulers by name, and upscaling a given image."""
