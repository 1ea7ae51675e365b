"""The `llm-srt` command: translate or transcribe audio files, list the languages.

Errors a user can make are reported as one line `llm-srt: error: ...` naming the thing at fault, never a Python
traceback: exit status 2 for bad usage (refused before any work starts), 1 for failed work, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence

from transformers.utils import logging

from .configuration_llm_srt import LANGUAGE_TABLE, MANDARIN_TAGS, UNTRAINED_DIRECTION_ACTIONS
from .generation_llm_srt import ENGINES
from .loading import load_model_and_processor
from .pipeline_llm_srt import MIN_CHUNK_LENGTH_S
from .safe_io import (
    OutputExistsError,
    UsageError,
    check_output_file,
    new_file_mode,
    one_line,
    positive_float,
    positive_int,
    run_reporting_errors,
)


PROG = "llm-srt"
logger = logging.get_logger(__name__)


class WorkError(RuntimeError):
    """The work could not be done (a model that does not load, every input failing): exit status 1."""


UNTRAINED_DIRECTION_HELP = ("a language or direction the model was not trained on (config.trained_languages / "
                            "trained_directions): warn (default: answered, with a warning) or error (refused)")


def _parse_targets(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="LLM-SRT speech translation and recognition.")
    commands = parser.add_subparsers(dest="command", required=True)
    translate = commands.add_parser(
        "translate", help="translate (or transcribe) audio files; one JSON line per (file, target)"
    )
    translate.add_argument("audio", nargs="+", help="audio files (wav, flac, ogg, mp3, ...)")
    translate.add_argument("--model", required=True, help="model folder or Hub id")
    translate.add_argument(
        "--src", default="auto", help="spoken language, e.g. eng (default: auto, detected from the audio)"
    )
    translate.add_argument("--tgt", type=_parse_targets, default=None, help="target language(s), comma-separated: deu,fra")
    translate.add_argument("--task", choices=["translate", "transcribe"], default="translate")
    translate.add_argument("--beams", type=positive_int, default=None, help="beam size (default: the model's, 5)")
    translate.add_argument("--max-new-tokens", type=positive_int, default=None)
    translate.add_argument("--batch-size", type=positive_int, default=8, help="audio windows per forward pass")
    translate.add_argument("--chunk-length", type=positive_float, default=None,
                           help="longest window in seconds (default and most: the model's window, 30)")
    translate.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cpu)")
    translate.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    translate.add_argument("--output", default="-", help="JSON-lines output file (default: stdout)")
    translate.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    translate.add_argument("--untrained-direction", choices=list(UNTRAINED_DIRECTION_ACTIONS), default="warn",
                           help=UNTRAINED_DIRECTION_HELP)
    translate.add_argument("--trust-remote-code", action="store_true",
                           help="run the model folder's own Python code where it differs from the installed llm-srt "
                                "(or the folder is another architecture); off by default")
    languages = commands.add_parser("languages", help="list the supported languages, or those a model was trained on")
    languages.add_argument("--model", default=None,
                           help="model folder or Hub id: list the languages and directions it was trained on")
    add_serve_parser(commands)  # FastAPI is imported only when it runs
    add_live_parser(commands)
    return parser


def list_languages(out=None, model: str | None = None) -> None:
    """The 15 languages (`LANGUAGE_TABLE`), or with `model` the languages and directions its config records it was
    trained on (all 15 when it records none); to `out` (default: stdout)."""
    out = sys.stdout if out is None else out
    mandarin = " or ".join(MANDARIN_TAGS)
    codes, directions = list(LANGUAGE_TABLE), None
    if model is not None:
        config = _model_config(model)
        mandarin = config.mandarin_tag
        if config.trained_languages is None:
            print(f"{model} does not record the languages it was trained on (not recorded in its config.json): "
                  f"all {len(LANGUAGE_TABLE)} are assumed.\n", file=out)
        else:
            codes, directions = config.trained_languages, config.trained_directions
            print(f"{model} was trained on {len(codes)} language(s):\n", file=out)
    print(f"{'code':<6}{'language':<22}also accepted", file=out)
    for code in codes:
        row = LANGUAGE_TABLE[code]
        print(f"{code:<6}{row.name:<22}{', '.join(row.aliases)}", file=out)
    if directions is not None:
        count = f"{len(directions)} direction{'' if len(directions) == 1 else 's'}"
        print(f"\nTrained translation directions ({count}): {', '.join(directions) or 'none (recognition only)'}",
              file=out)
    print(f"\nMandarin's tag is {mandarin}" + (", whichever the model was trained with." if model is None else "."),
          file=out)


def _model_config(model: str):
    """The LLM-SRT config of `--model` (UsageError for a path that is no model folder, WorkError when it does not
    load)."""
    from .configuration_llm_srt import LlmSrtConfig

    _check_model(model)
    try:
        return LlmSrtConfig.from_pretrained(model)
    except Exception as error:  # noqa: BLE001 - whatever the loader raises, name the model and stop
        raise WorkError(f"could not read the config of {model}: {one_line(error)}") from None


# ---------------------------------------------------------------------------------------------------- translate
def check_arguments(args: argparse.Namespace) -> None:
    """Everything that can be checked without the model; raises UsageError naming the argument at fault."""
    if args.chunk_length is not None and args.chunk_length < MIN_CHUNK_LENGTH_S:
        raise UsageError(f"--chunk-length {args.chunk_length:g} is shorter than {MIN_CHUNK_LENGTH_S:g} s.")
    from .configuration_llm_srt import normalize_language, normalize_targets

    try:
        source = None if args.src.strip().lower() == "auto" else normalize_language(args.src)
        if args.tgt:
            normalize_targets(args.tgt, source, "--tgt")  # a target named twice is refused
    except ValueError as error:
        raise UsageError(str(error)) from None
    if args.task == "translate" and not args.tgt:
        raise UsageError("--tgt is required for --task translate (e.g. --tgt deu,fra).")
    if args.task == "transcribe" and args.tgt:
        raise UsageError("--tgt was given with --task transcribe, which has no target language: drop one of them.")
    folders = [path for path in args.audio if os.path.isdir(path)]
    if folders:
        raise UsageError(f"{', '.join(folders)}: a folder, not an audio file (pass the files, e.g. {folders[0]}/*.wav)")
    missing = [path for path in args.audio if not os.path.isfile(path)]
    if missing:
        raise UsageError(f"audio file{'s' if len(missing) > 1 else ''} not found: {', '.join(missing)}")
    _check_model(args.model)
    _check_device(args.device)
    if args.output != "-":
        inputs = list(args.audio)
        if os.path.isdir(args.model):  # the model's own files are inputs too
            inputs += [os.path.join(args.model, name) for name in os.listdir(args.model)]
        try:
            check_output_file(args.output, inputs=inputs, overwrite=args.overwrite, what="--output")
        except (OutputExistsError, ValueError) as error:
            raise UsageError(str(error)) from None
        _check_output_folder(args.output)


def _check_output_folder(output: str) -> None:
    """The folder `--output` goes in can be made (missing folders are created) and written: checked before the
    model loads, so a typo does not cost a model load and end in an OS error naming another path."""
    folder = os.path.dirname(os.path.abspath(output))
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f"--output {output}: {existing} is a file, so no folder can be made there.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--output {output}: the folder {existing} is not writable.")


def _check_model(model: str) -> None:
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


def _check_device(device: str | None) -> None:
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


def _call_kwargs(args: argparse.Namespace, pipe) -> dict:
    call_kwargs = {"src_lang": args.src, "task": args.task, "batch_size": args.batch_size,
                   "untrained_direction": args.untrained_direction}
    if args.task == "translate":
        call_kwargs["tgt_lang"] = args.tgt
    if args.chunk_length is not None:
        window = _model_window(pipe)
        if window is not None and args.chunk_length > window:
            raise UsageError(f"--chunk-length {args.chunk_length:g} is longer than the model's {window:g} s window.")
        call_kwargs["chunk_length_s"] = args.chunk_length
    generate_kwargs = {k: v for k, v in (("num_beams", args.beams), ("max_new_tokens", args.max_new_tokens))
                       if v is not None}
    if generate_kwargs:
        call_kwargs["generate_kwargs"] = generate_kwargs
    return call_kwargs


def _model_window(pipe) -> float | None:
    try:
        return float(pipe.processor.feature_extractor.chunk_length)
    except (AttributeError, TypeError, ValueError):
        return None


class _Output:
    """Where the JSON lines go: stdout (streamed as they come), or a file written atomically.

    A file is written to `<output>.<random>.partial` beside it, flushed line by line, and renamed over `--output`
    only when the run ends with at least one result: a run that fails entirely leaves the old file as it was, and an
    interrupted or crashed one keeps its finished lines in the `.partial` file (named on stderr) instead of losing them.
    """

    def __init__(self, path: str):
        self.path, self.lines, self.temp = path, 0, None
        if path == "-":
            self.handle = sys.stdout
        else:
            folder = os.path.dirname(os.path.abspath(path))
            os.makedirs(folder, exist_ok=True)
            fd, self.temp = tempfile.mkstemp(prefix=f"{os.path.basename(path)}.", suffix=".partial", dir=folder)
            self.handle = os.fdopen(fd, "w", encoding="utf-8")

    def write(self, row: dict) -> None:
        self.handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.handle.flush()
        self.lines += 1

    def commit(self) -> bool:
        """Put the file in place; False (and nothing replaced) when no line was written."""
        if self.temp is None:
            return self.lines > 0
        self.handle.close()
        if not self.lines:
            os.remove(self.temp)
            return False
        os.chmod(self.temp, new_file_mode(self.path))
        os.replace(self.temp, self.path)
        return True

    def abandon(self) -> str | None:
        """After a failure: drop an empty temp file, keep one with results; returns the kept path."""
        if self.temp is None:
            return None
        self.handle.close()
        if self.lines:
            return self.temp
        os.remove(self.temp)
        return None


def _terminate_as_interrupt():
    """Treat SIGTERM (sent by `timeout`, `kill`, `docker stop`) like Ctrl-C while translating, so the finished
    lines are kept and named instead of dying with a stray `.partial` file; returns the function that undoes it."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    return lambda: signal.signal(signal.SIGTERM, previous)


