"""The paper's sizes without the Hub: LLM-SRT models in the released shapes (Whisper-large-v3 + Qwen2.5-3B, 7B, 32B)
with random weights, for benchmarks and tests of memory and speed.

[`build_real_size_model`] builds the model on the meta device and allocates it once, in the target dtype: never in
float32, never twice. [`write_real_size_model`] writes a model folder shard by shard (about `shard_gb` held at a
time), bf16 or quantized (int8/int4 in `quantization_llm_srt`'s stored layout, with random codes), so that a 24 GB
machine can make a 7B or 32B folder and then load it memory-mapped. Fewer layers (`llm_layers`, `encoder_layers`,
`projector_layers`) keep every width, head count, GQA group and the vocabulary real, for fast tests.

Random weights: linear, convolution and embedding weights N(0, 0.02) (Qwen2.5's initializer range), biases 0,
norms 1, the Q-Former's queries N(0, 1), Whisper's positions its sinusoids. Outputs are gibberish; shapes, bytes read
per token and FLOPs per window are the real ones.
"""

from __future__ import annotations

import json
import os
import time

import torch
from torch import nn

from ..configuration_llm_srt import LlmSrtConfig
from ..modeling_llm_srt import LlmSrtForConditionalGeneration, LlmSrtProjector
from ..quantization_llm_srt import LlmSrtQuantizationConfig, as_quantization_config, converts, untie_output_embeddings


WEIGHT_STD = 0.02
INDEX_NAME = "model.safetensors.index.json"


def real_size_config(preset: str = "3b", llm_layers: int | None = None, encoder_layers: int | None = None,
                     projector_layers: int | None = None) -> LlmSrtConfig:
    """`LlmSrtConfig.from_preset(preset)` with, optionally, fewer layers (every width and head count kept)."""
    config = LlmSrtConfig.from_preset(preset)
    for sub, name, value in (("text_config", "num_hidden_layers", llm_layers),
                             ("audio_config", "encoder_layers", encoder_layers),
                             ("projector_config", "num_hidden_layers", projector_layers)):
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} of {sub} must be a whole number >= 1, got {value!r}.")
            setattr(getattr(config, sub), name, value)
    layer_types = getattr(config.text_config, "layer_types", None)
    if layer_types and len(layer_types) != config.text_config.num_hidden_layers:  # one attention type per layer
        config.text_config.layer_types = [layer_types[0]] * config.text_config.num_hidden_layers
    return config


def _meta_model(config: LlmSrtConfig, dtype: torch.dtype) -> LlmSrtForConditionalGeneration:
    with torch.device("meta"):
        model = LlmSrtForConditionalGeneration(config)
    return model.to(dtype)  # on the meta device: no memory, and every tensor allocated later has this dtype


def _fill(module: nn.Module, name: str, tensor: torch.Tensor, generator: torch.Generator) -> None:
    """Random weights in place (module docstring), by the kind of module holding `tensor`."""
    with torch.no_grad():
        if "norm" in type(module).__name__.lower():
            tensor.fill_(1.0 if name == "weight" else 0.0)
        elif name == "bias":
            tensor.zero_()
        elif isinstance(module, LlmSrtProjector) and name == "query":
            tensor.normal_(0.0, 1.0, generator=generator)
        elif name == "weight" and isinstance(module, nn.Embedding) and module.weight.shape[0] <= 1500:
            from transformers.models.whisper.modeling_whisper import sinusoids  # Whisper's fixed positions

            tensor.copy_(sinusoids(*tensor.shape))
        else:
            tensor.normal_(0.0, WEIGHT_STD, generator=generator)


def _rebuild_rotary(model: nn.Module) -> None:
    """Rotary frequencies are computed, not stored: `to_empty` leaves them uninitialized. Rebuild them (float32)."""
    for parent in list(model.modules()):
        for attribute, child in list(parent.named_children()):
            if hasattr(child, "inv_freq") and hasattr(child, "config"):
                setattr(parent, attribute, type(child)(config=child.config))


def build_real_size_model(preset: str = "3b", dtype: torch.dtype = torch.bfloat16, llm_layers: int | None = None,
                          encoder_layers: int | None = None, projector_layers: int | None = None,
                          seed: int = 0) -> LlmSrtForConditionalGeneration:
    """A random LLM-SRT of the `preset` shapes in `dtype`, in eval mode: built on the meta device, then each tensor
    allocated once in `dtype` and filled in place."""
    config = real_size_config(preset, llm_layers, encoder_layers, projector_layers)
    model = _meta_model(config, dtype).to_empty(device="cpu")
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            _fill(module, name, parameter.data, generator)
    _rebuild_rotary(model)
    model.tie_weights()
    return model.eval().requires_grad_(False)


