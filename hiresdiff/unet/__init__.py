"""The per-call parts of a recipe on a UNet (SD 1.x/2.x, SDXL, AnimateDiff, pixel ``UNet2DModel``): Upsample Guidance,
its low-resolution call, FreeScale's dilation and scale fusion, Self-Cascade's feature upsamplers."""
