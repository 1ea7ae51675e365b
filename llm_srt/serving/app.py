"""The OpenAI-compatible app: request handling (`SpeechServer`) and the FastAPI routes (`create_app`)."""

import asyncio
import contextlib
import io
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.utils import logging

from ..audio_llm_srt import (
    UNKNOWN_FRAMES, AudioInputError, audio_file_info, describe_input, is_silent, load_audio, split_on_silence,
)
from ..configuration_llm_srt import (
    LANGUAGES, UNTRAINED_DIRECTION_ACTIONS, UntrainedDirectionError, UntrainedWarnings, normalize_language,
    normalize_targets, supported_languages_text, target_on_transcription_message,
)
from ..configuration_llm_srt import UNSPACED_LANGUAGES, check_model_location
from ..generation_llm_srt import (
    ENGINES, MIN_TEMPERATURE, DecodingEngine, TransformersEngine, temperature_problem, vote_language,
)
from ..loading import load_model_and_processor
from ..processing_llm_srt import LlmSrtProcessor
from .batcher import Batcher, Row
from .realtime import run_session
from .protocol import (
    DEFAULT_MAX_AUDIO_SECONDS,
    DEFAULT_MAX_FILE_MB,
    RESPONSE_FORMATS,
    ServeError,
    Transcript,
    compression_ratio,
    error_body,
    shown,
    sse,
    to_srt,
    to_vtt,
)


logger = logging.get_logger(__name__)

_DISCONNECT_POLL_SECONDS = 0.5  # how often a waiting request checks that its client is still there
LIVE_PAGE = Path(__file__).parent / "static" / "live.html"
# "stop", or "length" when --max-new-tokens cut any answer of the response (as OpenAI's finish_reason words it)
FINISH_REASON_HEADER = "X-LLM-SRT-Finish-Reason"
_FORM_SLACK_BYTES = 1 << 20  # room for the other form fields and multipart framing in the Content-Length check
# the form fields that name target languages: ours (a list as `target_language[]` too) and vLLM's `to_language`
TARGET_FIELDS = ("target_language", "target_language[]", "to_language")
# decoding fields of vLLM's transcription API (and OpenAI-like clients) that this server does not take per request:
# answering without them would give the client an answer decoded otherwise than it asked, without a word
SERVER_SET_FIELDS = {
    "max_completion_tokens": "--max-new-tokens", "max_tokens": "--max-new-tokens", "min_tokens": None,
    "use_beam_search": "--num-beams", "n": "--num-beams", "length_penalty": None, "top_p": None, "top_k": None,
    "min_p": None, "seed": None, "frequency_penalty": None, "presence_penalty": None, "repetition_penalty": None,
}
STREAM_VALUES = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False, "": False}


@dataclass
class ServeSettings:
    """Server options (the `llm-srt serve` flags)."""

    served_model_name: str = "llm-srt"
    # Other names a request's `model` may use: the model path as given on the command line (vLLM's default name).
    model_aliases: tuple[str, ...] = ()
    max_batch_size: int = 16
    max_wait_ms: float = 10.0
    max_file_mb: float = DEFAULT_MAX_FILE_MB
    max_new_tokens: int | None = None
    num_beams: int = 1
    max_audio_seconds: float = DEFAULT_MAX_AUDIO_SECONDS
    max_queue: int = 256  # most windows waiting in the batcher; beyond it a 503 with Retry-After
    max_live_sessions: int = 32  # most WebSocket live sessions at once (/v1/realtime)
    untrained_direction: str = "warn"  # a request outside the model's training data: "warn" (answered) or "error" (400)


