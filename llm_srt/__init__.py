"""LLM-SRT (Du et al., ACL 2025) for Hugging Face Transformers: multilingual ASR and speech translation."""

from transformers import AutoConfig, AutoModel, AutoModelForSpeechSeq2Seq, AutoProcessor

from .configuration_llm_srt import LANGUAGES, LlmSrtConfig, language_tag, normalize_language
from .modeling_llm_srt import LlmSrtForConditionalGeneration, LlmSrtPreTrainedModel
from .pipeline_llm_srt import SpeechTranslationPipeline
from .processing_llm_srt import LlmSrtProcessor


__version__ = "0.1.0"

# With the package installed, the Auto classes resolve `llm_srt` without trust_remote_code.
AutoConfig.register(LlmSrtConfig.model_type, LlmSrtConfig, exist_ok=True)
AutoModel.register(LlmSrtConfig, LlmSrtForConditionalGeneration, exist_ok=True)
AutoModelForSpeechSeq2Seq.register(LlmSrtConfig, LlmSrtForConditionalGeneration, exist_ok=True)
AutoProcessor.register(LlmSrtConfig, LlmSrtProcessor, exist_ok=True)

__all__ = [
    "LANGUAGES",
    "LlmSrtConfig",
    "LlmSrtForConditionalGeneration",
    "LlmSrtPreTrainedModel",
    "LlmSrtProcessor",
    "SpeechTranslationPipeline",
    "language_tag",
    "normalize_language",
]
