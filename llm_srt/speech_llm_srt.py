"""What is speech in a recording: silent windows, the pauses between sounds, and long audio cut into the model's
windows at those pauses."""

from __future__ import annotations

import numpy as np


SILENCE_PEAK = 1e-3  # peak amplitude below which a window is treated as silence (-60 dBFS)
PAUSE_SECONDS = 0.15  # a quiet stretch this long between sounds is a pause (stop consonants close for < 0.1 s)
SILENCE_BELOW_LOUD = 0.01  # frames 40 dB under a recording's loud frames are silent, whatever its noise floor
MIN_SPEECH_SECONDS = 0.1  # a piece with less sound than this (a click, a breath) joins a neighbour


def is_silent(audio: np.ndarray, peak: float = SILENCE_PEAK, sampling_rate: int = 16_000,
              frame_seconds: float = 0.02) -> bool:
    """True when `audio` holds less than `MIN_SPEECH_SECONDS` of sound: fewer of its 20 ms frames reach `peak` (-60
    dBFS) in level than make 0.1 s. Too short for a word (a click, a lone sample), such a window made the model
    invent a sentence, as silence does."""
    if audio.size == 0 or float(np.abs(audio).max()) < peak:
        return True
    frame = max(1, int(frame_seconds * sampling_rate))
    return int((_frame_rms(audio, frame) >= peak).sum()) * frame < MIN_SPEECH_SECONDS * sampling_rate


