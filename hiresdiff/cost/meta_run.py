"""Run a real pipeline call with its models computing on the ``meta`` device (shapes only).

A diffusers pipeline cannot run wholly on ``meta``: its schedulers index tables with timesteps (``.item()``).
:func:`models_on_meta` keeps everything the pipeline does itself (tokenizing, scheduler steps, guidance, the
cascade's restarts and detail blends) on the CPU, on real tensors of the real sizes, and runs only its models
(denoiser, VAE, text encoders) on ``meta``: their inputs are moved there, and what they return comes back as
zeros on the CPU of the same shape and dtype. Every hook, attention processor and dilated conv hiresdiff
attaches to a stage runs inside the denoiser's call, so a recipe's real work at real sizes is executed, without
the arithmetic. With :class:`hiresdiff.cost.counting.Counter` around it, that gives the FLOPs and working memory
of a run of any size. :func:`meta_twin` makes such a pipeline from any loaded one.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Optional

import torch
from diffusers.hooks import ModelHook
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from torch.utils._pytree import tree_leaves, tree_map

from hiresdiff.core.step_fraction import in_window
from hiresdiff.denoisers.registry import family_of, find_denoiser
from hiresdiff.hooks.base import attach, detach
from hiresdiff.hooks.call_context import current_call

HOOK = "hiresdiff_meta_execution"
VAE_METHODS = ("encode", "decode")
#: A tiled VAE's seam blends: elementwise (no FLOPs), one row or column of the seam at a time (a row's memory), and
#: on ``meta`` one dispatched operation per row — on a meta twin they are skipped, which changes no count but a row.
VAE_BLENDS = ("blend_v", "blend_h", "blend_t")


def unblended(a, b, blend_extent):
    """A seam blend that leaves ``b`` as it is (:data:`VAE_BLENDS`)."""
    return b


def to_meta(value):
    return value.to("meta") if isinstance(value, torch.Tensor) else value


def as_cpu_zeros(value):
    """A ``meta`` result as zeros on the CPU (a VAE's latent distribution rebuilt from zero parameters)."""
    if isinstance(value, DiagonalGaussianDistribution):
        return DiagonalGaussianDistribution(as_cpu_zeros(value.parameters))
    if isinstance(value, torch.Tensor) and value.device.type == "meta":
        return torch.zeros(value.shape, dtype=value.dtype)
    return value


def _zeros(output):
    return tree_map(as_cpu_zeros, output, is_leaf=lambda v: isinstance(v, DiagonalGaussianDistribution))


def on_meta(function):
    """``function`` with tensor arguments moved to ``meta`` and ``meta`` results returned as CPU zeros."""

    def run(*args, **kwargs):
        args, kwargs = tree_map(to_meta, (args, kwargs))
        return _zeros(function(*args, **kwargs))

    return run


class MetaExecutionHook(ModelHook):
    """The innermost hook on a model: its own forward runs on ``meta`` (see the module docstring)."""

    def pre_forward(self, module, *args, **kwargs):
        return tree_map(to_meta, (args, kwargs))

    def post_forward(self, module, output):
        return _zeros(output)


@dataclass(frozen=True)
class _Spec:
    """A tensor's shape, dtype and device, kept instead of the tensor (which would stay counted as held)."""

    shape: tuple
    dtype: torch.dtype
    device: torch.device


def _specs(output):
    return tree_map(lambda v: _Spec(tuple(v.shape), v.dtype, v.device) if isinstance(v, torch.Tensor) else v, output)


def _zeros_of(specs):
    def zeros(v):
        return torch.zeros(v.shape, dtype=v.dtype, device=v.device) if isinstance(v, _Spec) else v

    return tree_map(zeros, specs)


class CallMemo:
    """Counts each kind of call of a model once. Two denoiser calls cost the same when their tensors have the same
    shapes and they run at the same size and scale with the same windows open — the windows being the recipe's
    step-fraction edges (``edges``: dilation's and the position rescaling's ``until``), so a call's kind is how many
    edges its step fraction has passed; a call without hiresdiff's call context (no part can act in it), a VAE's
    encoder or decoder (its tiles) and a flow transformer's attention processor (scale fusion's windows) by their
    shapes alone. A denoiser's repeated blocks (:func:`repeated_blocks`) are counted once per kind across blocks:
    blocks of one :func:`block_kind` given tensors of the same shapes in the same call do the same work (SDXL's ten
    transformer blocks of a level, FLUX's 19 and 38). A repeat adds the first one's FLOPs to ``counter`` without
    running, and its peak (the bytes it held above those held before it) on top of the bytes held at the repeat, so a
    plan costs a few calls whatever its steps, tiles and blocks."""

    def __init__(self, counter, edges: Sequence[float]):
        self.counter, self.edges = counter, tuple(edges)
        self.seen: dict = {}

    def key(self, module, args, kwargs, denoiser=None):
        """The kind of a call of ``module``; ``denoiser``: the model whose call a block's runs inside (the block is
        then keyed by its :func:`block_kind`, not by itself)."""
        shapes = tuple((tuple(t.shape), t.dtype) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor))
        identity = id(module) if denoiser is None else block_kind(module)
        call = current_call(module if denoiser is None else denoiser)
        if call is None:
            return identity, shapes
        passed = sum(not in_window(call.progress, edge) for edge in self.edges)
        return identity, shapes, tuple(call.size), tuple(call.scale), passed

    def run(self, module, forward, args, kwargs, denoiser=None):
        """``forward(*args, **kwargs)`` counted once per kind of call (see the class docstring)."""
        key = self.key(module, args, kwargs, denoiser)
        if key in self.seen:
            cost, specs = self.seen[key]
            self.counter.repeat_call(cost)
            return _zeros_of(specs)
        started = self.counter.start_call()
        output = forward(*args, **kwargs)
        self.seen[key] = (self.counter.end_call(started), _specs(output))
        return output


