"""Loading what a run samples with: diffusers pipelines (local folders, hub ids, the shipped models' names), pixel
models as pipelines, super-resolution networks."""
