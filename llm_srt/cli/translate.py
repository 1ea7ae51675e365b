"""`llm-srt translate`: translate (or transcribe) audio files into JSON lines; a file that fails is reported and the
others are still written."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

from ..languages_llm_srt import UNTRAINED_DIRECTION_ACTIONS
from .common import (
    PROG, UNTRAINED_DIRECTION_HELP, WorkError, add_model_arguments, add_vad_arguments, check_device, check_languages,
    check_model, load_pipeline, parse_targets, vad_parameters,
)
from .safe_io import OutputExistsError, UsageError, check_output_file, new_file_mode, one_line, positive_float, positive_int


def add_parser(commands) -> argparse.ArgumentParser:
    translate = commands.add_parser(
        "translate", help="translate (or transcribe) audio files; one JSON line per (file, target)"
    )
    translate.add_argument("audio", nargs="+", help="audio files (wav, flac, ogg, mp3, ...)")
    translate.add_argument("--model", required=True, help="model folder or Hub id")
    translate.add_argument(
        "--src", default="auto", help="spoken language, e.g. eng (default: auto, detected from the audio)"
    )
    translate.add_argument("--tgt", type=parse_targets, default=None, help="target language(s), comma-separated: deu,fra")
    translate.add_argument("--task", choices=["translate", "transcribe"], default="translate")
    translate.add_argument("--beams", type=positive_int, default=None,
                           help="beam size (default: the model's, the paper's 5; llm-srt serve and live decode "
                                "greedily, 1, by default)")
    translate.add_argument("--max-new-tokens", type=positive_int, default=None)
    translate.add_argument("--batch-size", type=positive_int, default=8, help="audio windows per forward pass")
    translate.add_argument("--chunk-length", type=positive_float, default=None,
                           help="longest window in seconds (default and most: the model's window, 30)")
    add_model_arguments(translate)
    translate.add_argument("--output", default="-", help="JSON-lines output file (default: stdout)")
    translate.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    translate.add_argument("--untrained-direction", choices=list(UNTRAINED_DIRECTION_ACTIONS), default="warn",
                           help=UNTRAINED_DIRECTION_HELP)
    add_vad_arguments(translate)
    return translate


def check_arguments(args: argparse.Namespace) -> None:
    """Everything that can be checked without the model; raises UsageError naming the argument at fault."""
    from ..pipeline_llm_srt import MIN_CHUNK_LENGTH_S

    if args.chunk_length is not None and args.chunk_length < MIN_CHUNK_LENGTH_S:
        raise UsageError(f"--chunk-length {args.chunk_length:g} is shorter than {MIN_CHUNK_LENGTH_S:g} s.")
    check_languages(args.src, args.tgt or [])  # a target named twice is refused
    args.vad_parameters = vad_parameters(args)
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
    check_model(args.model)
    check_device(args.device)
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


def _call_kwargs(args: argparse.Namespace, pipe) -> dict:
    call_kwargs = {"src_lang": args.src, "task": args.task, "batch_size": args.batch_size,
                   "untrained_direction": args.untrained_direction, "vad_filter": args.vad_filter}
    if args.vad_parameters:
        call_kwargs["vad_parameters"] = args.vad_parameters
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


def run(args: argparse.Namespace) -> int:
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


__all__ = ["add_parser", "check_arguments", "run"]
