"""What differs between the denoisers the sampling core supports: the registry of denoiser families (UNets, flow
transformers) and the flow transformers' token layouts. A new architecture is registered here."""
