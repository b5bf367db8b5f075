"""What bounds a stage's memory: feed-forward layers in chunks of tokens and large calls one sample at a time give the
same output for a fraction of the memory, and come off exactly."""

import pytest
import torch
from diffusers.models.attention import FeedForward
from hook_helpers import assert_same_snapshot, unet_snapshot
from tiny_pipelines import load

from hiresdiff.cost.counting import Counter
from hiresdiff.sampling.memory_bounds import chunked_feed_forward


def test_chunks_give_every_token_the_same_result_and_the_hooks_come_off():
    pipe = load("sd15")
    unet = pipe.unet
    before = unet_snapshot(unet)
    g = torch.Generator().manual_seed(0)
    sample, text = torch.randn(2, 4, 32, 32, generator=g), torch.randn(2, 16, 32, generator=g)
    with torch.no_grad():
        whole = unet(sample, 500, encoder_hidden_states=text).sample
        with chunked_feed_forward(unet, tokens=7) as layers:  # 16² tokens at the attention level: 37 chunks, the last 4
            chunked = unet(sample, 500, encoder_hidden_states=text).sample
    assert layers > 0
    assert torch.allclose(chunked, whole, atol=1e-6)
    assert_same_snapshot(unet_snapshot(unet), before)
    with pytest.raises(ValueError, match="tokens must be a positive int"):
        with chunked_feed_forward(unet, tokens=0):
            pass


def test_a_chunked_feed_forward_holds_one_chunks_intermediates():
    """GEGLU widens 32 channels to 2 × 128: 4,096 tokens hold 8 MiB of intermediates at once, 1,024-token chunks a
    quarter of that (counted on meta); the output itself is the same size either way."""
    layer = FeedForward(32, mult=4, activation_fn="geglu").to("meta")
    x = torch.empty(2, 4096, 32, device="meta")

    def peak(tokens=None) -> int:
        with torch.inference_mode(), Counter() as counter:
            if tokens is None:
                layer(x)
            else:
                with chunked_feed_forward(layer, tokens=tokens):
                    layer(x)
        return counter.total.peak_bytes

    whole, chunked = peak(), peak(1024)
    output = 2 * 4096 * 32 * 4
    assert whole >= 2 * 4096 * 256 * 4  # the widened projection alone
    assert chunked - 2 * output < 0.3 * (whole - output)


@pytest.mark.parametrize("kind", ["sdxl", "flux"])
def test_large_calls_one_sample_at_a_time_equal_the_batched_call(kind, monkeypatch):
    """With the threshold lowered so that the tiny models' calls count as large: a batched SDXL call (sample, text
    states, added conditions) and a FLUX call (packed tokens, per-sample timestep and guidance, shared position ids)
    give what one call per sample gives, concatenated."""
    from hiresdiff.sampling import memory_bounds as module
    from hiresdiff.sampling.memory_bounds import one_sample_at_a_time

    monkeypatch.setattr(module, "SPLIT_ABOVE_VALUES", 0)
    pipe = load(kind)
    g = torch.Generator().manual_seed(0)
    if kind == "sdxl":
        denoiser = pipe.unet
        kwargs = dict(
            sample=torch.randn(2, 4, 16, 16, generator=g),
            timestep=torch.tensor(500),
            encoder_hidden_states=torch.randn(2, 16, 64, generator=g),
            added_cond_kwargs={
                "text_embeds": torch.randn(2, 32, generator=g),
                "time_ids": torch.randn(2, 6, generator=g),
            },
        )
    else:
        denoiser = pipe.transformer
        kwargs = dict(
            hidden_states=torch.randn(2, 16, 16, generator=g),
            timestep=torch.tensor([0.5, 0.7]),
            guidance=torch.tensor([4.0, 4.0]) if denoiser.config.guidance_embeds else None,
            pooled_projections=torch.randn(2, 32, generator=g),
            encoder_hidden_states=torch.randn(2, 16, 64, generator=g),
            txt_ids=torch.zeros(16, 3),
            img_ids=torch.zeros(16, 3),
        )
    calls = []  # the batch each call of the denoiser's own forward sees, from its first layer
    first_layer = denoiser.conv_in if kind == "sdxl" else denoiser.x_embedder
    handle = first_layer.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    with torch.no_grad():
        whole = denoiser(**kwargs, return_dict=False)[0]
        with one_sample_at_a_time(denoiser):
            split = denoiser(**kwargs, return_dict=False)[0]
    handle.remove()
    assert calls == [2, 1, 1] and not hasattr(denoiser, "_diffusers_hook")
    assert torch.allclose(split, whole, atol=1e-5)


