"""Running a pipeline in less device memory than its weights need: CPU offload and quantized denoiser weights, both
by diffusers' own machinery (nothing here re-implements them).

Offload (``offload=``, ``--offload``):

* ``"model"``: ``pipe.enable_model_cpu_offload`` — one whole model on the accelerator at a time;
* ``"sequential"``: ``pipe.enable_sequential_cpu_offload`` — every submodule's weights moved in at its use;
* ``"group"``: diffusers' group offloading (``enable_group_offload`` / ``apply_group_offloading``, one block a
  group, prefetched on a CUDA stream) on every model of the pipeline;
* ``"none"``: everything on the device.

Without an accelerator there is nothing to offload to: the pipeline stays where it is (the CPU, which holds the
weights anyway) and a warning says so.

Quantized denoiser weights (``quant=``, ``--quant``): ``"int8"`` and ``"fp8"`` weight-only through torchao,
``"nf4"`` through bitsandbytes, ``"gguf-q8"`` / ``"gguf-q4"`` from a GGUF single file (``gguf=``, ``--gguf``)
through diffusers' GGUF support; each needs its package, and a missing one is refused in one line naming it before
any weights load. Only the denoiser is quantized: it is what runs every step.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from hiresdiff.checks import cannot_load  # torch is imported where it is used: the CLI checks options before it

if TYPE_CHECKING:
    import torch

OFFLOAD_MODES = ("none", "model", "sequential", "group")
QUANT_MODES = ("none", "int8", "fp8", "gguf-q8", "gguf-q4", "nf4")
#: the package each quantization needs (pip name, import name)
QUANT_PACKAGES = {
    "int8": ("torchao", "torchao"),
    "fp8": ("torchao", "torchao"),
    "nf4": ("bitsandbytes", "bitsandbytes"),
    "gguf-q8": ("gguf", "gguf"),
    "gguf-q4": ("gguf", "gguf"),
}
#: torchao's weight-only quantization configs (``torchao.quantization``), as diffusers' ``TorchAoConfig`` takes them
TORCHAO_CONFIGS = {"int8": "Int8WeightOnlyConfig", "fp8": "Float8WeightOnlyConfig"}


def check_offload(offload: str) -> str:
    if offload not in OFFLOAD_MODES:
        raise ValueError(f"offload must be one of {OFFLOAD_MODES}; got {offload!r}")
    return offload


def check_quant_mode(quant: str) -> str:
    """``quant`` if it is one of :data:`QUANT_MODES` (whatever is installed: a plan counts any of them)."""
    if quant not in QUANT_MODES:
        raise ValueError(f"quant must be one of {QUANT_MODES}; got {quant!r}")
    return quant


def check_quant(quant: str, gguf: Optional[str | Path] = None) -> str:
    """``quant`` if it is a known mode whose package is installed and whose file is given (GGUF); a one-line
    ``ValueError`` naming the parameter otherwise."""
    check_quant_mode(quant)
    is_gguf = quant.startswith("gguf")
    if is_gguf and gguf is None:
        raise ValueError(f"quant {quant!r} reads the denoiser's weights from a GGUF file: pass gguf= (--gguf FILE)")
    if gguf is not None and not is_gguf:
        raise ValueError(f"gguf= is a GGUF file's denoiser, quantized: use quant='gguf-q8' or 'gguf-q4'; got {quant!r}")
    if gguf is not None and not Path(gguf).is_file():
        raise FileNotFoundError(f"gguf: no such file {str(gguf)!r}")
    if quant in QUANT_PACKAGES:
        pip_name, module = QUANT_PACKAGES[quant]
        if importlib.util.find_spec(module) is None:
            raise ValueError(
                f"quant {quant!r} needs the {pip_name} package, which is not installed: pip install {pip_name}"
            )
    return quant


def pick_device() -> str:
    """``"cuda"`` if available, else ``"mps"`` if available, else ``"cpu"``: where a pipeline runs by default, and the
    accelerator offloading moves weights to."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def warn_nothing_to_offload(offload: str) -> None:
    """What ``offload`` does on the CPU: nothing (the CPU holds the weights anyway), said in a warning."""
    warnings.warn(
        f"offload={offload!r}: no accelerator to offload to; the pipeline runs on the CPU with its weights in "
        "memory, as without offload",
        stacklevel=3,
    )


def apply_offload(pipe, offload: str, device: Optional[torch.device] = None) -> bool:
    """Offload ``pipe``'s models as ``offload`` says, onto ``device`` (default: :func:`pick_device`'s; an explicit
    ``"cpu"`` is honoured, as diffusers does). Returns whether it did: ``"none"`` leaves the pipeline as it is, and so
    does the default on a machine without an accelerator (with a warning)."""
    import torch

    check_offload(offload)
    if offload == "none":
        return False
    if device is None and pick_device() == "cpu":
        warn_nothing_to_offload(offload)
        return False
    device = torch.device(device if device is not None else pick_device())
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        from diffusers import ModelMixin
        from diffusers.hooks import apply_group_offloading

        use_stream = device.type == "cuda"
        for component in pipe.components.values():
            if isinstance(component, ModelMixin):
                component.enable_group_offload(
                    onload_device=device, offload_type="block_level", num_blocks_per_group=1, use_stream=use_stream
                )
            elif isinstance(component, torch.nn.Module):  # a transformers text encoder
                apply_group_offloading(
                    component,
                    onload_device=device,
                    offload_type="block_level",
                    num_blocks_per_group=1,
                    use_stream=use_stream,
                )
    return True


def pipeline_quantization(quant: str, denoiser_name: str):
    """diffusers' ``PipelineQuantizationConfig`` quantizing the component ``denoiser_name`` as ``quant`` says
    (``"int8"``, ``"fp8"``, ``"nf4"``), or None for ``"none"`` and the GGUF modes (a denoiser loaded by
    :func:`load_gguf_denoiser` instead)."""
    if quant == "none" or quant.startswith("gguf"):
        return None
    from diffusers import BitsAndBytesConfig, PipelineQuantizationConfig, TorchAoConfig

    if quant in TORCHAO_CONFIGS:
        config = TorchAoConfig(getattr(importlib.import_module("torchao.quantization"), TORCHAO_CONFIGS[quant])())
    else:
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")
    return PipelineQuantizationConfig(quant_mapping={denoiser_name: config})


def load_gguf_denoiser(gguf: str | Path, denoiser_class, model: str, subfolder: str, dtype: torch.dtype):
    """The denoiser of ``model`` (its config from ``model``/``subfolder``) with weights from the GGUF single file
    ``gguf``, kept quantized and computed in ``dtype`` (diffusers' ``GGUFQuantizationConfig``). A file that is not a
    GGUF of this denoiser is refused in one line naming it."""
    from diffusers import GGUFQuantizationConfig

    try:
        return denoiser_class.from_single_file(
            str(gguf),
            quantization_config=GGUFQuantizationConfig(compute_dtype=dtype),
            config=model,
            subfolder=subfolder,
            torch_dtype=dtype,
        )
    except Exception as error:
        raise cannot_load(f"gguf (a {denoiser_class.__name__}'s weights)", gguf, error) from None
