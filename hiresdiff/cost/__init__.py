"""Cost of a run without running it: FLOPs and working memory counted on the ``meta`` device
(:mod:`~hiresdiff.cost.counting`, :mod:`~hiresdiff.cost.meta_run`), the real SD 1.5 / SDXL architectures from
their published configs (:mod:`~hiresdiff.cost.architectures`), the prediction ``hiresdiff plan`` prints
(:mod:`~hiresdiff.cost.plan`) and the measurements it is checked against (:mod:`~hiresdiff.cost.measured`)."""
