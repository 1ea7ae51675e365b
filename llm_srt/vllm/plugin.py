"""vLLM plugin (entry point group `vllm.general_plugins`): makes vLLM load LLM-SRT folders without remote code.

vLLM runs `register()` in each of its processes (API server, engine core, workers), so it must be idempotent. It
imports nothing of vLLM's model code: the model class is named by string and imported when vLLM builds it.
"""

from __future__ import annotations

from . import ARCHITECTURE


MODEL_CLASS = "llm_srt.vllm.model:LlmSrtVllmForConditionalGeneration"


def register() -> None:
    """Register `LlmSrtConfig` with `AutoConfig`, the vLLM model under the architecture our folders name, and its
    config hook (`silence.LlmSrtLogprobsMode`: beam search must see the silent chunk's forced end)."""
    from transformers import AutoConfig
    from vllm import ModelRegistry
    from vllm.model_executor.models.config import MODELS_CONFIG_MAP

    from ..configuration_llm_srt import LlmSrtConfig
    from .silence import LlmSrtLogprobsMode

    AutoConfig.register(LlmSrtConfig.model_type, LlmSrtConfig, exist_ok=True)
    MODELS_CONFIG_MAP.setdefault(ARCHITECTURE, LlmSrtLogprobsMode)
    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, MODEL_CLASS)
