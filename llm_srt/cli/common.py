"""What the `llm-srt` commands share: the error for failed work, argument parsers and checks made before any model
loads, and loading a model's pipeline."""

from __future__ import annotations

import argparse
import os
import sys

from .safe_io import UsageError, one_line


PROG = "llm-srt"


class WorkError(RuntimeError):
    """The work could not be done (a model that does not load, every input failing): exit status 1."""


UNTRAINED_DIRECTION_HELP = ("a language or direction the model was not trained on (config.trained_languages / "
                            "trained_directions): warn (default: answered, with a warning) or error (refused)")


DEVICE_HELP = "auto (default: the GPU when there is one, else cpu), cpu, cuda, cuda:1, mps, ..."


# the speech detector's flags: option name -> (flag type, help); their defaults are VadOptions'
VAD_FLAGS = {
    "threshold": (float, "speech probability a frame must reach to be speech (default 0.5)"),
    "min_silence_duration_ms": (int, "a silence this long ends an utterance: windows are cut there (default 100)"),
    "speech_pad_ms": (int, "each stretch of speech is widened by this on both sides (default 200)"),
}


def add_vad_arguments(parser: argparse.ArgumentParser, switch: bool = True) -> None:
    """The speech detector's flags: `--vad-filter/--no-vad-filter` (with `switch`) and `--vad-threshold`,
    `--vad-min-silence-duration-ms`, `--vad-speech-pad-ms`."""
    if switch:
        parser.add_argument("--vad-filter", action=argparse.BooleanOptionalAction, default=True,
                            help="hear only speech (Silero VAD): what is not speech (silence, noise, music, clicks) "
                                 "is never decoded; --no-vad-filter decodes every window of the audio")
    for name, (kind, help) in VAD_FLAGS.items():
        parser.add_argument("--vad-" + name.replace("_", "-"), dest=f"vad_{name}", type=kind, default=None, help=help)


def vad_parameters(args: argparse.Namespace) -> dict | None:
    """The `--vad-*` values given, as `VadOptions` fields (None when none was given); refused with
    `--no-vad-filter`."""
    given = {name: getattr(args, f"vad_{name}") for name in VAD_FLAGS if getattr(args, f"vad_{name}") is not None}
    if not given:
        return None
    flags = ", ".join("--vad-" + name.replace("_", "-") for name in given)
    if not args.vad_filter:
        raise UsageError(f"{flags} tune the speech detector, which --no-vad-filter turns off: pass one.")
    from ..speech_llm_srt import VadOptions

    try:
        VadOptions(**given)
    except ValueError as error:
        raise UsageError(f"{flags}: {error}") from None
    return given


def parse_targets(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def check_languages(src: str, targets: list[str]) -> None:
    """`--src` (a language or "auto") and `--tgt` checked as every entry point checks them (`normalize_targets`: a
    target named twice refused, one equal to the source kept with a warning); UsageError naming the flag."""
    from ..languages_llm_srt import normalize_language, normalize_targets

    try:
        source = None if src.strip().lower() == "auto" else normalize_language(src)
        if targets:
            normalize_targets(targets, source, "--tgt")
    except ValueError as error:
        raise UsageError(str(error)) from None


def check_model(model: str) -> None:
    if os.path.isdir(model):
        if not os.path.isfile(os.path.join(model, "config.json")):
            raise UsageError(f"--model {model} is a folder without config.json: not a saved model.")
        return
    if os.path.exists(model):
        raise UsageError(f"--model {model} is a file; give the model's folder or a Hub id.")
    # A Hub id is "name" or "owner/name"; anything else can only have been meant as a local folder.
    if model.startswith((".", "/", "~")) or model.endswith(("/", os.sep)) or model.count("/") > 1 \
            or (os.sep != "/" and os.sep in model):
        raise UsageError(f"--model {model}: no such folder.")


def check_device(device: str | None) -> None:
    if device in (None, "auto"):
        return
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise UsageError(f"--device {device!r} is not a device (cpu, cuda, cuda:1, mps, ...).") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: no CUDA device is available here; use --device cpu.")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: there are only {torch.cuda.device_count()} CUDA device(s).")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {device}: MPS is not available here; use --device cpu.")


DTYPE_HELP = "bfloat16, float32 or float16 (default: bfloat16 where the CPU computes it natively, else float32)"
QUANTIZATION_HELP = ("the LLM's weights in int8 or int4 on the CPU's int kernels (fewer bytes to read per token: "
                     "faster decoding, a little less accurate); a folder saved quantized needs none")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """`--device`, `--dtype`, `--quantization` and `--trust-remote-code`: how `--model` is loaded."""
    from ..engines import QUANTIZATIONS

    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"], help=DTYPE_HELP)
    parser.add_argument("--quantization", default=None, choices=list(QUANTIZATIONS), help=QUANTIZATION_HELP)
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run the model folder's own Python code where it differs from the installed llm-srt "
                             "(or the folder is another architecture); off by default")


def load_pipeline(args: argparse.Namespace):
    """The speech-translation pipeline of `--model` (WorkError naming the model when it does not load); the dtype
    and quantization it computes in are said on stderr."""
    from transformers import pipeline

    from ..engines.loading import open_model, resolve_device

    device = resolve_device(args.device)
    print(f"{PROG}: decoding on {device} (--device {args.device})", file=sys.stderr)
    try:
        model, processor = open_model(args.model, device, args.dtype, args.quantization, args.trust_remote_code,
                                      log=lambda line: print(f"{PROG}: {line}", file=sys.stderr))
        return pipeline("speech-translation", model=model, processor=processor, device=device,
                        trust_remote_code=args.trust_remote_code)
    except UsageError:  # the folder's code differs: --trust-remote-code named
        raise
    except Exception as error:  # noqa: BLE001 - whatever the loader raises, name the model and stop
        where = "" if os.path.isdir(args.model) else " (no such local folder; tried it as a Hub id)"
        raise WorkError(f"could not load the model {args.model}{where}: {one_line(error)}") from None


__all__ = ["DEVICE_HELP", "DTYPE_HELP", "PROG", "QUANTIZATION_HELP", "UNTRAINED_DIRECTION_HELP", "VAD_FLAGS",
           "WorkError", "add_model_arguments", "add_vad_arguments", "check_device", "check_languages", "check_model",
           "load_pipeline", "parse_targets", "vad_parameters"]
