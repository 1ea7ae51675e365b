"""Audio input handling for LLM-SRT: loading any common input form as mono float32 samples at 16 kHz, and the checks
every audio input gets."""

from __future__ import annotations

import contextlib
import io
import os
from typing import Any, NamedTuple

import numpy as np
from transformers.utils import logging


logger = logging.get_logger(__name__)



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


# soundfile reports SF_COUNT_MAX (2**63 - 1) frames for a file whose header holds no length: a FLAC written by a
# streaming encoder (STREAMINFO total_samples 0). Such files are read, and counted, block by block.
UNKNOWN_FRAMES = 1 << 62
_BLOCK_FRAMES = 1 << 16


class AudioFileInfo(NamedTuple):
    """An audio file's length in frames (samples per channel), its sample rate and channel count."""

    frames: int
    samplerate: int
    channels: int


def _read_blocks(file, max_frames: int | None = None, keep: bool = True) -> tuple[list[np.ndarray], int]:
    """Read an open `soundfile.SoundFile` whose header holds no length to its end (or past `max_frames`), a block
    at a time: (the blocks if `keep`, the frame count). libsndfile decodes such files, but soundfile's `read` sizes
    its array from the header (2**63 frames) and seeks after every read, which fails at the end of the stream:
    libsndfile's own read is called instead."""
    import soundfile

    buffer = np.empty((_BLOCK_FRAMES, file.channels), np.float32)
    pointer = soundfile._ffi.cast("float *", buffer.ctypes.data)
    blocks, frames = [], 0
    while max_frames is None or frames <= max_frames:
        wanted = _BLOCK_FRAMES if max_frames is None else min(_BLOCK_FRAMES, max_frames + 1 - frames)
        read = soundfile._snd.sf_readf_float(file._file, pointer, wanted)
        if read <= 0:
            break
        if keep:
            blocks.append(buffer[:read].copy())
        frames += read
    return blocks, frames


def _unset_wav_data_size(handle) -> int | None:
    """Where a WAV's data-chunk size field is, when it holds 0 while audio follows the chunk header (a writer that
    never came back to fill it in); None for any other file. libsndfile reads such a file as 0 frames, ffmpeg to
    the end of the file."""
    handle.seek(0)
    head = handle.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    position = 12
    while True:
        handle.seek(position)
        chunk = handle.read(8)
        if len(chunk) < 8:
            return None
        size = int.from_bytes(chunk[4:], "little")
        if chunk[:4] == b"data":
            end = handle.seek(0, io.SEEK_END)
            return position + 4 if size == 0 and end > position + 8 else None
        position += 8 + size + (size & 1)  # chunks are padded to an even size


class _PatchedFile(io.RawIOBase):
    """A file read through `handle` whose bytes at `offset` read as `patch` instead."""

    def __init__(self, handle, offset: int, patch: bytes):
        super().__init__()
        self.handle, self.offset, self.patch = handle, offset, patch

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, position: int, whence: int = io.SEEK_SET) -> int:
        return self.handle.seek(position, whence)

    def tell(self) -> int:
        return self.handle.tell()

    def readinto(self, buffer) -> int:
        start = self.handle.tell()
        count = self.handle.readinto(buffer)
        low, high = max(start, self.offset), min(start + count, self.offset + len(self.patch))
        if low < high:
            memoryview(buffer).cast("B")[low - start:high - start] = self.patch[low - self.offset:high - self.offset]
        return count


@contextlib.contextmanager
def _sound_file(source):
    """`soundfile.SoundFile(source)` (a path or a file object), except that a WAV whose data-chunk size field is 0
    but which holds audio is read as ffmpeg reads it, to the end of the file: the field reads as 0xFFFFFFFF, the
    size libsndfile takes for "unknown: up to the end"."""
    import soundfile

    with contextlib.ExitStack() as stack:
        file = stack.enter_context(soundfile.SoundFile(source))
        if file.frames == 0 and file.format == "WAV":
            path = isinstance(source, (str, os.PathLike))
            handle = stack.enter_context(open(source, "rb")) if path else source
            offset = _unset_wav_data_size(handle)
            if offset is not None:
                handle.seek(0)
                file = stack.enter_context(soundfile.SoundFile(_PatchedFile(handle, offset, b"\xff" * 4)))
        yield file


