"""Opening models and decoding engines for the command, the server, evaluation and benchmarks (`loading.py`)."""

# The engines behind the decoding seam: `decoding_llm_srt.TransformersEngine`, and `llm_srt.vllm.engine.VllmEngine`
# (needs vLLM).
ENGINES = ("transformers", "vllm")
# `--quantization`: the LLM's weights in int8 or int4 on the CPU's int kernels (`quantization_llm_srt`).
QUANTIZATIONS = ("int8", "int4")
