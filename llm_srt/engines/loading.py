"""Opening a saved model for the CLI, the server, evaluation and benchmarks: the installed llm-srt classes by default,
a folder's own code only on an explicit `--trust-remote-code` (transformers' rule: remote code is opt-in), the dtype
to compute in ([`cpu_dtype`]: bf16 where the CPU computes it natively), the LLM's int8/int4 weights
(`--quantization`), and [`open_engine`], the one way to get a decoding engine (transformers or vLLM) for a model."""

from __future__ import annotations

import json
import os

from ..configuration_llm_srt import LlmSrtConfig, read_config_json
from ..cli.safe_io import UsageError
from . import QUANTIZATIONS


def cpu_dtype(dtype: str | None, device: str | None = None) -> tuple[str | None, str]:
    """The dtype to compute in on `device` when `dtype` (a name) is not given, and a sentence saying so: on the CPU
    bfloat16 where it computes bf16 natively (AVX512-BF16, AMX, Arm BF16), float32 elsewhere (bf16 is emulated
    there, slower); on other devices as saved (None)."""
    from ..quantization_llm_srt import cpu_computes_bf16

    if dtype is not None:
        return dtype, f"computing in {dtype}"
    if (device or "cpu") != "cpu":
        return None, "computing in the saved dtype"
    if cpu_computes_bf16():
        return "bfloat16", "computing in bfloat16: this CPU computes bf16 natively (--dtype float32 for float32)"
    return "float32", "computing in float32: this CPU has no native bf16 (--dtype bfloat16 to use it anyway)"


def saved_quantization(model: str | os.PathLike) -> str | None:
    """The quantization a local model folder was saved with ("int4", "awq", ...), or None."""
    config = read_config_json(model) or {}
    saved = config.get("quantization_config") or {}
    return saved.get("weights") or saved.get("quant_method")


def model_code_to_trust(model: str | os.PathLike, trust_remote_code: bool = False) -> bool:
    """The `trust_remote_code` to load `model` with: a local llm-srt folder whose `*.py` files equal the installed
    package's modules (or that has none) loads with the installed classes (False); a folder whose code differs, or a
    folder of another architecture carrying code, is refused (UsageError naming `--trust-remote-code`) unless
    `trust_remote_code`. A Hub id loads with the installed classes unless `trust_remote_code`."""
    if trust_remote_code:
        return True
    folder = os.fspath(model)
    if not os.path.isdir(folder):
        return False
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # llm_srt/, where the Hub files are
    code = sorted(name for name in os.listdir(folder) if name.endswith(".py"))
    config = read_config_json(folder) or {}  # not JSON: an OSError naming the file, the error, line and column
    model_type = config.get("model_type")
    if model_type not in (None, "llm_srt"):
        if code or config.get("auto_map"):
            raise UsageError(
                f"{folder} holds a {model_type!r} model with its own code, not an llm-srt model: pass "
                "--trust-remote-code (trust_remote_code=True) to run that code."
            )
        return False
    differing = []
    for name in code:
        installed = os.path.join(package, name)
        with open(os.path.join(folder, name), "rb") as f:
            theirs = f.read()
        mine = None
        if os.path.isfile(installed):
            with open(installed, "rb") as f:
                mine = f.read()
        if theirs != mine:
            differing.append(name)
    if differing:
        raise UsageError(
            f"{folder}: its code ({', '.join(differing)}) differs from the installed llm-srt's; pass "
            "--trust-remote-code (trust_remote_code=True) to run the folder's code, or delete those files to load "
            "it with the installed classes."
        )
    return False


def load_model_and_processor(model: str | os.PathLike, trust_remote_code: bool = False, dtype=None,
                             quantization: str | None = None):
    """`(model, processor)` of a saved model folder or Hub id, with the classes `model_code_to_trust` allows: with
    `trust_remote_code`, a local folder's own `modeling_llm_srt.py` (transformers would otherwise prefer the
    installed, registered class). `quantization` ("int8", "int4") quantizes the LLM's weights while loading (a
    folder saved quantized loads quantized without it)."""
    from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    from .. import register_auto_classes

    register_auto_classes()  # the installed classes for the `llm_srt` model type, unless the folder's own are trusted
    trust = model_code_to_trust(model, trust_remote_code)
    model_class = AutoModelForSpeechSeq2Seq
    kwargs = {}
    if not trust and (read_config_json(model) or {}).get("model_type") == "llm_srt":
        # Our config class reads it: an edited value is named with the file (AutoConfig's errors do not name it).
        kwargs["config"] = LlmSrtConfig.from_pretrained(model)
    if trust and os.path.isdir(os.fspath(model)):
        with open(os.path.join(os.fspath(model), "config.json"), encoding="utf-8") as f:
            auto_map = json.load(f).get("auto_map") or {}
        reference = auto_map.get("AutoModelForSpeechSeq2Seq") or auto_map.get("AutoModel")
        if reference:
            model_class = get_class_from_dynamic_module(reference, os.fspath(model))
    if quantization is not None:
        if quantization not in QUANTIZATIONS:
            raise UsageError(f"--quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}.")
        kwargs["quantization_config"] = quantization
    loaded = model_class.from_pretrained(model, trust_remote_code=trust, dtype=dtype, **kwargs)
    return loaded, AutoProcessor.from_pretrained(model, trust_remote_code=trust)