def audio_file_info(source, max_frames: int | None = None) -> AudioFileInfo:
    """An audio file's length, rate and channels from its header (`source`: a path or a file object), without
    decoding it. A header without the length (a streamed FLAC) is counted by decoding in blocks, stopping once past
    `max_frames` (the count is then `max_frames + 1`). Raises soundfile's errors for data it cannot read."""
    with _sound_file(source) as file:
        frames = file.frames
        if frames >= UNKNOWN_FRAMES:
            frames = _read_blocks(file, max_frames, keep=False)[1]
        return AudioFileInfo(frames, file.samplerate, file.channels)


def _decode_file(source, name: str) -> tuple[np.ndarray, int]:
    try:
        with _sound_file(source) as file:
            if file.frames >= UNKNOWN_FRAMES:  # no length in the header: read to the end, block by block
                parts = _read_blocks(file)[0]
                samples = np.concatenate(parts) if parts else np.zeros((0, file.channels), np.float32)
            else:
                samples = file.read(dtype="float32", always_2d=True)
            rate = file.samplerate
    except Exception as error:  # soundfile raises LibsndfileError / RuntimeError for unreadable data
        # LibsndfileError's own text starts "Error opening <_io.BytesIO object at 0x...>: ", which names nothing
        # the caller knows: keep libsndfile's reason alone
        reason = getattr(error, "error_string", None) or str(error)
        raise AudioInputError(f"{name}: cannot decode audio ({reason.rstrip('.')}).") from None
    return samples, int(rate)


def resolve_path(item: Any, base_dir: str | None) -> Any:
    """A relative audio path joined to `base_dir` (manifests store paths relative to their folder); other inputs
    unchanged."""
    if isinstance(item, str) and base_dir and not os.path.isabs(item):
        return os.path.join(base_dir, item)
    return item


MIN_SAMPLING_RATE = 1_000  # below this (e.g. `16` for 16 kHz) a rate is a unit mistake, not audio
MAX_SAMPLING_RATE = 384_000  # the highest rate common audio interfaces record at
MAX_CHANNELS = 8  # a 2-D array is (channels, frames) or (frames, channels) with at most this many channels
# Float samples live in [-1, 1]; a peak this far above (+30 dBFS) is integer PCM cast to float without scaling
# (`pcm.astype(np.float32)`), which the model would hear as loud clipped noise.
MAX_FLOAT_PEAK = 32.0


def check_sampling_rate(rate: Any, name: str, hint: bool = True) -> int:
    """`rate` as an int number of Hz, or an `AudioInputError` naming `name`.

    Python and numpy integers and whole floats (`16000.0`) are accepted; strings, bools, fractions (`44.1`, the
    rate in kHz) and rates outside 1 kHz..384 kHz are refused. `hint=False` drops the "a rate in kHz?" hint (a
    decoded file's own rate is no unit mistake).
    """
    if rate is None:
        raise AudioInputError(f"{name}: a sampling_rate is required for raw audio arrays, got None.")
    if isinstance(rate, (bool, np.bool_)) or not isinstance(rate, (int, float, np.integer, np.floating)):
        raise AudioInputError(
            f"{name}: sampling_rate must be a number of Hz, got {type(rate).__name__} {rate!r}."
        )
    # Python ints can exceed float range (np.isfinite(2**70) is a TypeError); an integer is always finite
    finite = isinstance(rate, (int, np.integer)) or bool(np.isfinite(rate))
    hint = f" (a rate in kHz? pass {round(float(rate) * 1000)})" if hint and finite and 0 < rate < MIN_SAMPLING_RATE else ""
    if not finite or float(rate) != int(rate):
        raise AudioInputError(f"{name}: sampling_rate must be a whole number of Hz, got {rate!r}{hint}.")
    if not MIN_SAMPLING_RATE <= int(rate) <= MAX_SAMPLING_RATE:
        raise AudioInputError(
            f"{name}: sampling_rate must be between {MIN_SAMPLING_RATE} and {MAX_SAMPLING_RATE} Hz, got "
            f"{int(rate)} Hz{hint}."
        )
    return int(rate)