def _random_quantized(prefix: str, layer: nn.Linear, config: LlmSrtQuantizationConfig, dtype: torch.dtype,
                      generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A quantized layer's stored tensors with random codes, scaled so the weights' spread is WEIGHT_STD."""
    out_features, in_features = layer.out_features, layer.in_features
    if config.weights == "int8":
        codes = torch.randint(-127, 128, (out_features, in_features), dtype=torch.int8, generator=generator)
        tensors = {"qweight": codes, "scales": torch.full((out_features,), WEIGHT_STD / 73.3, dtype=dtype)}
    else:  # uniform codes 0..15: (q - 8) has spread 4.6
        nibbles = torch.randint(0, 256, (out_features, in_features // 2), dtype=torch.uint8, generator=generator)
        scales = torch.full((in_features // config.group_size, out_features), WEIGHT_STD / 4.6, dtype=dtype)
        tensors = {"qweight": nibbles, "scales_and_zeros": torch.stack([scales, torch.zeros_like(scales)], -1)}
    if layer.bias is not None:
        tensors["bias"] = torch.zeros(out_features, dtype=dtype)
    return {f"{prefix}.{key}": value for key, value in tensors.items()}


def write_real_size_model(folder: str | os.PathLike, preset: str = "3b", dtype: torch.dtype = torch.bfloat16,
                          quantization=None, llm_layers: int | None = None, encoder_layers: int | None = None,
                          projector_layers: int | None = None, seed: int = 0, shard_gb: float = 1.0,
                          log=print) -> str:
    """Write a random LLM-SRT of the `preset` shapes to `folder` (config, code, processor, weights), shard by shard:
    about `shard_gb` of tensors is held at a time. `quantization` ("int8", "int4" or an `LlmSrtQuantizationConfig`)
    writes the LLM's linear layers quantized, with random codes; the folder loads with `from_pretrained` as any
    quantized folder. Returns the folder."""
    from safetensors.torch import save_file

    from . import build_tiny_processor

    folder = os.fspath(folder)
    quantization = as_quantization_config(quantization)
    config = real_size_config(preset, llm_layers, encoder_layers, projector_layers)
    model = _meta_model(config, dtype)
    if quantization is not None:
        untie_output_embeddings(model)
        model.config.quantization_config = quantization
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder, state_dict={})  # config, generation config and code; weights below
    build_tiny_processor(config).save_pretrained(folder)
    generator = torch.Generator().manual_seed(seed)
    llm_prefix = "language_model."
    weight_map, shard, shard_bytes, total, started = {}, {}, 0, 0, time.time()

    def flush():
        nonlocal shard, shard_bytes
        name = f"model-{len(set(weight_map.values())) + 1:05d}.safetensors"
        save_file(shard, os.path.join(folder, name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
        shard, shard_bytes = {}, 0
        log(f"  {name}: {total / 1e9:.2f} GB written, {time.time() - started:.0f} s")

    tied_output = model.get_output_embeddings() if quantization is None and config.text_config.tie_word_embeddings \
        else None  # the LLM's output layer is its embedding: nothing of its own to write
    for module_name, module in model.named_modules():
        if module is tied_output:
            continue
        if quantization is not None and converts(quantization, module_name, module, llm_prefix):
            tensors = _random_quantized(module_name, module, quantization, dtype, generator)
        else:
            tensors = {}
            for name, parameter in module.named_parameters(recurse=False):
                tensors[f"{module_name}.{name}"] = tensor = torch.empty(parameter.shape, dtype=parameter.dtype)
                _fill(module, name, tensor, generator)
        for key, tensor in tensors.items():
            shard[key] = tensor
            shard_bytes += tensor.numel() * tensor.element_size()
            total += tensor.numel() * tensor.element_size()
        if shard_bytes >= shard_gb * 1e9:
            flush()
    if shard:
        flush()
    with open(os.path.join(folder, INDEX_NAME), "w", encoding="utf-8") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1)
    return folder


def weight_bytes(folder: str | os.PathLike) -> int:
    """Bytes of weights a model folder holds (its safetensors files)."""
    folder = os.fspath(folder)
    return sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder)
               if name.endswith(".safetensors"))


def llm_bytes_per_token(model: nn.Module) -> int:
    """Bytes of the LLM's weights read to decode one token at batch 1: every layer's weights (and scales), the output
    layer's whole matrix (also when tied to the embedding), the embedding lookup's one row aside. What the memory
    roof of decoding divides by the read bandwidth."""
    total = 0
    for name, module in model.named_modules():
        if not name.startswith("language_model") or isinstance(module, nn.Embedding):
            continue
        tensors = list(module.parameters(recurse=False))
        tensors += [buffer for key, buffer in module.named_buffers(recurse=False) if "inv_freq" not in key]
        total += sum(tensor.numel() * tensor.element_size() for tensor in tensors if tensor is not None)
    return total


__all__ = ["build_real_size_model", "llm_bytes_per_token", "real_size_config", "weight_bytes", "write_real_size_model"]
