"""What tests, the offline demo and downstream CI build offline in seconds: tiny random LLM-SRT models with Qwen2.5's
real tokenizer (`models.py`, `tokenizers.py`), audio (`audio.py`) and servers (`servers.py`)."""

from .audio import SAMPLING_RATE, flac_without_length, speak, synthetic_speech
from .models import (
    PARROT_LINES, attach_detector_hearing, build_parrot_model, build_tiny_model_and_processor, build_tiny_processor,
    save_model, save_tiny_model, tiny_config, whisper_hearing,
)
from .servers import MULTIPART_BOUNDARY, ServerProcess, ServerThread, free_port, multipart_form, usable_cpus, vllm_cpu_env
from .tokenizers import (
    DEFAULT_CORPUS, EOS_TOKEN, QWEN2_5_EMBEDDING_ROWS, QWEN2_5_TOKENIZER_SIZE, build_qwen2_5_tokenizer,
    build_tiny_tokenizer,
)


__all__ = [
    "DEFAULT_CORPUS", "EOS_TOKEN", "MULTIPART_BOUNDARY", "PARROT_LINES", "QWEN2_5_EMBEDDING_ROWS",
    "QWEN2_5_TOKENIZER_SIZE", "SAMPLING_RATE", "ServerProcess", "ServerThread", "attach_detector_hearing",
    "build_parrot_model", "build_qwen2_5_tokenizer", "build_tiny_model_and_processor", "build_tiny_processor",
    "build_tiny_tokenizer", "flac_without_length", "free_port", "multipart_form", "save_model", "save_tiny_model",
    "speak", "synthetic_speech", "tiny_config", "usable_cpus", "vllm_cpu_env", "whisper_hearing",
]
