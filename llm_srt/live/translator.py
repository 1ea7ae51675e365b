"""Live speech translation: feed audio chunks, get the text that has become stable, in any number of targets.

[`LiveTranslator`] keeps the audio of the current segment in a buffer and re-decodes it as it grows (every
`min_chunk_seconds` of new audio). Each decode gives a transcript and, after it, a translation per target (the
transcript decoded once for all targets: the decoding seam's shared transcript). Of each text only the words two
consecutive decodes agree on are confirmed (LocalAgreement-2, whisper_streaming's policy), and confirmed text never
changes. A voice-activity detector follows the stream (`speech_llm_srt.StreamingVad`, the offline detector's
network and options): a segment opens where speech starts (less `speech_pad_ms`) and closes where a silence of
`min_silence_duration_ms` begins (plus the padding): its audio is decoded a last time and the rest of that decode is
confirmed. Audio between segments (silence, noise, music) is never decoded. A segment that reaches the model's
window while speech goes on is cut at its least speech-like frame in the window's second half.

All decoding goes through [`SegmentDecoder`]: [`EngineDecoder`] calls a `DecodingEngine` (`generation_llm_srt`: the
transformers engine, or vLLM's), and `llm-srt serve` uses one that submits to its shared batcher. Events are plain
[`LiveEvent`] dataclasses (`to_dict()` for JSON):

- `segment_start`: a segment with speech began (`start`, seconds from the stream's start);
- `transcript_delta`: newly confirmed transcript words (`delta`, with a leading space when it continues the
  segment; `text` is the segment's confirmed transcript so far);
- `translation_delta`: the same for target `language`;
- `segment_final`: the segment's final transcript and translations, `start` and `end`.

The final text of a segment is its last decode (the audio of the whole segment, as offline decoding would decode
it) whenever that decode continues the confirmed words; if the model changed its mind about confirmed words, they
stay and the last decode's words after them follow.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
from transformers.utils import logging

from ..speech_llm_srt import FRAME, StreamingVad, VadOptions, has_speech
from ..languages_llm_srt import UNSPACED_LANGUAGES, normalize_language, normalize_targets
from ..decoding_llm_srt import DecodeRow, DecodingEngine, decode_window_rows, vote_language


logger = logging.get_logger(__name__)

TRANSCRIPT = "transcript"  # the key of the transcript among the streams (the others are target codes)


@dataclass
class LiveEvent:
    """One thing that became stable: see the module docstring for the `type`s."""

    type: str
    segment: int
    start: float
    end: float | None = None
    delta: str = ""
    text: str = ""
    language: str | None = None
    transcript: str | None = None
    translations: dict[str, str] | None = None
    received_seconds: float = 0.0  # audio received from the stream when the event was emitted

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


class SegmentDecoder(Protocol):
    """What live decoding needs: one segment's transcript and translations, and its spoken language."""

    window_seconds: float
    sampling_rate: int

    def decode(self, audio: np.ndarray, src_lang: str, targets: Sequence[str]) -> tuple[str, dict[str, str]]:
        """The transcript of `audio` and its translation into each target (a target equal to `src_lang` is the
        transcript)."""

    def detect(self, audio: np.ndarray) -> str:
        """The language spoken in `audio` (a code of the model's language table)."""


def segment_rows(src_lang: str, targets: Sequence[str]) -> list[tuple[str, str | None]]:
    """The (task, target) rows one segment needs: an SRT row per target other than the source (sharing one
    transcript), or a single ASR row when only the transcript is wanted."""
    translated = [t for t in dict.fromkeys(targets) if t != src_lang]
    return [("srt", t) for t in translated] or [("asr", None)]


