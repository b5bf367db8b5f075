"""A LoRA active during one stage of a cascade only (a few-step LoRA — LCM-LoRA, Hyper-SD, Lightning — for the later
stages, where steps are expensive), loaded through the pipeline's own ``load_lora_weights`` and removed when the
stage ends, also when it raises: the pipeline's own adapters, if it has any, are active beside it and come back as
they were."""

from __future__ import annotations

from contextlib import contextmanager

from hiresdiff.denoisers.registry import find_denoiser

#: The adapter name the stage's LoRA is loaded under.
STAGE_ADAPTER = "hiresdiff_stage"
#: What loading a LoRA writes onto the denoiser and unloading it leaves behind.
PEFT_MARKS = {"_hf_peft_config_loaded", "peft_config"}


@contextmanager
def stage_lora(pipe, lora):
    """Within the block ``pipe`` runs with ``lora`` (anything ``pipe.load_lora_weights`` takes: a folder, a file, a
    hub id, a state dict) added to its active adapters; ``None``: nothing changes."""
    if lora is None:
        yield
        return
    denoiser, _ = find_denoiser(pipe)
    had_adapters = bool(getattr(denoiser, "peft_config", None))
    active = list(pipe.get_active_adapters()) if had_adapters else []
    marks = PEFT_MARKS & set(vars(denoiser))
    try:
        pipe.load_lora_weights(lora, adapter_name=STAGE_ADAPTER)
        pipe.set_adapters([*active, STAGE_ADAPTER])
        yield
    finally:
        if not had_adapters:
            pipe.unload_lora_weights()  # the LoRA layers go with it: the modules are the pipeline's own again
            for name in PEFT_MARKS - marks:
                vars(denoiser).pop(name, None)
        elif STAGE_ADAPTER in getattr(denoiser, "peft_config", {}):
            pipe.delete_adapters(STAGE_ADAPTER)
            pipe.set_adapters(active)
