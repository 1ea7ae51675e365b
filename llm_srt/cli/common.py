"""What the `llm-srt` commands share: the error for failed work, argument parsers and checks made before any model
loads, and loading a model's pipeline."""

from __future__ import annotations

import argparse
import os

from .safe_io import UsageError, one_line


PROG = "llm-srt"


class WorkError(RuntimeError):
    """The work could not be done (a model that does not load, every input failing): exit status 1."""


UNTRAINED_DIRECTION_HELP = ("a language or direction the model was not trained on (config.trained_languages / "
                            "trained_directions): warn (default: answered, with a warning) or error (refused)")


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
    if device is None:
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


def load_pipeline(args: argparse.Namespace):
    """The speech-translation pipeline of `--model` (WorkError naming the model when it does not load)."""
    import torch
    from transformers import pipeline

    from ..engines.loading import load_model_and_processor

    try:
        model, processor = load_model_and_processor(args.model, args.trust_remote_code,
                                                    getattr(torch, args.dtype) if args.dtype else None)
        return pipeline("speech-translation", model=model, processor=processor, device=args.device,
                        trust_remote_code=args.trust_remote_code)
    except UsageError:  # the folder's code differs: --trust-remote-code named
        raise
    except Exception as error:  # noqa: BLE001 - whatever the loader raises, name the model and stop
        where = "" if os.path.isdir(args.model) else " (no such local folder; tried it as a Hub id)"
        raise WorkError(f"could not load the model {args.model}{where}: {one_line(error)}") from None


__all__ = ["PROG", "UNTRAINED_DIRECTION_HELP", "VAD_FLAGS", "WorkError", "add_vad_arguments", "check_device",
           "check_model", "load_pipeline", "parse_targets", "vad_parameters"]
