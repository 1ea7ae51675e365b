"""Live sessions of `llm-srt serve` over a WebSocket (`/v1/realtime`), after OpenAI's Realtime transcription events.

Client events (JSON text messages):

- `transcription_session.update` (or `session.update`, answered `session.updated`): `{"session":
  {"input_audio_transcription": {"language": "eng"}, "targets": ["deu", "fra"], "input_audio_format": "pcm16",
  "input_audio_sample_rate": 16000}}`. `targets` (our extension, also `target_languages`) are the languages to
  translate into; the language is detected when omitted. The audio is 16-bit little-endian mono PCM at 24 kHz,
  OpenAI's `pcm16` (an OpenAI client's session needs nothing more), unless `input_audio_sample_rate` (or
  `input_audio_format: {"type": "audio/pcm", "rate": N}`) declares another rate; other formats (`audio/pcmu`,
  `g711_ulaw`, ...) are refused by name. vLLM's form, `{"type": "session.update", "model": "..."}` (the model at
  the top, no `session`), takes vLLM's convention: PCM16 at 16 kHz, and vLLM's events besides ours
  (`transcription.delta`, and `transcription.done` with the whole text at a commit with `"final": true`). Allowed
  until the first audio of a turn. An update is checked whole before anything changes: a refused one (an `error`
  event) changes nothing.
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

Each message is bounded before it is parsed: at most an append of `MAX_CHUNK_SECONDS` of audio at the session's
rate (plus `MESSAGE_SLACK_CHARS`), nested at most `MAX_JSON_DEPTH` deep; beyond either it is an `error` event, not
parsed, and the session goes on.

Each session is a [`LiveTranslator`] whose decoding goes through the server's shared batcher (concurrent sessions
and HTTP requests are batched together). The socket is read by one task and the audio decoded by another (the
worker), in the order it came; the reader never waits for the worker, so a session ends, and its slot is released,
on every way out: the client disconnecting (also in the middle of a decode or of a send), a failed send, an error, a
cancellation or the server shutting down. Its queued windows are dropped.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from transformers.utils import logging

from ..audio_llm_srt import AudioInputError, check_sampling_rate
from ..live.translator import LiveEvent, LiveTranslator, segment_answer, segment_rows
from ..speech_llm_srt import VadOptions
from .batcher import Row
from . import inputs
from .protocol import ServeError, error_body, shown


logger = logging.get_logger(__name__)

MAX_CHUNK_SECONDS = 10.0  # the most audio one append may carry
MESSAGE_SLACK_CHARS = 64 * 1024  # room for an append's other fields, and for any other event, in the size bound
MAX_JSON_DEPTH = 32  # a client event nests 3 deep; json.loads recurses, so deeper nesting is refused unparsed
UPDATE_EVENTS = ("transcription_session.update", "session.update")
OPENAI_PCM16_RATE = 24000  # OpenAI's `pcm16`: 16-bit mono at 24 kHz, what its Realtime clients send
VLLM_PCM16_RATE = 16000  # vLLM's /v1/realtime reads PCM16 at 16 kHz (a `session.update` with a top-level model)
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_JSON_NESTING = re.compile(r"[\[\]{}]")
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


def base64_chars(size: int) -> int:
    """The length of `size` bytes in base64."""
    return (size + 2) // 3 * 4


def pcm16_samples(data: Any, rate: int, max_seconds: float = MAX_CHUNK_SECONDS) -> np.ndarray:
    """The float samples of a base64 PCM16 chunk; `RealtimeError` for anything else."""
    if not isinstance(data, str):
        raise RealtimeError(f"audio must be a base64 string of 16-bit PCM, got {type(data).__name__}.",
                            "invalid_audio", "audio")
    limit = int(max_seconds * rate) * 2
    if len(data) > base64_chars(limit) + 4:  # checked before decoding: a huge chunk costs nothing
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


def json_depth_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON `text` nests arrays and objects deeper than `limit`, found without parsing it (brackets inside
    strings do not count)."""
    depth = 0
    for match in _JSON_NESTING.finditer(_JSON_STRING.sub("", text)):
        depth += 1 if match.group() in "[{" else -1
        if depth > limit:
            return True
    return False


def parse_event(text: str, max_chars: int) -> dict[str, Any]:
    """A client message as a JSON object, its size and depth bounded before it is parsed; `RealtimeError`."""
    if len(text) > max_chars:
        raise RealtimeError(f"The message holds {len(text)} characters, more than the {max_chars} this session takes "
                            f"(an append of {MAX_CHUNK_SECONDS:g} s of audio at its rate); send smaller chunks.",
                            "message_too_large")
    if json_depth_exceeds(text):
        raise RealtimeError(f"The message nests arrays or objects deeper than {MAX_JSON_DEPTH} levels; no event "
                            "does.", "invalid_json")
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        raise RealtimeError("Messages must be JSON objects.", "invalid_json") from None
    if not isinstance(message, dict):
        raise RealtimeError("Messages must be JSON objects.", "invalid_json")
    return message


