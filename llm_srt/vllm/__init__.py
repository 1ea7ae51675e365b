"""LLM-SRT on vLLM: the plugin vLLM loads (`plugin.py`), the vLLM model (`model.py`), the decoding engine over vLLM's
`AsyncLLM` (`engine.py`), silent chunks on vLLM's own server (`silence.py`) and language detection without the LLM
(`language.py`). Nothing here is imported unless vLLM is used."""

# The architecture our saved folders name (config.json `architectures`), which vLLM maps to the vLLM model.
ARCHITECTURE = "LlmSrtForConditionalGeneration"