class SpeechServer:
    """The model, its processor, the batcher and the request logic behind the HTTP routes."""

    PASS_LANGUAGE = f"Pass `language`, the language spoken in the audio (one of: {', '.join(LANGUAGES)})."

    def __init__(self, model, processor, settings: ServeSettings, engine: DecodingEngine | None = None):
        self.model, self.processor, self.settings = model, processor, settings
        self.engine = engine if engine is not None else TransformersEngine(model, processor)
        self.batcher = Batcher(self.engine, settings.max_batch_size, settings.max_wait_ms,
                               max_queue=settings.max_queue)
        self.sampling_rate = processor.feature_extractor.sampling_rate
        self.window_seconds = float(processor.feature_extractor.chunk_length)
        self.created = int(time.time())
        # a request outside the model's recorded training data is answered, with a warning once per direction
        self.untrained_warnings = UntrainedWarnings(model.config if model is not None else self.engine.config, logger)
        self.live_sessions = 0  # open /v1/realtime sessions

    # ----------------------------------------------------------------------------------------------- parsing
    def generation_settings(self, temperature: str | None) -> dict:
        """Greedy (or beam) decoding by default; `temperature` > 0 samples, in batches of its own."""
        settings: dict[str, Any] = {"do_sample": False, "num_beams": self.settings.num_beams}
        if self.settings.max_new_tokens is not None:
            settings["max_new_tokens"] = self.settings.max_new_tokens
        if temperature not in (None, ""):
            try:
                value = float(temperature)
            except ValueError:
                raise ServeError(400, f"temperature must be a number, got {shown(temperature)}.", "temperature",
                                 "invalid_value") from None
            if temperature_problem(value) or value > 2:  # one rule with the pipeline and generate; OpenAI's 2
                raise ServeError(400, f"temperature must be 0 (greedy) or between {MIN_TEMPERATURE:g} and 2, got "
                                 f"{shown(temperature)}.", "temperature", "invalid_value")
            if value > 0:
                settings.update(do_sample=True, temperature=value, num_beams=1)
        return settings

    @staticmethod
    def check_server_set_fields(form) -> None:
        """A 400 naming the first decoding field of `SERVER_SET_FIELDS` the form sends (this server's decoding is
        set when it starts), rather than an answer decoded otherwise than the client asked."""
        for field, flag in SERVER_SET_FIELDS.items():
            if field in form:
                where = f" (it is set for every request by `llm-srt serve {flag}`)" if flag else ""
                raise ServeError(400, f"{field} is not taken per request by this server{where}; send temperature "
                                 "to sample, or leave it out.", field, "unsupported_parameter")

    def check_model(self, name: str | None) -> None:
        if name not in (None, "", self.settings.served_model_name, *self.settings.model_aliases):
            raise ServeError(
                404, f"The model {shown(name)} does not exist; this server serves {self.settings.served_model_name!r}.",
                "model", "model_not_found",
            )

    @staticmethod
    def language(value: str, param: str) -> str:
        try:
            return normalize_language(value)
        except ValueError:
            raise ServeError(
                400, f"Unsupported {param} {shown(value)}. Supported languages: {supported_languages_text()}.", param,
                "unsupported_language",
            ) from None

    @staticmethod
    def target_fields(form) -> tuple[list[str], str]:
        """The target languages a form names, and the field that named them: `target_language` (also as
        `target_language[]`) or vLLM's `to_language`, so a client written for vLLM's server is not answered in
        English without a word. Both at once is a 400: which one counts would be a guess."""
        given = {field: [v for v in form.getlist(field) if str(v).strip()] for field in TARGET_FIELDS}
        named = [field for field, values in given.items() if values]
        if "to_language" in named and len(named) > 1:
            raise ServeError(400, "Both to_language (vLLM's name) and target_language are given: send one of them.",
                             "to_language", "invalid_value")
        return [value for values in given.values() for value in values], (named[0] if named else "target_language")

    def targets(self, values: Sequence[str], src: str | None = None, field: str = "target_language") -> list[str]:
        """`target_language` values (each may be comma-separated) -> codes, in order; English if none. A language
        named twice is a 400 naming it (`normalize_targets`, the pipeline's rule); the source language is allowed,
        with a logged warning. `field` is the form field the values came from, named in errors."""
        names = [part.strip() for value in values for part in str(value).split(",") if part.strip()]
        if not names:
            return ["eng"]
        for name in names:
            self.language(name, field)  # an unsupported one: 400 unsupported_language
        try:
            return normalize_targets(names, src, field)  # each valid, so short
        except ValueError as error:
            raise ServeError(400, str(error), field, "invalid_value") from None

    @staticmethod
    def file_name(upload) -> str:
        """The upload's file name for messages, cut as every echoed value is (`shown`)."""
        name = getattr(upload, "filename", None) or "file"
        return name if len(repr(name)) <= 60 else shown(name)

    async def read_file(self, upload) -> bytes:
        if upload is None or isinstance(upload, str):
            raise ServeError(400, "Upload the audio as the multipart form field 'file'.", "file",
                             "missing_required_parameter")
        limit = int(self.settings.max_file_mb * 1024 * 1024)
        data = await upload.read(limit + 1)
        name = self.file_name(upload)
        if len(data) > limit:
            raise ServeError(413, f"{name}: the file is larger than this server's limit of "
                             f"{self.settings.max_file_mb:g} MB.", "file", "file_too_large")
        if not data:
            raise ServeError(400, f"{name}: the file is empty.", "file", "empty_file")
        return data

    def decode_audio(self, data: bytes, name: str) -> np.ndarray:
        self.check_duration(data, name)
        try:
            return load_audio(data, target_rate=self.sampling_rate)
        except AudioInputError as error:
            # load_audio names the input "<N bytes>"; the file name is more useful
            message = str(error).replace(describe_input(data), name, 1)
            if not message.startswith(name):
                message = f"{name}: {message}"
            raise ServeError(400, f"{message} Send a wav, flac, ogg or mp3 file.", "file", "invalid_file") from None

    def check_duration(self, data: bytes, name: str) -> None:
        """Refuse (413) audio longer than `max_audio_seconds` from its header, before decoding it: a small file of
        compressed silence can hold days of audio. A header soundfile cannot read is left to `load_audio`."""
        import soundfile

        limit = self.settings.max_audio_seconds
        try:
            header = soundfile.info(io.BytesIO(data))
            # a header without the length (a streamed FLAC) is counted by decoding, never past the limits below
            most = min(limit * max(header.samplerate, 1), limit * 96_000 / max(header.channels, 1))
            info = audio_file_info(io.BytesIO(data), max_frames=int(most) + 1)
        except Exception:  # noqa: BLE001 - not a format soundfile reads: load_audio reports it
            return
        if info.samplerate <= 0 or info.frames < 0:
            return  # check_sampling_rate names a bad rate
        seconds = info.frames / info.samplerate
        # the decoded array holds every channel at the file's own rate: bound its size as well as its duration
        # (as much as 48 kHz stereo of the longest duration)
        if seconds > limit or info.frames * max(info.channels, 1) > limit * 96_000:
            if header.frames >= UNKNOWN_FRAMES:  # a header without the length: counted only until past the limit
                raise ServeError(413, f"{name}: longer than this server's limit of {limit:g} s of audio "
                                 f"({info.channels} channel(s) at {info.samplerate} Hz; its header holds no length, "
                                 "counted while decoding).", "file", "audio_too_long")
            raise ServeError(413, f"{name}: {seconds:.0f} s of audio ({info.channels} channel(s) at "
                             f"{info.samplerate} Hz), more than this server's limit of {limit:g} s.", "file",
                             "audio_too_long")

    def detect_language(self, windows: Sequence[np.ndarray]) -> str:
        """The spoken language of the request's speech windows, where the model can detect it: each window
        detected (`DecodingEngine.detect_languages`, Whisper's way) and the majority taken (`vote_language`), as the
        pipeline does; else a 400. A model without a Whisper decoder raises `LanguageDetectionUnavailable` (a
        ValueError)."""
        try:
            with self.batcher.model_lock:
                found = vote_language(self.engine.detect_languages(list(windows)))
        except ValueError as error:  # LanguageDetectionUnavailable: no Whisper decoder to detect with
            raise ServeError(400, f"Language detection is not enabled for this model ({error}). "
                             + self.PASS_LANGUAGE, "language", "language_required") from None
        if found.get("unsupported"):
            raise ServeError(400, f"The audio sounds like {found['unsupported']!r}, which this model does "
                             "not support. " + self.PASS_LANGUAGE, "language", "unsupported_language")
        return self.language(str(found["language"]), "language")

    # ---------------------------------------------------------------------------------------------- requests
    async def handle(self, request, task: str):
        """One transcription or translation request -> a Starlette response."""
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

        limit = int(self.settings.max_file_mb * 1024 * 1024)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit + _FORM_SLACK_BYTES:
            raise ServeError(413, f"The upload is larger than this server's limit of {self.settings.max_file_mb:g} "
                             "MB.", "file", "file_too_large")
        request = _counted(request, limit + _FORM_SLACK_BYTES, self.settings.max_file_mb)
        try:
            form = await request.form(max_files=1, max_fields=64)
        except ServeError:
            raise
        except Exception as error:  # starlette's MultiPartException and malformed bodies
            raise ServeError(400, f"Could not read the multipart form: {error}", None, "invalid_form") from None
        self.check_model(form.get("model"))
        response_format = str(form.get("response_format") or "json")
        if response_format not in RESPONSE_FORMATS:
            raise ServeError(400, f"Unsupported response_format {shown(response_format)}; choose one of "
                             f"{', '.join(RESPONSE_FORMATS)}.", "response_format", "invalid_value")
        self.check_server_set_fields(form)
        stream = STREAM_VALUES.get(str(form.get("stream") or "").strip().lower())
        if stream is None:
            raise ServeError(400, f"stream must be true or false, got {shown(form.get('stream'))}.", "stream",
                             "invalid_value")
        language = form.get("language")
        # omitted or "auto" (as the CLI and the pipeline write it): detected from the audio
        detect = language in (None, "") or str(language).strip().lower() == "auto"
        src = None if detect else self.language(str(language), "language")
        target_values, target_field = self.target_fields(form)
        if task == "translate":
            targets = self.targets(target_values, src, target_field)
        else:
            targets = None
            if target_values:
                # a transcript would come back where a translation was asked for, without a word
                raise ServeError(400, target_on_transcription_message(target_field), target_field, "invalid_value")
        if targets and len(targets) > 1 and (stream or response_format not in ("json", "verbose_json")):
            raise ServeError(400, "Several target languages are answered as JSON: use response_format json or "
                             "verbose_json, without stream.", target_field, "invalid_value")
        settings = self.generation_settings(form.get("temperature"))
        upload = form.get("file")
        data = await self.read_file(upload)
        name = self.file_name(upload)

        audio = await run_in_threadpool(self.decode_audio, data, name)
        spans = split_on_silence(audio, self.sampling_rate, self.window_seconds)
        windows = [audio[start:end] for start, end in spans]
        times = [(start / self.sampling_rate, end / self.sampling_rate) for start, end in spans]
        speech = [w for w, window in enumerate(windows) if not is_silent(window, sampling_rate=self.sampling_rate)]
        if src is None:
            src = await run_in_threadpool(self.detect_language, [windows[w] for w in speech] or windows)
        targets = targets or [src]
        rows = [Row("asr" if tgt == src else "srt", src, tgt) for tgt in targets]
        for row in rows:
            try:
                self.untrained_warnings.check(src, None if row.task == "asr" else row.tgt,
                                              refuse=self.settings.untrained_direction == "error")
            except UntrainedDirectionError as error:
                raise ServeError(400, str(error), target_field if row.task != "asr" else "language",
                                 "untrained_direction") from None
        submitted = self.batcher.submit_all([windows[w] for w in speech], rows, settings)  # 503 when full
        futures = {w: asyncio.wrap_future(future) for w, future in zip(speech, submitted)}
        duration = len(audio) / self.sampling_rate

        def segment(w: int, result: dict) -> dict:
            start, end = times[w]
            return {"id": w, "seek": int(round(start * 100)), "start": round(start, 3), "end": round(end, 3),
                    "text": result["text"].strip(), "transcript": result["transcript"].strip(),
                    "tokens": result["tokens"], "temperature": float(settings.get("temperature", 0.0)),
                    "compression_ratio": compression_ratio(result["text"]),
                    "complete": result["complete"], "finish_reason": "stop" if result["complete"] else "length"}

        if stream:
            return StreamingResponse(self._stream(futures, segment, targets[0], task), media_type="text/event-stream")

        pending = set(futures.values())
        while pending:
            _, pending = await asyncio.wait(pending, timeout=_DISCONNECT_POLL_SECONDS)
            if pending and await request.is_disconnected():
                for future in pending:  # still queued: dropped undecoded (the batch in progress finishes)
                    future.cancel()
                logger.info(f"A client went away: {len(pending)} of its windows were cancelled.")
                return Response(status_code=499)
        try:
            done = {w: future.result() for w, future in futures.items()}
        except ServeError:
            raise
        except Exception as error:
            logger.warning(f"A request failed while decoding: {error}")
            raise ServeError(500, f"Decoding failed: {error}", None, "decoding_failed", "server_error") from None
        outputs = [
            Transcript(task, src, tgt, duration, [segment(w, done[w][t]) for w in speech])
            for t, tgt in enumerate(targets)
        ]
        # text, srt and vtt bodies have no room for the `complete` flag that JSON carries: a header says it for
        # every format, so an answer cut by --max-new-tokens (a translation cut before it began is empty) is never
        # taken for a finished one
        complete = all(output.complete for output in outputs)
        headers = {FINISH_REASON_HEADER: "stop" if complete else "length"}
        if len(outputs) > 1:
            key = "json" if response_format == "json" else "verbose_json"
            return JSONResponse({"translations": [getattr(o, key)() for o in outputs]}, headers=headers)
        output = outputs[0]
        if response_format == "json":
            return JSONResponse(output.json(), headers=headers)
        if response_format == "verbose_json":
            return JSONResponse(output.verbose_json(), headers=headers)
        text = {"text": lambda: output.text, "srt": lambda: to_srt(output.segments),
                "vtt": lambda: to_vtt(output.segments)}[response_format]()
        return PlainTextResponse(text, headers=headers)

    async def _stream(self, futures: dict, segment, tgt: str, task: str):
        """Server-sent events in OpenAI's format: one `transcript.text.delta` per window, then `...done`."""
        pieces = []
        separator = "" if tgt in UNSPACED_LANGUAGES else " "
        complete = True
        try:
            for w, future in futures.items():
                answer = segment(w, (await future)[0])
                text, complete = answer["text"], complete and answer["complete"]
                if not text:
                    continue
                delta = (separator if pieces else "") + text
                pieces.append(delta)
                yield sse({"type": "transcript.text.delta", "delta": delta})
        except Exception as error:  # the status line is sent already: report the failure as an event
            logger.warning(f"A streamed request failed while decoding: {error}")
            yield sse({"type": "error", "error": error_body(f"Decoding failed: {error}", "server_error")["error"]})
            return
        finally:  # the client went away (the response is cancelled) or a window failed: drop the rest undecoded
            for future in futures.values():
                future.cancel()
        yield sse({"type": "transcript.text.done", "text": "".join(pieces), "complete": complete,
                   "finish_reason": "stop" if complete else "length"})