def _warnings_above_bars():
    """While progress bars run: log records (the pipeline's warnings) are written with tqdm.write, on lines of their
    own above the bar, instead of being glued onto the bar's line."""
    import logging as stdlib_logging

    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm(loggers=[stdlib_logging.getLogger(), stdlib_logging.getLogger("transformers")])


def _translate_files(args: argparse.Namespace, pipe, call_kwargs: dict, out: _Output) -> int:
    """Translate every file into `out`; a failing file is reported (above the progress bar) and skipped. Returns the
    number of failed files."""
    from tqdm.auto import tqdm

    failures = 0
    for path in tqdm(args.audio, desc="translating", unit="file", file=sys.stderr, disable=len(args.audio) < 2):
        try:
            result = pipe(path, **call_kwargs)
        except Exception as error:  # noqa: BLE001 - one bad file must not lose the others: report it, go on
            failures += 1
            message = one_line(error)
            # load_audio's messages start with the path already; name it once. tqdm.write puts the line above
            # the progress bar (a plain print would be glued onto the bar's line).
            tqdm.write(f"{PROG}: error: {message if message.startswith(path) else f'{path}: {message}'}",
                       file=sys.stderr)
            continue
        for row in result if isinstance(result, list) else [result]:
            out.write({"file": path, **row})
    return failures