@dataclass(frozen=True)
class SessionState:
    """What a session's audio is and what it asks for; replaced whole by an accepted update."""

    language: str | None = None  # None: detected
    targets: tuple[str, ...] = ()
    rate: int = OPENAI_PCM16_RATE  # of the PCM16 the client sends
    vad: VadOptions | None = None  # the speech detector (None: off)
    close_on_silence: bool = False  # whether its silences end items (OpenAI's server_vad turn detection)

    def updated(self, session: Any, server) -> "SessionState":
        """The state a `session` object asks for on top of this one, every value checked first: the first value
        refused raises `RealtimeError` naming it, and nothing changes. One rule per field with the HTTP API and
        the CLI: languages and targets as `inputs.language` / `inputs.targets` (a language named twice refused),
        the rate as `audio_llm_srt.check_sampling_rate`."""
        if not isinstance(session, dict):
            raise RealtimeError("transcription_session.update needs a `session` object.", param="session")
        transcription = session.get("input_audio_transcription") or {}
        if not isinstance(transcription, dict):
            raise RealtimeError("input_audio_transcription must be an object.", param="input_audio_transcription")
        changes: dict[str, Any] = {}
        try:
            inputs.check_model(server.settings, transcription.get("model"))
            if "language" in transcription or "language" in session:
                language = transcription.get("language", session.get("language"))
                detect = language in (None, "") or str(language).strip().lower() == "auto"
                changes["language"] = None if detect else inputs.language(str(language), "language")
            if "targets" in session or "target_languages" in session:
                changes["targets"] = tuple(self.checked_targets(
                    session.get("targets", session.get("target_languages")),
                    changes.get("language", self.language)))
        except ServeError as error:
            raise RealtimeError(error.message, error.code or "invalid_value", error.param) from None
        if "turn_detection" in session:
            changes["vad"], changes["close_on_silence"] = turn_detection_options(session["turn_detection"],
                                                                                 server.settings.vad_options())
        rate = self.checked_format(session.get("input_audio_format"), session.get("input_audio_sample_rate"))
        if rate is not None:
            changes["rate"] = rate
        return replace(self, **changes)

    @staticmethod
    def checked_targets(targets: Any, language: str | None) -> list[str]:
        """The targets as codes, in order: a list (or a comma-separated string) of languages, each once; empty for
        the transcript alone."""
        if isinstance(targets, str):
            targets = [targets]
        if targets is None:
            targets = []
        if not isinstance(targets, list):
            raise RealtimeError("targets must be a list of language codes.", param="targets")
        values = [str(target) for target in targets]
        if not any(part.strip() for value in values for part in value.split(",")):
            return []
        return inputs.targets(values, language, "targets")

    @staticmethod
    def checked_format(audio_format: Any, rate: Any) -> int | None:
        """The PCM16 rate an update declares (None: unchanged): `input_audio_sample_rate`, or `input_audio_format`
        "pcm16" or `{"type": "audio/pcm", "rate": N}` (24 kHz without a rate, as OpenAI's); any other format is
        refused by name."""
        if isinstance(audio_format, dict):
            kind = audio_format.get("type", "audio/pcm")
            if kind != "audio/pcm":
                raise RealtimeError(f"Unsupported input_audio_format type {shown(kind)}: this server takes 16-bit "
                                    "PCM only ('pcm16', or {'type': 'audio/pcm', 'rate': N}).",
                                    "unsupported_audio_format", "input_audio_format")
            if "rate" in audio_format:
                if rate is not None and audio_format["rate"] != rate:
                    raise RealtimeError(f"input_audio_format's rate {shown(audio_format['rate'])} and "
                                        f"input_audio_sample_rate {shown(rate)} differ: send one of them.",
                                        param="input_audio_sample_rate")
                rate = audio_format["rate"]
        elif audio_format not in (None, "pcm16"):
            raise RealtimeError(f"Unsupported input_audio_format {shown(audio_format)}: this server takes 16-bit PCM "
                                "only ('pcm16', or {'type': 'audio/pcm', 'rate': N}).", "unsupported_audio_format",
                                "input_audio_format")
        if rate is None:
            return None if audio_format is None else OPENAI_PCM16_RATE
        try:
            return check_sampling_rate(rate, "input_audio_sample_rate")
        except AudioInputError as error:
            raise RealtimeError(str(error), param="input_audio_sample_rate") from None


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
    options = {}
    for theirs, ours in TURN_DETECTION_FIELDS.items():
        if value.get(theirs) is not None:
            try:  # one field at a time, so the error names the client's field (prefix_padding_ms, not speech_pad_ms)
                options[ours] = getattr(replace(base, **{ours: value[theirs]}), ours)
            except ValueError as error:
                raise RealtimeError(f"turn_detection.{theirs}: {error}", param=f"turn_detection.{theirs}") from None
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
    """One WebSocket client's live session (module docstring). The reader (`handle`) checks each message and
    queues it; the worker (`work`) decodes the queued audio in order and sends the events."""

    def __init__(self, server, websocket):
        self.server, self.websocket = server, websocket
        self.id = f"sess_{next(_session_ids)}"
        vad = server.settings.vad_options()
        self.state = SessionState(vad=vad, close_on_silence=vad is not None)
        self.turn_open = False  # audio was appended since the last commit or clear: the session cannot change
        self.settings = server.generation_settings(None)
        self.decoder = BatcherDecoder(server, self.settings)
        self.queue: asyncio.Queue = asyncio.Queue()
        # the worker's
        self.translator: LiveTranslator | None = None
        self.offset = 0.0  # seconds of audio of the session's earlier turns
        self.items = itertools.count()
        self.item_ids: dict[int, str] = {}  # segment of the current turn -> item id
        self.halted = False  # a decode of this turn failed (reported): the rest of the turn is dropped
        self.turn_seconds = 0.0  # audio received in this turn, fed or dropped
        self.vllm_text: str | None = None  # vLLM's form (session.update with a model): the transcript until `final`

    # ------------------------------------------------------------------------------------------------- events
    async def send(self, event: dict[str, Any]) -> None:
        await self.websocket.send_text(json.dumps(event, ensure_ascii=False))

    def session_object(self) -> dict[str, Any]:
        return {"id": self.id, "object": "realtime.transcription_session", "input_audio_format": "pcm16",
                "input_audio_sample_rate": self.state.rate, "model": self.server.settings.served_model_name,
                "input_audio_transcription": {"model": self.server.settings.served_model_name,
                                              "language": self.state.language},
                "targets": list(self.state.targets),
                "turn_detection": turn_detection_object(self.state.vad, self.state.close_on_silence)}

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
                     "content_index": 0, "delta": event.delta}, *self.vllm_delta(event)]
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

    def vllm_delta(self, event: LiveEvent) -> list[dict[str, Any]]:
        """A transcript delta as vLLM's `transcription.delta` too, for a client of vLLM's form (items joined by a
        space, as one text)."""
        if self.vllm_text is None:
            return []
        delta = event.delta
        if self.vllm_text and not self.vllm_text.endswith(" ") and not delta.startswith(" "):
            delta = " " + delta
        self.vllm_text += delta
        return [{"type": "transcription.delta", "delta": delta}]

    # ------------------------------------------------------------------------------------------ reader (client)
    def max_message_chars(self) -> int:
        """The longest message this session takes: an append of `MAX_CHUNK_SECONDS` at its rate, and slack."""
        return base64_chars(int(MAX_CHUNK_SECONDS * self.state.rate) * 2) + MESSAGE_SLACK_CHARS

    def update(self, message: dict[str, Any]) -> dict[str, Any]:
        """Apply a session update event whole, or refuse it (`RealtimeError`) changing nothing; the `updated` event
        (named after the update's)."""
        if self.turn_open:
            raise RealtimeError("The session cannot change during a turn: commit it first.", "session_in_use")
        session = message.get("session")
        vllm_form = message["type"] == "session.update" and session is None and "model" in message
        if vllm_form:  # the model at the top, and vLLM's convention for the audio: PCM16 at 16 kHz
            session = {"input_audio_transcription": {"model": message["model"]},
                       "input_audio_sample_rate": VLLM_PCM16_RATE}
        self.state = self.state.updated(session, self.server)
        if vllm_form:
            self.vllm_text = self.vllm_text or ""
        return {"type": f"{message['type']}d", "session": self.session_object()}

    async def handle(self, text: str) -> None:
        """One client message: queued for the worker, or an `error` event. Never waits for the worker. The reply
        to an update is queued, so that it follows the events of the audio before it."""
        try:
            message = parse_event(text, self.max_message_chars())
            kind = message.get("type")
            if kind in UPDATE_EVENTS:
                try:
                    reply = self.update(message)
                except RealtimeError as error:
                    reply = error.event()
                await self.queue.put(("reply", reply, None))
            elif kind == "input_audio_buffer.append":
                samples = pcm16_samples(message.get("audio"), self.state.rate)
                self.turn_open = True
                await self.queue.put(("audio", samples, self.state))
            elif kind in ("input_audio_buffer.commit", "input_audio_buffer.clear"):
                self.turn_open = False
                await self.queue.put((kind.rsplit(".", 1)[1], message.get("final") is True, None))
            else:
                raise RealtimeError(f"Unknown event type {shown(kind)}.", "unknown_event", "type")
        except RealtimeError as error:
            await self.send(error.event())

    async def read(self, worker: asyncio.Task) -> None:
        """Read the client's messages until it disconnects, or the worker ends (a failed send: the client has
        gone; or an error, raised here)."""
        while True:
            receive = asyncio.ensure_future(self.websocket.receive())
            await asyncio.wait({receive, worker}, return_when=asyncio.FIRST_COMPLETED)
            if not receive.done():
                receive.cancel()
                worker.result()  # the worker's error, if it failed
                return
            message = receive.result()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await self.handle(message["text"])
            else:
                await self.send(RealtimeError("Send JSON text messages (audio as base64 inside them).",
                                              "invalid_json").event())

    # -------------------------------------------------------------------------------------------------- worker
    async def work(self) -> None:
        """Feed the queued audio to the session's translator (all audio of the turn waiting at once, so a session
        that falls behind catches up) and send the events, in the order the client sent its messages."""
        while True:
            kind, value, state = await self.queue.get()
            if kind == "audio":
                chunks = [value]
                while not self.queue.empty() and self.queue._queue[0][0] == "audio" \
                        and self.queue._queue[0][2] is state:  # noqa: SLF001
                    chunks.append(self.queue.get_nowait()[1])
                await self.feed(np.concatenate(chunks), state)
            elif kind == "commit":
                await self.commit(final=value)
            elif kind == "clear":
                self.end_turn()
            elif kind == "reply":
                await self.send(value)

    async def feed(self, samples: np.ndarray, state: SessionState) -> None:
        self.turn_seconds += len(samples) / state.rate
        if self.halted:  # the turn failed: its audio is dropped until a commit or clear
            return
        if self.translator is None:
            self.translator = LiveTranslator(self.decoder, state.language, state.targets, vad=state.vad,
                                             close_on_silence=state.close_on_silence)
        try:
            events = await asyncio.to_thread(self.translator.feed, self.to_model_rate(samples, state.rate))
        except Exception as error:  # a decoding failure or a refused language: reported once, the session goes on
            await self.send(self.failure(error))
            self.halted = True
            return
        for event in events:
            for server_event in self.server_events(event):
                await self.send(server_event)

    def to_model_rate(self, samples: np.ndarray, rate: int) -> np.ndarray:
        if rate == self.server.sampling_rate:
            return samples
        import librosa

        return librosa.resample(samples, orig_sr=rate, target_sr=self.server.sampling_rate).astype(np.float32)

    async def commit(self, final: bool = False) -> None:
        """End the turn; vLLM's `final` commit (its end of the audio) also sends `transcription.done` with the
        text so far, to a client of vLLM's form."""
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
        if final and self.vllm_text is not None:
            await self.send({"type": "transcription.done", "text": self.vllm_text})
            self.vllm_text = ""
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


