"""Opening a saved model for the CLI, the server, evaluation and benchmarks: the installed llm-srt classes by default,
a folder's own code only on an explicit `--trust-remote-code` (transformers' rule: remote code is opt-in), and
[`open_engine`], the one way to get a decoding engine (transformers or vLLM) for a model."""

from __future__ import annotations

import json
import os

from ..configuration_llm_srt import LlmSrtConfig, read_config_json
from ..cli.safe_io import UsageError


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


def load_model_and_processor(model: str | os.PathLike, trust_remote_code: bool = False, dtype=None):
    """`(model, processor)` of a saved model folder or Hub id, with the classes `model_code_to_trust` allows: with
    `trust_remote_code`, a local folder's own `modeling_llm_srt.py` (transformers would otherwise prefer the
    installed, registered class)."""
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


def open_engine(model: str | os.PathLike | tuple, engine: str = "transformers", device: str | None = None,
                dtype: str | None = None, trust_remote_code: bool = False, tensor_parallel_size: int = 1,
                **engine_kwargs):
    """The decoding engine (`decoding_llm_srt.DecodingEngine`) of `model`: a saved folder or Hub id, or a loaded
    `(model, processor)` pair (transformers engine only).

    `engine="transformers"` loads the model in eval mode on `device` (default cpu; "auto": the GPU when there is
    one, [`resolve_device`]) in `dtype` (a name: "bfloat16";
    default as saved); `engine="vllm"` starts vLLM's engine on the folder (`llm_srt.vllm.engine.VllmEngine`, with
    `tensor_parallel_size` and `engine_kwargs`; `dtype` "auto" by default).
    """
    from ..decoding_llm_srt import TransformersEngine
    from . import ENGINES

    if engine not in ENGINES:
        raise ValueError(f"Unknown engine {engine!r}: one of {', '.join(ENGINES)}.")
    if engine == "vllm":
        if not isinstance(model, (str, os.PathLike)):
            raise ValueError("The vLLM engine serves a model folder (or Hub id), not a loaded (model, processor).")
        from ..configuration_llm_srt import check_model_location
        from ..processing_llm_srt import LlmSrtProcessor
        from ..vllm.engine import VllmEngine

        check_model_location(model)
        return VllmEngine(model, LlmSrtProcessor.from_pretrained(model), tensor_parallel_size=tensor_parallel_size,
                          dtype=dtype or "auto", **engine_kwargs)
    if tensor_parallel_size != 1 or engine_kwargs:
        raise ValueError(f"{'tensor_parallel_size' if tensor_parallel_size != 1 else sorted(engine_kwargs)[0]} "
                         "applies to the vLLM engine (engine='vllm').")
    if isinstance(model, (str, os.PathLike)):
        import torch

        model, processor = load_model_and_processor(model, trust_remote_code, getattr(torch, dtype) if dtype else None)
        model = model.to(resolve_device(device)).eval()
    else:
        model, processor = model
    return TransformersEngine(model, processor)


__all__ = ["AUTO_DEVICE", "load_model_and_processor", "model_code_to_trust", "open_engine", "resolve_device"]
