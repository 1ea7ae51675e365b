"""llm_srt.testing.real_size: the paper's shapes with random weights, built once in bf16 (no float32 copy), written
shard by shard, loaded memory-mapped, decoding. One layer of each part keeps it fast; every width, head count, GQA
group and the vocabulary are the 3B's."""

import json
import os

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from llm_srt import LlmSrtForConditionalGeneration
from llm_srt.quantization_llm_srt import Int4Linear
from llm_srt.testing import build_tiny_processor
from llm_srt.testing.real_size import (
    build_real_size_model, llm_bytes_per_token, real_size_config, weight_bytes, write_real_size_model,
)


LAYERS = {"llm_layers": 1, "encoder_layers": 1, "projector_layers": 1}
LARGE = 2048 * 2048  # elements: a float32 tensor as large as the LLM's smallest square weight would be a copy


class Float32Watch(TorchDispatchMode):
    """Records every large float32 tensor an operation makes on the CPU."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32 and tensor.numel() >= LARGE \
                    and tensor.device.type == "cpu":
                self.seen.append((str(func), tuple(tensor.shape)))
        return out


def mapped_files() -> dict[int, str]:
    """Start address -> file of this process's file mappings."""
    found = {}
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split()
            if len(parts) >= 6:
                start, end = (int(x, 16) for x in parts[0].split("-"))
                found[(start, end)] = parts[5]
    return found


def file_behind(tensor: torch.Tensor) -> str | None:
    address = tensor.data_ptr()
    return next((path for (start, end), path in mapped_files().items() if start <= address < end), None)


@pytest.fixture(scope="module")
def built():
    with Float32Watch() as watch:
        model = build_real_size_model("3b", **LAYERS, seed=0)
    return model, watch.seen


def test_real_shapes_built_once_in_bf16(built):
    model, float32_tensors = built
    text, audio = model.config.text_config, model.config.audio_config
    assert (text.hidden_size, text.intermediate_size, text.num_attention_heads, text.num_key_value_heads,
            text.vocab_size) == (2048, 11008, 16, 2, 151936)
    assert (audio.d_model, audio.encoder_attention_heads, audio.num_mel_bins) == (1280, 20, 128)
    attention = model.language_model.model.layers[0].self_attn
    assert (attention.k_proj.out_features, attention.q_proj.out_features) == (2 * 128, 16 * 128)  # GQA: 8 per group
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert float32_tensors == []  # nothing was made in float32, not even for a moment
    assert model.language_model.model.rotary_emb.inv_freq.dtype == torch.float32  # computed, not a weight
    assert torch.isfinite(model.language_model.model.rotary_emb.inv_freq).all()
    assert model.language_model.lm_head.weight is model.get_input_embeddings().weight  # tied, as Qwen2.5-3B
    assert llm_bytes_per_token(model) == 2 * sum(p.numel() for p in model.language_model.parameters())


def test_written_shard_by_shard_loads_memory_mapped_and_decodes(built, tmp_path):
    model, _ = built
    folder = write_real_size_model(tmp_path / "3b", "3b", **LAYERS, seed=0, shard_gb=0.2, log=lambda *_: None)
    index = json.load(open(os.path.join(folder, "model.safetensors.index.json")))
    assert len(set(index["weight_map"].values())) > 1  # several shards
    assert weight_bytes(folder) == pytest.approx(index["metadata"]["total_size"], rel=0.01)
    with Float32Watch() as watch:
        loaded = LlmSrtForConditionalGeneration.from_pretrained(folder, dtype=torch.bfloat16)
    assert watch.seen == [] and {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    embedding = loaded.get_input_embeddings().weight
    assert (file_behind(embedding) or "").startswith(folder)  # memory-mapped, not copied
    state, expected = loaded.state_dict(), model.state_dict()
    assert state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in expected)
    processor = build_tiny_processor(loaded.config)
    batch = processor([np.zeros(16000, dtype=np.float32)], task="srt", src_lang="eng", tgt_lang="deu",
                      sampling_rate=16000)
    assert batch["input_features"].shape[1:] == (128, 3000)
    tokens = loaded.generate(**batch, max_new_tokens=3, num_beams=1)
    assert tokens.shape == (1, 3)


@pytest.mark.integration
def test_quantized_real_size_folder(tmp_path):
    folder = write_real_size_model(tmp_path / "int4", "3b", quantization="int4", **LAYERS, log=lambda *_: None)
    assert json.load(open(os.path.join(folder, "config.json")))["quantization_config"]["weights"] == "int4"
    model = LlmSrtForConditionalGeneration.from_pretrained(folder, dtype=torch.bfloat16)
    assert isinstance(model.language_model.lm_head, Int4Linear)
    bf16_bytes = 2 * (2048 * 151936 + 2048 * (2 * 2048 + 2 * 256) + 3 * 2048 * 11008)
    assert llm_bytes_per_token(model) < 0.3 * bf16_bytes
    assert model.generate(input_ids=torch.tensor([[1, 2, 3]]), max_new_tokens=2, num_beams=1).shape == (1, 2)


def test_layer_counts_are_checked():
    assert real_size_config("7b", llm_layers=2).text_config.layer_types == ["full_attention"] * 2
    with pytest.raises(ValueError, match="num_hidden_layers of text_config must be a whole number >= 1, got 0"):
        real_size_config("3b", llm_layers=0)