def _pcm_to_float(samples: np.ndarray, name: str) -> np.ndarray:
    """Integer PCM -> float32 in [-1, 1), scaled by the PCM width the values hold.

    8- and 16-bit containers are their own width (unsigned ones are centred: uint8 128 -> 0). Wider containers
    (a Python list of int16 samples arrives as int64) are read as 16-bit when every value fits 16 bits, else as
    32-bit; values beyond 32 bits, and unsigned containers wider than 16 bits, are refused.
    """
    dtype = samples.dtype
    if dtype in (np.int8, np.int16):
        return (samples / float(2 ** (8 * dtype.itemsize - 1))).astype(np.float32)
    if dtype in (np.uint8, np.uint16):
        half = 2 ** (8 * dtype.itemsize - 1)
        return ((samples.astype(np.float64) - half) / half).astype(np.float32)
    if np.issubdtype(dtype, np.unsignedinteger):
        raise AudioInputError(
            f"{name}: unsigned {dtype} samples are ambiguous (unsigned PCM is 8- or 16-bit); convert them to float "
            "in [-1, 1] or to signed integer PCM."
        )
    low, high = int(samples.min()), int(samples.max())
    if -(2**15) <= low and high < 2**15:
        width = 16
    elif -(2**31) <= low and high < 2**31:
        width = 32
    else:
        raise AudioInputError(
            f"{name}: integer samples reach {low if -low > high else high}, beyond 32-bit PCM; pass float samples "
            "in [-1, 1] or integer PCM of at most 32 bits."
        )
    if width == 16 and dtype.itemsize > 2:
        logger.info(f"{name}: {dtype} samples all fit 16 bits: read as 16-bit PCM.")
    return (samples / float(2 ** (width - 1))).astype(np.float32)


