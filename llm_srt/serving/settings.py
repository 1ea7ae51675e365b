"""The options of `llm-srt serve`, written once: [`ServeSettings`] checks itself, `create_app(model, **options)` takes
its fields, and the command's flags are made from them ([`add_arguments`])."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field, fields
from typing import Any

from ..cli.safe_io import number_type
from ..engines import ENGINES, QUANTIZATIONS
from ..languages_llm_srt import UNTRAINED_DIRECTION_ACTIONS


DEFAULT_MAX_FILE_MB = 25.0  # OpenAI's own upload limit
# Longest decoded audio: a 25 MB upload of compressed silence (FLAC, Ogg) can decode to days of samples, gigabytes
# of memory; checked from the file's header before decoding.
DEFAULT_MAX_AUDIO_SECONDS = 7200.0
DTYPES = ("float32", "bfloat16", "float16")


def option(help: str, number: tuple | None = None, choices: tuple | None = None, flag: bool = True) -> dict:
    """A field's metadata: its help, and the rule its value follows (`number`: (type, lowest, lowest excluded)
    for numbers; `choices`). `flag=False`: no command-line flag (set by code)."""
    return {"help": help, "number": number, "choices": choices, "flag": flag}


@dataclass
class ServeSettings:
    """What `llm-srt serve` is started with (the flags of the same names; `create_app(model, **settings)`)."""

    served_model_name: str | None = field(default=None, metadata=option(
        "the name clients pass as `model` (default: the model folder's name)"))
    engine: str = field(default="transformers", metadata=option(
        "what decodes: transformers (default, no extra install) or vllm (vLLM's engine: continuous batching, tensor "
        "parallelism; needs vLLM, see docs/vllm.md)", choices=ENGINES))
    device: str | None = field(default="auto", metadata=option(
        "auto (default: the GPU when there is one, else cpu), cpu, cuda, cuda:1, ...; transformers engine only"))
    dtype: str | None = field(default=None, metadata=option(
        "the dtype to compute in (default on the CPU: bfloat16 where it computes bf16 natively, else float32; on a GPU "
        "as saved)", choices=DTYPES))
    quantization: str | None = field(default=None, metadata=option(
        "the LLM's weights in int8 or int4 on the CPU's int kernels (transformers engine; fewer bytes per token: "
        "faster decoding); a folder saved quantized needs none", choices=QUANTIZATIONS))
    tensor_parallel_size: int = field(default=1, metadata=option(
        "with --engine vllm: devices (or CPU processes) the LLM is split over", number=(int, 1, False)))
    kv_cache_gib: float | None = field(default=None, metadata=option(
        "with --engine vllm: vLLM's KV cache in GiB (default: room for --max-batch-size answers of the longest "
        "prompt + answer, so it starts where other work holds memory; vLLM's own default wants 0.92 of the "
        "machine's memory free on CPU); VLLM_CPU_KVCACHE_SPACE, when set, wins on CPU", number=(float, 0, True)))
    trust_remote_code: bool = field(default=False, metadata=option(
        "run the model folder's own Python code where it differs from the installed llm-srt (or the folder is another "
        "architecture); off by default"))
    max_batch_size: int = field(default=16, metadata=option(
        "most rows (audio window x target) decoded in one generate call", number=(int, 1, False)))
    max_wait_ms: float = field(default=10.0, metadata=option(
        "how long a request waits for others to join its batch", number=(float, 0, False)))
    max_file_mb: float = field(default=DEFAULT_MAX_FILE_MB, metadata=option(
        "largest accepted upload in MB", number=(float, 0, True)))
    max_audio_seconds: float = field(default=DEFAULT_MAX_AUDIO_SECONDS, metadata=option(
        "longest accepted audio, read from the file's header before decoding (default 7200)", number=(float, 0, True)))
    max_new_tokens: int | None = field(default=None, metadata=option(
        "tokens generated per window (default: the model's, 400)", number=(int, 1, False)))
    num_beams: int = field(default=1, metadata=option(
        "beam size (default 1: greedy, which makes batched answers equal single ones; the pipeline and llm-srt "
        "translate use the model's, the paper's 5)", number=(int, 1, False)))
    max_queue: int = field(default=256, metadata=option(
        "most audio windows waiting to be decoded; beyond it requests get 503 with Retry-After", number=(int, 1, False)))
    max_live_sessions: int = field(default=32, metadata=option(
        "most live WebSocket sessions (/v1/realtime) at once", number=(int, 1, False)))
    vad_filter: bool = field(default=True, metadata=option(
        "hear only speech (Silero VAD): what is not speech (silence, noise, music, clicks) is never decoded; "
        "--no-vad-filter decodes every window of the audio"))
    vad_parameters: dict | None = field(default=None, metadata=option(
        "the detector's VadOptions (threshold, min_silence_duration_ms, speech_pad_ms, ...; the --vad-* flags)",
        flag=False))
    untrained_direction: str = field(default="warn", metadata=option(
        "a language or direction the model was not trained on (config.trained_languages / trained_directions): warn "
        "(default: answered, with a warning) or error (refused); refused requests get a 400",
        choices=UNTRAINED_DIRECTION_ACTIONS))
    # Other names a request's `model` may use: the model path as given on the command line (vLLM's default name).
    model_aliases: tuple[str, ...] = field(default=(), metadata=option("", flag=False))

    def __post_init__(self):
        for spec in fields(self):
            value, rule = getattr(self, spec.name), spec.metadata
            if value is None:
                continue
            if rule.get("choices") and value not in rule["choices"]:
                raise ValueError(f"{spec.name} must be one of {', '.join(rule['choices'])}, got {value!r}.")
            if rule.get("number"):
                problem = number_problem(value, *rule["number"])
                if problem:
                    raise ValueError(f"{spec.name} must be {problem}, got {value!r}.")
        if not isinstance(self.vad_filter, bool):
            raise ValueError(f"vad_filter must be True or False, got {self.vad_filter!r}.")
        if not self.vad_filter and self.vad_parameters:
            raise ValueError("vad_parameters tune the speech detector, which vad_filter=False turns off: pass one.")
        self.vad_options()  # names a bad VAD parameter now, not at the first request
        if self.engine == "vllm":
            if self.num_beams > 1:
                raise ValueError(f"num_beams={self.num_beams}: the vLLM engine decodes greedily; beam search needs "
                                 "the transformers engine.")
            if self.device not in (None, "auto"):
                raise ValueError("device applies to the transformers engine; vLLM places the model on its platform's "
                                 "devices (tensor_parallel_size to split it).")
            if self.quantization is not None:
                raise ValueError(f"quantization {self.quantization} runs on the transformers engine; vLLM serves "
                                 "folders saved in the formats it runs (AWQ, GPTQ, compressed-tensors).")
        elif self.tensor_parallel_size != 1 or self.kv_cache_gib is not None:
            name = "tensor_parallel_size" if self.tensor_parallel_size != 1 else "kv_cache_gib"
            raise ValueError(f"{name} applies to the vLLM engine (engine='vllm').")
        elif self.quantization is not None and self.device not in (None, "auto", "cpu"):
            raise ValueError(f"quantization {self.quantization} runs on the CPU, not on device {self.device}.")


    def vad_options(self) -> VadOptions | None:  # noqa: F821 - imported here: the flags are read without torch
        """The speech detector's options, None when it is off."""
        from ..speech_llm_srt import VadOptions

        return VadOptions.from_value(self.vad_parameters) if self.vad_filter else None


