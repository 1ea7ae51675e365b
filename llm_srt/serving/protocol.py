"""The server's wire protocol: OpenAI's error shape, the limits on requests, and the response formats (json, text,
verbose_json, srt, vtt) built from decoded windows."""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..configuration_llm_srt import LANGUAGES
from ..generation_llm_srt import join_window_texts


RESPONSE_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
DEFAULT_MAX_FILE_MB = 25.0  # OpenAI's own upload limit
# Longest decoded audio: a 25 MB upload of compressed silence (FLAC, Ogg) can decode to days of samples, gigabytes
# of memory; checked from the file's header before decoding.
DEFAULT_MAX_AUDIO_SECONDS = 7200.0
_MAX_SHOWN_CHARS = 60  # longest piece of a request's own value echoed in an error message


class ServeError(Exception):
    """A request error answered as OpenAI's `{"error": {"message", "type", "param", "code"}}` with `status`."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None,
        type: str = "invalid_request_error", headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.headers = headers

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
    def complete(self) -> bool:
        """False when the token budget cut a window's answer (a translation cut before it began is left empty)."""
        return all(s.get("complete", True) for s in self.segments)

    @property
    def transcript(self) -> str:
        return join_window_texts([s["transcript"] for s in self.segments], self.src)

    def json(self) -> dict:
        body = {"text": self.text, "complete": self.complete,
                "usage": {"type": "duration", "seconds": round(self.duration, 3)}}
        if self.task == "translate":
            body.update(transcript=self.transcript, language=self.src, target_language=self.tgt)
        return body

    def verbose_json(self) -> dict:
        body = {"task": self.task, "language": language_name(self.src), "duration": round(self.duration, 3),
                "text": self.text, "complete": self.complete, "segments": self.segments,
                "usage": {"type": "duration", "seconds": round(self.duration, 3)}}
        if self.task == "translate":
            body.update(transcript=self.transcript, target_language=language_name(self.tgt))
        return body



def sse(event: dict) -> str:
    """One server-sent event."""
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
