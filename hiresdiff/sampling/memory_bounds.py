"""What keeps a stage's memory linear in pixels beyond what its recipe does (:func:`memory_bounds`, entered by the
sampling core around every stage): feed-forward layers over a bounded number of tokens at a time, large denoiser calls
one sample at a time (:class:`SplitBatchHook`), and the output's VAE decode tiled above the φ codec's threshold.

A transformer block's feed-forward widens every token 4× (GEGLU: 8× before its gate); at SDXL's 64²-token level
of an 8192² image that is 262,144 tokens × 5,120 values × 2 (CFG) in fp16, 5.4 GB for one intermediate. The layer
is position-wise, so running it on chunks of tokens and concatenating gives each token the same result (the same
rows of the same matrix products) while holding one chunk's intermediates. diffusers' own
``set_chunk_feed_forward`` needs the chunk to divide every layer's token count at every size; this hook takes any
count (the last chunk is shorter). It hooks every diffusers ``FeedForward`` (UNet transformer blocks, motion
modules, FLUX's dual-stream and SD3's blocks) and is removed exactly (:mod:`hiresdiff.hooks.base`).
FLUX's single-stream blocks have no ``FeedForward``: their MLP (3072 → 12,288, concatenated with the attention
output into 15,360 values a token before ``proj_out``) is inline, so :func:`single_block_hooks` run the block's
position-wise part in chunks (a FLUX.1-dev call at 4096² in bf16: 6.5 GiB of working memory without it,
5.0 GiB with it; what remains is mostly the attention: q, k, v and their normalised and rotated copies, which
diffusers computes in fp32 on the way).
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Optional

import torch
from diffusers.hooks import ModelHook
from diffusers.models.attention import FeedForward
from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock
from torch.utils._pytree import tree_map

from hiresdiff.checks import check_positive_int
from hiresdiff.hooks.base import attach, detach
from hiresdiff.sampling.codecs import tiles

CHUNK_HOOK = "hiresdiff_chunked_feed_forward"
#: Tokens per chunk: at SDXL's widest feed-forward (1280 → 2 × 5120) one chunk's intermediates are 0.3 GB in fp16.
CHUNK_TOKENS = 16384


class ChunkedFeedForwardHook(ModelHook):
    """Runs a ``FeedForward`` on at most ``tokens`` tokens (dim 1 of (B, N, C)) at a time."""

    def __init__(self, tokens: int):
        super().__init__()
        self.tokens = tokens

    def new_forward(self, module, hidden_states: torch.Tensor, *args, **kwargs):
        forward = self.fn_ref.original_forward
        if hidden_states.ndim != 3 or hidden_states.shape[1] <= self.tokens:
            return forward(hidden_states, *args, **kwargs)
        return torch.cat([forward(chunk, *args, **kwargs) for chunk in hidden_states.split(self.tokens, dim=1)], dim=1)


class SingleBlockMlp:
    """What the three hooks on one FLUX single-stream block's MLP share during a call: the block's normalised tokens,
    held from ``proj_mlp``'s call to ``proj_out``'s (the only calls in between are ``act_mlp`` and the attention)."""

    def __init__(self, block, tokens: int):
        self.block, self.tokens, self.normed = block, tokens, None


class DeferredMlpHook(ModelHook):
    """On ``proj_mlp``: keeps its input (the normalised tokens) and returns an empty MLP, which ``proj_out`` computes
    chunk by chunk (:class:`ChunkedProjectionHook`); the block's own call when the tokens fit one chunk or gradients
    are on."""

    def __init__(self, shared: SingleBlockMlp):
        super().__init__()
        self.shared = shared

    def new_forward(self, module, normed):
        if normed.ndim != 3 or normed.shape[1] <= self.shared.tokens or torch.is_grad_enabled():
            return self.fn_ref.original_forward(normed)
        self.shared.normed = normed
        return normed[..., :0]


class EmptyPassingHook(ModelHook):
    """On ``act_mlp``: passes the empty MLP of a deferred call through."""

    def new_forward(self, module, x):
        return x if x.shape[-1] == 0 else self.fn_ref.original_forward(x)


class ChunkedProjectionHook(ModelHook):
    """On ``proj_out``: for a deferred call, [attention, gelu(proj_mlp(normed))]
    → proj_out a chunk of tokens at a time."""

    def __init__(self, shared: SingleBlockMlp):
        super().__init__()
        self.shared = shared

    def new_forward(self, module, attended):
        normed, self.shared.normed = self.shared.normed, None
        if normed is None:
            return self.fn_ref.original_forward(attended)
        block, tokens = self.shared.block, self.shared.tokens
        parts = []
        for start in range(0, attended.shape[1], tokens):
            part = slice(start, start + tokens)
            mlp = type(block.act_mlp).forward(
                block.act_mlp, type(block.proj_mlp).forward(block.proj_mlp, normed[:, part])
            )
            parts.append(self.fn_ref.original_forward(torch.cat([attended[:, part], mlp], dim=2)))
        return torch.cat(parts, dim=1)


def single_block_hooks(block, tokens: int) -> list[tuple[torch.nn.Module, ModelHook]]:
    """The hooks that run a FLUX ``FluxSingleTransformerBlock``'s position-wise part on at most ``tokens`` tokens at a
    time, by wrapping its parts rather than copying its ``forward``.

    The block computes x = [text; image], (n, g) = norm(x, temb), a = attn(n), and returns
    x + g · proj_out([a, gelu(proj_mlp(n))]) split back into text and image. Only the attention mixes tokens: it runs
    once on all of them (with the block's own processor, so hiresdiff's attention processors apply); ``proj_mlp``
    hands back an empty MLP, and ``proj_out`` computes the MLP and its projection chunk by chunk, so the 12,288-wide
    MLP and the 15,360-wide concatenation exist for one chunk at a time."""
    shared = SingleBlockMlp(block, tokens)
    return [
        (block.proj_mlp, DeferredMlpHook(shared)),
        (block.act_mlp, EmptyPassingHook()),
        (block.proj_out, ChunkedProjectionHook(shared)),
    ]


@contextmanager
def chunked_feed_forward(denoiser: torch.nn.Module, tokens: int = CHUNK_TOKENS):
    """Within the block every ``FeedForward`` of ``denoiser`` (and FLUX's single-stream blocks) runs in chunks of
    ``tokens`` tokens; yields the number of layers chunked."""
    check_positive_int(tokens, "tokens")
    hooks, layers = [], 0
    for module in denoiser.modules():
        if isinstance(module, FeedForward):
            hooks.append((module, ChunkedFeedForwardHook(tokens)))
        elif isinstance(module, FluxSingleTransformerBlock):
            hooks += single_block_hooks(module, tokens)
        else:
            continue
        layers += 1
    attached = []
    try:
        for module, hook in hooks:
            attach(module, hook, CHUNK_HOOK)
            attached.append(module)
        yield layers
    finally:
        for module in reversed(attached):
            detach(module, CHUNK_HOOK)


SPLIT_HOOK = "hiresdiff_split_batch"
#: A denoiser call whose input holds more values per sample than this (4 latent channels × 256², SDXL at 2048²) runs
#: one sample at a time: its activations, CFG's two halves included, then exist for one sample only.
SPLIT_ABOVE_VALUES = 4 * 256 * 256


class SplitBatchHook(ModelHook):
    """Calls the denoiser once per sample when the sample is large, and concatenates the outputs.

    Every tensor argument whose first dimension is the batch size is cut along it (the sample, text states, pooled
    projections, SDXL's added conditions, a per-sample timestep); the rest (FLUX's position ids, a scalar timestep)
    is passed whole. Every layer treats samples independently, so the result is the same as one batched call."""

    def new_forward(self, module, *args, **kwargs):
        forward = self.fn_ref.original_forward
        first = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
        if first is None or first.shape[0] < 2 or first[0].numel() <= SPLIT_ABOVE_VALUES:
            return forward(*args, **kwargs)
        batch = first.shape[0]

        def take(value, i):
            if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == batch:
                return value[i : i + 1]
            if isinstance(value, dict):
                return {k: take(v, i) for k, v in value.items()}
            return value

        outputs = [
            forward(*[take(a, i) for a in args], **{k: take(v, i) for k, v in kwargs.items()}) for i in range(batch)
        ]
        return tree_map(lambda *parts: torch.cat(parts) if isinstance(parts[0], torch.Tensor) else parts[0], *outputs)


@contextmanager
def one_sample_at_a_time(denoiser: torch.nn.Module):
    """Within the block, calls of ``denoiser`` on large samples run one sample at a time (:class:`SplitBatchHook`)."""
    attach(denoiser, SplitBatchHook(), SPLIT_HOOK)
    try:
        yield
    finally:
        detach(denoiser, SPLIT_HOOK)


@contextmanager
def memory_bounds(denoiser: torch.nn.Module, vae=None, vae_tiling: Optional[bool] = None, pixels=(0, 0)):
    """Within the block: every feed-forward layer of ``denoiser`` on bounded chunks of tokens, its large calls one
    sample at a time (CFG's halves too), and ``vae`` (the stage that decodes its output passes it) tiled for a
    (h, w) ``pixels`` output as the φ codec decides (:func:`hiresdiff.sampling.codecs.tiles`); restored after."""
    with ExitStack() as stack:
        stack.enter_context(chunked_feed_forward(denoiser))
        stack.enter_context(one_sample_at_a_time(denoiser))
        if (
            vae is not None
            and hasattr(vae, "enable_tiling")
            and not getattr(vae, "use_tiling", False)
            and tiles(vae_tiling, pixels[0] * pixels[1])
        ):
            vae.enable_tiling()
            stack.callback(vae.disable_tiling)
        yield