def _counted(request, limit: int, limit_mb: float):
    """`request` reading its body through a counter: a 413 as soon as more than `limit` bytes have arrived, whether
    or not the client declared a Content-Length (a chunked upload is not read whole first)."""
    from starlette.requests import Request

    receive, seen = request.receive, 0

    async def counted():
        nonlocal seen
        message = await receive()
        if message.get("type") == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise ServeError(413, f"The upload is larger than this server's limit of {limit_mb:g} MB.", "file",
                                 "file_too_large")
        return message

    return Request(request.scope, counted)


def load_model(model_path: str | os.PathLike, device: str | None = None, dtype: str | None = None,
               trust_remote_code: bool = False):
    """Load a saved LLM-SRT model and processor in eval mode on `device`, with the installed classes unless
    `trust_remote_code` (a folder whose code differs from them is refused without it: `model_code_to_trust`)."""
    model, processor = load_model_and_processor(model_path, trust_remote_code, getattr(torch, dtype) if dtype else None)
    return model.to(device or "cpu").eval(), processor


def create_app(
    model: str | os.PathLike | tuple[Any, Any],
    *,
    served_model_name: str | None = None,
    max_batch_size: int = 16,
    max_wait_ms: float = 10.0,
    max_file_mb: float = DEFAULT_MAX_FILE_MB,
    max_new_tokens: int | None = None,
    num_beams: int = 1,
    max_audio_seconds: float = DEFAULT_MAX_AUDIO_SECONDS,
    device: str | None = None,
    dtype: str | None = None,
    max_queue: int = 256,
    trust_remote_code: bool = False,
    engine: str = "transformers",
    tensor_parallel_size: int = 1,
    max_live_sessions: int = 32,
    untrained_direction: str = "warn",
):
    """The FastAPI app serving `model` (a saved model folder or Hub id, or a `(model, processor)` pair).

    `engine` decodes: "transformers" (default; `device`, `dtype`) or "vllm" (a model folder; vLLM's engine with
    `tensor_parallel_size`, greedy or sampled decoding, see `vllm_engine.VllmEngine`).

    The decoding worker starts and stops with the app (its lifespan); `app.state.server` is the [`SpeechServer`]
    (its `batcher.stats` counts the `generate` calls).
    """
    try:
        from fastapi import FastAPI, Request, WebSocket
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import HTMLResponse, JSONResponse
        from starlette.exceptions import HTTPException as StarletteHTTPException
    except ImportError as error:
        raise ImportError(f"llm-srt serve needs FastAPI: pip install 'llm-srt[serve]' ({error}).") from None
    if max_file_mb <= 0:
        raise ValueError(f"max_file_mb must be positive, got {max_file_mb}.")
    if num_beams < 1:
        raise ValueError(f"num_beams must be at least 1, got {num_beams}.")
    if max_queue < 1:
        raise ValueError(f"max_queue must be at least 1, got {max_queue}.")
    if not max_audio_seconds > 0:
        raise ValueError(f"max_audio_seconds must be positive, got {max_audio_seconds}.")
    if engine not in ENGINES:
        raise ValueError(f"Unknown engine {engine!r}: one of {', '.join(ENGINES)}.")
    if untrained_direction not in UNTRAINED_DIRECTION_ACTIONS:
        raise ValueError(f"untrained_direction must be 'warn' or 'error', got {untrained_direction!r}.")
    decoding_engine = None
    if engine == "vllm":
        if not isinstance(model, (str, os.PathLike)):
            raise ValueError("The vLLM engine serves a model folder (or Hub id), not a loaded (model, processor).")
        if num_beams > 1:
            raise ValueError(f"num_beams={num_beams}: the vLLM engine decodes greedily; beam search needs the "
                             "transformers engine.")
        if device is not None:
            raise ValueError("device applies to the transformers engine; vLLM places the model on its platform's "
                             "devices (tensor_parallel_size to split it).")
    elif tensor_parallel_size != 1:
        raise ValueError("tensor_parallel_size applies to the vLLM engine (engine='vllm').")
    if isinstance(model, (str, os.PathLike)):
        name = served_model_name or os.path.basename(os.path.normpath(os.fspath(model)))
        aliases = tuple(dict.fromkeys([os.fspath(model), os.path.normpath(os.fspath(model))]))
        if engine == "vllm":
            from ..vllm_engine import VllmEngine

            check_model_location(model)
            processor = LlmSrtProcessor.from_pretrained(model)
            decoding_engine = VllmEngine(model, processor, tensor_parallel_size=tensor_parallel_size,
                                         dtype=dtype or "auto")
            model = None
        else:
            model, processor = load_model(model, device, dtype, trust_remote_code)
    else:
        model, processor = model
        name, aliases = served_model_name or "llm-srt", ()
    server = SpeechServer(model, processor, ServeSettings(
        served_model_name=name, model_aliases=aliases, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
        max_file_mb=max_file_mb, max_new_tokens=max_new_tokens, num_beams=num_beams,
        max_audio_seconds=max_audio_seconds, max_queue=max_queue, max_live_sessions=max_live_sessions,
        untrained_direction=untrained_direction,
    ), engine=decoding_engine)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        server.batcher.start()
        try:
            yield
        finally:
            await asyncio.to_thread(server.batcher.stop)
            if hasattr(server.engine, "shutdown"):
                await asyncio.to_thread(server.engine.shutdown)

    app = FastAPI(title="llm-srt", description="OpenAI-compatible speech recognition and translation with LLM-SRT",
                  lifespan=lifespan)
    app.state.server = server

    @app.exception_handler(ServeError)
    async def serve_error(request: Request, error: ServeError):
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        return JSONResponse(error_body(str(error)), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        code = "not_found" if error.status_code == 404 else None
        return JSONResponse(error_body(str(error.detail), code=code), status_code=error.status_code)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception):
        logger.error(f"Unexpected error on {request.url.path}: {error!r}")
        return JSONResponse(error_body(f"Internal error: {error}", "server_error"), status_code=500)

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request):
        """Speech recognition, OpenAI's `audio.transcriptions.create`."""
        return await server.handle(request, "transcribe")

    @app.post("/v1/audio/translations")
    async def translations(request: Request):
        """Speech translation into English (default) or `target_language` (one or several, comma-separated)."""
        return await server.handle(request, "translate")

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [
            {"id": server.settings.served_model_name, "object": "model", "created": server.created,
             "owned_by": "llm-srt"}
        ]}

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": server.settings.served_model_name, "queued_windows": server.batcher.queued,
                "batches": server.batcher.stats["batches"], "rows": server.batcher.stats["rows"],
                "windows": server.batcher.stats["windows"], "live_sessions": server.live_sessions}

    @app.websocket("/v1/realtime")
    async def realtime(websocket: WebSocket):
        """Live transcription and translation (`serving/realtime.py`: OpenAI's Realtime transcription events)."""
        await run_session(server, websocket, server.settings.max_live_sessions)

    @app.get("/", include_in_schema=False)
    @app.get("/live", include_in_schema=False)
    async def live_page():
        """The live subtitle page: microphone or file, targets, live transcript and translations, SRT/VTT."""
        return HTMLResponse(LIVE_PAGE.read_text(encoding="utf-8"))

    return app
