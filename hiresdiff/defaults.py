"""The method names and defaults that the API and the command line share, in a module that imports nothing:
the CLI parses (and answers ``--help``) before torch and diffusers load."""

PRESETS = ("naive", "ug", "self-cascade", "freescale")  # Recipe.preset names; "a+b" composes them
COMPARISON_METHODS = ("naive", "ug", "self-cascade", "freescale", "self-cascade+ug")  # the main job's columns
DEFAULT_STEPS = 20  # sampling steps on pixel models (pipelines: 30)
DEFAULT_SCHEDULER = "sde-dpm++"  # on pixel models (pipelines: their own)
