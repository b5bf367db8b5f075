"""Hook plumbing every denoiser family shares: the hook base on diffusers' ``HookRegistry``, the per-call context, and the
registry of supported denoiser families (what differs between a UNet and a flow transformer)."""
