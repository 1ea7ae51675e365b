"""Audio for tests, made here: a synthetic voice-like signal, speech spoken by espeak-ng, and a FLAC whose header holds
no length (as streaming encoders write it)."""

from __future__ import annotations

import os

import numpy as np


SAMPLING_RATE = 16000


# formants (Hz) of the vowels /a e i o u/, for `synthetic_speech`
VOWEL_FORMANTS = ((730, 1090, 2440), (530, 1840, 2480), (270, 2290, 3010), (570, 840, 2410), (300, 870, 2240))


def _resonate(signal: np.ndarray, frequency: float, bandwidth: float, sampling_rate: int) -> np.ndarray:
    """`signal` through a two-pole resonator (a formant)."""
    from scipy.signal import lfilter

    radius = np.exp(-np.pi * bandwidth / sampling_rate)
    angle = 2 * np.pi * frequency / sampling_rate
    return lfilter([1 - radius], [1, -2 * radius * np.cos(angle), radius * radius], signal)


def synthetic_speech(
    seconds: float = 1.0, sampling_rate: int = SAMPLING_RATE, seed: int = 0, pause_every: float | None = None
) -> np.ndarray:
    """A speech-like float32 signal a voice-activity detector hears as speech (Silero VAD covers over 95% of it):
    syllables of 0.12-0.25 s, each a burst of fricative noise then a vowel (a glottal pulse train with a wavering
    pitch through three formants), with optional silent pauses (0.5 s every `pause_every` seconds: the detector's
    probability takes about 0.1 s to fall after speech and rises just before it, so a pause shows it less silence
    than it lasts)."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    total = int(seconds * sampling_rate)
    audio, position = np.zeros(total), 0
    pitch = 110 + 40 * rng.random()
    while position < total:
        length = min(int(rng.uniform(0.12, 0.25) * sampling_rate), total - position)
        t = np.arange(length) / sampling_rate
        f0 = pitch * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t)) * (1 + 0.01 * rng.standard_normal(length))
        pulses = (np.sin(2 * np.pi * np.cumsum(f0) / sampling_rate) > 0.97).astype(float) - 0.03
        source = lfilter([1], [1, -0.95], pulses)
        formants = VOWEL_FORMANTS[rng.integers(len(VOWEL_FORMANTS))]
        syllable = sum(_resonate(source, f, width, sampling_rate) * gain
                       for f, width, gain in zip(formants, (80, 100, 150), (1.0, 0.6, 0.3)))
        onset = min(int(0.05 * sampling_rate), length)  # the consonant
        syllable[:onset] = _resonate(0.4 * rng.standard_normal(onset), 4000, 2000, sampling_rate)
        audio[position:position + length] = syllable * np.sin(np.pi * np.linspace(0, 1, length)) ** 0.5
        position += length
    audio = 0.3 * audio / max(float(np.abs(audio).max()), 1e-9)
    if pause_every:
        audio[(np.arange(total) / sampling_rate % pause_every) > (pause_every - 0.5)] = 0.0
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
