"""Live sessions of `llm-srt serve` over a WebSocket (`/v1/realtime`), after OpenAI's Realtime transcription events.

Client events (JSON text messages):

- `transcription_session.update`: `{"session": {"input_audio_transcription": {"language": "eng"}, "targets":
  ["deu", "fra"], "input_audio_format": "pcm16", "input_audio_sample_rate": 16000}}`. `targets` (our extension,
  also `target_languages`) are the languages to translate into; the language is detected when omitted. The audio
  is 16-bit little-endian mono PCM at 16 kHz unless `input_audio_sample_rate` (or `input_audio_format:
  {"type": "audio/pcm", "rate": N}`) declares another rate. Allowed until the first audio of a turn.
- `input_audio_buffer.append`: `{"audio": "<base64 PCM16>"}`.
- `input_audio_buffer.commit`: the end of the turn: the open segment is closed and reported; later audio starts a
  new turn. `input_audio_buffer.clear` drops the turn's audio not yet reported.

Server events: `transcription_session.created` / `.updated`; per segment (an "item" of its own)
`input_audio_buffer.speech_started` (`audio_start_ms`), `conversation.item.input_audio_transcription.delta`
(confirmed transcript words; they never change), `conversation.item.input_audio_translation.delta` (our extension:
the same per target, with `language`), then `conversation.item.input_audio_transcription.completed` (`transcript`,
`start`, `end` in seconds) and `conversation.item.input_audio_translation.completed` per target (`translation`);
`input_audio_buffer.committed` after a commit; `error` events (`{"type": "error", "error": {"type", "code",
"message", "param"}}`) for anything refused, after which the session goes on (a turn whose decoding failed, e.g.
a language the model cannot detect, is reported once and the rest of its audio dropped until the next commit).

Each session is a [`LiveTranslator`] whose decoding goes through the server's shared batcher (concurrent sessions
and HTTP requests are batched together). A client that disconnects ends its session; its queued windows are
dropped.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from transformers.utils import logging

from ..audio_llm_srt import MAX_SAMPLING_RATE, MIN_SAMPLING_RATE
from ..live.translator import LiveEvent, LiveTranslator, segment_answer, segment_rows
from ..speech_llm_srt import VadOptions
from .batcher import Row
from . import inputs
from .protocol import ServeError, error_body, shown


logger = logging.get_logger(__name__)

MAX_CHUNK_SECONDS = 10.0  # the most audio one append may carry
# OpenAI's turn_detection fields -> the speech detector's options (`VadOptions`)
TURN_DETECTION_FIELDS = {"threshold": "threshold", "prefix_padding_ms": "speech_pad_ms",
                         "silence_duration_ms": "min_silence_duration_ms"}
_session_ids = itertools.count(1)


class RealtimeError(ValueError):
    """A client event that is refused: an `error` event, and the session goes on."""

    def __init__(self, message: str, code: str = "invalid_value", param: str | None = None):
        super().__init__(message)
        self.code, self.param = code, param

    def event(self) -> dict[str, Any]:
        body = error_body(str(self), "invalid_request_error", self.param, self.code)["error"]
        return {"type": "error", "error": body}


class BatcherDecoder:
    """A `SegmentDecoder` over `llm-srt serve`'s batcher: each decode is a job among the other sessions' and
    requests' windows. `close()` cancels a job still queued (its client has gone)."""

    def __init__(self, server, settings: dict):
        self.server, self.settings = server, settings
        self.window_seconds, self.sampling_rate = server.window_seconds, server.sampling_rate
        self.closed = False
        self._future: concurrent.futures.Future | None = None

    def decode(self, audio: np.ndarray, src_lang: str, targets: Sequence[str]) -> tuple[str, dict[str, str]]:
        if self.closed:
            raise RuntimeError("The live session is closed.")
        rows = segment_rows(src_lang, targets)
        jobs = [Row(task, src_lang, tgt or src_lang) for task, tgt in rows]
        self._future = self.server.batcher.submit_all([audio], jobs, self.settings)[0]
        answers = self._future.result()
        return segment_answer(src_lang, targets, rows, answers)

    def detect(self, audio: np.ndarray) -> str:
        return self.server.detect_language([audio])

    def close(self) -> None:
        self.closed = True
        if self._future is not None:
            self._future.cancel()


