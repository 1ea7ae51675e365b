"""The server's wire protocol: OpenAI's error shape, the limits on requests, and the response formats (json, text,
verbose_json, srt, vtt) built from decoded windows."""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from typing import Any

from ..languages_llm_srt import LANGUAGES
from ..transcription_llm_srt import Segment, Transcription


RESPONSE_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
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




def target_on_transcription_message(field: str) -> str:
    """The error for a target language sent to the transcription endpoint (ours and vLLM's server): answering with a
    transcript where a translation was asked for, without a word, would be worse."""
    return f"{field} is for /v1/audio/translations; /v1/audio/transcriptions answers in the spoken language."


def language_name(code: str) -> str:
    """OpenAI writes languages as lower-case English names (`english`)."""
    return LANGUAGES[code][0].lower()


def _clock(seconds: float, separator: str) -> str:
    millis = int(round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def to_srt(segments: Sequence[Segment]) -> str:
    """SubRip subtitles, one cue per window with text (times in milliseconds, as `segment_json` rounds them)."""
    cues = [s for s in segments if s.text]
    return "".join(f"{n}\n{_clock(round(s.start, 3), ',')} --> {_clock(round(s.end, 3), ',')}\n{s.text}\n\n"
                   for n, s in enumerate(cues, 1))


def to_vtt(segments: Sequence[Segment]) -> str:
    """WebVTT subtitles, one cue per window with text."""
    cues = [s for s in segments if s.text]
    return "WEBVTT\n\n" + "".join(
        f"{_clock(round(s.start, 3), '.')} --> {_clock(round(s.end, 3), '.')}\n{s.text}\n\n" for s in cues
    )


def compression_ratio(text: str) -> float:
    """Whisper's repetition measure: text bytes over zlib-compressed bytes."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def segment_json(segment: Segment, temperature: float = 0.0) -> dict[str, Any]:
    """One window's answer as a `verbose_json` segment (OpenAI's fields, plus `transcript` and `complete`)."""
    return {"id": segment.index, "seek": int(round(segment.start * 100)), "start": round(segment.start, 3),
            "end": round(segment.end, 3), "text": segment.text, "transcript": segment.transcript,
            "tokens": segment.token_ids, "temperature": temperature, "compression_ratio": compression_ratio(segment.text),
            "complete": segment.complete, "finish_reason": "stop" if segment.complete else "length"}


def transcription_json(transcription: Transcription, task: str, verbose: bool = False,
                       temperature: float = 0.0) -> dict[str, Any]:
    """The `json` (or with `verbose`, `verbose_json`) body of one target's answer; `task` is the endpoint's
    ("transcribe" or "translate": a translation also carries its transcript and languages)."""
    usage = {"type": "duration", "seconds": round(transcription.duration, 3)}
    if not verbose:
        body = {"text": transcription.text, "complete": transcription.complete, "usage": usage}
        if task == "translate":
            body.update(transcript=transcription.transcript, language=transcription.src_lang,
                        target_language=transcription.language)
        return body
    body = {"task": task, "language": language_name(transcription.src_lang),
            "duration": round(transcription.duration, 3), "text": transcription.text,
            "complete": transcription.complete,
            "segments": [segment_json(segment, temperature) for segment in transcription.speech_segments],
            "usage": usage}
    if task == "translate":
        body.update(transcript=transcription.transcript, target_language=language_name(transcription.language))
    return body


def sse(event: dict) -> str:
    """One server-sent event."""
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
