"""`llm-srt serve`: an OpenAI-compatible speech recognition and translation server with request batching.

```bash
pip install -e ".[serve]"
llm-srt serve path/to/model --port 8000 --max-batch-size 16 --max-wait-ms 10
```

```python
from openai import OpenAI

client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
client.audio.transcriptions.create(model="model", file=open("talk.wav", "rb"), language="en")
client.audio.translations.create(model="model", file=open("talk.wav", "rb"), extra_body={"language": "de"})
```

Endpoints: `POST /v1/audio/transcriptions`, `POST /v1/audio/translations` (into English by default; the extra form
field `target_language` names one of the 15 languages or several, comma-separated), `GET /v1/models`, `GET /health`.

Batching: every request is cut into the model's windows (at pauses, as the pipeline does); a background worker
thread collects queued windows of all concurrent requests and decodes them together in one `generate` call (at most
`max_batch_size` rows, a row being one (window, target) pair, waiting at most `max_wait_ms` for the batch to fill).
Prompts are per row, so transcriptions and translations into different languages share a batch; only requests with
the same generation settings (`temperature`) are batched together. The prompt block is left-padded, so with greedy
decoding (the server's default) a batched request gets exactly the answer it would get alone.
"""

import argparse
import asyncio
import collections
import concurrent.futures
import contextlib
import io
import json
import os
import queue
import socket
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers.utils import logging

from .audio_llm_srt import AudioInputError, describe_input, is_silent, load_audio, split_on_silence
from .configuration_llm_srt import LANGUAGES, normalize_language, supported_languages_text
from .pipeline_llm_srt import UNSPACED_LANGUAGES, join_window_texts


logger = logging.get_logger(__name__)

RESPONSE_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
# Targets written without spaces between sentences when windows are joined (as the pipeline joins them).
DEFAULT_MAX_FILE_MB = 25.0  # OpenAI's own upload limit
# Longest decoded audio: a 25 MB upload of compressed silence (FLAC, Ogg) can decode to days of samples, gigabytes
# of memory; checked from the file's header before decoding.
DEFAULT_MAX_AUDIO_SECONDS = 7200.0
_MAX_SHOWN_CHARS = 60  # longest piece of a request's own value echoed in an error message
_FORM_SLACK_BYTES = 1 << 20  # room for the other form fields and multipart framing in the Content-Length check


class ServeError(Exception):
    """A request error answered as OpenAI's `{"error": {"message", "type", "param", "code"}}` with `status`."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None,
        type: str = "invalid_request_error",
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def shown(value: Any) -> str:
    """A request's value for an error message: its repr, cut short (a 100 kB form field is not echoed back)."""
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN_CHARS else text[: _MAX_SHOWN_CHARS - 5] + "...'" + f" ({len(str(value))} characters)"


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# --------------------------------------------------------------------------------------------------------- batching
@dataclass
class Row:
    """One decoded sequence: a window's transcript (`asr`) or its translation into `tgt` (`srt`)."""

    task: str
    src: str
    tgt: str


@dataclass
class WindowJob:
    """One audio window of a request and the rows it needs; `future` receives one result dict per row."""

    window: np.ndarray
    rows: list[Row]
    settings: tuple  # hashable generate kwargs; only jobs with equal settings share a generate call
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


_STOP = object()


