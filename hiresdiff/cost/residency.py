"""Which weights are on the device while a run computes, under CPU offload and quantized denoiser weights, and how many
bytes move onto it (``hiresdiff plan --offload … --quant …``).

A run has three phases: the text encoders encode the prompt, the denoiser denoises, the VAE decodes (and, in a cascade,
encodes φ). Resident weights per phase, for the modes of :mod:`hiresdiff.loading.low_memory`:

* ``none``: every model, in every phase;
* ``model`` (``enable_model_cpu_offload``): the model that runs — the largest text encoder, the denoiser, the VAE;
  the denoiser moves in once per pipeline call, i.e. once per stage;
* ``sequential`` (``enable_sequential_cpu_offload``): the largest single layer (leaf module) of the model that runs;
  the denoiser's weights all move in at every denoiser call;
* ``group`` (group offloading, one block a group, the next one prefetched): the two largest blocks (children of the
  model's own module lists: FLUX's transformer blocks, a UNet's down/up blocks) plus the weights outside them; the
  denoiser's weights all move in at every call, overlapped with compute on a CUDA stream.

The predicted peak is the largest phase: its resident weights plus the run's working memory (the text encoders'
own activations are small next to it and are not counted).

Quantized weights (the denoiser only): every ``nn.Linear`` weight whose rows divide into the format's blocks takes the
format's bytes per weight, scales included (:data:`QUANT_FORMATS`); biases, norms, embeddings and matrices whose rows
do not divide stay in the compute dtype, as the GGUF converters, torchao's weight-only configs and bitsandbytes leave
them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: bytes per quantized weight (scales included) and the block its matrix's rows must divide into; torchao's int8 and
#: fp8 weight-only configs keep one scale per output row in the compute dtype, int8 also a one-byte zero point
#: (``ROW_SCALED``: the zero point's bytes)
QUANT_FORMATS = {
    "int8": (1.0, 1),
    "fp8": (1.0, 1),
    "gguf-q8": (34 / 32, 32),  # Q8_0: 32 int8 weights and one fp16 scale a block
    "gguf-q4": (18 / 32, 32),  # Q4_0: 32 4-bit weights and one fp16 scale a block
    "nf4": (0.5 + 4 / 64, 64),  # bitsandbytes nf4: 4 bits a weight and one fp32 absmax a block of 64
}
ROW_SCALED = {"int8": 1, "fp8": 0}


@dataclass(frozen=True)
class TextEncoder:
    """A published text encoder by its parameter count and number of layers (their weights are not built here)."""

    name: str
    parameters: int
    layers: int


#: the text encoders of each planned architecture, at their published sizes
TEXT_ENCODERS = {
    "sd15": (TextEncoder("CLIP ViT-L/14", 123_060_480, 12),),
    "sdxl": (TextEncoder("CLIP ViT-L/14", 123_060_480, 12), TextEncoder("OpenCLIP ViT-bigG/14", 694_659_840, 32)),
    "flux1-dev": (TextEncoder("CLIP ViT-L/14", 123_060_480, 12), TextEncoder("T5 v1.1 XXL", 4_762_310_656, 24)),
    # google/umt5-xxl's encoder (d_model 4096, d_ff 10240, 24 layers, 64 heads, vocabulary 256384), counted on meta
    "wan2.1-1.3b": (TextEncoder("UMT5-XXL", 5_680_910_336, 24),),
    "wan2.1-14b": (TextEncoder("UMT5-XXL", 5_680_910_336, 24),),
}


def weight_bytes(model: torch.nn.Module, element: int, quant: str = "none") -> int:
    """Bytes of ``model``'s parameters with ``element`` bytes per value, its linear weights quantized as ``quant``
    says (see the module docstring)."""
    total = 0
    quantized = set()
    if quant != "none":
        per_weight, block = QUANT_FORMATS[quant]
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module.in_features % block == 0:
                weight = module.weight
                total += round(weight.numel() * per_weight)
                if quant in ROW_SCALED:
                    total += module.out_features * (element + ROW_SCALED[quant])
                quantized.add(id(weight))
    return total + sum(p.numel() * element for p in model.parameters() if id(p) not in quantized)


def _blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The blocks group offloading moves one at a time: the children of the model's own module lists (the rest of
    the model is one more group)."""
    lists = (torch.nn.ModuleList, torch.nn.Sequential)
    return [block for child in model.children() if isinstance(child, lists) for block in child]


def _leaves(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if not list(m.children()) and any(True for _ in m.parameters(recurse=False))]


def resident_bytes(model: torch.nn.Module, offload: str, element: int, quant: str = "none") -> int:
    """Bytes of ``model``'s weights on the device while it runs, under ``offload``."""
    full = weight_bytes(model, element, quant)
    if offload in ("none", "model"):
        return full
    if offload == "sequential":
        return max((weight_bytes(leaf, element, quant) for leaf in _leaves(model)), default=full)
    blocks = _blocks(model)
    if not blocks:
        return full
    sizes = sorted((weight_bytes(block, element, quant) for block in blocks), reverse=True)
    return full - sum(sizes) + sum(sizes[:2])


def text_encoder_bytes(arch: str, offload: str, element: int) -> int:
    """Bytes of the text encoders' weights on the device while they encode (never quantized)."""
    encoders = TEXT_ENCODERS[arch]
    if offload == "none":
        return sum(e.parameters for e in encoders) * element
    per_layer = {"model": 0, "sequential": 1, "group": 2}[offload]
    return max(e.parameters if per_layer == 0 else e.parameters * per_layer // e.layers for e in encoders) * element


@dataclass(frozen=True)
class Residency:
    """Weights on the device in each phase, and the denoiser's bytes moved onto it per stage and per call; ``weights``:
    all of the pipeline's (its denoiser's quantized), what ``offload="none"`` holds in every phase."""

    weights: int
    encode: int
    denoise: int
    decode: int
    moved_per_stage: int = 0
    moved_per_call: int = 0

    def peak(self, working: int) -> int:
        """The predicted peak: the largest phase, the denoiser's and the VAE's with the working memory."""
        return max(self.encode, self.denoise + working, self.decode + working)


def residency(arch: str, denoiser, vae, offload: str, quant: str, element: int) -> Residency:
    """The :class:`Residency` of ``arch``'s pipeline (its ``denoiser`` and ``vae`` built on ``meta``)."""
    denoiser_full = weight_bytes(denoiser, element, quant)
    everything = text_encoder_bytes(arch, "none", element) + denoiser_full + weight_bytes(vae, element)
    if offload == "none":
        return Residency(everything, everything, everything, everything)
    return Residency(
        weights=everything,
        encode=text_encoder_bytes(arch, offload, element),
        denoise=resident_bytes(denoiser, offload, element, quant),
        decode=resident_bytes(vae, offload, element),
        moved_per_stage=denoiser_full if offload == "model" else 0,
        moved_per_call=denoiser_full if offload in ("sequential", "group") else 0,
    )
