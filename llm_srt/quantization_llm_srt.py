"""The LLM's linear layers on the CPU's fast kernels: weight-only int8 and int4 through transformers' quantization
interface, and bf16 products of a few rows (decoding) through matrix-vector kernels.

- [`LlmSrtQuantizationConfig`] (`quant_method: "llm_srt"`, `weights="int8"|"int4"`) with its quantizer, registered
  in transformers when this module is imported (`modeling_llm_srt.py` imports it, so a saved folder loads with
  `trust_remote_code=True` where llm_srt is not installed). `from_pretrained(folder, quantization_config=...)`
  quantizes a float folder while loading; a saved quantized folder (its `config.json` holds the config) loads again
  with its int8/int4 weights.
- [`Int8Linear`]: `aten._weight_int8pack_mm` (per-output-channel symmetric scales: w = q * scale).
- [`Int4Linear`]: `aten._weight_int4pack_mm_for_cpu` (groups of `group_size` inputs, asymmetric:
  w = (q - 8) * scale + zero).
- [`FewRowsLinear`]: the LLM's float linear layers; up to `FEW_ROWS` rows of bf16 on the CPU go through `torch.mv` /
  `torch.mm(weight, x.T)`, which read the weight near the memory's speed where `F.linear` reaches 0.5-0.9 of it (the
  same products: bitwise equal outputs on the shapes tested).

Stored (portable) layout: int8 `qweight` int8 `[out, in]` + `scales` `[out]`; int4 `qweight` uint8 `[out, in / 2]`
(input 2j in the low nibble, 2j+1 in the high one) + `scales_and_zeros` `[in / group_size, out, 2]`. The int4
kernel's own layout depends on the CPU's instruction set (64-row blocks on AVX-512, 32 on AVX2), so it is made at load
(`pack_int4`) and turned back into the stored one to save (`unpack_int4`). Only CPU kernels: on a GPU use
bitsandbytes.
"""

from __future__ import annotations

import ctypes
import mmap
import os

import torch
from torch import nn
from torch.nn import functional as F
from transformers.quantizers import HfQuantizer
from transformers.quantizers.auto import (
    AUTO_QUANTIZATION_CONFIG_MAPPING, AUTO_QUANTIZER_MAPPING, register_quantization_config, register_quantizer,
)
from transformers.utils import logging
from transformers.utils.quantization_config import QuantizationConfigMixin


logger = logging.get_logger(__name__)

QUANT_METHOD = "llm_srt"
WEIGHT_TYPES = ("int8", "int4")
INT4_GROUP_SIZES = (32, 64, 128, 256)  # what the CPU int4 kernel takes
# Quantized by default: the LLM alone. The Whisper encoder is bound by compute, not memory (measured: int8 does not
# pay there), and the Q-Former projector runs once per window on 80-1500 rows, where the int kernels cost more.
DEFAULT_MODULES_NOT_CONVERTED = ("audio_tower", "projector", "language_detector")
FEW_ROWS = 32  # up to this many rows (tokens x beams), bf16 products go through mv/mm(W, x.T) (bitwise as F.linear)