def as_float_mono(samples: Any, name: str, channel_axis: int | None = None) -> np.ndarray:
    """Decoded samples of one clip -> 1-D float32: the one normalisation the pipeline and the processor share.

    Accepts a numpy array, a torch tensor (any float dtype, bfloat16 included) or a list of numbers. Integer PCM is
    scaled by its width (see `_pcm_to_float`), float16/float64 become float32, and bool, complex and non-numeric
    samples are refused, as are NaN or infinite ones and float samples peaking above `MAX_FLOAT_PEAK` (32: integer
    PCM cast to float unscaled). A 2-D array is one multi-channel clip, mixed down to mono: `channel_axis` when the layout
    is known (decoded files), else the axis of at most `MAX_CHANNELS` (8), so `(2, N)` and soundfile's `(N, 2)` both
    work; a 2-D array whose layout cannot be told (both axes or neither up to 8) is refused, since a batch is a list
    of clips.

    Raises:
        AudioInputError: naming `name`.
    """
    if hasattr(samples, "detach"):  # torch: numpy has no bfloat16, so widen half types first
        samples = samples.detach().cpu()
        if samples.is_floating_point() and samples.element_size() < 4:
            samples = samples.float()
        samples = samples.numpy()
    try:
        samples = np.asarray(samples)
    except ValueError:  # ragged nested lists
        raise AudioInputError(f"{name}: audio samples must be numbers in one array, got ragged sequences.") from None
    dtype = samples.dtype
    if dtype == np.bool_:
        raise AudioInputError(f"{name}: audio samples must be numbers, got bool values.")
    if np.issubdtype(dtype, np.complexfloating):
        raise AudioInputError(f"{name}: audio samples must be real numbers, got complex dtype {dtype}.")
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        got = "ragged or mixed values" if dtype == object else f"dtype {dtype}"
        raise AudioInputError(f"{name}: audio samples must be numbers in one array, got {got}.")
    if samples.ndim not in (1, 2):
        raise AudioInputError(
            f"{name}: audio must be 1-D samples or 2-D (channels, frames) / (frames, channels), got shape "
            f"{samples.shape}; pass a batch as a list of clips."
        )
    if samples.size == 0:
        raise AudioInputError(f"{name} is empty (0 samples).")
    if samples.ndim == 2 and channel_axis is None:
        rows, cols = samples.shape
        if 1 in (rows, cols):
            channel_axis = 0 if rows == 1 else 1
        elif rows <= MAX_CHANNELS < cols:
            channel_axis = 0
        elif cols <= MAX_CHANNELS < rows:
            channel_axis = 1
        elif rows <= MAX_CHANNELS and cols <= MAX_CHANNELS:
            raise AudioInputError(
                f"{name}: 2-D audio of shape {samples.shape} is ambiguous (channels or frames?); pass 1-D samples."
            )
        else:
            raise AudioInputError(
                f"{name}: 2-D audio of shape {samples.shape} is not (channels, frames) or (frames, channels) with at "
                f"most {MAX_CHANNELS} channels; pass a batch as a list of clips."
            )
    if np.issubdtype(dtype, np.integer):
        samples = _pcm_to_float(samples, name)
    else:
        # checked before the cast to float32, which would turn finite float64 values beyond its range into inf
        if not np.isfinite(samples).all():
            raise AudioInputError(f"{name} contains NaN or infinite samples.")
        peak = float(np.abs(samples).max())
        if peak > MAX_FLOAT_PEAK:
            raise AudioInputError(
                f"{name}: float samples reach {peak:.6g}, far outside [-1, 1]: integer PCM cast to float without "
                "scaling? Pass the integer array itself (int16 is scaled by 32768), or divide by 32768 (16-bit) "
                "or 2**31 (32-bit) first."
            )
        samples = samples.astype(np.float32, copy=False)
    if samples.ndim == 2:
        samples = samples.mean(axis=channel_axis, dtype=np.float64).astype(np.float32)
    return samples


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Mix a (frames, channels) or (channels, frames) array down to 1-D float32 (see `as_float_mono`)."""
    return as_float_mono(samples, describe_input(samples))


FILE_BYTES = (bytes, bytearray, memoryview)


def undecoded_kind(item: Any) -> str | None:
    """What an input [`load_audio`] decodes (a file path, file bytes, a dict, an audio decoder) is, in words; None
    for samples (arrays, tensors, lists) and anything else."""
    if isinstance(item, (str, os.PathLike)):
        return "a file path"
    if isinstance(item, FILE_BYTES):
        return "file bytes"
    if isinstance(item, dict):
        return "a dict"
    if hasattr(item, "get_all_samples"):
        return "an audio decoder"
    return None


def load_audio(item: Any, sampling_rate: int | None = None, target_rate: int = 16000) -> np.ndarray:
    """Any supported input -> mono float32 samples at `target_rate`.

    Supported: a file path, raw file bytes (also a bytearray or memoryview), a 1-D/2-D numpy array, torch tensor or list of samples (with
    `sampling_rate`), a `{"array"|"raw", "sampling_rate"}` dict (a decoded `datasets` Audio row), a
    `{"path"|"bytes"}` dict (undecoded), or a `datasets`/torchcodec `AudioDecoder`. Arrays are normalised by
    [`as_float_mono`] (integer PCM scaled by its width, channels mixed down).

    Raises:
        AudioInputError: naming the input, for missing or corrupt files, missing or implausible rates (outside
            1 kHz..384 kHz, not a whole number of Hz), unusable sample types or layouts, empty or NaN audio.
        FileNotFoundError: for a path that does not exist.
    """
    name = describe_input(item)
    channel_axis = None
    if isinstance(item, (str, os.PathLike)):
        path = os.fspath(item)
        if path.startswith(("http://", "https://")):
            raise AudioInputError(f"{path}: URLs are not fetched; download the file first.")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Audio file not found: {path}")
        (samples, rate), channel_axis = _decode_file(path, path), 1
    elif isinstance(item, FILE_BYTES):
        (samples, rate), channel_axis = _decode_file(io.BytesIO(bytes(item)), name), 1
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
        samples, rate, channel_axis = decoded.data, decoded.sample_rate, 0
    elif hasattr(item, "detach") or isinstance(item, (np.ndarray, list, tuple)):
        samples, rate = item, sampling_rate
    else:
        raise AudioInputError(f"{name}: unsupported audio input type {type(item).__name__}.")
    rate = check_sampling_rate(rate, name, hint=channel_axis is None)  # decoded files and decoders set channel_axis
    mono = as_float_mono(samples, name, channel_axis=channel_axis)
    if rate != target_rate:
        import librosa

        mono = librosa.resample(mono, orig_sr=rate, target_sr=target_rate).astype(np.float32)
    return mono


__all__ = ["AudioFileInfo", "AudioInputError", "as_float_mono", "audio_file_info", "check_sampling_rate", "describe_input",
           "load_audio", "resolve_path", "to_mono"]