class MemoizedExecutionHook(ModelHook):
    """A denoiser's :class:`MetaExecutionHook` that runs each kind of call once (:class:`CallMemo`)."""

    def __init__(self, memo: CallMemo):
        super().__init__()
        self.memo = memo

    def new_forward(self, module, *args, **kwargs):
        def forward(*args, **kwargs):
            args, kwargs = tree_map(to_meta, (args, kwargs))
            return _zeros(self.fn_ref.original_forward(*args, **kwargs))

        return self.memo.run(module, forward, args, kwargs)


def memoized_processor(original, memo: CallMemo):
    """``original`` (an attention processor) counted once per kind of call (its attention module and its tensors'
    shapes: attention's work depends on nothing else), for the joint scale fusion processor to wrap, so that its
    windows of one shape are counted once. It keeps ``original``'s signature: diffusers passes a processor only the
    keyword arguments its ``__call__`` names."""
    signature = inspect.signature(original.__call__)

    def __call__(self, attn, *args, **kwargs):
        return memo.run(attn, lambda *a, **k: original(attn, *a, **k), args, kwargs)

    first = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    __call__.__signature__ = signature.replace(parameters=[first, *signature.parameters.values()])
    return type(f"Memoized{type(original).__name__}", (), {"__call__": __call__, "original": original})()


@contextmanager
def attention_counted_once(transformer, memo: CallMemo):
    """Within the block, every attention processor of a flow ``transformer`` is a :func:`memoized_processor`; the
    originals are put back afterwards. (Not on a UNet: its scale fusion attends the windows of diffusers' plain
    processor in batches of its own, without calling the processor, and takes another path for any other.)"""
    layers = [m for m in transformer.modules() if callable(getattr(m, "processor", None))]
    originals = [layer.processor for layer in layers]
    try:
        for layer, original in zip(layers, originals):
            layer.processor = memoized_processor(original, memo)
        yield
    finally:
        for layer, original in zip(layers, originals):
            layer.processor = original


def causal(part: torch.nn.Module) -> bool:
    """Whether a VAE's encoder or decoder works through a clip chunk by chunk with a cache of the previous chunks, which
    it reads and fills (Wan's causal 3D VAE: ``feat_cache``, ``feat_idx``)."""
    return "feat_cache" in inspect.signature(part.forward).parameters


