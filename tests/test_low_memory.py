"""Low device memory (hiresdiff.loading.low_memory) on the tiny FLUX pipeline, on the CPU: offload through diffusers'
hooks gives the results of the plain pipeline (group offload bit for bit; model offload within 1e-6 — measured
4.5e-7, the CPU's kernels for ``cpu:0`` and ``cpu``), quantized denoisers give results close to the unquantized one
(torchao int8 weight-only: relative L2 error 1.0–1.1e-3 measured on images in [0, 1], bound 5e-3; a Q8_0 GGUF of
its weights, the matrices whose rows divide into 32-value blocks quantized: 0.8–1.3e-4 measured, bound 1e-3), and
every bad setting is refused in one line before any weights load."""

import importlib.util
import warnings

import pytest
import torch
from hook_helpers import PROMPT
from tiny_pipelines import FLOW_TRAINED_LATENT, saved

import hiresdiff
from hiresdiff.loading.low_memory import OFFLOAD_MODES, QUANT_MODES, apply_offload, check_offload, check_quant
from hiresdiff.loading.pipelines import load_pipeline

CALL = dict(height=32, width=32, steps=4, seed=3, output_type="pt", max_sequence_length=16)
needs_torchao = pytest.mark.skipif(
    importlib.util.find_spec("torchao") is None,
    reason="needs torchao (pip install torchao): int8/fp8 weight-only quantization; not installed by the README or CI "
    "because its build for this torch prints load errors on every diffusers import, which breaks the CLI's one-line "
    "errors (measured with torchao 0.18: relative error 1.0-1.1e-3)",
)
needs_gguf = pytest.mark.skipif(
    importlib.util.find_spec("gguf") is None, reason="needs the gguf package (pip install gguf; the test extra has it)"
)


def load(**kwargs):
    pipe, _ = load_pipeline(str(saved("flux")), needs_unet=False, progress=False, **kwargs)
    pipe.default_sample_size = FLOW_TRAINED_LATENT  # the tiny FLUX's trained size (its folder has no hiresdiff.json)
    return pipe


def relative_error(a, b) -> float:
    return float((a - b).norm() / a.norm())


def write_gguf(model, path, quantize=True):
    """A GGUF single file of ``model``'s weights under its diffusers names: every matrix whose rows divide into Q8_0
    blocks (32 values) quantized to Q8_0, the rest in float32, as llama.cpp-style converters do."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch="flux")
    for name, tensor in model.state_dict().items():
        array = tensor.float().numpy()
        if quantize and array.ndim == 2 and array.shape[-1] % 32 == 0:
            q8 = gguf.GGMLQuantizationType.Q8_0
            writer.add_tensor(name, gguf.quants.quantize(array, q8), raw_dtype=q8)
        else:
            writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_bad_settings_are_refused_in_one_line(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"offload must be one of \('none', 'model', 'sequential', 'group'\)"):
        check_offload("cpu")
    with pytest.raises(ValueError, match="quant must be one of"):
        check_quant("int4")
    with pytest.raises(ValueError, match="reads the denoiser's weights from a GGUF file: pass gguf="):
        check_quant("gguf-q4")
    with pytest.raises(ValueError, match="gguf= is a GGUF file's denoiser"):
        check_quant("int8", gguf=tmp_path / "x.gguf")
    with pytest.raises(FileNotFoundError, match="gguf: no such file"):
        check_quant("gguf-q8", gguf=tmp_path / "missing.gguf")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name))
    with pytest.raises(ValueError, match="quant 'nf4' needs the bitsandbytes package, which is not installed"):
        load(quant="nf4")  # refused before any weights load
    assert set(OFFLOAD_MODES) == {"none", "model", "sequential", "group"} and "gguf-q8" in QUANT_MODES


def test_offload_without_an_accelerator_says_so_and_runs_as_without():
    plain = hiresdiff.generate(load(), PROMPT, recipe="freescale", **CALL)
    with pytest.warns(UserWarning, match="offload='model': no accelerator to offload to; the pipeline runs on the CPU"):
        pipe = load(offload="model", device="cpu")
    assert torch.equal(hiresdiff.generate(pipe, PROMPT, recipe="freescale", **CALL), plain)


@pytest.mark.parametrize("preset", ["naive", "freescale+ug", "fast"])
def test_offloaded_pipelines_give_the_plain_results(preset):
    plain = hiresdiff.generate(load(), PROMPT, recipe=preset, **CALL)
    group = load()
    assert apply_offload(group, "group", torch.device("cpu"))  # onto the CPU: diffusers' hooks run all the same
    assert torch.equal(hiresdiff.generate(group, PROMPT, recipe=preset, **CALL), plain)
    model = load()
    assert apply_offload(model, "model", torch.device("cpu"))
    assert (hiresdiff.generate(model, PROMPT, recipe=preset, **CALL) - plain).abs().max() <= 1e-6


@needs_torchao
@pytest.mark.parametrize("preset", ["naive", "freescale+ug", "fast"])
def test_an_int8_denoiser_gives_results_close_to_the_unquantized_one(preset):
    from torchao.utils import TorchAOBaseTensor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # diffusers: torchao's integer kernels prefer bfloat16
        quantized = load(quant="int8")
    assert isinstance(quantized.transformer.transformer_blocks[0].attn.to_q.weight, TorchAOBaseTensor)
    plain = hiresdiff.generate(load(), PROMPT, recipe=preset, **CALL)
    error = relative_error(plain, hiresdiff.generate(quantized, PROMPT, recipe=preset, **CALL))
    assert 0 < error <= 5e-3


@needs_gguf
def test_a_gguf_denoiser_gives_results_close_to_the_unquantized_one(tmp_path):
    from diffusers.quantizers.gguf.utils import GGUFParameter

    plain_pipe = load()
    write_gguf(plain_pipe.transformer, tmp_path / "flux-q8.gguf")
    pipe = load(quant="gguf-q8", gguf=tmp_path / "flux-q8.gguf")
    weights = [p for p in pipe.transformer.parameters() if isinstance(p, GGUFParameter)]
    assert weights, "no weight stayed quantized"
    for preset in ("naive", "freescale"):
        plain = hiresdiff.generate(plain_pipe, PROMPT, recipe=preset, **CALL)
        assert 0 < relative_error(plain, hiresdiff.generate(pipe, PROMPT, recipe=preset, **CALL)) <= 1e-3


@needs_gguf
def test_a_gguf_of_another_model_is_refused_in_one_line(tmp_path):
    import diffusers

    other = diffusers.FluxTransformer2DModel(
        patch_size=1, in_channels=8, num_layers=1, num_single_layers=0, attention_head_dim=8, num_attention_heads=1
    )
    write_gguf(other, tmp_path / "other.gguf", quantize=False)
    with pytest.raises(
        ValueError, match=r"gguf \(a FluxTransformer2DModel's weights\) '.*other.gguf' cannot be loaded"
    ):
        load(quant="gguf-q8", gguf=tmp_path / "other.gguf")
