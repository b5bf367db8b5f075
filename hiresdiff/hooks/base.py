"""Attach and detach named diffusers hooks so that a module is restored exactly.

``HookRegistry`` leaves two things behind when its last hook goes: the instance attribute ``forward``
and the registry itself (``module._diffusers_hook``). :func:`attach` remembers which of them it created, in a table of
its own (:data:`_CREATED`, keyed weakly by module: nothing is written onto the module or the hook for it),
:func:`detach` deletes exactly those again, so after detaching ``vars(module)`` is what it was before.
Hooks on one module must be detached in the reverse order of attaching (diffusers rewires a chain of
``new_forward`` hooks correctly only from the outside in).
"""

from __future__ import annotations

import inspect
import weakref

import torch
from diffusers.hooks import HookRegistry, ModelHook

#: module → {hook name: (whether attach created the registry, whether it created ``forward``)}
_CREATED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def attached(module: torch.nn.Module, name: str) -> ModelHook | None:
    """The hook named ``name`` on ``module``, or ``None``."""
    registry = getattr(module, "_diffusers_hook", None)
    return registry.get_hook(name) if registry is not None else None


def attach(module: torch.nn.Module, hook: ModelHook, name: str) -> None:
    """Register ``hook`` on ``module`` under ``name``; ``ValueError`` if a hook of that name is already there."""
    if attached(module, name) is not None:
        raise ValueError(f"a hook named {name!r} is already attached to this {type(module).__name__}")
    created = (not hasattr(module, "_diffusers_hook"), "forward" not in vars(module))
    HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, name)
    _CREATED.setdefault(module, {})[name] = created


def detach(module: torch.nn.Module, name: str) -> None:
    """Remove the hook ``name`` from ``module`` (a no-op if absent) and what :func:`attach` created for it."""
    if attached(module, name) is None:
        return
    registry = module._diffusers_hook
    registry.remove_hook(name, recurse=False)
    created_registry, created_forward = _CREATED.get(module, {}).pop(name, (False, False))
    if registry.hooks:
        return
    if created_forward:
        vars(module).pop("forward", None)
    if created_registry:
        del module._diffusers_hook


class DenoiserCallHook(ModelHook):
    """A hook on a UNet or transformer that reads its call's arguments by name (``sample``/``hidden_states``,
    ``timestep``, …)."""

    def initialize_hook(self, module):
        self.signature = inspect.signature(type(module).forward)
        return module

    def arguments(self, module, args, kwargs) -> dict:
        """The call's arguments by name, ``self`` left out, defaults not filled in."""
        arguments = self.signature.bind(module, *args, **kwargs).arguments
        del arguments["self"]
        return arguments