def _cache_state(cache) -> tuple:
    """What each entry of a causal part's chunk cache holds: a tensor (by shape, dtype, device), a marker or nothing."""
    return tuple(_Spec(tuple(e.shape), e.dtype, e.device) if isinstance(e, torch.Tensor) else e for e in cache)


class CausalPartHook(ModelHook):
    """A causal VAE part (:func:`causal`) on meta, each kind of call once: what a call returns depends on its chunk
    cache as well as on its tensors' shapes and flags (the first chunk's), so the cache's state and index are part of
    the call's kind, and a repeat leaves the cache as the call it repeats left it."""

    def __init__(self, memo: CallMemo):
        super().__init__()
        self.memo = memo

    def new_forward(self, module, x, feat_cache=None, feat_idx=None, **flags):
        memo = self.memo
        key = (id(module), tuple(x.shape), x.dtype, tuple(sorted(flags.items())), _cache_state(feat_cache), feat_idx[0])
        if key in memo.seen:
            cost, specs, after, index = memo.seen[key]
            memo.counter.repeat_call(cost)
            feat_cache[:] = _zeros_of(list(after))
            feat_idx[0] = index
            return _zeros_of(specs)
        started = memo.counter.start_call()
        output = self.fn_ref.original_forward(x, feat_cache=feat_cache, feat_idx=feat_idx, **flags)
        memo.seen[key] = (memo.counter.end_call(started), _specs(output), _cache_state(feat_cache), feat_idx[0])
        return output


class MemoizedPartHook(ModelHook):
    """A part of a model running on ``meta``: each kind of call once — a VAE's encoder or decoder (its tiles), or,
    with ``denoiser``, one of its repeated blocks (the blocks of each :func:`block_kind`)."""

    def __init__(self, memo: CallMemo, denoiser: Optional[torch.nn.Module] = None):
        super().__init__()
        self.memo, self.denoiser = memo, denoiser

    def new_forward(self, module, *args, **kwargs):
        return self.memo.run(module, self.fn_ref.original_forward, args, kwargs, self.denoiser)


#: The ``ModuleList``s that hold a denoiser's repeated blocks: the transformer blocks of a UNet's
#: ``Transformer2DModel``s and of FLUX's, SD3's and Qwen-Image's transformers, and a UNet's resnets.
BLOCK_LISTS = ("transformer_blocks", "single_transformer_blocks", "resnets")