def translate(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    check_arguments(args)
    pipe = load_pipeline(args)
    call_kwargs = _call_kwargs(args, pipe)

    out = _Output(args.output)
    restore = _terminate_as_interrupt()
    try:
        with _warnings_above_bars():
            failures = _translate_files(args, pipe, call_kwargs, out)
    except BaseException:
        kept = out.abandon()
        if kept:
            tqdm.write(f"{PROG}: stopped; {args.output} is unchanged, the {out.lines} result line(s) finished so "
                       f"far are in {kept}", file=sys.stderr)
        raise
    finally:
        restore()
    out.commit()
    if failures == len(args.audio):
        where = "" if args.output == "-" else f"; {args.output} was not written"
        raise WorkError(f"all {failures} files failed{where}.")
    if failures:
        print(f"{PROG}: {failures} of {len(args.audio)} files failed; the others were written.", file=sys.stderr)
    return 1 if failures else 0


COMMANDS = {"translate": translate, "languages": lambda args: list_languages(model=args.model) or 0}


# ------------------------------------------------------------------------------------------------------- serve
def add_serve_parser(commands) -> argparse.ArgumentParser:
    """Add the `serve` subcommand to the `llm-srt` command's subparsers."""
    from .safe_io import non_negative_float, number_type
    from .serving.protocol import DEFAULT_MAX_AUDIO_SECONDS, DEFAULT_MAX_FILE_MB

    port = number_type(int, 0, 65535, what="a port number")

    parser = commands.add_parser("serve", help="OpenAI-compatible HTTP server (/v1/audio/transcriptions, "
                                 "/v1/audio/translations) with request batching")
    parser.add_argument("model", help="model folder or Hub id")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    parser.add_argument("--port", type=port, default=8000)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cpu)")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--served-model-name", default=None,
                        help="the name clients pass as `model` (default: the model folder's name)")
    parser.add_argument("--max-batch-size", type=positive_int, default=16,
                        help="most rows (audio window x target) decoded in one generate call")
    parser.add_argument("--max-wait-ms", type=non_negative_float, default=10.0,
                        help="how long a request waits for others to join its batch")
    parser.add_argument("--max-file-mb", type=positive_float, default=DEFAULT_MAX_FILE_MB,
                        help="largest accepted upload in MB")
    parser.add_argument("--max-audio-seconds", type=positive_float, default=DEFAULT_MAX_AUDIO_SECONDS,
                        help="longest accepted audio, read from the file's header before decoding (default 7200)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=None,
                        help="tokens generated per window (default: the model's, 400)")
    parser.add_argument("--num-beams", type=positive_int, default=1,
                        help="beam size (default 1: greedy, which makes batched answers equal single ones)")
    parser.add_argument("--max-queue", type=positive_int, default=256,
                        help="most audio windows waiting to be decoded; beyond it requests get 503 with Retry-After")
    parser.add_argument("--max-live-sessions", type=positive_int, default=32,
                        help="most live WebSocket sessions (/v1/realtime) at once")
    parser.add_argument("--untrained-direction", choices=list(UNTRAINED_DIRECTION_ACTIONS), default="warn",
                        help=UNTRAINED_DIRECTION_HELP + "; refused requests get a 400")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run the model folder's own Python code where it differs from the installed llm-srt "
                             "(or the folder is another architecture); off by default")
    parser.add_argument("--engine", choices=list(ENGINES), default="transformers",
                        help="what decodes: transformers (default, no extra install) or vllm (vLLM's engine: "
                             "continuous batching, tensor parallelism; needs vLLM, see README)")
    parser.add_argument("--tensor-parallel-size", type=positive_int, default=1,
                        help="with --engine vllm: devices (or CPU processes) the LLM is split over")
    return parser