class Batcher:
    """A worker thread that decodes queued windows of concurrent requests together in one `generate` call.

    Each window's audio is encoded once and its audio embeddings repeated over its rows (one-to-many, as the
    pipeline does). A job that cannot be prepared fails alone; when a whole batch fails, its jobs are retried one
    at a time so only the one at fault fails.

    Args:
        model: an `LlmSrtForConditionalGeneration` in eval mode.
        processor: its `LlmSrtProcessor`.
        max_batch_size: most rows (window x target pairs) per `generate` call; a larger job runs alone.
        max_wait_ms: how long the first queued job waits for others to join its batch.
    """

    def __init__(self, model, processor, max_batch_size: int = 16, max_wait_ms: float = 10.0):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}.")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}.")
        self.model, self.processor = model, processor
        self.max_batch_size, self.max_wait = max_batch_size, max_wait_ms / 1000.0
        self.device = next(model.parameters()).device
        self.dtype = next(model.audio_tower.parameters()).dtype
        self.model_lock = threading.Lock()  # the worker and language detection share the model
        self.stats = collections.Counter()  # submitted (windows), batches (generate calls), rows, windows
        self._queue: queue.Queue = queue.Queue()
        self._pending: collections.deque[WindowJob] = collections.deque()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="llm-srt-batcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Finish the batch in progress, fail the queued jobs (503) and end the worker."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None

    def submit(self, window: np.ndarray, rows: Sequence[Row], settings: dict) -> concurrent.futures.Future:
        """Queue one window; the future's result is one dict per row (`text`, `transcript`, `tokens`)."""
        if self._thread is None:
            raise ServeError(503, "The server is not running its decoding worker.", type="server_error")
        job = WindowJob(window=window, rows=list(rows), settings=tuple(sorted(settings.items())))
        self.stats["submitted"] += 1
        self._queue.put(job)
        return job.future

    @property
    def queued(self) -> int:
        return self._queue.qsize() + len(self._pending)

    # ---------------------------------------------------------------------------------------------------- worker
    def _loop(self) -> None:
        stopping = False
        while not stopping:
            batch, stopping = self._next_batch()
            if batch:
                with self.model_lock:
                    self._run(batch)
        leftovers = list(self._pending)
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not _STOP:
                leftovers.append(item)
        for job in leftovers:
            job.future.set_exception(ServeError(503, "The server is shutting down.", type="server_error"))

    def _next_batch(self) -> tuple[list[WindowJob], bool]:
        """The oldest job and the compatible ones that arrive within `max_wait` (up to `max_batch_size` rows)."""
        if self._pending:
            first = self._pending.popleft()
        else:
            first = self._queue.get()
            if first is _STOP:
                return [], True
        batch, rows = [first], len(first.rows)

        def admit(job) -> None:
            """Into this batch when it shares the settings and fits; else set aside for a later batch."""
            nonlocal rows
            if job.settings == first.settings and rows + len(job.rows) <= self.max_batch_size:
                batch.append(job)
                rows += len(job.rows)
            else:
                self._pending.append(job)

        # Jobs set aside earlier (other settings, or no room) are older than the queued ones: they go first.
        waiting, self._pending = self._pending, collections.deque()
        for job in waiting:
            admit(job)
        deadline = time.monotonic() + self.max_wait
        while rows < self.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:
                return batch, True
            admit(job)
        return batch, False

    def _run(self, jobs: list[WindowJob]) -> None:
        """Decode `jobs` in one batch and resolve their futures; a failing batch is retried job by job."""
        prepared = []
        for job in jobs:
            if job.future.set_running_or_notify_cancel():
                try:
                    prepared.append((job, self._prepare(job)))
                except Exception as error:  # one bad job must not take the batch down
                    job.future.set_exception(error)
        if not prepared:
            return
        try:
            results = self._decode(prepared)
        except Exception as error:
            if len(prepared) == 1:
                logger.warning(f"Decoding a window failed: {error}")
                prepared[0][0].future.set_exception(error)
                return
            logger.warning(f"A batch of {len(prepared)} windows failed ({error}); retrying them one at a time.")
            for job, inputs in prepared:
                try:
                    job.future.set_result(self._decode([(job, inputs)])[0])
                except Exception as single_error:
                    job.future.set_exception(single_error)
            return
        for (job, _), result in zip(prepared, results):
            job.future.set_result(result)

    def _prepare(self, job: WindowJob) -> tuple[torch.Tensor, list[list[int]]]:
        """Log-mel features `(1, mel, frames)` and the unpadded prompt ids of each row."""
        rate = self.processor.feature_extractor.sampling_rate
        features = self.processor.extract_features([job.window], rate)
        prompts = [
            self.processor.prepare_text(row.task, [row.src], [row.tgt], [None], [None])["input_ids"][0]
            for row in job.rows
        ]
        return features, prompts

    @torch.inference_mode()
    def _decode(self, prepared: list[tuple[WindowJob, tuple]]) -> list[list[dict]]:
        processor, model = self.processor, self.model
        features = torch.cat([inputs[0] for _, inputs in prepared]).to(device=self.device, dtype=self.dtype)
        audio_embeds = model.get_audio_features(features)
        # One row per (window, target); each window's encoding is repeated over its rows.
        owners, prompts, rows = [], [], []
        for index, (job, (_, job_prompts)) in enumerate(prepared):
            owners.extend([index] * len(job.rows))
            prompts.extend(job_prompts)
            rows.extend(job.rows)
        pad = processor.tokenizer.pad_token_id
        width = max(len(p) for p in prompts)
        # Left padding, as the processor pads: each row's prompt ends where generation starts.
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        settings = dict(prepared[0][0].settings)
        generated = model.generate(
            input_ids=input_ids, attention_mask=attention_mask,
            audio_embeds=audio_embeds[torch.tensor(owners, device=self.device)], **settings,
        )
        self.stats["batches"] += 1
        self.stats["rows"] += len(rows)
        self.stats["windows"] += len(prepared)
        stop_ids = {processor.tokenizer.eos_token_id, pad}
        results: list[list[dict]] = [[] for _ in prepared]
        for index, (owner, row) in enumerate(zip(owners, rows)):
            ids = generated[index : index + 1]
            decoded = processor.post_process(ids, task=row.task, src_lang=row.src, tgt_lang=row.tgt)[0]
            tokens = ids[0].tolist()
            while tokens and tokens[-1] in stop_ids:
                tokens.pop()
            transcript = decoded.get("transcript") or ""
            text = transcript if row.task == "asr" else decoded.get("translation") or ""
            results[owner].append({"text": text, "transcript": transcript, "tokens": tokens})
        return results


