"""vLLM plugin (entry point group `vllm.general_plugins`): makes vLLM load LLM-SRT folders without remote code.

vLLM runs `register()` in each of its processes (API server, engine core, workers), so it must be idempotent. It
imports nothing of vLLM's model code: the model class is named by string and imported when vLLM builds it.
"""

from __future__ import annotations


ARCHITECTURE = "LlmSrtForConditionalGeneration"
MODEL_CLASS = "llm_srt.vllm_llm_srt:LlmSrtVllmForConditionalGeneration"


def register() -> None:
    """Register `LlmSrtConfig` with `AutoConfig` and the vLLM model under the architecture our folders name."""
    from transformers import AutoConfig
    from vllm import ModelRegistry

    from .configuration_llm_srt import LlmSrtConfig

    AutoConfig.register(LlmSrtConfig.model_type, LlmSrtConfig, exist_ok=True)
    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, MODEL_CLASS)