def run_server(args: argparse.Namespace) -> int:
    """Run `llm-srt serve` until interrupted. Errors are raised with one-line messages for the CLI to print."""
    try:
        import uvicorn
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401 - form uploads
    except ImportError as error:
        raise RuntimeError(f"llm-srt serve needs FastAPI, uvicorn and python-multipart ({error}): "
                           "pip install 'llm-srt[serve]'") from None
    try:
        from .serving import create_app

        app = create_app(
            args.model, served_model_name=args.served_model_name, max_batch_size=args.max_batch_size,
            max_wait_ms=args.max_wait_ms, max_file_mb=args.max_file_mb, max_new_tokens=args.max_new_tokens,
            num_beams=args.num_beams, max_audio_seconds=args.max_audio_seconds, device=args.device, dtype=args.dtype,
            max_queue=args.max_queue, trust_remote_code=args.trust_remote_code, engine=args.engine,
            tensor_parallel_size=args.tensor_parallel_size, max_live_sessions=args.max_live_sessions,
            untrained_direction=args.untrained_direction,
        )
    except UsageError:
        raise
    except Exception as error:  # noqa: BLE001 - whatever the loader raises, name the model and stop
        where = "" if os.path.isdir(args.model) else " (no such local folder; tried it as a Hub id)"
        message = " ".join(str(error).split()) or type(error).__name__
        raise RuntimeError(f"could not load the model {args.model}{where}: {message}") from None
    logger.warning(f"Serving {app.state.server.settings.served_model_name!r} on http://{args.host}:{args.port}/v1 "
                   f"(live page: http://{args.host}:{args.port}/live)")
    uvicorn.run(app, host=args.host, port=args.port)
    return 0


COMMANDS["serve"] = run_server


# -------------------------------------------------------------------------------------------------------- live
def add_live_parser(commands) -> argparse.ArgumentParser:
    """Add the `live` subcommand: live subtitles of a file played at real-time pace, or of the microphone."""
    parser = commands.add_parser("live", help="live subtitles in the terminal: a file played at real-time pace "
                                 "(--speed to go faster) or the microphone (--mic)")
    parser.add_argument("audio", nargs="?", help="audio file played as if it were live")
    parser.add_argument("--mic", action="store_true", help="listen to the microphone (needs `sounddevice`)")
    parser.add_argument("--model", required=True, help="model folder or Hub id")
    parser.add_argument("--src", default="auto", help="spoken language (default: auto, detected per segment)")
    parser.add_argument("--tgt", type=_parse_targets, default=[], help="target language(s), comma-separated")
    parser.add_argument("--speed", type=positive_float, default=1.0, help="playback speed of a file (default 1)")
    parser.add_argument("--chunk-ms", type=positive_float, default=100.0, help="audio per chunk fed (default 100)")
    parser.add_argument("--min-chunk", type=positive_float, default=1.0,
                        help="seconds of new audio before the buffer is decoded again (default 1)")
    parser.add_argument("--beams", type=positive_int, default=1, help="beam size (default 1)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=None)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cpu)")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run the model folder's own Python code where it differs from the installed llm-srt")
    return parser


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60):02d}:{seconds % 60:05.2f}"


