"""The per-call parts of a recipe on a flow-matching transformer (FLUX.1, SD3/3.5): their token layouts, Upsample
Guidance for rectified flow, position rescaling and scale fusion on joint attention."""