def segment_answer(src_lang: str, targets: Sequence[str], rows: Sequence[tuple[str, str | None]],
                   answers: Sequence[dict]) -> tuple[str, dict[str, str]]:
    """(transcript, {target: text}) from the answers of [`segment_rows`]' rows."""
    transcript = (answers[0].get("transcript") or "").strip() if answers else ""
    texts = {tgt: (answer.get("text") or "").strip() for (task, tgt), answer in zip(rows, answers) if task == "srt"}
    texts[src_lang] = transcript
    return transcript, {t: texts[t] for t in targets}


class EngineDecoder:
    """A [`SegmentDecoder`] over a `DecodingEngine`: each segment encoded and decoded through the seam
    (`decode_window_rows`, several targets after one shared transcript)."""

    def __init__(self, engine: DecodingEngine, settings: dict | None = None, shared_transcript: bool = True):
        self.engine, self.settings, self.shared_transcript = engine, dict(settings or {}), shared_transcript
        self.window_seconds = engine.window_seconds
        self.sampling_rate = engine.sampling_rate

    def decode(self, audio, src_lang, targets):
        handles, _ = self.engine.encode([audio])
        rows = segment_rows(src_lang, targets)
        specs = [DecodeRow(0, task, src_lang, tgt) for task, tgt in rows]
        answers = decode_window_rows(self.engine, handles, [specs], self.settings, self.shared_transcript)[0]
        return segment_answer(src_lang, targets, rows, answers)

    def detect(self, audio):
        return str(vote_language(self.engine.detect_languages([audio]))["language"])


def is_engine(candidate: Any) -> bool:
    """Whether `candidate` is a decoding engine: a `DecodingEngine`, or one of a model folder's own copy of the
    module (a pipeline loaded with `trust_remote_code=True` holds that copy's `TransformersEngine`, another class)."""
    return isinstance(candidate, DecodingEngine) or all(
        callable(getattr(candidate, name, None)) for name in ("encode", "decode_rows", "decode_shared_transcript",
                                                              "detect_languages"))


def as_segment_decoder(decoder: Any, settings: dict | None = None) -> SegmentDecoder:
    """`decoder` as a [`SegmentDecoder`]: one already, a `DecodingEngine`, or a speech-translation pipeline (its
    engine)."""
    if is_engine(decoder):
        return EngineDecoder(decoder, settings)
    if is_engine(getattr(decoder, "engine", None)):  # the pipeline
        return EngineDecoder(decoder.engine, settings)
    if callable(getattr(decoder, "decode", None)) and callable(getattr(decoder, "detect", None)):
        return decoder
    raise TypeError(f"Live decoding needs a DecodingEngine, a speech-translation pipeline or a SegmentDecoder, got "
                    f"{type(decoder).__name__}.")


def words_of(text: str, language: str | None) -> list[str]:
    """The units confirmation works on: words, or characters for languages written without spaces."""
    if language in UNSPACED_LANGUAGES:
        return [c for c in text if not c.isspace()]
    return text.split()


def join_words(words: Sequence[str], language: str | None) -> str:
    return ("" if language in UNSPACED_LANGUAGES else " ").join(words)


def common_prefix(a: Sequence[str], b: Sequence[str]) -> int:
    """How many leading items `a` and `b` share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@dataclass
class _Stream:
    """The transcript or one target's text within the current segment."""

    language: str | None
    committed: list[str] = field(default_factory=list)
    previous: list[str] | None = None  # the last decode's words
    # per confirmed word: (audio seconds received, decoding seconds spent so far) when it was confirmed
    delays: list[tuple[float, float]] = field(default_factory=list)