def print_live_event(event, out=sys.stdout) -> None:
    """A live event as terminal subtitles: confirmed words as they come, then each segment's final lines."""
    if event.type == "transcript_delta":
        print(f"  ... {event.language or 'src'}: {event.text}", file=out, flush=True)
    elif event.type == "translation_delta":
        print(f"  ... {event.language}: {event.text}", file=out, flush=True)
    elif event.type == "segment_final":
        print(f"[{_clock(event.start)} --> {_clock(event.end)}] {event.language}: {event.transcript}", file=out)
        for target, text in (event.translations or {}).items():
            print(f"{' ' * 24}{target}: {text}", file=out)
        out.flush()


def _microphone_chunks(rate: int, chunk: int):
    """Microphone audio in chunks of `chunk` samples until Ctrl+C (UsageError without `sounddevice`)."""
    try:
        import sounddevice
    except (ImportError, OSError) as error:  # OSError: the package without PortAudio
        raise UsageError(f"--mic needs the sounddevice package and PortAudio ({one_line(error)}): "
                         "pip install sounddevice, or pass an audio file.") from None
    import queue

    import numpy as np

    received: queue.Queue = queue.Queue()
    with sounddevice.InputStream(samplerate=rate, channels=1, dtype="float32", blocksize=chunk,
                                 callback=lambda data, *_: received.put(np.array(data[:, 0]))):
        try:
            while True:
                yield received.get()
        except KeyboardInterrupt:
            return


def _file_chunks(samples, rate: int, chunk: int, speed: float):
    """`samples` in chunks, as fast as real time times `speed`: all audio due by now at once, so a slow decode is
    caught up on."""
    import time

    start, fed = time.monotonic(), 0
    while fed < len(samples):
        due = min(len(samples), int((time.monotonic() - start) * speed * rate))
        if due - fed < chunk and due < len(samples):
            time.sleep((fed + chunk - due) / rate / speed)
            continue
        yield samples[fed:due]
        fed = due


def live(args: argparse.Namespace) -> int:
    """`llm-srt live`: print live subtitles of a file played at real-time pace, or of the microphone."""
    from .audio_llm_srt import AudioInputError, load_audio
    from .configuration_llm_srt import normalize_language
    from .streaming_llm_srt import LiveTranslator

    if bool(args.audio) == bool(args.mic):
        raise UsageError("pass an audio file or --mic (one of them).")
    if args.audio and not os.path.isfile(args.audio):
        raise UsageError(f"audio file not found: {args.audio}")
    try:
        if args.src.strip().lower() != "auto":
            normalize_language(args.src)
        for target in args.tgt:
            normalize_language(target)
    except ValueError as error:
        raise UsageError(str(error)) from None
    _check_model(args.model)
    _check_device(args.device)
    pipe = load_pipeline(args)
    rate = pipe.processor.feature_extractor.sampling_rate
    chunk = max(1, int(args.chunk_ms / 1000 * rate))
    if args.mic:
        chunks = _microphone_chunks(rate, chunk)
    else:
        try:
            chunks = _file_chunks(load_audio(args.audio, target_rate=rate), rate, chunk, args.speed)
        except AudioInputError as error:
            raise WorkError(str(error)) from None
    settings = {"num_beams": args.beams}
    if args.max_new_tokens is not None:
        settings["max_new_tokens"] = args.max_new_tokens
    translator = LiveTranslator(pipe, args.src, args.tgt, settings=settings, min_chunk_seconds=args.min_chunk)
    for samples in chunks:
        for event in translator.feed(samples):
            print_live_event(event)
    for event in translator.finish():
        print_live_event(event)
    return 0


COMMANDS["live"] = live


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # bad usage the parser can see: its own one-line message, exit 2
    return run_reporting_errors(PROG, lambda: COMMANDS[args.command](args))


if __name__ == "__main__":
    sys.exit(main())
