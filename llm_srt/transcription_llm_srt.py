"""One path from a recording to its answer, shared by the pipeline, `llm-srt serve` and live decoding.

1. Plan ([`plan_windows`]): the recording, loaded as 16 kHz mono samples, becomes the windows the model hears: one
   per stretch of speech the voice-activity detector hears (`speech_llm_srt.speech_segments`: cut in the silences
   between utterances, never inside speech, at most the model's window long). What is not speech (silence, noise,
   music, clicks) never reaches the model; a window's times are those of its speech.
2. Decode: every speech window's rows (a transcript, or a translation per target) go through the decoding seam
   (`decoding_llm_srt`), batched however the caller batches (the pipeline's `batch_size`, the server's batcher, a
   live segment at a time).
3. Assemble ([`assemble`]): the window answers become a [`Transcription`] per target: segments with their times in
   the recording, joined into one text (without spaces for Japanese, Chinese, Cantonese and Thai).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .decoding_llm_srt import join_window_texts
from .speech_llm_srt import FRAME, SAMPLING_RATE, VadOptions, speech_segments


@dataclass(frozen=True)
class Window:
    """One stretch of a recording decoded as one utterance: samples `start:end`, and whether it holds speech."""

    index: int
    start: int
    end: int
    speech: bool

    def span(self, sampling_rate: int) -> tuple[float, float]:
        """(start, end) in seconds from the recording's start."""
        return self.start / sampling_rate, self.end / sampling_rate


def plan_windows(audio: np.ndarray, sampling_rate: int, max_seconds: float,
                 vad: VadOptions | None = VadOptions()) -> list[Window]:
    """The windows of a 16 kHz recording: one per stretch of speech the detector hears with `vad`'s options (a
    stretch longer than `max_seconds` cut at its longest silence, `max_speech_duration_s`). A recording with no
    speech is one window marked silent (nothing to decode). `vad=None` turns detection off: the whole recording in
    consecutive windows of `max_seconds`, every one decoded."""
    if sampling_rate != SAMPLING_RATE:
        raise ValueError(f"plan_windows takes {SAMPLING_RATE} Hz audio, got {sampling_rate} Hz.")
    longest = int(max_seconds * sampling_rate)
    if longest <= 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}.")
    if vad is None:
        spans = [(start, min(start + longest, len(audio))) for start in range(0, len(audio), longest)]
    else:
        limit = min(vad.max_speech_duration_s, max_seconds)
        # The detector cuts speech longer than `limit` so that it fits with its padding on both sides: a padding of
        # half the limit or more left pieces of a frame or two (speech_pad_ms=10**9, or 200 ms in a 0.3 s window),
        # and a limit under two frames dropped every other frame. So the padding is at most a quarter of the limit
        # (the speech at least half of each window), and a window under two frames is cut evenly below.
        samples = int(limit * SAMPLING_RATE)
        pad_ms = max(0, min(vad.speech_pad_ms, (samples // 2 - FRAME) * 1000 // (2 * SAMPLING_RATE)))
        detector = replace(vad, speech_pad_ms=pad_ms,
                           max_speech_duration_s=limit if samples >= 2 * FRAME else float("inf"))
        longest = min(longest, samples)
        spans = []
        for start, end in speech_segments(audio, detector):
            # the detector's cut keeps the padded span within the window; a span that still is not is cut evenly
            pieces = -(-(end - start) // longest)
            cuts = [start + (end - start) * k // pieces for k in range(pieces + 1)]
            spans += list(zip(cuts[:-1], cuts[1:]))
    if not spans:
        return [Window(0, 0, len(audio), speech=False)]
    return [Window(index, start, end, speech=True) for index, (start, end) in enumerate(spans)]


@dataclass
class Segment:
    """One window's answer placed in the recording: `text` is what the reader of the task wants (the transcript, or
    the translation), `transcript` the spoken words; `complete` is False when the token budget cut the answer."""

    index: int
    start: float
    end: float
    text: str
    transcript: str
    complete: bool = True
    token_ids: list[int] = field(default_factory=list)
    speech: bool = True


@dataclass
class Transcription:
    """A recording's answer for one target: `task` "asr" (the transcript) or "srt" (a translation into `tgt_lang`)."""

    task: str
    src_lang: str
    tgt_lang: str | None
    duration: float
    segments: list[Segment]

    @property
    def language(self) -> str:
        """The language of `text`."""
        return self.src_lang if self.task == "asr" or self.tgt_lang is None else self.tgt_lang

    @property
    def text(self) -> str:
        return join_window_texts([segment.text for segment in self.segments], self.language)

    @property
    def transcript(self) -> str:
        return join_window_texts([segment.transcript for segment in self.segments], self.src_lang)

    @property
    def complete(self) -> bool:
        """False when the token budget cut a window's answer (a translation cut before it began is empty)."""
        return all(segment.complete for segment in self.segments)

    @property
    def speech_segments(self) -> list[Segment]:
        return [segment for segment in self.segments if segment.speech]


def assemble(windows: Sequence[Window], answers: Mapping[int, dict[str, Any]], task: str, src_lang: str,
             tgt_lang: str | None, sampling_rate: int, duration: float | None = None) -> Transcription:
    """The [`Transcription`] of a recording for one target, from its windows and the seam's answer dicts of its
    speech windows (`answers[window.index]`; windows without one are silent: an empty segment)."""
    segments = []
    for window in windows:
        start, end = window.span(sampling_rate)
        answer = answers.get(window.index)
        if answer is None:
            segments.append(Segment(window.index, start, end, "", "", speech=False))
            continue
        segments.append(Segment(window.index, start, end, (answer.get("text") or "").strip(),
                                (answer.get("transcript") or "").strip(), bool(answer.get("complete", True)),
                                list(answer.get("token_ids") or []), speech=True))
    if duration is None:
        duration = windows[-1].end / sampling_rate if windows else 0.0
    return Transcription(task, src_lang, tgt_lang, duration, segments)


__all__ = ["Segment", "Transcription", "Window", "assemble", "plan_windows"]
