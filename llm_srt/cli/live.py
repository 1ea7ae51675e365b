"""`llm-srt live`: live subtitles in the terminal, of a file played at real-time pace or of the microphone."""

from __future__ import annotations

import argparse
import os
import sys

from .common import (
    WorkError, add_model_arguments, add_vad_arguments, check_device, check_languages, check_model, load_pipeline,
    parse_targets, vad_parameters,
)
from .safe_io import UsageError, one_line, positive_float, positive_int


def add_parser(commands) -> argparse.ArgumentParser:
    """Add the `live` subcommand: live subtitles of a file played at real-time pace, or of the microphone."""
    parser = commands.add_parser("live", help="live subtitles in the terminal: a file played at real-time pace "
                                 "(--speed to go faster) or the microphone (--mic)")
    parser.add_argument("audio", nargs="?", help="audio file played as if it were live")
    parser.add_argument("--mic", action="store_true", help="listen to the microphone (needs `sounddevice`)")
    parser.add_argument("--model", required=True, help="model folder or Hub id")
    parser.add_argument("--src", default="auto", help="spoken language (default: auto, detected per segment)")
    parser.add_argument("--tgt", type=parse_targets, default=[], help="target language(s), comma-separated")
    parser.add_argument("--speed", type=positive_float, default=1.0, help="playback speed of a file (default 1)")
    parser.add_argument("--chunk-ms", type=positive_float, default=100.0, help="audio per chunk fed (default 100)")
    parser.add_argument("--min-chunk", type=positive_float, default=1.0,
                        help="seconds of new audio before the buffer is decoded again (default 1)")
    parser.add_argument("--beams", type=positive_int, default=1,
                        help="beam size (default 1: greedy, as llm-srt serve; llm-srt translate and the pipeline use "
                             "the model's 5)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=None)
    add_model_arguments(parser)
    add_vad_arguments(parser)
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


def run(args: argparse.Namespace) -> int:
    """`llm-srt live`: print live subtitles of a file played at real-time pace, or of the microphone."""
    from ..audio_llm_srt import AudioInputError, load_audio
    from ..live.translator import LiveTranslator
    from ..speech_llm_srt import VadOptions

    if bool(args.audio) == bool(args.mic):
        raise UsageError("pass an audio file or --mic (one of them).")
    if args.audio and not os.path.isfile(args.audio):
        raise UsageError(f"audio file not found: {args.audio}")
    check_languages(args.src, args.tgt)  # as llm-srt translate: a target named twice is refused
    vad = vad_parameters(args)
    check_model(args.model)
    check_device(args.device)
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
    translator = LiveTranslator(pipe, args.src, args.tgt, settings=settings, min_chunk_seconds=args.min_chunk,
                                vad=VadOptions(**(vad or {})) if args.vad_filter else None)
    for samples in chunks:
        for event in translator.feed(samples):
            print_live_event(event)
    for event in translator.finish():
        print_live_event(event)
    return 0


__all__ = ["add_parser", "print_live_event", "run"]
