"""diffusers adapters: pixel-space sampling, and hooks on UNets of latent pipelines."""
