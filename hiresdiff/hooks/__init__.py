"""Hook plumbing every denoiser family shares: the hook base on diffusers' ``HookRegistry`` and the per-call context."""