# ------------------------------------------------------------------------------------------------------ formatting


def language_name(code: str) -> str:
    """OpenAI writes languages as lower-case English names (`english`)."""
    return LANGUAGES[code][0].lower()


def _clock(seconds: float, separator: str) -> str:
    millis = int(round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def to_srt(segments: Sequence[dict]) -> str:
    """SubRip subtitles, one cue per window with text."""
    cues = [s for s in segments if s["text"]]
    return "".join(
        f"{n}\n{_clock(s['start'], ',')} --> {_clock(s['end'], ',')}\n{s['text']}\n\n" for n, s in enumerate(cues, 1)
    )


def to_vtt(segments: Sequence[dict]) -> str:
    """WebVTT subtitles, one cue per window with text."""
    cues = [s for s in segments if s["text"]]
    return "WEBVTT\n\n" + "".join(
        f"{_clock(s['start'], '.')} --> {_clock(s['end'], '.')}\n{s['text']}\n\n" for s in cues
    )


def compression_ratio(text: str) -> float:
    """Whisper's repetition measure: text bytes over zlib-compressed bytes."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


@dataclass
class Transcript:
    """What one request produced for one target: the windows' texts with their times."""

    task: str  # "transcribe" or "translate"
    src: str
    tgt: str
    duration: float
    segments: list[dict]

    @property
    def text(self) -> str:
        return join_window_texts([s["text"] for s in self.segments], self.tgt)

    @property
    def transcript(self) -> str:
        return join_window_texts([s["transcript"] for s in self.segments], self.src)

    def json(self) -> dict:
        body = {"text": self.text, "usage": {"type": "duration", "seconds": round(self.duration, 3)}}
        if self.task == "translate":
            body.update(transcript=self.transcript, language=self.src, target_language=self.tgt)
        return body

    def verbose_json(self) -> dict:
        body = {"task": self.task, "language": language_name(self.src), "duration": round(self.duration, 3),
                "text": self.text, "segments": self.segments,
                "usage": {"type": "duration", "seconds": round(self.duration, 3)}}
        if self.task == "translate":
            body.update(transcript=self.transcript, target_language=language_name(self.tgt))
        return body


# ------------------------------------------------------------------------------------------------------- the server
@dataclass
class ServeSettings:
    """Server options (the `llm-srt serve` flags)."""

    served_model_name: str = "llm-srt"
    max_batch_size: int = 16
    max_wait_ms: float = 10.0
    max_file_mb: float = DEFAULT_MAX_FILE_MB
    max_new_tokens: int | None = None
    num_beams: int = 1
    max_audio_seconds: float = DEFAULT_MAX_AUDIO_SECONDS


class SpeechServer:
    """The model, its processor, the batcher and the request logic behind the HTTP routes."""

    PASS_LANGUAGE = f"Pass `language`, the language spoken in the audio (one of: {', '.join(LANGUAGES)})."

    def __init__(self, model, processor, settings: ServeSettings):
        self.model, self.processor, self.settings = model, processor, settings
        self.batcher = Batcher(model, processor, settings.max_batch_size, settings.max_wait_ms)
        self.sampling_rate = processor.feature_extractor.sampling_rate
        self.window_seconds = float(processor.feature_extractor.chunk_length)
        self.created = int(time.time())

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
            if not 0 <= value <= 2:
                raise ServeError(400, f"temperature must be between 0 and 2, got {value}.", "temperature",
                                 "invalid_value")
            if value > 0:
                settings.update(do_sample=True, temperature=value, num_beams=1)
        return settings

    def check_model(self, name: str | None) -> None:
        if name not in (None, "", self.settings.served_model_name):
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

    def targets(self, values: Sequence[str]) -> list[str]:
        """`target_language` values (each may be comma-separated) -> distinct codes, in order; English if none."""
        names = [part.strip() for value in values for part in str(value).split(",") if part.strip()]
        if not names:
            return ["eng"]
        return list(dict.fromkeys(self.language(name, "target_language") for name in names))

    async def read_file(self, upload) -> bytes:
        if upload is None or isinstance(upload, str):
            raise ServeError(400, "Upload the audio as the multipart form field 'file'.", "file",
                             "missing_required_parameter")
        limit = int(self.settings.max_file_mb * 1024 * 1024)
        data = await upload.read(limit + 1)
        name = getattr(upload, "filename", None) or "file"
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

        try:
            info = soundfile.info(io.BytesIO(data))
        except Exception:  # noqa: BLE001 - not a format soundfile reads: load_audio reports it
            return
        if info.samplerate <= 0 or info.frames < 0:
            return  # check_sampling_rate names a bad rate
        limit = self.settings.max_audio_seconds
        seconds = info.frames / info.samplerate
        # the decoded array holds every channel at the file's own rate: bound its size as well as its duration
        # (as much as 48 kHz stereo of the longest duration)
        if seconds > limit or info.frames * max(info.channels, 1) > limit * 96_000:
            raise ServeError(413, f"{name}: {seconds:.0f} s of audio ({info.channels} channel(s) at "
                             f"{info.samplerate} Hz), more than this server's limit of {limit:g} s.", "file",
                             "audio_too_long")

    def detect_language(self, windows: Sequence[np.ndarray]) -> str:
        """The spoken language of the first speech window, where the model can detect it; else a 400.

        Uses `model.detect_language(input_features=...)` (Whisper's method on the model's own encoder), which
        raises `LanguageDetectionUnavailable` (a ValueError) when the model has no Whisper decoder to detect with.
        """
        detect = getattr(self.model, "detect_language", None)
        if detect is None:
            raise ServeError(400, "Language detection is not enabled for this model: " + self.PASS_LANGUAGE,
                             "language", "language_required")
        features = self.processor.extract_features(list(windows[:1]), self.sampling_rate)
        try:
            with self.batcher.model_lock, torch.inference_mode():
                found = detect(input_features=features.to(self.batcher.device, self.batcher.dtype))[0]
        except ValueError as error:  # LanguageDetectionUnavailable: no Whisper decoder to detect with
            raise ServeError(400, f"Language detection is not enabled for this model ({error}). "
                             + self.PASS_LANGUAGE, "language", "language_required") from None
        if not found.get("supported", True):
            raise ServeError(400, f"The audio sounds like {found.get('whisper_language')!r}, which this model does "
                             "not support. " + self.PASS_LANGUAGE, "language", "unsupported_language")
        return self.language(str(found["language"]), "language")

    # ---------------------------------------------------------------------------------------------- requests
    async def handle(self, request, task: str):
        """One transcription or translation request -> a Starlette response."""
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse

        limit = int(self.settings.max_file_mb * 1024 * 1024)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit + _FORM_SLACK_BYTES:
            raise ServeError(413, f"The upload is larger than this server's limit of {self.settings.max_file_mb:g} "
                             "MB.", "file", "file_too_large")
        try:
            form = await request.form(max_files=1, max_fields=64)
        except Exception as error:  # starlette's MultiPartException and malformed bodies
            raise ServeError(400, f"Could not read the multipart form: {error}", None, "invalid_form") from None
        self.check_model(form.get("model"))
        response_format = str(form.get("response_format") or "json")
        if response_format not in RESPONSE_FORMATS:
            raise ServeError(400, f"Unsupported response_format {shown(response_format)}; choose one of "
                             f"{', '.join(RESPONSE_FORMATS)}.", "response_format", "invalid_value")
        stream = str(form.get("stream") or "false").lower() in ("true", "1", "yes")
        language = form.get("language")
        # omitted or "auto" (as the CLI and the pipeline write it): detected from the audio
        detect = language in (None, "") or str(language).strip().lower() == "auto"
        src = None if detect else self.language(str(language), "language")
        if task == "translate":
            targets = self.targets(form.getlist("target_language") + form.getlist("target_language[]"))
        else:
            targets = None
            if any(str(v).strip() for v in form.getlist("target_language") + form.getlist("target_language[]")):
                # a transcript would come back where a translation was asked for, without a word
                raise ServeError(400, "target_language is for /v1/audio/translations; /v1/audio/transcriptions "
                                 "answers in the spoken language.", "target_language", "invalid_value")
        if targets and len(targets) > 1 and (stream or response_format not in ("json", "verbose_json")):
            raise ServeError(400, "Several target languages are answered as JSON: use response_format json or "
                             "verbose_json, without stream.", "target_language", "invalid_value")
        settings = self.generation_settings(form.get("temperature"))
        upload = form.get("file")
        data = await self.read_file(upload)
        name = getattr(upload, "filename", None) or "file"

        audio = await run_in_threadpool(self.decode_audio, data, name)
        spans = split_on_silence(audio, self.sampling_rate, self.window_seconds)
        windows = [audio[start:end] for start, end in spans]
        times = [(start / self.sampling_rate, end / self.sampling_rate) for start, end in spans]
        speech = [w for w, window in enumerate(windows) if not is_silent(window)]
        if src is None:
            src = await run_in_threadpool(self.detect_language, [windows[w] for w in speech] or windows)
        targets = targets or [src]
        rows = [Row("asr" if tgt == src else "srt", src, tgt) for tgt in targets]
        futures = {w: asyncio.wrap_future(self.batcher.submit(windows[w], rows, settings)) for w in speech}
        duration = len(audio) / self.sampling_rate

        def segment(w: int, result: dict) -> dict:
            start, end = times[w]
            return {"id": w, "seek": int(round(start * 100)), "start": round(start, 3), "end": round(end, 3),
                    "text": result["text"].strip(), "transcript": result["transcript"].strip(),
                    "tokens": result["tokens"], "temperature": float(settings.get("temperature", 0.0)),
                    "compression_ratio": compression_ratio(result["text"])}

        if stream:
            return StreamingResponse(self._stream(futures, segment, targets[0], task), media_type="text/event-stream")

        try:
            done = {w: await future for w, future in futures.items()}
        except ServeError:
            raise
        except Exception as error:
            logger.warning(f"A request failed while decoding: {error}")
            raise ServeError(500, f"Decoding failed: {error}", None, "decoding_failed", "server_error") from None
        outputs = [
            Transcript(task, src, tgt, duration, [segment(w, done[w][t]) for w in speech])
            for t, tgt in enumerate(targets)
        ]
        if len(outputs) > 1:
            key = "json" if response_format == "json" else "verbose_json"
            return JSONResponse({"translations": [getattr(o, key)() for o in outputs]})
        output = outputs[0]
        if response_format == "json":
            return JSONResponse(output.json())
        if response_format == "verbose_json":
            return JSONResponse(output.verbose_json())
        text = {"text": lambda: output.text, "srt": lambda: to_srt(output.segments),
                "vtt": lambda: to_vtt(output.segments)}[response_format]()
        return PlainTextResponse(text)

    async def _stream(self, futures: dict, segment, tgt: str, task: str):
        """Server-sent events in OpenAI's format: one `transcript.text.delta` per window, then `...done`."""
        pieces = []
        separator = "" if tgt in UNSPACED_LANGUAGES else " "
        try:
            for w, future in futures.items():
                text = segment(w, (await future)[0])["text"]
                if not text:
                    continue
                delta = (separator if pieces else "") + text
                pieces.append(delta)
                yield _sse({"type": "transcript.text.delta", "delta": delta})
        except Exception as error:  # the status line is sent already: report the failure as an event
            logger.warning(f"A streamed request failed while decoding: {error}")
            yield _sse({"type": "error", "error": error_body(f"Decoding failed: {error}", "server_error")["error"]})
            return
        yield _sse({"type": "transcript.text.done", "text": "".join(pieces)})


def _sse(event: dict) -> str:
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n"


def load_model(model_path: str | os.PathLike, device: str | None = None, dtype: str | None = None):
    """Load a saved LLM-SRT model and processor (remote code allowed) in eval mode on `device`."""
    from transformers import AutoModel, AutoProcessor

    torch_dtype = getattr(torch, dtype) if dtype else None
    model = AutoModel.from_pretrained(model_path, trust_remote_code=True, dtype=torch_dtype)
    processor = AutoProcessor.from_pretrained(model_path, trust_remote_code=True)
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
):
    """The FastAPI app serving `model` (a saved model folder or Hub id, or a `(model, processor)` pair).

    The decoding worker starts and stops with the app (its lifespan); `app.state.server` is the [`SpeechServer`]
    (its `batcher.stats` counts the `generate` calls).
    """
    try:
        from fastapi import FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import JSONResponse
        from starlette.exceptions import HTTPException as StarletteHTTPException
    except ImportError as error:
        raise ImportError(f"llm-srt serve needs FastAPI: pip install 'llm-srt[serve]' ({error}).") from None
    if max_file_mb <= 0:
        raise ValueError(f"max_file_mb must be positive, got {max_file_mb}.")
    if num_beams < 1:
        raise ValueError(f"num_beams must be at least 1, got {num_beams}.")
    if not max_audio_seconds > 0:
        raise ValueError(f"max_audio_seconds must be positive, got {max_audio_seconds}.")
    if isinstance(model, (str, os.PathLike)):
        name = served_model_name or os.path.basename(os.path.normpath(os.fspath(model)))
        model, processor = load_model(model, device, dtype)
    else:
        model, processor = model
        name = served_model_name or "llm-srt"
    server = SpeechServer(model, processor, ServeSettings(
        served_model_name=name, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_file_mb=max_file_mb,
        max_new_tokens=max_new_tokens, num_beams=num_beams, max_audio_seconds=max_audio_seconds,
    ))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        server.batcher.start()
        try:
            yield
        finally:
            await asyncio.to_thread(server.batcher.stop)

    app = FastAPI(title="llm-srt", description="OpenAI-compatible speech recognition and translation with LLM-SRT",
                  lifespan=lifespan)
    app.state.server = server

    @app.exception_handler(ServeError)
    async def serve_error(request: Request, error: ServeError):
        return JSONResponse(error.body(), status_code=error.status)

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
                "batches": server.batcher.stats["batches"], "rows": server.batcher.stats["rows"]}

    return app