def pcm16_samples(data: Any, rate: int, max_seconds: float = MAX_CHUNK_SECONDS) -> np.ndarray:
    """The float samples of a base64 PCM16 chunk; `RealtimeError` for anything else."""
    if not isinstance(data, str):
        raise RealtimeError(f"audio must be a base64 string of 16-bit PCM, got {type(data).__name__}.",
                            "invalid_audio", "audio")
    limit = int(max_seconds * rate) * 2
    if len(data) > (limit + 2) // 3 * 4 + 4:  # checked before decoding: a huge chunk costs nothing
        raise RealtimeError(f"The audio chunk holds more than {max_seconds:g} s of audio; send smaller chunks.",
                            "audio_too_large", "audio")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise RealtimeError("audio is not valid base64.", "invalid_audio", "audio") from None
    if len(raw) % 2:
        raise RealtimeError(f"The audio chunk has an odd number of bytes ({len(raw)}): 16-bit PCM has 2 per sample.",
                            "invalid_audio", "audio")
    if len(raw) > limit:
        raise RealtimeError(f"The audio chunk holds more than {max_seconds:g} s of audio; send smaller chunks.",
                            "audio_too_large", "audio")
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0


def turn_detection_options(value: Any, server_vad: VadOptions | None) -> tuple[VadOptions | None, bool]:
    """(the speech detector's options, whether silences end items) of a session's `turn_detection`, OpenAI's field:
    `{"type": "server_vad", "threshold", "prefix_padding_ms", "silence_duration_ms"}` (each optional, the server's
    settings otherwise), or null: the client commits its turns itself (silence, noise and music are still not
    decoded while the server's detector is on)."""
    if value is None:
        return server_vad, False
    if not isinstance(value, dict):
        raise RealtimeError("turn_detection must be an object or null.", param="turn_detection")
    kind = value.get("type", "server_vad")
    if kind != "server_vad":
        raise RealtimeError(f"Unsupported turn_detection type {shown(kind)}: server_vad, or null to commit turns "
                            "yourself.", param="turn_detection")
    unknown = sorted(set(value) - set(TURN_DETECTION_FIELDS) - {"type", "create_response", "interrupt_response"})
    if unknown:
        raise RealtimeError(f"Unknown turn_detection field(s) {', '.join(unknown)}; it takes "
                            f"{', '.join(TURN_DETECTION_FIELDS)}.", param="turn_detection")
    base = server_vad or VadOptions()
    options = {ours: value[theirs] for theirs, ours in TURN_DETECTION_FIELDS.items() if value.get(theirs) is not None}
    try:
        return replace(base, **options), True
    except ValueError as error:
        raise RealtimeError(f"turn_detection: {error}", param="turn_detection") from None


def turn_detection_object(vad: VadOptions | None, close_on_silence: bool) -> dict | None:
    """A session's turn detection as OpenAI writes it (null when the client commits turns)."""
    if vad is None or not close_on_silence:
        return None
    return {"type": "server_vad", **{theirs: getattr(vad, ours) for theirs, ours in TURN_DETECTION_FIELDS.items()}}


