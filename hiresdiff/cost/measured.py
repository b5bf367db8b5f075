"""Memory a process really holds, to check predictions against: on the CPU its resident set (``VmRSS``) and
high-water mark (``VmHWM``, which writing ``5`` to ``/proc/self/clear_refs`` resets, Linux); on CUDA the bytes
PyTorch's allocator has handed out and their peak.

A CPU measurement is only meaningful in a process started with :data:`CPU_MEASUREMENT_ENV`: glibc otherwise keeps
freed blocks of moderate size in the resident set (its mmap threshold grows with use), and the peak overstates the
live memory by 30–60 %, differently from run to run (measured in ``tests/test_cost.py``).
"""

from __future__ import annotations

from pathlib import Path

import torch

#: Environment for a measuring process: allocations of 128 KiB and more are mapped and unmapped one by one.
CPU_MEASUREMENT_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def memory_now(device: str) -> int:
    """Bytes held now: resident set on CPU, allocated tensors on CUDA."""
    if device.startswith("cuda"):
        return torch.cuda.memory_allocated()
    return _proc_status("VmRSS")


def reset_peak(device: str) -> None:
    """Start a new peak from what is held now."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")


def peak(device: str) -> int:
    """The most bytes held since :func:`reset_peak`."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    return _proc_status("VmHWM")


def _proc_status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")