# -------------------------------------------------------------------------------------------- running the server
class ServerThread:
    """Run an app with uvicorn in a background thread (tests, benchmarks); `url` is its `http://host:port`."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        import uvicorn

        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))  # port 0: a free port chosen by the OS
        self.host, self.port = self._socket.getsockname()[:2]
        self.url = f"http://{self.host}:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on"))
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    def start(self, timeout: float = 30.0) -> "ServerThread":
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"The server on {self.url} did not start.")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=30)
        self._socket.close()

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------------------- the CLI
def add_parser(commands) -> argparse.ArgumentParser:
    """Add the `serve` subcommand to the `llm-srt` command's subparsers."""
    from .safe_io import non_negative_float, number_type, positive_float, positive_int

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
    return parser


def run_cli(args: argparse.Namespace) -> int:
    """Run `llm-srt serve` until interrupted. Errors are raised with one-line messages for the CLI to print."""
    try:
        import uvicorn
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401 - form uploads
    except ImportError as error:
        raise RuntimeError(f"llm-srt serve needs FastAPI, uvicorn and python-multipart ({error}): "
                           "pip install 'llm-srt[serve]'") from None
    try:
        app = create_app(
            args.model, served_model_name=args.served_model_name, max_batch_size=args.max_batch_size,
            max_wait_ms=args.max_wait_ms, max_file_mb=args.max_file_mb, max_new_tokens=args.max_new_tokens,
            num_beams=args.num_beams, max_audio_seconds=args.max_audio_seconds, device=args.device, dtype=args.dtype,
        )
    except Exception as error:  # noqa: BLE001 - whatever the loader raises, name the model and stop
        where = "" if os.path.isdir(args.model) else " (no such local folder; tried it as a Hub id)"
        message = " ".join(str(error).split()) or type(error).__name__
        raise RuntimeError(f"could not load the model {args.model}{where}: {message}") from None
    logger.warning(f"Serving {app.state.server.settings.served_model_name!r} on http://{args.host}:{args.port}/v1")
    uvicorn.run(app, host=args.host, port=args.port)
    return 0


__all__ = ["Batcher", "Row", "ServeError", "ServeSettings", "ServerThread", "SpeechServer", "add_parser",
           "create_app", "load_model", "run_cli", "to_srt", "to_vtt"]