def repeated_blocks(denoiser: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks of ``denoiser``: the members of its ``ModuleList``s named in :data:`BLOCK_LISTS`."""
    return [
        block
        for name, module in denoiser.named_modules()
        if isinstance(module, torch.nn.ModuleList) and name.rsplit(".", 1)[-1] in BLOCK_LISTS
        for block in module
    ]


def processor_kind(processor) -> tuple:
    """What an attention processor's work depends on besides its tensors' shapes: its class, its settings
    (``config``: scale fusion's) and those of the processor it wraps (``original``), by name (a memoized processor's
    class is made per layer)."""
    if processor is None:
        return ()
    inner = processor_kind(getattr(processor, "original", None))
    return type(processor).__name__, repr(getattr(processor, "config", None)), inner


def block_kind(block: torch.nn.Module) -> tuple:
    """What a block's work depends on besides its inputs' shapes and its call (the call's size, scale and windows: a
    dilated conv's dilation, a fusion's windows): its class, its parameters' shapes and dtypes, the processor of each
    attention layer in it and the hooks on each of its modules, by name."""
    parameters = tuple((tuple(p.shape), p.dtype) for p in block.parameters())
    processors = tuple(processor_kind(m.processor) for m in block.modules() if hasattr(m, "processor"))
    hooks = tuple(
        (path, tuple(m._diffusers_hook.hooks)) for path, m in block.named_modules() if hasattr(m, "_diffusers_hook")
    )
    return type(block).__name__, parameters, processors, hooks


def _models(pipe) -> dict[str, torch.nn.Module]:
    return {name: c for name, c in pipe.components.items() if isinstance(c, torch.nn.Module)}


@functools.cache
def cpu_executing(cls: type) -> type:
    """A subclass of the pipeline class ``cls`` that creates its own tensors (latents, noise) on the CPU although its
    models are on ``meta``; a meta twin is built of it, so no pipeline's class is ever swapped."""
    return type(cls.__name__, (cls,), {"_execution_device": property(lambda self: torch.device("cpu"))})


@contextmanager
def models_on_meta(pipe, memo: Optional[CallMemo] = None):
    """Within the block, the models of ``pipe`` (a :func:`meta_twin`) compute on ``meta`` and return CPU zeros; with
    ``memo``, the denoiser, its repeated blocks and the VAE's encoder and decoder run each kind of call once
    (:class:`CallMemo`). Its models are restored afterwards."""
    models = _models(pipe)
    off_meta = [name for name, model in models.items() if any(p.device.type != "meta" for p in model.parameters())]
    if off_meta:
        raise ValueError(f"pipe: {', '.join(off_meta)} must be on the meta device (see meta_twin)")
    if as_meta_twin(pipe) is not pipe:
        raise ValueError("pipe: counting runs on a meta twin (meta_twin(pipe)), whose pipeline executes on the CPU")
    patched, hooked, stack = [], [], ExitStack()
    try:
        for model in models.values():
            if all(callable(getattr(model, name, None)) for name in VAE_METHODS):  # a VAE: its methods, not forward
                for name in VAE_METHODS:
                    setattr(model, name, on_meta(getattr(model, name)))
                for name in VAE_BLENDS:
                    if callable(getattr(model, name, None)):
                        setattr(model, name, unblended)
                patched.append(model)
                for part in (getattr(model, "encoder", None), getattr(model, "decoder", None)):
                    if memo is not None and isinstance(part, torch.nn.Module):
                        attach(part, CausalPartHook(memo) if causal(part) else MemoizedPartHook(memo), HOOK)
                        hooked.append(part)
            else:
                memoized = memo is not None and model is find_denoiser(pipe)[0]
                attach(model, MemoizedExecutionHook(memo) if memoized else MetaExecutionHook(), HOOK)
                hooked.append(model)
                if memoized:
                    for block in repeated_blocks(model):
                        attach(block, MemoizedPartHook(memo, model), HOOK)
                        hooked.append(block)
                if memoized and family_of(model).flow:
                    stack.enter_context(attention_counted_once(model, memo))
        yield pipe
    finally:
        stack.close()
        for model in patched:
            for name in (*VAE_METHODS, *VAE_BLENDS):
                vars(model).pop(name, None)
        for model in hooked:
            detach(model, HOOK)


#: What a loaded pipeline may carry besides its components and that changes a run: FLUX's trained size, as
#: ``hiresdiff.loading.pipelines`` sets it from a model folder's hiresdiff.json.
CARRIED_ATTRIBUTES = ("default_sample_size",)


def as_meta_twin(pipe):
    """``pipe`` if it is a :func:`meta_twin` already, else its twin."""
    return pipe if type(pipe) is cpu_executing(type(pipe).__mro__[1]) else meta_twin(pipe)


def meta_twin(pipe):
    """A pipeline of ``pipe``'s class (:func:`cpu_executing`) whose models are built anew from their configs on
    ``meta`` (no weights, no memory), in their dtypes; the scheduler, tokenizers and other parts are shared. ``pipe``
    itself is only read."""
    parts = {}
    for name, part in pipe.components.items():
        if isinstance(part, torch.nn.Module):
            with torch.device("meta"):
                twin = (
                    type(part).from_config(part.config)
                    if hasattr(type(part), "from_config")
                    else type(part)(part.config)
                )
            part = torch.nn.Module.to(twin, dtype=part.dtype).eval().requires_grad_(False)
        parts[name] = part
    if "requires_safety_checker" in inspect.signature(type(pipe).__init__).parameters:
        parts["requires_safety_checker"] = False  # the twin never makes an image to check
    twin = cpu_executing(type(pipe))(**parts)
    twin.set_progress_bar_config(disable=True)
    for name in CARRIED_ATTRIBUTES:
        if name in vars(pipe):
            setattr(twin, name, vars(pipe)[name])
    return twin
