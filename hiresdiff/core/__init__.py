"""Pure tensor math of hiresdiff: no diffusers import here (docs/architecture.md, "Layers")."""
