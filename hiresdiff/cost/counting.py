"""FLOPs and peak working memory of any PyTorch code, counted while it runs (also on the ``meta`` device).

FLOPs come from PyTorch's own ``torch.utils.flop_counter.FlopCounterMode`` (matrix products, convolutions and
attention; elementwise work is not counted, as in every FLOP count of these models). Working memory is what no
library counts for ``meta`` tensors, so :class:`LiveMemory` does: every tensor an operation creates while it is
active is held until the last tensor viewing its storage is freed, and the peak of the bytes held is kept. Views
and in-place results share the storage of their input and add nothing; tensors that existed before (weights,
inputs) are not counted. On ``meta`` nothing is allocated, so the count is what a device would hold for the same
code, without the caching allocator's rounding and fragmentation (:data:`ALLOCATOR_TOLERANCE`).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

#: How far a measured peak may lie above the live-tensor count: allocators round block sizes, and convolution and
#: attention kernels take workspaces the count does not see. Measured on the CPU: 1.09× for a small UNet
#: (``tests/test_cost.py``), 1.29× for the real SD 1.5 at 512² (``benchmarks/results/plan_check.md``).
ALLOCATOR_TOLERANCE = 0.3


class LiveMemory(TorchDispatchMode):
    """Bytes of the tensors created while active (``live``) and their maximum (``peak``), per storage."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._storages: dict[int, list[int]] = {}  # storage id → [tensors alive that view it, bytes]

    def reset_peak(self) -> None:
        self.peak = self.live

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        aliasing = [r.alias_info is not None for r in func._schema.returns]
        outputs = out if isinstance(out, (tuple, list)) else (out,)
        for index, result in enumerate(outputs):
            views = index < len(aliasing) and aliasing[index]
            for tensor in tree_leaves(result):
                if isinstance(tensor, torch.Tensor):
                    self._hold(tensor, new=not views)
        return out

    def _hold(self, tensor: torch.Tensor, new: bool) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        entry = self._storages.get(key)
        if entry is None:
            if not new:  # a view of a tensor made outside (a weight, an input): nothing new is held
                return
            entry = self._storages[key] = [0, storage.nbytes()]
            self.live += entry[1]
            self.peak = max(self.peak, self.live)
        entry[0] += 1
        weakref.finalize(tensor, self._release, key)

    def _release(self, key: int) -> None:
        entry = self._storages[key]
        entry[0] -= 1
        if entry[0] == 0:
            self.live -= entry[1]
            del self._storages[key]


@dataclass
class Count:
    """FLOPs and the most bytes held at once (``peak_bytes``) over a stretch of code."""

    flops: int = 0
    peak_bytes: int = 0


class Counter:
    """Counts FLOPs and working memory of the code in its block, split into parts: ``split()`` closes the part
    since the previous split (e.g. one stage of a cascade); ``total`` covers the whole block.

        with Counter() as counter:
            stage_one(); first = counter.split()
            stage_two(); second = counter.split()
        counter.total.flops
    """

    def __init__(self):
        self._flops, self._memory = FlopCounterMode(display=False), LiveMemory()
        self._flops_at_split, self._overall_peak = 0, 0
        self._added = 0  # FLOPs of work counted once and repeated without running (add_flops)
        self.total = Count()

    @property
    def flops(self) -> int:
        """FLOPs counted so far."""
        return self._flops.get_total_flops() + self._added

    def start_call(self) -> tuple[int, int, int]:
        """Where the counts stand before a stretch of work that may be repeated (:meth:`end_call`)."""
        started = (self.flops, self._memory.live, self._memory.peak)
        self._memory.peak = self._memory.live  # the stretch's own peak, from here
        return started

    def end_call(self, started: tuple[int, int, int]) -> tuple[int, int]:
        """The stretch since :meth:`start_call`: its FLOPs and the most bytes it held above those held before it."""
        flops, live, peak = started
        own_peak = self._memory.peak
        self._memory.peak = max(peak, own_peak)
        return self.flops - flops, own_peak - live

    def repeat_call(self, cost: tuple[int, int]) -> None:
        """Count a repeat of a stretch measured by :meth:`end_call` without running it: its FLOPs, and its peak above
        the bytes held now."""
        flops, held = cost
        self._added += flops
        self._memory.peak = max(self._memory.peak, self._memory.live + held)

    def __enter__(self) -> Counter:
        self._flops.__enter__()
        self._memory.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._memory.__exit__(*exc)
        self._flops.__exit__(*exc)
        self.total = Count(self.flops, max(self._overall_peak, self._memory.peak))

    def split(self) -> Count:
        flops = self.flops
        part = Count(flops - self._flops_at_split, self._memory.peak)
        self._flops_at_split, self._overall_peak = flops, max(self._overall_peak, self._memory.peak)
        self._memory.reset_peak()
        return part