def number_problem(value: Any, kind: type, lowest: float, excluded: bool) -> str | None:
    """What a number of `kind` at least (or above, when `excluded`) `lowest` must be, when `value` is not one."""
    wanted = f"{'an integer' if kind is int else 'a finite number'} {'>' if excluded else '>='} {lowest:g}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        return wanted
    if not math.isfinite(value) or value < lowest or (excluded and value == lowest):
        return wanted
    return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The settings' flags (`--max-batch-size` for `max_batch_size`), each with its help, type and default."""
    for spec in fields(ServeSettings):
        rule = spec.metadata
        if not rule.get("flag"):
            continue
        name = "--" + spec.name.replace("_", "-")
        if spec.type in (bool, "bool"):  # --flag, or --flag / --no-flag when it is on by default
            parser.add_argument(name, action=argparse.BooleanOptionalAction if spec.default else "store_true",
                                default=spec.default, help=rule["help"])
        elif rule.get("number"):
            kind, lowest, excluded = rule["number"]
            parser.add_argument(name, type=number_type(kind, lowest, low_open=excluded), default=spec.default,
                                help=rule["help"])
        else:
            parser.add_argument(name, default=spec.default, choices=list(rule["choices"]) if rule.get("choices")
                                else None, help=rule["help"])


def from_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The settings a parsed command line gives (`add_arguments`' flags), as `create_app` keywords."""
    return {spec.name: getattr(args, spec.name) for spec in fields(ServeSettings) if spec.metadata.get("flag")}


__all__ = ["DEFAULT_MAX_AUDIO_SECONDS", "DEFAULT_MAX_FILE_MB", "ServeSettings", "add_arguments", "from_arguments"]