def _frame_rms(audio: np.ndarray, frame: int) -> np.ndarray:
    """Root-mean-square level of consecutive `frame`-sample frames (the last one zero-padded)."""
    n_frames = -(-len(audio) // frame)
    padded = np.zeros(n_frames * frame, dtype=np.float32)
    padded[: len(audio)] = audio
    return np.sqrt((padded.reshape(n_frames, frame).astype(np.float64) ** 2).mean(axis=1))


def _quiet_frames(rms: np.ndarray) -> np.ndarray:
    """Which frames are quiet: below the recording's noise floor + 6 dB, kept between 40 dB and 20 dB under its
    loud frames (so a clean recording's pauses and a noisy one's background both count, and speech never does)."""
    loud = float(np.percentile(rms, 95))
    floor = float(np.percentile(rms, 5))
    threshold = min(max(2 * floor, SILENCE_BELOW_LOUD * loud), 0.1 * loud)
    return rms <= threshold


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """The runs of True in `mask`, as (first, end) indices (end exclusive)."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return [(int(first), int(end)) for first, end in zip(edges[::2], edges[1::2])]


def find_pauses(
    audio: np.ndarray, sampling_rate: int, min_pause_seconds: float = PAUSE_SECONDS, frame_seconds: float = 0.02,
    floor_pause_seconds: float | None = None,
) -> list[tuple[int, int]]:
    """The pauses between sounds: quiet stretches of at least `min_pause_seconds` with sound on both sides, as
    `(start, end)` samples (leading and trailing silence is no pause).

    `floor_pause_seconds`: when given, a stretch quiet only against the audio's own quietest frames (its noise
    floor) must last that long, and one that is silent (40 dB under the loud frames) still only
    `min_pause_seconds`. Live buffers use it: a buffer holding nothing but speech has its quietest frames inside
    words, so a gap between two words counted as a pause against them, where the whole recording, with its silences,
    sets a floor no gap reaches.
    """
    frame = max(1, int(frame_seconds * sampling_rate))
    rms = _frame_rms(audio, frame)
    if not rms.size or rms.max() == 0:
        return []

    def lasts(frames: int, seconds: float) -> bool:
        return frames * frame >= seconds * sampling_rate - frame / 2

    silence = SILENCE_BELOW_LOUD * float(np.percentile(rms, 95))
    pauses = []
    for first, last in _runs(_quiet_frames(rms)):  # quiet frames first..last-1
        if first == 0 or last == len(rms) or not lasts(last - first, min_pause_seconds):
            continue
        if floor_pause_seconds is not None and not lasts(last - first, floor_pause_seconds):
            if not any(lasts(end - start, min_pause_seconds) for start, end in _runs(rms[first:last] <= silence)):
                continue
        pauses.append((first * frame, last * frame))
    return pauses


def _split_long(
    audio: np.ndarray, begin: int, end: int, sampling_rate: int, max_len: int, min_len: int, frame: int
) -> list[tuple[int, int]]:
    """`audio[begin:end]` in contiguous windows of at most `max_len` samples, each cut in the middle of the quietest
    stretch between `min_len` and `max_len` after the window's start."""
    if end - begin <= max_len:
        return [(begin, end)]
    piece = audio[begin:end]
    energy = _frame_rms(piece, frame)
    energy = np.convolve(energy, np.ones(5) / 5, mode="same")  # ~0.1 s smoothing: pauses, not single quiet frames
    windows, start, total = [], 0, len(piece)
    while total - start > max_len:
        first = -(-(start + min_len) // frame)
        last = (start + max_len) // frame  # exclusive: a cut at frame index i lies at sample i * frame
        quiet = energy[first:last]
        floor = quiet.min()
        low = np.flatnonzero(quiet <= floor + 1e-4 * max(floor, 1e-6) + 1e-9)
        # runs of quietest frames; the latest run at least half as long as the longest (so windows stay long and
        # a real pause beats a single quiet frame); its middle is the cut
        runs = np.split(low, np.flatnonzero(np.diff(low) > 1) + 1)
        longest = max(len(r) for r in runs)
        run = [r for r in runs if 2 * len(r) >= longest][-1]
        cut = (first + int(run[len(run) // 2])) * frame
        cut = min(max(cut, start + 1), start + max_len)
        windows.append((begin + start, begin + cut))
        start = cut
    windows.append((begin + start, begin + total))
    return windows


def split_on_silence(
    audio: np.ndarray, sampling_rate: int, max_seconds: float, min_seconds: float | None = None,
    frame_seconds: float = 0.02, min_pause_seconds: float | None = PAUSE_SECONDS,
) -> list[tuple[int, int]]:
    """Split into contiguous windows of at most `max_seconds`: one per stretch of speech between pauses.

    Every pause of at least `min_pause_seconds` between sounds is a cut (in its middle), even where the audio
    would fit one window: the models learn one utterance per clip, and a window holding two sentences comes back
    with one. A piece with less than 0.1 s of sound (a click, a breath) joins its neighbour when the two fit one
    window. A piece still longer than `max_seconds` is cut in the middle of the quietest stretch between
    `min_seconds` (default half the window) and `max_seconds` after each window's start, so a shorter pause is used
    whenever one exists. `min_pause_seconds=None` (or 0) cuts only where the window length requires. The windows
    cover the input exactly: `[(0, c1), (c1, c2), ..., (ck, len(audio))]`.
    """
    total = len(audio)
    max_len = int(max_seconds * sampling_rate)
    if max_len <= 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}.")
    min_len = int((max_seconds / 2 if min_seconds is None else min_seconds) * sampling_rate)
    frame = max(1, int(frame_seconds * sampling_rate))
    cuts = []
    if min_pause_seconds and total > 0:
        cuts = [(start + end) // 2 for start, end in find_pauses(audio, sampling_rate, min_pause_seconds, frame_seconds)]
    pieces = list(zip([0] + cuts, cuts + [total]))
    if len(pieces) > 1:
        quiet = _quiet_frames(_frame_rms(audio, frame))
        sound = [int((~quiet[start // frame: -(-end // frame)]).sum()) * frame for start, end in pieces]
        merged = [list(pieces[0]) + [sound[0]]]
        for (start, end), heard in zip(pieces[1:], sound[1:]):
            last = merged[-1]
            little = min(heard, last[2]) < MIN_SPEECH_SECONDS * sampling_rate
            if little and end - last[0] <= max_len:
                last[1], last[2] = end, last[2] + heard
            else:
                merged.append([start, end, heard])
        pieces = [(start, end) for start, end, _ in merged]
    windows = []
    for start, end in pieces:
        windows.extend(_split_long(audio, start, end, sampling_rate, max_len, min_len, frame))
    return windows



__all__ = ["MIN_SPEECH_SECONDS", "PAUSE_SECONDS", "SILENCE_PEAK", "find_pauses", "is_silent", "split_on_silence"]