AUTO_DEVICE = "auto"


def resolve_device(device: str | None) -> str:
    """The device `device` names; `"auto"` is the GPU when there is one (cuda), else cpu, as Whisper and
    faster-whisper choose (the default of `llm-srt translate`, `live` and `serve`); None is cpu."""
    if device == AUTO_DEVICE:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device or "cpu"


def open_model(model: str | os.PathLike, device: str | None = None, dtype: str | None = None,
               quantization: str | None = None, trust_remote_code: bool = False, log=None):
    """`(model, processor)` of a folder or Hub id, in eval mode on `device` (default cpu; "auto": [`resolve_device`]),
    in `dtype` (a name; default [`cpu_dtype`]'s), with the LLM's weights in `quantization` ("int8", "int4") if given; `log` (a function taking a
    line, e.g. print) is told the dtype and quantization chosen. What `open_engine` and `llm-srt translate/live`
    load with."""
    import torch

    device = resolve_device(device)
    if quantization is not None and device != "cpu":
        raise ValueError(f"quantization {quantization!r} runs on the CPU (device cpu), not on {device}.")
    dtype, note = cpu_dtype(dtype, device)
    if log is not None:
        quantized = quantization or saved_quantization(model)
        log(note + (f"; the LLM's weights in {quantized}" if quantized else ""))
    loaded, processor = load_model_and_processor(model, trust_remote_code, getattr(torch, dtype) if dtype else None,
                                                 quantization)
    return loaded.to(device).eval(), processor


def open_engine(model: str | os.PathLike | tuple, engine: str = "transformers", device: str | None = None,
                dtype: str | None = None, trust_remote_code: bool = False, tensor_parallel_size: int = 1,
                quantization: str | None = None, log=None, **engine_kwargs):
    """The decoding engine (`decoding_llm_srt.DecodingEngine`) of `model`: a saved folder or Hub id, or a loaded
    `(model, processor)` pair (transformers engine only).

    `engine="transformers"` loads the model in eval mode on `device` (default cpu; "auto": the GPU when there is one,
    [`resolve_device`]) in `dtype` (a name: "bfloat16"; default [`cpu_dtype`]'s: bf16 where the CPU computes it natively, float32 elsewhere, as saved on a GPU), with the
    LLM's weights quantized to `quantization` ("int8", "int4": the CPU's int kernels) if given; `log` (a function
    taking a line, e.g. print) is told the dtype and quantization chosen. `engine="vllm"` starts vLLM's engine on the
    folder (`llm_srt.vllm.engine.VllmEngine`, with `tensor_parallel_size` and `engine_kwargs`; `dtype` "auto" by
    default).
    """
    from ..decoding_llm_srt import TransformersEngine
    from . import ENGINES

    if engine not in ENGINES:
        raise ValueError(f"Unknown engine {engine!r}: one of {', '.join(ENGINES)}.")
    if engine == "vllm":
        if not isinstance(model, (str, os.PathLike)):
            raise ValueError("The vLLM engine serves a model folder (or Hub id), not a loaded (model, processor).")
        from ..configuration_llm_srt import check_model_location

        check_model_location(model)
        if quantization is not None:
            raise ValueError(f"quantization {quantization!r} is the transformers engine's (the CPU's int kernels); "
                             "vLLM serves a folder saved in a format it runs (AWQ, GPTQ, compressed-tensors).")
        if saved_quantization(model) in QUANTIZATIONS:
            raise ValueError(f"{model} is saved with llm-srt's {saved_quantization(model)} weights, which only the "
                             "transformers engine runs; give vLLM its float original.")
        from ..processing_llm_srt import LlmSrtProcessor
        from ..vllm.engine import VllmEngine

        return VllmEngine(model, LlmSrtProcessor.from_pretrained(model), tensor_parallel_size=tensor_parallel_size,
                          dtype=dtype or "auto", **engine_kwargs)
    if tensor_parallel_size != 1 or engine_kwargs:
        raise ValueError(f"{'tensor_parallel_size' if tensor_parallel_size != 1 else sorted(engine_kwargs)[0]} "
                         "applies to the vLLM engine (engine='vllm').")
    if isinstance(model, (str, os.PathLike)):
        model, processor = open_model(model, device, dtype, quantization, trust_remote_code, log)
    else:
        if quantization is not None:
            raise ValueError("quantization applies when open_engine loads a folder; quantize a loaded model with "
                             "from_pretrained(..., quantization_config=...).")
        model, processor = model
    return TransformersEngine(model, processor)


__all__ = ["AUTO_DEVICE", "cpu_dtype", "load_model_and_processor", "model_code_to_trust", "open_engine",
           "open_model", "resolve_device", "saved_quantization"]
