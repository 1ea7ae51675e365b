"""LLM-SRT (Du et al., ACL 2025) for Hugging Face Transformers: multilingual ASR and speech translation.

Importing the package is cheap (the `llm-srt` command starts without loading torch or transformers): the public
names below are imported on first use, and with them the Auto classes learn the `llm_srt` model type
([`register_auto_classes`]), so `AutoModel.from_pretrained(folder)` loads a saved folder with the installed classes.
"""

import importlib


__version__ = "0.1.0"

# public name -> the module (relative to this package) that defines it
_PUBLIC = {
    "LANGUAGES": "languages_llm_srt",
    "language_tag": "languages_llm_srt",
    "normalize_language": "languages_llm_srt",
    "load_audio": "audio_llm_srt",
    "LlmSrtConfig": "configuration_llm_srt",
    "LlmSrtForConditionalGeneration": "modeling_llm_srt",
    "LlmSrtPreTrainedModel": "modeling_llm_srt",
    "LlmSrtProcessor": "processing_llm_srt",
    "SpeechTranslationPipeline": "pipeline_llm_srt",
}
_REGISTERED = False


def register_auto_classes() -> None:
    """Teach transformers' Auto classes (`AutoConfig`, `AutoModel`, `AutoModelForSpeechSeq2Seq`, `AutoProcessor`)
    the `llm_srt` model type, with the installed classes (no remote code). Idempotent."""
    global _REGISTERED
    if _REGISTERED:
        return
    from transformers import AutoConfig, AutoModel, AutoModelForSpeechSeq2Seq, AutoProcessor

    from .configuration_llm_srt import LlmSrtConfig
    from .modeling_llm_srt import LlmSrtForConditionalGeneration
    from .pipeline_llm_srt import SpeechTranslationPipeline  # noqa: F401 - registers the pipeline task
    from .processing_llm_srt import LlmSrtProcessor

    AutoConfig.register(LlmSrtConfig.model_type, LlmSrtConfig, exist_ok=True)
    AutoModel.register(LlmSrtConfig, LlmSrtForConditionalGeneration, exist_ok=True)
    AutoModelForSpeechSeq2Seq.register(LlmSrtConfig, LlmSrtForConditionalGeneration, exist_ok=True)
    AutoProcessor.register(LlmSrtConfig, LlmSrtProcessor, exist_ok=True)
    _REGISTERED = True


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    if name in ("LlmSrtConfig", "LlmSrtForConditionalGeneration", "LlmSrtPreTrainedModel", "LlmSrtProcessor",
                "SpeechTranslationPipeline"):
        register_auto_classes()
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])


__all__ = [*_PUBLIC, "register_auto_classes"]