def test_flux_single_stream_blocks_run_in_chunks_with_the_same_output():
    """FLUX's single-stream blocks have their MLP inline (no FeedForward):
    hooks on the block's parts (proj_mlp, act_mlp,
    proj_out) leave the attention on all tokens and run the rest in chunks — the same output as the unhooked
    transformer, with gradients on too (where they fall back to the parts' own forwards), and the hooks come off.
    The block's forward is diffusers' own: this test is the one that fails when diffusers changes that forward in a
    way the wrapped parts cannot follow."""
    from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock

    transformer = load("flux").transformer
    g = torch.Generator().manual_seed(0)
    kwargs = dict(
        hidden_states=torch.randn(2, 16, 16, generator=g),
        timestep=torch.tensor([0.5, 0.7]),
        guidance=torch.tensor([4.0, 4.0]) if transformer.config.guidance_embeds else None,
        pooled_projections=torch.randn(2, 32, generator=g),
        encoder_hidden_states=torch.randn(2, 16, 64, generator=g),
        txt_ids=torch.zeros(16, 3),
        img_ids=torch.randn(16, 3, generator=g),
    )
    singles = [m for m in transformer.modules() if isinstance(m, FluxSingleTransformerBlock)]
    assert singles
    with torch.no_grad():
        whole = transformer(**kwargs, return_dict=False)[0]
        with chunked_feed_forward(transformer, tokens=5) as layers:  # 32 tokens: chunks of 5, the last 2
            parts = [part for m in singles for part in (m.proj_mlp, m.act_mlp, m.proj_out)]
            assert all(hasattr(part, "_diffusers_hook") for part in parts) and not any(
                vars(m).get("forward") for m in singles
            )
            chunked = transformer(**kwargs, return_dict=False)[0]
    assert layers >= len(singles) + 1 and not any(hasattr(part, "_diffusers_hook") for part in parts)
    assert torch.allclose(chunked, whole, atol=1e-6)
    with chunked_feed_forward(transformer, tokens=5):
        graded = transformer(**kwargs, return_dict=False)[0]
    assert graded.requires_grad and torch.allclose(graded, whole, atol=1e-6)


def test_a_chunked_flux_single_block_holds_a_fraction_of_its_mlp():
    """A single-stream block of width 64 over 4,096 tokens: unchunked it holds the 256-wide MLP twice and the 320-wide
    concatenation; in 512-token chunks its peak above the block's own inputs and outputs is under half
    (counted on meta)."""
    from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock

    block = FluxSingleTransformerBlock(64, 2, 32).to("meta")
    image, text, temb = (
        torch.empty(1, 4096 - 16, 64, device="meta"),
        torch.empty(1, 16, 64, device="meta"),
        torch.empty(1, 64, device="meta"),
    )

    def peak(tokens=None) -> int:
        with torch.inference_mode(), Counter() as counter:
            if tokens is None:
                block(image, text, temb)
            else:
                with chunked_feed_forward(block, tokens=tokens):
                    block(image, text, temb)
        return counter.total.peak_bytes

    whole, chunked = peak(), peak(512)
    assert whole >= 4096 * (2 * 256 + 320) * 4
    assert chunked < 0.5 * whole