def _disconnected(error: BaseException) -> bool:
    """Whether `error` says the client has gone: starlette's `WebSocketDisconnect`, its `WebSocketDisconnected` (a
    RuntimeError: a send or receive after the close) where it has one, or the socket's own OSError."""
    import starlette.websockets as websockets

    gone = (websockets.WebSocketDisconnect, getattr(websockets, "WebSocketDisconnected", websockets.WebSocketDisconnect))
    return isinstance(error, (*gone, OSError)) or (isinstance(error, RuntimeError) and "close" in str(error).lower())


async def run_session(server, websocket, max_sessions: int) -> None:
    """Serve one WebSocket client until it disconnects; its live-session slot is released on every way out."""
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
        await session.read(worker)
    except Exception as error:  # noqa: BLE001 - the session ends; an error that is not a disconnect is reported
        if not _disconnected(error):
            logger.error(f"Live session {session.id} failed: {error!r}")
            with contextlib.suppress(Exception):
                await session.send({"type": "error", "error": error_body(
                    f"Internal error: {error}", "server_error", None, "server_error")["error"]})
                await websocket.close(code=1011)
    finally:
        server.live_sessions -= 1  # first: nothing below may keep the slot
        session.close()
        worker.cancel()
        with contextlib.suppress(BaseException):
            await worker
        logger.info(f"Live session {session.id} ended.")


__all__ = ["BatcherDecoder", "MAX_JSON_DEPTH", "RealtimeError", "RealtimeSession", "SessionState", "parse_event",
           "pcm16_samples", "run_session"]