class LiveTranslator:
    """Live transcript and translations of an audio stream (module docstring).

    Args:
        decoder: a `DecodingEngine`, a speech-translation pipeline or a [`SegmentDecoder`].
        source_language: the spoken language, or None / "auto" to detect it on each segment's first decode.
        targets: target languages (codes or names); empty for the transcript alone.
        settings: generate keywords for an engine or pipeline (e.g. `num_beams`, `max_new_tokens`).
        min_chunk_seconds: new audio needed before the buffer is decoded again.
        vad: the speech detector's options (`speech_llm_srt.VadOptions`; its defaults when not given); None turns
            detection off: every sample is decoded and segments close only at the window and at `finish`.
        close_on_silence: whether silences close segments (OpenAI's `server_vad` turn detection). False: segments
            close at the window and at `finish` (a client that commits turns itself), and a segment the detector hears
            no speech in is not decoded.
        window_seconds: the longest segment (default: the model's window).
        clock: the timer decoding time is measured with (computation-aware latency).
    """

    def __init__(self, decoder: Any, source_language: str | None = None, targets: Sequence[str] = (),
                 settings: dict | None = None, min_chunk_seconds: float = 1.0, vad: VadOptions | None = VadOptions(),
                 close_on_silence: bool = True, window_seconds: float | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        self.decoder = as_segment_decoder(decoder, settings)
        auto = source_language is None or str(source_language).strip().lower() in ("", "auto")
        self.source_language = None if auto else normalize_language(source_language)
        # a language named twice is refused, as everywhere (the caller warns for a target equal to the source)
        self.targets = normalize_targets(list(targets), name="targets") if targets else []
        if min_chunk_seconds <= 0:
            raise ValueError(f"min_chunk_seconds must be positive, got {min_chunk_seconds}.")
        self.sampling_rate = int(self.decoder.sampling_rate)
        self.window_seconds = float(window_seconds or self.decoder.window_seconds)
        if self.window_seconds > self.decoder.window_seconds:
            raise ValueError(f"window_seconds {self.window_seconds:g} is longer than the model's window "
                             f"{self.decoder.window_seconds:g}.")
        self.min_chunk = int(min_chunk_seconds * self.sampling_rate)
        self.window = int(self.window_seconds * self.sampling_rate)
        self.vad = vad
        self.detector = None
        if vad is not None and close_on_silence:
            self.detector = StreamingVad(vad.threshold, vad.min_silence_duration_ms, vad.neg_threshold)
        self.pad = int(vad.speech_pad_ms * self.sampling_rate / 1000) if vad is not None else 0
        self.min_speech = int(vad.min_speech_duration_ms * self.sampling_rate / 1000) if vad is not None else 0
        self.clock = clock
        self.received = 0  # samples fed since the start
        self.audio = np.zeros(0, dtype=np.float32)  # the samples from `audio_start` to `received`
        self.audio_start = 0
        self.last_end = 0  # where the last segment ended (the next one's padding starts no earlier)
        self.decode_seconds = 0.0  # time spent decoding since the start
        self.decodes = 0
        self.segments: list[dict[str, Any]] = []  # the final segments, in order
        self.delays: dict[str, list[tuple[float, float]]] = {TRANSCRIPT: [], **{t: [] for t in self.targets}}
        self.finished = False
        self.open = False  # a segment collects audio
        self._start_segment(0, opened=self.detector is None)

    # ------------------------------------------------------------------------------------------------ state
    def _start_segment(self, start: int, opened: bool) -> None:
        self.segment_start = start  # in samples from the stream's start
        self.open = opened
        self.onset = start  # where the detector first heard this segment's speech
        self.stopped: int | None = None  # where its speech stopped, once the detector said so
        self.closing: int | None = None  # ... and where the segment ends (the stop plus its padding)
        self.decoded_at = start  # where the buffer ended at the last decode
        self.language = self.source_language
        self.started = False
        self.streams = {TRANSCRIPT: _Stream(self.language), **{t: _Stream(t) for t in self.targets}}

    @property
    def buffer(self) -> np.ndarray:
        """The open segment's audio so far."""
        return self.audio[self.segment_start - self.audio_start:] if self.open else np.zeros(0, np.float32)

    @property
    def received_seconds(self) -> float:
        return self.received / self.sampling_rate

    def text(self, stream: str = TRANSCRIPT) -> str:
        """The whole stream's confirmed text so far: the final segments', then the current segment's."""
        language = self.language if stream == TRANSCRIPT else stream
        parts = [s["transcript"] if stream == TRANSCRIPT else s["translations"][stream] for s in self.segments]
        current = self.streams[stream].committed
        if current:
            parts.append(join_words(current, language))
        return join_words([p for p in parts if p], language if language in UNSPACED_LANGUAGES else None)

    # --------------------------------------------------------------------------------------------------- API
    def feed(self, chunk: np.ndarray) -> list[LiveEvent]:
        """Add `chunk` (16 kHz mono float samples); returns the events it made stable."""
        if self.finished:
            raise RuntimeError("This live stream is finished.")
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        if not np.isfinite(chunk).all():
            raise ValueError("The audio chunk holds NaN or infinite samples.")
        self.audio = np.concatenate([self.audio, chunk])
        self.received += len(chunk)
        events: list[LiveEvent] = []
        for change in self.detector.feed(chunk) if self.detector is not None else ():
            if change.type == "speech_started":
                start = max(change.sample - self.pad, self.last_end, self.audio_start)
                if self.closing is not None:  # speech again within the padding: the gap is shared, as offline
                    middle = (self.stopped + change.sample) // 2
                    events += self._close(min(self.closing, middle))
                    start = max(start, middle)
                if not self.open:
                    self._start_segment(start, opened=True)
                    self.onset = change.sample
            elif change.type == "speech_stopped" and self.open:
                self.stopped, self.closing = change.sample, change.sample + self.pad
                events += self._cut_long_segment(self.closing)
                if change.sample - self.onset <= self.min_speech and not self.started:
                    self._drop_segment(self.closing)  # a burst of a frame or two (music, a click): no speech
        if self.closing is not None and self.received >= self.closing:
            events += self._close(self.closing)
        events += self._cut_long_segment(self.received)
        if self.open and self.received - self.decoded_at >= self.min_chunk:
            events += self._update()
        if not self.open:  # keep only what may become the next segment's padding (the detector lags a frame)
            judged = self.detector.position if self.detector is not None else self.received
            keep = max(min(judged, self.received) - self.pad, self.last_end, self.audio_start)
            self.audio, self.audio_start = self.audio[keep - self.audio_start:], keep
        return events

    def finish(self) -> list[LiveEvent]:
        """The end of the stream: the open segment is decoded a last time and closed."""
        if self.finished:
            return []
        self.finished = True
        if not self.open:
            return []
        return self._close(self.received if self.closing is None else min(self.closing, self.received))

    # ------------------------------------------------------------------------------------------------- steps
    def _cut_long_segment(self, upto: int) -> list[LiveEvent]:
        """A segment longer than the window by sample `upto` is cut at its least speech-like frame in the window's
        second half (without a detector: at the window), until what is left fits."""
        events: list[LiveEvent] = []
        while self.open and upto - self.segment_start > self.window:
            cut = self.segment_start + self.window
            if self.detector is not None:
                first, last = -(-(self.segment_start + self.window // 2) // FRAME), cut // FRAME
                probs = self.detector.probabilities[first:last]
                if probs:
                    cut = (first + int(np.argmin(probs))) * FRAME + FRAME // 2
            events += self._close(cut)
            self._start_segment(cut, opened=True)
        return events

    def _decode(self, audio: np.ndarray) -> dict[str, str] | None:
        """Per stream, the decoded text of `audio` (None when the detector hears no speech in it: only without
        turn detection, where segments are not cut at speech)."""
        if self.detector is None and self.vad is not None and not has_speech(audio, self.vad):
            return None
        started = self.clock()
        if self.language is None:
            self.language = normalize_language(self.decoder.detect(audio))
            logger.info(f"Live segment {len(self.segments)}: detected {self.language!r}.")
        transcript, translations = self.decoder.decode(audio, self.language, self.targets)
        self.decode_seconds += self.clock() - started
        self.decodes += 1
        self.streams[TRANSCRIPT].language = self.language
        return {TRANSCRIPT: transcript, **translations}

    def _event(self, kind: str, **fields) -> LiveEvent:
        return LiveEvent(kind, len(self.segments), round(self.segment_start / self.sampling_rate, 3),
                         received_seconds=round(self.received_seconds, 3), **fields)

    def _confirm(self, key: str, words: list[str]) -> LiveEvent | None:
        """Confirm `words` after the stream's confirmed ones; the delta event, if any."""
        stream = self.streams[key]
        if not words:
            return None
        delta = join_words(words, stream.language)
        if stream.committed and stream.language not in UNSPACED_LANGUAGES:
            delta = " " + delta
        stream.committed += words
        when = (self.received_seconds, self.decode_seconds)
        stream.delays += [when] * len(words)
        self.delays[key] += [when] * len(words)
        text = join_words(stream.committed, stream.language)
        if key == TRANSCRIPT:
            return self._event("transcript_delta", delta=delta, text=text, language=stream.language)
        return self._event("translation_delta", delta=delta, text=text, language=key)

    def _update(self) -> list[LiveEvent]:
        """Decode the buffer and confirm what the last two decodes agree on (LocalAgreement-2)."""
        self.decoded_at = self.received
        texts = self._decode(self.buffer)
        if texts is None:
            return []
        events = [] if self.started else [self._event("segment_start")]
        self.started = True
        for key, stream in self.streams.items():
            words = words_of(texts[key], stream.language)
            if stream.previous is not None:
                agreed = common_prefix(stream.previous, words)
                done = len(stream.committed)
                if agreed > done and words[:done] == stream.committed:
                    event = self._confirm(key, words[done:agreed])
                    if event:
                        events.append(event)
            stream.previous = words
        return events

    def _drop_segment(self, end: int) -> None:
        """Forget the open segment without decoding it (no event was sent for it)."""
        self.last_end = end
        self._start_segment(end, opened=self.detector is None)

    def _close(self, cut: int) -> list[LiveEvent]:
        """Close the open segment at sample `cut` (from the stream's start): decoded a last time, confirmed and
        reported; the segment after it opens only where the detector next hears speech (at once without one)."""
        audio = self.audio[self.segment_start - self.audio_start:cut - self.audio_start]
        texts = self._decode(audio) if len(audio) else None
        events: list[LiveEvent] = []
        if texts is not None or self.started:  # a segment already reported is closed even if its last decode is empty
            if not self.started:
                events.append(self._event("segment_start"))
            finals = {}
            for key, stream in self.streams.items():
                words = words_of(texts[key], stream.language) if texts is not None else list(stream.committed)
                done = len(stream.committed)
                if words[:done] != stream.committed:
                    logger.info(f"Live segment {len(self.segments)}: the last decode of {key} changed confirmed "
                                "words; they stay.")
                event = self._confirm(key, words[done:])
                if event:
                    events.append(event)
                finals[key] = join_words(stream.committed, stream.language)
            end = round(cut / self.sampling_rate, 3)
            segment = {"segment": len(self.segments), "start": round(self.segment_start / self.sampling_rate, 3),
                       "end": end, "language": self.language, "transcript": finals[TRANSCRIPT],
                       "translations": {t: finals[t] for t in self.targets}}
            events.append(self._event("segment_final", end=end, text=finals[TRANSCRIPT], language=self.language,
                                      transcript=finals[TRANSCRIPT], translations=segment["translations"]))
            self.segments.append(segment)
        self.last_end = cut
        self._start_segment(cut, opened=self.detector is None)
        return events


__all__ = ["EngineDecoder", "LiveEvent", "LiveTranslator", "SegmentDecoder", "TRANSCRIPT", "as_segment_decoder",
           "common_prefix", "segment_answer", "segment_rows"]
