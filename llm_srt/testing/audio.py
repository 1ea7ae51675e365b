"""Audio for tests, made here: a synthetic voice-like signal, speech spoken by espeak-ng, and a FLAC whose header holds
no length (as streaming encoders write it)."""

from __future__ import annotations

import os

import numpy as np


SAMPLING_RATE = 16000


def synthetic_speech(
    seconds: float = 1.0, sampling_rate: int = SAMPLING_RATE, seed: int = 0, pause_every: float | None = None
) -> np.ndarray:
    """A speech-like float32 signal: harmonic tones under a syllable-rate envelope, with optional silent pauses."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    pitch = 110 + 40 * rng.random()
    signal = sum(np.sin(2 * np.pi * pitch * k * t + rng.random() * 6.28) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t) ** 2
    audio = 0.1 * signal * envelope + 0.005 * rng.standard_normal(t.size)
    if pause_every:
        # 0.3 s of silence every `pause_every` seconds: word boundaries for the long-audio splitter.
        in_pause = (t % pause_every) > (pause_every - 0.3)
        audio[in_pause] = 0.0
    return audio.astype(np.float32)


def flac_without_length(audio: np.ndarray, sampling_rate: int = SAMPLING_RATE) -> bytes:
    """`audio` as FLAC whose STREAMINFO holds no total length (total_samples 0), as streaming encoders write it."""
    import io

    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, audio, sampling_rate, format="FLAC")
    data = bytearray(buffer.getvalue())
    # "fLaC", a 4-byte block header, then STREAMINFO: total_samples is its 36 bits from the low nibble of byte 13
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0, "expected STREAMINFO first"
    data[8 + 13] &= 0xF0
    data[8 + 14:8 + 18] = b"\0\0\0\0"
    return bytes(data)


def speak(text: str, voice: str = "en-us", sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """`text` spoken by espeak-ng (Debian's package) as float32 samples at `sampling_rate`."""
    import shutil
    import subprocess
    import tempfile

    import librosa
    import soundfile

    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng).")
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "speech.wav")
        subprocess.run([espeak, "-v", voice, "-w", path, text], check=True, capture_output=True)
        audio, rate = soundfile.read(path, dtype="float32")
    return librosa.resample(audio, orig_sr=rate, target_sr=sampling_rate).astype(np.float32)


__all__ = ["SAMPLING_RATE", "flac_without_length", "speak", "synthetic_speech"]
