"""`VllmEngine`'s start-up settings, without vLLM: vLLM's own modules are replaced by stand-ins that record the engine
arguments. The engine itself is tested against vLLM in tests/integration/test_vllm.py."""

import sys
import types

import pytest

from llm_srt.configuration_llm_srt import LlmSrtConfig
from llm_srt.vllm.engine import GIB, default_kv_cache_gib


@pytest.fixture
def fake_vllm(monkeypatch):
    """vLLM's modules as stand-ins: `AsyncEngineArgs` records its keywords; the engine starts and stops at once."""
    started = []

    class AsyncLLM:
        @classmethod
        def from_engine_args(cls, args):
            started.append(args)
            return cls()

        def shutdown(self):
            pass

    vllm = types.ModuleType("vllm")
    vllm.AsyncEngineArgs = lambda **kwargs: kwargs
    vllm.SamplingParams = dict
    async_llm = types.ModuleType("vllm.v1.engine.async_llm")
    async_llm.AsyncLLM = AsyncLLM
    for name, module in {"vllm": vllm, "vllm.v1": types.ModuleType("vllm.v1"),
                         "vllm.v1.engine": types.ModuleType("vllm.v1.engine"),
                         "vllm.v1.engine.async_llm": async_llm}.items():
        monkeypatch.setitem(sys.modules, name, module)
    return started


def test_the_kv_cache_holds_a_batch_of_the_longest_answers_by_default(fake_vllm, tiny_folder):
    """vLLM's default (0.92 of the machine's memory on CPU) refused to start where other work held 5 GB of 24: the
    engine sizes its KV cache for `kv_cache_sequences` sequences of its longest prompt + answer instead, unless told
    a size, or told vLLM's own memory setting."""
    from llm_srt.vllm.engine import VllmEngine

    config = LlmSrtConfig.from_pretrained(tiny_folder)
    with VllmEngine(tiny_folder, max_model_len=1000) as engine:
        assert engine.config.text_config.num_hidden_layers == config.text_config.num_hidden_layers
    with VllmEngine(tiny_folder, max_model_len=1000, kv_cache_sequences=4, dtype="bfloat16"):
        pass
    with VllmEngine(tiny_folder, kv_cache_gib=0.5):
        pass
    with VllmEngine(tiny_folder, gpu_memory_utilization=0.5):
        pass
    default, fewer, given, theirs = fake_vllm
    assert default["kv_cache_memory_bytes"] == int(default_kv_cache_gib(config, 1000, 16) * GIB)
    assert fewer["kv_cache_memory_bytes"] == int(default_kv_cache_gib(config, 1000, 4, "bfloat16") * GIB)
    assert 7 * fewer["kv_cache_memory_bytes"] < default["kv_cache_memory_bytes"] < 9 * fewer["kv_cache_memory_bytes"]
    assert given["kv_cache_memory_bytes"] == GIB // 2
    assert "kv_cache_memory_bytes" not in theirs and theirs["gpu_memory_utilization"] == 0.5
    with pytest.raises(ValueError, match="kv_cache_gib must be"):
        VllmEngine(tiny_folder, kv_cache_gib=0)


def test_the_kv_cache_size_of_the_released_shapes():
    """Keys and values of every layer (Qwen2.5-3B: 36 layers, 2 KV heads of 128), a quarter more for vLLM's blocks:
    16 answers of 1008 tokens (80 audio slots, 128 of prompt room, 2 x 400 new tokens) fit in 0.69 GiB."""
    config = LlmSrtConfig.from_preset("3b")
    per_token = 2 * 36 * 2 * 128 * 2  # bytes in bfloat16
    assert default_kv_cache_gib(config, 1008, 16, "bfloat16") == pytest.approx(1.25 * per_token * 1008 * 16 / GIB)
    assert default_kv_cache_gib(config, 1008, 16) == pytest.approx(2 * default_kv_cache_gib(config, 1008, 16,
                                                                                                "bfloat16"))


def test_llm_srt_serve_passes_its_kv_cache_flag_to_the_vllm_engine(monkeypatch, tiny_folder, capsys):
    """`--kv-cache-gib` (`ServeSettings.kv_cache_gib`) reaches `open_engine` with `--max-batch-size` as the number
    of sequences its default holds; with the transformers engine it is refused by name."""
    from llm_srt.cli.main import build_parser
    from llm_srt.serving import app
    from llm_srt.serving.settings import ServeSettings, from_arguments

    opened = {}

    def open_engine(model, engine, **kwargs):
        opened.update(kwargs, engine=engine)
        raise RuntimeError("stop here")

    monkeypatch.setattr(app, "open_engine", open_engine)
    args = build_parser().parse_args(["serve", tiny_folder, "--engine", "vllm", "--kv-cache-gib", "1.5",
                                      "--max-batch-size", "4"])
    with pytest.raises(RuntimeError, match="stop here"):
        app.create_app(tiny_folder, **from_arguments(args))
    assert (opened["engine"], opened["kv_cache_gib"], opened["kv_cache_sequences"]) == ("vllm", 1.5, 4)
    assert build_parser().parse_args(["serve", tiny_folder]).kv_cache_gib is None
    with pytest.raises(ValueError, match="kv_cache_gib applies to the vLLM engine"):
        ServeSettings(kv_cache_gib=2)
