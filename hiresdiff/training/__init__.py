"""Training the models hiresdiff ships (pixel, latent, flow, feature upsamplers): one resumable loop and a recipe per
model. Nothing in the runtime imports this package."""