def cpu_computes_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16, AMX-BF16, Arm BF16): where it does not, bf16 weights
    are slower than float32 ones."""
    capabilities = getattr(torch.cpu, "get_capabilities", lambda: {})()
    return any(value is True and "bf16" in name for name, value in capabilities.items())


# ------------------------------------------------------------------------------------------------------ bf16, few rows
class FewRowsLinear(nn.Linear):
    """`nn.Linear` whose inference on a few rows of bf16 on the CPU reads its weight through `torch.addmv` (one row)
    or `torch.addmm(bias, weight, x.T)` (up to `FEW_ROWS`): 1.2-1.6x faster than `F.linear` at batch 1 on the 3B's
    shapes, and the same products (bitwise equal outputs on the 3B's shapes). Everything else (training, float32,
    longer inputs, GPUs) is `F.linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        weight, bias = self.weight, self.bias
        if (rows > FEW_ROWS or x.dtype != torch.bfloat16 or weight.dtype != torch.bfloat16 or x.device.type != "cpu"
                or torch.is_grad_enabled()):
            return F.linear(x, weight, bias)
        flat = x.reshape(rows, self.in_features)
        if rows == 1:
            out = torch.mv(weight, flat[0]) if bias is None else torch.addmv(bias, weight, flat[0])
        else:  # bias added inside the product, before the one rounding to bf16, as F.linear does
            out = (torch.mm(weight, flat.t()) if bias is None else torch.addmm(bias[:, None], weight, flat.t())).t()
        return out.contiguous().view(*x.shape[:-1], self.out_features)


def use_few_rows_linear(module: nn.Module) -> None:
    """Make every plain `nn.Linear` in `module` a [`FewRowsLinear`] (same parameters and state dict)."""
    for child in module.modules():
        if type(child) is nn.Linear:
            child.__class__ = FewRowsLinear


# ------------------------------------------------------------------------------------------------- int4 layouts
def nibbles_to_codes(nibbles: torch.Tensor) -> torch.Tensor:
    """Stored int4 `[out, in / 2]` -> codes 0..15 `[out, in]` (uint8)."""
    return torch.stack([nibbles & 15, nibbles >> 4], -1).view(nibbles.shape[0], -1)


def codes_to_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """Codes 0..15 `[out, in]` -> stored int4 `[out, in / 2]` (input 2j in the low nibble)."""
    return (codes[:, 0::2] | (codes[:, 1::2] << 4)).contiguous()


def _to_kernel(nibbles: torch.Tensor, lanes: bool) -> torch.Tensor:
    """Blocks of stored rows `[blocks, n, K / 2]` -> the kernel's bytes `[blocks, K, n / 2]`. Kernel byte (k, i) holds
    input k of two rows, a (low nibble) and b: with `lanes` (full blocks on AVX-512: 64 rows, AVX2: 32) a = row i,
    b = row i + n / 2; otherwise (tail blocks, other CPUs) a = row 2i, b = row 2i + 1. Works on the stored bytes
    directly: input 2j is a byte's low nibble, 2j + 1 its high one."""
    blocks, n, half_k = nibbles.shape
    if lanes:
        a, b = nibbles[:, : n // 2], nibbles[:, n // 2:]
    else:
        a, b = nibbles[:, 0::2], nibbles[:, 1::2]
    even = (a & 15) | (b << 4)  # inputs 2j
    odd = (a >> 4) | (b & 0xF0)  # inputs 2j + 1
    return torch.stack([even, odd], 3).view(blocks, n // 2, 2 * half_k).transpose(1, 2)


def _from_kernel(packed: torch.Tensor, lanes: bool) -> torch.Tensor:
    """The inverse of `_to_kernel`: `[blocks, K, n / 2]` bytes -> stored rows `[blocks, n, K / 2]`."""
    blocks, k, half_n = packed.shape
    pairs = packed.transpose(1, 2).reshape(blocks, half_n, k // 2, 2)
    even, odd = pairs[..., 0], pairs[..., 1]
    a, b = (even & 15) | (odd << 4), (even >> 4) | (odd & 0xF0)
    if lanes:
        return torch.cat([a, b], 1)
    return torch.stack([a, b], 2).view(blocks, 2 * half_n, k // 2)


# rows per block of the layouts torch's CPU int4 kernel uses (full blocks in lanes, or pairs throughout), by CPU
_LAYOUTS = {"avx512": (64, True), "avx2": (32, True), "pairs32": (32, False), "pairs64": (64, False),
            "pairs16": (16, False)}
_LAYOUT: list = []  # the layout found on this CPU (None: none of the above; torch packs, the stored form is kept)


def _pack_with(layout: str, nibbles: torch.Tensor) -> torch.Tensor:
    """Stored rows `[out, K / 2]` -> the kernel's bytes `[out, K / 2]`: full blocks, then the tail block in pairs."""
    block, lanes = _LAYOUTS[layout]
    rows, half_k = nibbles.shape
    full = rows - rows % block
    parts = [_to_kernel(nibbles[:full].view(full // block, block, half_k), lanes).reshape(-1)]
    if full < rows:
        parts.append(_to_kernel(nibbles[full:].unsqueeze(0), False).reshape(-1))
    return torch.cat(parts).view(rows, half_k)


def _unpack_with(layout: str, packed: torch.Tensor) -> torch.Tensor:
    block, lanes = _LAYOUTS[layout]
    rows, k = packed.shape[0], packed.shape[1] * 2
    full = rows - rows % block
    parts = [_from_kernel(packed[:full].reshape(full // block, k, block // 2), lanes).reshape(full, k // 2)]
    if full < rows:
        tail = rows - full
        parts.append(_from_kernel(packed[full:].reshape(1, k, tail // 2), False).reshape(tail, k // 2))
    return torch.cat(parts)


def kernel_layout() -> str | None:
    """The int4 kernel's layout on this CPU, found once by packing a probe with torch and comparing."""
    if not _LAYOUT:
        probe = torch.randint(0, 16, (2 * 64 + 48, 64), generator=torch.Generator().manual_seed(0), dtype=torch.int32)
        reference = torch.ops.aten._convert_weight_to_int4pack_for_cpu(probe, 1).view(probe.shape[0], -1)
        nibbles = codes_to_nibbles(probe.to(torch.uint8))
        found = [name for name in _LAYOUTS if torch.equal(_pack_with(name, nibbles), reference)]
        _LAYOUT.append(found[0] if found else None)
        if not found:
            logger.warning("The CPU int4 kernel's weight layout is not one llm_srt knows: int4 layers keep their stored "
                           "form beside the kernel's (more memory) so they can be saved.")
    return _LAYOUT[0]


STEP_BYTES = 64 << 20  # (un)packing works on this much of a weight at a time: the transients stay small


def _rows_per_step(nibbles: torch.Tensor) -> int:
    return max(64, STEP_BYTES // max(1, nibbles.shape[1]) // 64 * 64)


def pack_int4(nibbles: torch.Tensor) -> torch.Tensor:
    """Stored int4 `[out, in / 2]` -> the CPU kernel's layout, about STEP_BYTES at a time."""
    layout = kernel_layout()
    rows_per_step = _rows_per_step(nibbles)
    out = torch.empty_like(nibbles, memory_format=torch.contiguous_format)
    for start in range(0, nibbles.shape[0], rows_per_step):
        rows = nibbles[start:start + rows_per_step]
        if layout is None:
            codes = nibbles_to_codes(rows).to(torch.int32)
            out[start:start + len(rows)] = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
        else:
            out[start:start + len(rows)] = _pack_with(layout, rows)
    return out


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """The kernel's layout (made by [`pack_int4`] on this CPU) -> stored int4 `[out, in / 2]`."""
    layout = kernel_layout()
    if layout is None:
        raise ValueError("This CPU's int4 layout cannot be turned back into the stored one.")
    rows_per_step = _rows_per_step(packed)
    out = torch.empty_like(packed)
    for start in range(0, packed.shape[0], rows_per_step):
        chunk = packed[start:start + rows_per_step]
        out[start:start + len(chunk)] = _unpack_with(layout, chunk)
    return out


# --------------------------------------------------------------------------------------------------- quantizing
QUANTIZE_STEP = 1 << 24  # weights quantized at a time (in float32: 64 MB held besides)


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Float `[out, in]` -> (int8 codes `[out, in]`, float32 scales `[out]`): symmetric per output row, w = q * scale.
    Computed QUANTIZE_STEP weights at a time in float32."""
    rows_per_step = max(1, QUANTIZE_STEP // weight.shape[1])
    codes = torch.empty(weight.shape, dtype=torch.int8)
    scales = torch.empty(weight.shape[0])
    for start in range(0, weight.shape[0], rows_per_step):
        rows = weight[start:start + rows_per_step].float()
        scale = (rows.abs().amax(1) / 127).clamp_min(1e-12)
        codes[start:start + len(rows)] = torch.round(rows / scale[:, None]).clamp_(-127, 127).to(torch.int8)
        scales[start:start + len(rows)] = scale
    return codes, scales


def quantize_int4(weight: torch.Tensor, group_size: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Float `[out, in]` -> (stored int4 `[out, in / 2]`, `scales_and_zeros` `[in / group_size, out, 2]` in `dtype`):
    per group of `group_size` inputs the codes 0..15 span its minimum to its maximum, w = (q - 8) * scale + zero
    (scale and zero rounded to `dtype` first, so the codes are chosen against what the kernel uses)."""
    out_features, in_features = weight.shape
    rows_per_step = max(1, QUANTIZE_STEP // in_features)
    nibbles = torch.empty(out_features, in_features // 2, dtype=torch.uint8)
    scales_and_zeros = torch.empty(in_features // group_size, out_features, 2, dtype=dtype)
    for start in range(0, out_features, rows_per_step):
        rows = weight[start:start + rows_per_step].float().view(-1, in_features // group_size, group_size)
        low, high = rows.amin(-1), rows.amax(-1)
        scale = ((high - low) / 15).clamp_min(1e-12).to(dtype).float()
        zero = (low + 8 * scale).to(dtype).float()
        codes = torch.round((rows - (zero - 8 * scale)[..., None]) / scale[..., None]).clamp_(0, 15).to(torch.uint8)
        end = start + rows.shape[0]
        nibbles[start:end] = codes_to_nibbles(codes.view(-1, in_features))
        scales_and_zeros[:, start:end] = torch.stack([scale, zero], -1).transpose(0, 1).to(dtype)
    return nibbles, scales_and_zeros


def release_file_pages(tensor: torch.Tensor | None) -> None:
    """Drop this process's mapping of the pages under `tensor` when they belong to a memory-mapped `.safetensors`
    file (a loaded weight turned into another form): the file stays in the page cache, the process's resident
    memory stops counting it, so loading int8/int4 peaks at about their size instead of twice it. Anonymous memory
    is never touched (dropping it would lose data); Linux only, elsewhere nothing happens."""
    if tensor is None or tensor.device.type != "cpu" or not tensor.numel() or not tensor.is_contiguous() \
            or not os.path.exists("/proc/self/maps"):
        return
    start = tensor.data_ptr()  # the tensor's own bytes: its storage may be the whole file
    end = start + tensor.numel() * tensor.element_size()
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and fields[5].endswith(".safetensors"):
                low, high = (int(x, 16) for x in fields[0].split("-"))
                if low <= start and end <= high:
                    break
        else:
            return
    page = mmap.PAGESIZE
    first, last = -(-start // page) * page, end // page * page  # whole pages inside the tensor only
    if last > first:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), 4)  # MADV_DONTNEED


def _check_cpu(module: nn.Module, x: torch.Tensor) -> None:
    if x.device.type != "cpu":
        raise ValueError(f"{type(module).__name__} computes on the CPU only (llm_srt's int8/int4 kernels), got an "
                         f"input on {x.device}; on a GPU load the float model, or use bitsandbytes.")


class Int8Linear(nn.Module):
    """Weight-only int8 linear layer (`aten._weight_int8pack_mm`): `qweight` int8 `[out, in]`, `scales` `[out]`."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: torch.dtype = torch.bfloat16,
                 device=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("qweight", torch.empty(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("scales", torch.empty(out_features, dtype=dtype, device=device))
        self.bias = nn.Parameter(torch.empty(out_features, dtype=dtype, device=device), requires_grad=False) \
            if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, dtype: torch.dtype) -> "Int8Linear":
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, dtype, device="meta")
        codes, scales = quantize_int8(linear.weight.detach())
        layer.qweight, layer.scales = codes, scales.to(dtype)
        if linear.bias is not None:
            layer.bias = nn.Parameter(linear.bias.detach().to(dtype), requires_grad=False)
        return layer

    def finish_loading(self) -> None:
        # The kernel crashes (torch 2.13, 4+ rows) on a weight in a read-only memory-mapped file: own the memory.
        loaded, self.qweight = self.qweight, self.qweight.clone()
        release_file_pages(loaded)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_cpu(self, x)
        rows = x.reshape(-1, self.in_features).to(self.scales.dtype).contiguous()
        out = torch.ops.aten._weight_int8pack_mm(rows, self.qweight, self.scales)
        if self.bias is not None:
            out = out + self.bias
        return out.to(x.dtype).view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Int4Linear(nn.Module):
    """Weight-only int4 linear layer (`aten._weight_int4pack_mm_for_cpu`): stored `qweight` uint8 `[out, in / 2]` and
    `scales_and_zeros` `[in / group_size, out, 2]`; computes with `packed`, the kernel's layout made at load."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, group_size: int = 128,
                 dtype: torch.dtype = torch.bfloat16, device=None):
        super().__init__()
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        self.register_buffer("qweight", torch.empty(out_features, in_features // 2, dtype=torch.uint8, device=device))
        self.register_buffer("scales_and_zeros", torch.empty(in_features // group_size, out_features, 2, dtype=dtype,
                                                             device=device))
        self.register_buffer("packed", None, persistent=False)
        self.bias = nn.Parameter(torch.empty(out_features, dtype=dtype, device=device), requires_grad=False) \
            if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int, dtype: torch.dtype) -> "Int4Linear":
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, group_size, dtype, device="meta")
        layer.qweight, layer.scales_and_zeros = quantize_int4(linear.weight.detach(), group_size, dtype)
        if linear.bias is not None:
            layer.bias = nn.Parameter(linear.bias.detach().to(dtype), requires_grad=False)
        layer.finish_loading()
        return layer

    def finish_loading(self) -> None:
        """Make the kernel's layout; the stored form is dropped where it can be made back to save."""
        self.packed = pack_int4(self.qweight)
        if kernel_layout() is not None:
            loaded, self.qweight = self.qweight, None
            release_file_pages(loaded)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.qweight is None:
            destination[prefix + "qweight"] = unpack_int4(self.packed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_cpu(self, x)
        if self.packed is None:  # filled by load_state_dict rather than the quantizer
            self.finish_loading()
        rows = x.reshape(-1, self.in_features).to(self.scales_and_zeros.dtype).contiguous()
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(rows, self.packed, self.group_size, self.scales_and_zeros)
        if self.bias is not None:
            out = out + self.bias
        return out.to(x.dtype).view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}, "
                f"bias={self.bias is not None}")


# ------------------------------------------------------------------------------------------ the model's layers
def converts(config: "LlmSrtQuantizationConfig", name: str, linear: nn.Module, llm_prefix: str = "") -> bool:
    """Whether the linear layer `name` (a layer of the LLM, under `llm_prefix`, outside `modules_to_not_convert`) is
    quantized: only shapes the kernel takes (int8: inputs a multiple of 32, where torch 2.13's kernel crashes
    otherwise; int4: inputs a multiple of `group_size`, outputs of 16), so that saving and loading agree from the
    shapes alone."""
    if not isinstance(linear, nn.Linear) or not name.startswith(llm_prefix):
        return False
    parts = name.split(".")
    if any(skip in parts or name.startswith(skip + ".") for skip in config.modules_to_not_convert):
        return False
    if config.weights == "int8":
        return linear.in_features % 32 == 0
    return linear.in_features % config.group_size == 0 and linear.out_features % 16 == 0


def _linear_layers(model: nn.Module, config: "LlmSrtQuantizationConfig"):
    """(parent, attribute, name, layer) of every linear layer `config` quantizes, in order: the LLM's (an LLM-SRT
    model's `language_model`, or a causal LM's own)."""
    llm_prefix = "language_model." if hasattr(model, "language_model") else ""
    for parent_name, parent in list(model.named_modules()):
        for attribute, child in list(parent.named_children()):
            name = f"{parent_name}.{attribute}" if parent_name else attribute
            if converts(config, name, child, llm_prefix):
                yield parent, attribute, name, child


def untie_output_embeddings(model: nn.Module) -> None:
    """The LLM's output layer gets its own (quantized) weights: the embedding keeps its float rows for the lookup."""
    text_config = model.config.get_text_config()
    if getattr(text_config, "tie_word_embeddings", False):
        text_config.tie_word_embeddings = False
        output = model.get_output_embeddings()
        if output is not None and output.weight is model.get_input_embeddings().weight and not output.weight.is_meta:
            output.weight = nn.Parameter(output.weight.detach(), requires_grad=False)


def quantized_skeleton_(model: nn.Module, config: "LlmSrtQuantizationConfig", dtype: torch.dtype) -> None:
    """Replace the layers `config` quantizes with empty int8/int4 layers that a saved quantized folder fills."""
    untie_output_embeddings(model)
    for parent, attribute, _, layer in _linear_layers(model, config):
        device = layer.weight.device
        if config.weights == "int8":
            new = Int8Linear(layer.in_features, layer.out_features, layer.bias is not None, dtype, device=device)
        else:
            new = Int4Linear(layer.in_features, layer.out_features, layer.bias is not None, config.group_size, dtype,
                             device=device)
        setattr(parent, attribute, new)


def quantize_(model: nn.Module, config: "LlmSrtQuantizationConfig") -> nn.Module:
    """Quantize a loaded float model in place, one layer at a time (each float weight is released as its layer is
    done, unless something else holds it)."""
    untie_output_embeddings(model)
    converted = 0
    for parent, attribute, _, layer in _linear_layers(model, config):
        dtype = layer.weight.dtype if layer.weight.dtype.is_floating_point else torch.bfloat16
        new = (Int8Linear.from_linear(layer, dtype) if config.weights == "int8"
               else Int4Linear.from_linear(layer, config.group_size, dtype))
        setattr(parent, attribute, new)
        converted += 1
    if not converted:
        raise ValueError(f"No linear layer of this model can be quantized to {config.weights} (the LLM's layers need "
                         "inputs that are a multiple of 32 for int8, of group_size and outputs of 16 for int4).")
    model.config.quantization_config = config
    return model


# --------------------------------------------------------------------------------------- transformers' interface
class LlmSrtQuantizationConfig(QuantizationConfigMixin):
    """Weight-only int8 or int4 for the LLM on CPU kernels: `from_pretrained(folder, quantization_config=
    LlmSrtQuantizationConfig("int4"))` (or `quantization_config="int4"` with LLM-SRT's classes).

    Args:
        weights: "int8" (per output channel; 2x fewer bytes than bf16) or "int4" (groups of `group_size` inputs;
            4x fewer).
        group_size: int4 group size, one of 32, 64, 128, 256 (default 128).
        modules_to_not_convert: module names kept in float (default: the encoder, the projector and the language
            detector; only the LLM's linear layers are ever quantized).
    """

    def __init__(self, weights: str = "int4", group_size: int = 128, modules_to_not_convert: list[str] | None = None,
                 **kwargs):
        self.quant_method = QUANT_METHOD
        if weights not in WEIGHT_TYPES:
            raise ValueError(f"LlmSrtQuantizationConfig: weights must be one of {', '.join(WEIGHT_TYPES)}, got "
                             f"{weights!r}.")
        if group_size not in INT4_GROUP_SIZES:
            raise ValueError(f"LlmSrtQuantizationConfig: group_size must be one of {INT4_GROUP_SIZES}, got "
                             f"{group_size!r}.")
        self.weights = weights
        self.group_size = group_size
        self.modules_to_not_convert = list(DEFAULT_MODULES_NOT_CONVERTED if modules_to_not_convert is None
                                           else modules_to_not_convert)

    def describe(self) -> str:
        return self.weights if self.weights == "int8" else f"int4 (groups of {self.group_size})"


def as_quantization_config(value) -> QuantizationConfigMixin | None:
    """`value` as a quantization config: None, a config object, "int8"/"int4", or a saved config's dict."""
    if value is None or isinstance(value, QuantizationConfigMixin):
        return value
    if isinstance(value, str):
        if value not in WEIGHT_TYPES:
            raise ValueError(f"quantization must be one of {', '.join(WEIGHT_TYPES)}, got {value!r}.")
        return LlmSrtQuantizationConfig(value)
    if isinstance(value, dict) and value.get("quant_method") == QUANT_METHOD:
        return LlmSrtQuantizationConfig.from_dict(value)
    raise ValueError(f"quantization_config must be a transformers quantization config, 'int8' or 'int4', got "
                     f"{value!r}.")


def check_requested_quantization(config, requested: QuantizationConfigMixin | None, folder) -> None:
    """A folder saved quantized loads as saved: asking for another quantization is an error naming both
    (transformers would keep the saved one with a warning)."""
    saved = getattr(config, "quantization_config", None)
    saved = saved.to_dict() if hasattr(saved, "to_dict") else saved
    if requested is None or not isinstance(saved, dict) or saved.get("quant_method") != QUANT_METHOD:
        return
    wanted = requested.to_dict()
    if any(wanted.get(key) != saved.get(key) for key in ("quant_method", "weights", "group_size")):
        raise ValueError(f"{folder} is saved quantized ({saved.get('weights')}, group_size {saved.get('group_size')}) "
                         "and loads as saved: drop the quantization, or quantize its float original instead (asked "
                         f"for {wanted.get('weights', wanted.get('quant_method'))}).")


class LlmSrtQuantizer(HfQuantizer):
    """Loads a saved int8/int4 folder (its layers made empty before the weights load, then packed), or quantizes a
    float one after its weights load."""

    requires_calibration = False

    def validate_environment(self, device_map=None, **kwargs):
        devices = set(device_map.values()) if isinstance(device_map, dict) else {device_map} if device_map else set()
        if any(str(device) not in ("cpu", "disk") for device in devices):
            raise ValueError(f"llm_srt's int8/int4 quantization runs on the CPU, not on {sorted(map(str, devices))}; "
                             "on a GPU use bitsandbytes (BitsAndBytesConfig).")

    def _process_model_before_weight_loading(self, model, dtype=None, **kwargs):
        if self.pre_quantized:
            quantized_skeleton_(model, self.quantization_config,
                                dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.bfloat16)
        return model

    def _process_model_after_weight_loading(self, model, **kwargs):
        if not self.pre_quantized:
            return quantize_(model, self.quantization_config)
        for module in model.modules():
            if isinstance(module, (Int8Linear, Int4Linear)):
                module.finish_loading()
        return model

    def is_serializable(self) -> bool:
        return True

    @property
    def is_trainable(self) -> bool:
        return False


def register() -> None:
    """Teach transformers the "llm_srt" quantization method (once per process: the installed package's classes and a
    saved folder's copy of this module are the same code)."""
    if QUANT_METHOD not in AUTO_QUANTIZATION_CONFIG_MAPPING:
        register_quantization_config(QUANT_METHOD)(LlmSrtQuantizationConfig)
    if QUANT_METHOD not in AUTO_QUANTIZER_MAPPING:
        register_quantizer(QUANT_METHOD)(LlmSrtQuantizer)


register()

__all__ = ["FewRowsLinear", "Int4Linear", "Int8Linear", "LlmSrtQuantizationConfig", "LlmSrtQuantizer",
           "as_quantization_config", "check_requested_quantization", "cpu_computes_bf16", "pack_int4", "quantize_",
           "quantize_int4", "quantize_int8", "unpack_int4", "use_few_rows_linear"]
