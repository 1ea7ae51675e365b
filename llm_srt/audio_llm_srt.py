"""Audio input handling for LLM-SRT: loading any common input form, mono 16 kHz, and silence-aware splitting."""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np


SILENCE_PEAK = 1e-3  # peak amplitude below which a window is treated as silence (-60 dBFS)


class AudioInputError(ValueError):
    """An audio input that cannot be used; the message names the input."""


def describe_input(item: Any) -> str:
    """A short human name for an audio input, for error messages."""
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    if isinstance(item, (bytes, bytearray)):
        return f"<{len(item)} bytes>"
    if isinstance(item, dict):
        return f"<dict {item.get('path') or sorted(item)}>"
    shape = getattr(item, "shape", None)
    return f"<{type(item).__name__}{' shape ' + str(tuple(shape)) if shape is not None else ''}>"


def _decode_file(source, name: str) -> tuple[np.ndarray, int]:
    import soundfile

    try:
        samples, rate = soundfile.read(source, dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises LibsndfileError / RuntimeError for unreadable data
        raise AudioInputError(f"{name}: cannot decode audio ({error}).") from None
    return samples, int(rate)


def resolve_path(item: Any, base_dir: str | None) -> Any:
    """A relative audio path joined to `base_dir` (manifests store paths relative to their folder); other inputs
    unchanged."""
    if isinstance(item, str) and base_dir and not os.path.isabs(item):
        return os.path.join(base_dir, item)
    return item


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Mix a (frames, channels) or (channels, frames) array down to 1-D float32."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 1:
        return samples
    if samples.ndim != 2:
        raise AudioInputError(f"audio must be 1-D or 2-D (channels), got shape {samples.shape}.")
    channel_axis = 0 if samples.shape[0] < samples.shape[1] else 1
    return samples.mean(axis=channel_axis).astype(np.float32)


def load_audio(item: Any, sampling_rate: int | None = None, target_rate: int = 16000) -> np.ndarray:
    """Any supported input -> mono float32 samples at `target_rate`.

    Supported: a file path, raw file bytes, a 1-D/2-D numpy array or torch tensor (with `sampling_rate`), a
    `{"array"|"raw", "sampling_rate"}` dict (a decoded `datasets` Audio row), a `{"path"|"bytes"}` dict (undecoded),
    or a `datasets`/torchcodec `AudioDecoder`.

    Raises:
        AudioInputError: naming the input, for missing or corrupt files, missing/zero rates, empty or NaN audio.
        FileNotFoundError: for a path that does not exist.
    """
    name = describe_input(item)
    if isinstance(item, (str, os.PathLike)):
        path = os.fspath(item)
        if path.startswith(("http://", "https://")):
            raise AudioInputError(f"{path}: URLs are not fetched; download the file first.")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Audio file not found: {path}")
        samples, rate = _decode_file(path, path)
    elif isinstance(item, (bytes, bytearray)):
        samples, rate = _decode_file(io.BytesIO(item), name)
    elif isinstance(item, dict):
        if "array" in item or "raw" in item:
            samples = item["array"] if "array" in item else item["raw"]
            rate = item.get("sampling_rate", sampling_rate)
        elif item.get("bytes") is not None:
            return load_audio(bytes(item["bytes"]), target_rate=target_rate)
        elif item.get("path") is not None:
            return load_audio(item["path"], target_rate=target_rate)
        else:
            raise AudioInputError(f"{name}: an audio dict needs 'array' and 'sampling_rate', 'bytes' or 'path'.")
    elif hasattr(item, "get_all_samples"):  # datasets >= 4 decodes Audio columns to torchcodec AudioDecoders
        decoded = item.get_all_samples()
        samples, rate = np.asarray(decoded.data, dtype=np.float32), int(decoded.sample_rate)
    else:
        if hasattr(item, "detach"):
            item = item.detach().cpu().numpy()
        if not isinstance(item, np.ndarray):
            raise AudioInputError(f"{name}: unsupported audio input type {type(item).__name__}.")
        samples, rate = item, sampling_rate
    if rate is None or not rate or rate <= 0:
        raise AudioInputError(f"{name}: a positive sampling_rate is required for raw audio arrays, got {rate!r}.")
    samples = np.asarray(samples)
    if samples.size == 0:
        raise AudioInputError(f"{name}: the audio is empty (0 samples).")
    if not np.issubdtype(samples.dtype, np.floating):
        if np.issubdtype(samples.dtype, np.integer):  # PCM integers -> [-1, 1]
            samples = samples / float(np.iinfo(samples.dtype).max)
        else:
            raise AudioInputError(f"{name}: audio samples must be numbers, got dtype {samples.dtype}.")
    try:
        mono = to_mono(samples)
    except AudioInputError as error:
        raise AudioInputError(f"{name}: {error}") from None
    if not np.isfinite(mono).all():
        raise AudioInputError(f"{name}: the audio contains NaN or infinite samples.")
    if int(rate) != target_rate:
        import librosa

        mono = librosa.resample(mono, orig_sr=int(rate), target_sr=target_rate).astype(np.float32)
    return mono


def is_silent(audio: np.ndarray, peak: float = SILENCE_PEAK) -> bool:
    """True when no sample reaches `peak` (default -60 dBFS)."""
    return audio.size == 0 or float(np.abs(audio).max()) < peak


def split_on_silence(
    audio: np.ndarray, sampling_rate: int, max_seconds: float, min_seconds: float | None = None,
    frame_seconds: float = 0.02,
) -> list[tuple[int, int]]:
    """Split into contiguous windows of at most `max_seconds`, cutting at the quietest point available.

    Each cut is placed in the middle of the quietest stretch between `min_seconds` (default half the window) and
    `max_seconds` after the window's start, so a pause is used whenever one exists. The windows cover the input
    exactly: `[(0, c1), (c1, c2), ..., (ck, len(audio))]`.
    """
    total = len(audio)
    max_len = int(max_seconds * sampling_rate)
    if max_len <= 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}.")
    if total <= max_len:
        return [(0, total)]
    min_len = int((max_seconds / 2 if min_seconds is None else min_seconds) * sampling_rate)
    frame = max(1, int(frame_seconds * sampling_rate))
    n_frames = -(-total // frame)
    padded = np.zeros(n_frames * frame, dtype=np.float32)
    padded[:total] = audio
    energy = np.sqrt((padded.reshape(n_frames, frame) ** 2).mean(axis=1))
    energy = np.convolve(energy, np.ones(5) / 5, mode="same")  # ~0.1 s smoothing: pauses, not single quiet frames
    windows, start = [], 0
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
        windows.append((start, cut))
        start = cut
    windows.append((start, total))
    return windows


__all__ = ["AudioInputError", "load_audio", "resolve_path", "split_on_silence", "is_silent", "to_mono", "describe_input"]