class RealtimeSession:
    """One WebSocket client's live session (module docstring)."""

    def __init__(self, server, websocket):
        self.server, self.websocket = server, websocket
        self.id = f"sess_{next(_session_ids)}"
        self.language: str | None = None
        self.targets: list[str] = []
        self.rate = server.sampling_rate
        self.settings = server.generation_settings(None)
        self.decoder = BatcherDecoder(server, self.settings)
        self.translator: LiveTranslator | None = None
        self.offset = 0.0  # seconds of audio of the session's earlier turns
        self.items = itertools.count()
        self.item_ids: dict[int, str] = {}  # segment of the current turn -> item id
        self.queue: asyncio.Queue = asyncio.Queue()
        self.halted = False  # a decode of this turn failed (reported): the rest of the turn is dropped
        self.turn_seconds = 0.0  # audio received in this turn, fed or dropped
        # the speech detector (None: off) and whether its silences end items (OpenAI's server_vad turn detection)
        self.vad = server.settings.vad_options()
        self.close_on_silence = self.vad is not None

    # ------------------------------------------------------------------------------------------------- events
    async def send(self, event: dict[str, Any]) -> None:
        await self.websocket.send_text(json.dumps(event, ensure_ascii=False))

    def session_object(self) -> dict[str, Any]:
        return {"id": self.id, "object": "realtime.transcription_session", "input_audio_format": "pcm16",
                "input_audio_sample_rate": self.rate, "model": self.server.settings.served_model_name,
                "input_audio_transcription": {"model": self.server.settings.served_model_name,
                                              "language": self.language},
                "targets": self.targets, "turn_detection": turn_detection_object(self.vad, self.close_on_silence)}

    def item_id(self, segment: int) -> str:
        if segment not in self.item_ids:
            self.item_ids[segment] = f"item_{self.id[5:]}_{next(self.items)}"
        return self.item_ids[segment]

    def server_events(self, event: LiveEvent) -> list[dict[str, Any]]:
        """A `LiveEvent` as Realtime server events."""
        item = self.item_id(event.segment)
        start = round(self.offset + event.start, 3)
        if event.type == "segment_start":
            return [{"type": "input_audio_buffer.speech_started", "item_id": item,
                     "audio_start_ms": int(round(start * 1000))}]
        if event.type == "transcript_delta":
            return [{"type": "conversation.item.input_audio_transcription.delta", "item_id": item,
                     "content_index": 0, "delta": event.delta}]
        if event.type == "translation_delta":
            return [{"type": "conversation.item.input_audio_translation.delta", "item_id": item,
                     "content_index": 0, "language": event.language, "delta": event.delta}]
        end = round(self.offset + (event.end or event.start), 3)
        return [
            {"type": "input_audio_buffer.speech_stopped", "item_id": item, "audio_end_ms": int(round(end * 1000))},
            {"type": "conversation.item.input_audio_transcription.completed", "item_id": item, "content_index": 0,
             "transcript": event.transcript or "", "language": event.language, "start": start, "end": end},
            *({"type": "conversation.item.input_audio_translation.completed", "item_id": item, "content_index": 0,
               "language": target, "translation": text, "start": start, "end": end}
              for target, text in (event.translations or {}).items()),
        ]

    # ----------------------------------------------------------------------------------------- client events
    def update(self, session: Any) -> None:
        if not isinstance(session, dict):
            raise RealtimeError("transcription_session.update needs a `session` object.", param="session")
        if self.translator is not None and self.translator.received:
            raise RealtimeError("The session cannot change during a turn: commit it first.", "session_in_use")
        transcription = session.get("input_audio_transcription") or {}
        if not isinstance(transcription, dict):
            raise RealtimeError("input_audio_transcription must be an object.", param="input_audio_transcription")
        language = transcription.get("language", session.get("language"))
        try:
            if language not in (None, "") and str(language).strip().lower() != "auto":
                self.language = inputs.language(str(language), "language")
            elif "language" in transcription or "language" in session:
                self.language = None
            if "targets" in session or "target_languages" in session:
                targets = session.get("targets", session.get("target_languages"))
                if isinstance(targets, str):
                    targets = [t for t in targets.split(",") if t.strip()]
                if not isinstance(targets, list):
                    raise RealtimeError("targets must be a list of language codes.", param="targets")
                self.targets = list(dict.fromkeys(inputs.language(str(t), "targets") for t in targets))
            inputs.check_model(self.server.settings, transcription.get("model"))
        except ServeError as error:
            raise RealtimeError(error.message, error.code or "invalid_value", error.param) from None
        if "turn_detection" in session:
            self.vad, self.close_on_silence = turn_detection_options(session["turn_detection"],
                                                                     self.server.settings.vad_options())
        rate = session.get("input_audio_sample_rate")
        audio_format = session.get("input_audio_format")
        if isinstance(audio_format, dict):
            rate = audio_format.get("rate", rate)
        elif audio_format not in (None, "pcm16"):
            raise RealtimeError(f"Unsupported input_audio_format {shown(audio_format)}: send pcm16.",
                                param="input_audio_format")
        if rate is not None:
            whole = isinstance(rate, int) and not isinstance(rate, bool)
            if not whole or not MIN_SAMPLING_RATE <= rate <= MAX_SAMPLING_RATE:
                raise RealtimeError(f"input_audio_sample_rate must be a whole number of Hz between "
                                    f"{MIN_SAMPLING_RATE} and {MAX_SAMPLING_RATE}, got {shown(rate)}.",
                                    param="input_audio_sample_rate")
            self.rate = rate
        self.translator, self.halted = None, False

    def new_translator(self) -> LiveTranslator:
        return LiveTranslator(self.decoder, self.language, self.targets, vad=self.vad,
                              close_on_silence=self.close_on_silence)

    def to_model_rate(self, samples: np.ndarray) -> np.ndarray:
        if self.rate == self.server.sampling_rate:
            return samples
        import librosa

        return librosa.resample(samples, orig_sr=self.rate, target_sr=self.server.sampling_rate).astype(np.float32)

    async def handle(self, text: str) -> None:
        """One client message: queued audio or commands, or an `error` event."""
        try:
            try:
                message = json.loads(text)
            except ValueError:
                raise RealtimeError("Messages must be JSON objects.", "invalid_json") from None
            if not isinstance(message, dict):
                raise RealtimeError("Messages must be JSON objects.", "invalid_json")
            kind = message.get("type")
            if kind in ("transcription_session.update", "session.update"):
                await self.queue.join()  # the turn's queued audio first
                self.update(message.get("session"))
                await self.send({"type": "transcription_session.updated", "session": self.session_object()})
            elif kind == "input_audio_buffer.append":
                samples = pcm16_samples(message.get("audio"), self.rate)
                await self.queue.put(("audio", samples))
            elif kind == "input_audio_buffer.commit":
                await self.queue.put(("commit", None))
            elif kind == "input_audio_buffer.clear":
                await self.queue.put(("clear", None))
            else:
                raise RealtimeError(f"Unknown event type {shown(kind)}.", "unknown_event", "type")
        except RealtimeError as error:
            await self.send(error.event())

    # -------------------------------------------------------------------------------------------------- worker
    async def work(self) -> None:
        """Feed the queued audio to the session's translator (all audio waiting at once, so a session that falls
        behind catches up) and send the events."""
        while True:
            kind, samples = await self.queue.get()
            done = 1
            if kind == "audio":
                chunks = [samples]
                while not self.queue.empty() and self.queue._queue[0][0] == "audio":  # noqa: SLF001
                    chunks.append(self.queue.get_nowait()[1])
                    done += 1
                await self.feed(np.concatenate(chunks))
            elif kind == "commit":
                await self.commit()
            elif kind == "clear":
                self.end_turn()
            for _ in range(done):
                self.queue.task_done()

    async def feed(self, samples: np.ndarray) -> None:
        self.turn_seconds += len(samples) / self.rate
        if self.halted:  # the turn failed: its audio is dropped until a commit, clear or session update
            return
        if self.translator is None:
            self.translator = self.new_translator()
        try:
            events = await asyncio.to_thread(self.translator.feed, self.to_model_rate(samples))
        except Exception as error:  # a decoding failure or a refused language: reported once, the session goes on
            await self.send(self.failure(error))
            self.halted = True
            return
        for event in events:
            for server_event in self.server_events(event):
                await self.send(server_event)

    async def commit(self) -> None:
        translator = None if self.halted else self.translator
        item = None
        if translator is not None:
            try:
                events = await asyncio.to_thread(translator.finish)
            except Exception as error:
                await self.send(self.failure(error))
                events = []
            for event in events:
                for server_event in self.server_events(event):
                    await self.send(server_event)
            item = self.item_ids.get(len(translator.segments) - 1) if translator.segments else None
        self.end_turn()
        await self.send({"type": "input_audio_buffer.committed", "item_id": item, "previous_item_id": None})

    def end_turn(self) -> None:
        """The next audio starts a new turn; its times follow this turn's audio."""
        self.offset += self.turn_seconds
        self.translator, self.item_ids, self.halted, self.turn_seconds = None, {}, False, 0.0

    @staticmethod
    def failure(error: Exception) -> dict[str, Any]:
        if isinstance(error, ServeError):
            return {"type": "error", "error": error.body()["error"]}
        logger.warning(f"A live session failed to decode: {error}")
        return {"type": "error", "error": error_body(f"Decoding failed: {error}", "server_error", None,
                                                     "decoding_failed")["error"]}

    def close(self) -> None:
        self.decoder.close()


async def run_session(server, websocket, max_sessions: int) -> None:
    """Serve one WebSocket client until it disconnects."""
    from starlette.websockets import WebSocketDisconnect

    await websocket.accept()
    if server.live_sessions >= max_sessions:
        await websocket.send_text(json.dumps(RealtimeError(
            f"This server already runs {max_sessions} live sessions; retry later.", "too_many_sessions").event()))
        await websocket.close(code=1013)
        return
    server.live_sessions += 1
    session = RealtimeSession(server, websocket)
    worker = asyncio.create_task(session.work())
    try:
        await session.send({"type": "transcription_session.created", "session": session.session_object()})
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            if message.get("text") is not None:
                await session.handle(message["text"])
            else:
                await session.send(RealtimeError("Send JSON text messages (audio as base64 inside them).",
                                                 "invalid_json").event())
            if worker.done():  # the worker failed (e.g. the client went away while it sent): end the session
                break
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        session.close()
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await worker
        server.live_sessions -= 1
        logger.info(f"Live session {session.id} ended.")


__all__ = ["BatcherDecoder", "RealtimeError", "RealtimeSession", "pcm16_samples", "run_session"]
