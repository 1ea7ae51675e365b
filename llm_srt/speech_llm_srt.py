"""What is speech in a recording: Silero VAD, the voice-activity detector faster-whisper and WhisperX put in front of
Whisper, decides for every path (the pipeline, `llm-srt`, the server, live decoding, evaluation, vLLM's server).

A speech LLM fed noise, music or a click writes a sentence nobody said; only windows the detector hears speech in
reach the model. The weights are those of PyPI's `silero-vad` (6.2.3: its TorchScript model is inside the wheel, so
nothing is downloaded), run by [`SileroVad`], the same network in plain PyTorch: one call scores every 32 ms frame of
a recording ([`speech_probabilities`]), where the package's model takes a Python call per frame and keeps one
stream's state in itself, and each live stream keeps its own state ([`StreamingVad`]). Frames become speech segments by the package's own rule
(`get_speech_timestamps_from_probs`) with faster-whisper's option names ([`VadOptions`]).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import numbers
import os
import reprlib
import threading
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy.signal import lfilter  # librosa's dependency; imported with the module, not by the first stream
from torch import nn


SAMPLING_RATE = 16_000  # the detector's rate (audio reaches it resampled, as it reaches the model)
FRAME = 512  # samples per decision (32 ms)
CONTEXT = 64  # samples of the previous frame each frame is read with
WEIGHTS = "silero_vad.jit"  # the package's default model (its safetensors file holds an older one)
SILERO_VERSION = "6.2.3"


@dataclass(frozen=True)
class VadOptions:
    """How speech is told from the rest, with faster-whisper's names (`faster_whisper.vad.VadOptions`).

    Args:
        threshold: a frame whose speech probability reaches this is speech.
        neg_threshold: speech ends when the probability falls below this (default: `threshold - 0.15`).
        min_speech_duration_ms: stretches of speech this short or shorter are dropped: one or two 32 ms frames that
            cross the threshold at a burst of music or a click are no speech, while a short word ("Six", 96 ms of
            frames) is kept. faster-whisper's 0 keeps the bursts; silero's 250 drops the word.
        max_speech_duration_s: longer speech is cut at its longest silence (the model's window bounds it too).
        min_silence_duration_ms: a silence this long ends a stretch of speech: windows are cut there. LLM-SRT's
            models learn one utterance per clip, so it is short enough to part sentences (faster-whisper, whose
            Whisper reads 30 s at once, waits 2 s).
        speech_pad_ms: each stretch of speech is widened by this on both sides (the detector decides late at the
            edges, and a final consonant is quiet).
    """

    threshold: float = 0.5
    neg_threshold: float | None = None
    min_speech_duration_ms: int = 64
    max_speech_duration_s: float = float("inf")
    min_silence_duration_ms: int = 100
    speech_pad_ms: int = 200

    def __post_init__(self):
        def number(name, low, high=None, integer=False):
            value = getattr(self, name)
            try:  # numpy's numbers too; an int too large for a float (JSON's 1000...0) is no setting
                ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and \
                    math.isfinite(float(value))
            except OverflowError:
                ok = False
            if ok and integer:
                ok = float(value).is_integer()
            if not ok or value < low or (high is not None and value > high):
                span = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
                kind = "a whole number of milliseconds " if integer else "a number "
                raise ValueError(f"VAD {name} must be {kind}{span}, got {reprlib.repr(value)}.")
            object.__setattr__(self, name, int(value) if integer else float(value))  # plain, as JSON writes it

        number("threshold", 0.0, 1.0)
        if self.neg_threshold is not None:
            number("neg_threshold", 0.0, 1.0)
            if self.neg_threshold > self.threshold:
                raise ValueError(f"VAD neg_threshold ({self.neg_threshold}) must not exceed threshold "
                                 f"({self.threshold}): speech would end before it began.")
        number("min_speech_duration_ms", 0, integer=True)
        number("min_silence_duration_ms", 0, integer=True)
        number("speech_pad_ms", 0, integer=True)
        value = self.max_speech_duration_s
        try:
            ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and float(value) > 0
        except OverflowError:
            ok = False
        if not ok:
            raise ValueError(f"VAD max_speech_duration_s must be a number of seconds > 0, got {reprlib.repr(value)}.")
        if value < 2 * FRAME / SAMPLING_RATE:  # the detector decides per frame: a shorter limit cannot be kept
            raise ValueError(f"VAD max_speech_duration_s must be at least {2 * FRAME / SAMPLING_RATE:g} s (two of the "
                             f"detector's {1000 * FRAME // SAMPLING_RATE} ms frames), got {value!r}.")
        object.__setattr__(self, "max_speech_duration_s", float(value))

    @classmethod
    def from_value(cls, value: VadOptions | dict | None) -> VadOptions:
        """Options from a `VadOptions`, a dict of its fields (names checked) or None (the defaults)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"vad_parameters must be a dict of VadOptions' fields, got {type(value).__name__}.")
        names = {spec.name for spec in dataclasses.fields(cls)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ValueError(f"Unknown VAD parameter(s) {', '.join(unknown)}; the parameters are "
                             f"{', '.join(sorted(names))}.")
        return cls(**value)


def _weights_path() -> str:
    """The detector's weights inside the installed `silero-vad` wheel (found without importing the package, whose
    import sets torch to one thread)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("Speech detection needs Silero VAD: pip install silero-vad (its weights are inside the "
                          "wheel; nothing is downloaded), or turn detection off (vad_filter=False, --no-vad).")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", WEIGHTS)
    if not os.path.isfile(path):
        raise ImportError(f"The installed silero-vad has no {WEIGHTS}: pip install silero-vad=={SILERO_VERSION}.")
    return path


class SileroVad(nn.Module):
    """Silero VAD v6 (16 kHz) in plain PyTorch: an STFT as a convolution, four convolutions, an LSTM cell and a
    1x1 convolution, with the weights of the package's TorchScript model (its 16 kHz half).

    Frames are read with the 64 samples before them; frames are independent until the LSTM, so a recording is
    scored with one batched pass through the front end and one LSTM over its frames.
    """

    def __init__(self):
        super().__init__()
        self.stft_conv = nn.Conv1d(1, 258, kernel_size=256, stride=128, bias=False)
        self.conv1 = nn.Conv1d(129, 128, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(128, 64, kernel_size=3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(64, 64, kernel_size=3, stride=2, padding=1)
        self.conv4 = nn.Conv1d(64, 128, kernel_size=3, padding=1)
        self.lstm = nn.LSTM(128, 128, batch_first=True)  # the weights of the original's LSTM cell
        self.final_conv = nn.Conv1d(128, 1, kernel_size=1)

    # our names <- the TorchScript model's (`_model`, its 16 kHz network)
    JIT_NAMES = {"stft_conv.weight": "stft.forward_basis_buffer", "final_conv.weight": "decoder.decoder.2.weight",
                 "final_conv.bias": "decoder.decoder.2.bias",
                 **{f"conv{i + 1}.{kind}": f"encoder.{i}.reparam_conv.{kind}" for i in range(4)
                    for kind in ("weight", "bias")},
                 **{f"lstm.{kind}_l0": f"decoder.rnn.{kind}" for kind in ("weight_ih", "weight_hh", "bias_ih",
                                                                          "bias_hh")}}

    @classmethod
    def from_package(cls) -> SileroVad:
        """The network with the installed package's weights (read from its TorchScript file, without importing the
        package, whose import sets torch to one thread)."""
        with warnings.catch_warnings():  # torch 2.13 calls torch.jit.load deprecated; the file is TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            scripted = torch.jit.load(_weights_path(), map_location="cpu")._model
        state = {**dict(scripted.named_parameters()), **dict(scripted.named_buffers())}
        model = cls()
        model.load_state_dict({ours: state[theirs].detach().clone() for ours, theirs in cls.JIT_NAMES.items()},
                              strict=True)
        return model.eval().requires_grad_(False)

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """`(n, CONTEXT + FRAME)` samples -> `(n, 128)` features (stateless)."""
        x = nn.functional.pad(frames, (0, 64), mode="reflect").unsqueeze(1)
        x = self.stft_conv(x)
        x = torch.sqrt(x[:, :129] ** 2 + x[:, 129:] ** 2)
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = torch.relu(conv(x))
        return x.squeeze(-1)

    def forward(self, frames: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Frames `(batch, n, CONTEXT + FRAME)` in order -> speech probabilities `(batch, n)` and the LSTM state
        after them (pass it back to continue a stream)."""
        batch, count, width = frames.shape
        features = self.frame_features(frames.reshape(batch * count, width)).reshape(batch, count, 128)
        hidden, state = self.lstm(features, state)
        probs = torch.sigmoid(self.final_conv(torch.relu(hidden).reshape(batch * count, 128, 1)))
        return probs.reshape(batch, count), state


_MODEL: SileroVad | None = None
_MODEL_LOCK = threading.Lock()


def load_vad() -> SileroVad:
    """The detector, loaded once per process (thread-safe: it holds no state between calls)."""
    global _MODEL
    with _MODEL_LOCK:
        if _MODEL is None:
            _MODEL = SileroVad.from_package()
    return _MODEL


def _frames(audio: np.ndarray, context: np.ndarray | None = None) -> torch.Tensor:
    """`(n, CONTEXT + FRAME)`: each 512-sample frame after the 64 samples before it (zeros, or `context`, before the
    first), the last frame zero-padded; as the package's model reads a recording."""
    samples = torch.as_tensor(np.ascontiguousarray(audio, dtype=np.float32))
    count = -(-len(samples) // FRAME)
    padded = torch.zeros(count * FRAME)
    padded[: len(samples)] = samples
    frames = padded.view(count, FRAME)
    before = torch.zeros(count, CONTEXT)
    if context is not None:
        before[0] = torch.as_tensor(context)
    if count > 1:
        before[1:] = frames[:-1, -CONTEXT:]
    return torch.cat([before, frames], dim=1)


DC_POLE = 0.995  # the DC blocker's pole: a high-pass at about 13 Hz, below any voice


def remove_dc(audio: np.ndarray, state: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`audio` without its DC offset, as the detector hears it, and the filter's state after it (pass it back to
    continue a stream: chunks filtered in turn equal the whole). The network hears a constant offset: a DC offset of
    -20 dBFS hid speech at -46 dBFS from it entirely (a cheap microphone's bias under a quiet speaker)."""


    filtered, state = lfilter([1.0, -1.0], [1.0, -DC_POLE], np.asarray(audio, np.float64),
                              zi=np.zeros(1) if state is None else state)
    return filtered.astype(np.float32), state


@torch.inference_mode()
def speech_probabilities(audio: np.ndarray) -> np.ndarray:
    """The speech probability of every 32 ms frame of 16 kHz mono `audio` (float32, `ceil(len / 512)` values), its
    DC offset removed (`remove_dc`)."""
    if len(audio) == 0:
        return np.zeros(0, np.float32)
    probs, _ = load_vad()(_frames(remove_dc(audio)[0]).unsqueeze(0))
    return probs[0].numpy()


def _timestamps_from_probs():
    """Silero's own frames-to-segments rule (`get_speech_timestamps_from_probs`), imported with torch's thread
    count kept (importing `silero_vad` sets it to one)."""
    threads = torch.get_num_threads()
    try:
        from silero_vad.utils_vad import get_speech_timestamps_from_probs
    except ImportError as error:
        raise ImportError(f"Speech detection needs Silero VAD: pip install silero-vad ({error}).") from None
    finally:
        torch.set_num_threads(threads)
    return get_speech_timestamps_from_probs


def segments_from_probabilities(probs: np.ndarray, length: int, options: VadOptions | None = None
                                ) -> list[tuple[int, int]]:
    """`(start, end)` samples of the speech in a recording of `length` samples, from its frame probabilities."""
    options = options or VadOptions()
    found = _timestamps_from_probs()(
        [float(p) for p in probs], sampling_rate=SAMPLING_RATE, threshold=options.threshold,
        neg_threshold=options.neg_threshold, min_speech_duration_ms=options.min_speech_duration_ms,
        max_speech_duration_s=options.max_speech_duration_s, min_silence_duration_ms=options.min_silence_duration_ms,
        speech_pad_ms=options.speech_pad_ms, audio_length_samples=length)
    return [(int(s["start"]), int(s["end"])) for s in found]


def speech_segments(audio: np.ndarray, options: VadOptions | None = None) -> list[tuple[int, int]]:
    """`(start, end)` samples of each stretch of speech in 16 kHz mono `audio`, padded by `speech_pad_ms`, in
    order and apart; empty when nothing is spoken (noise, music, clicks, hum, silence)."""
    return segments_from_probabilities(speech_probabilities(audio), len(audio), options)


def has_speech(audio: np.ndarray, options: VadOptions | None = None) -> bool:
    """Whether the detector hears any speech in 16 kHz mono `audio`."""
    return bool(speech_segments(audio, options))


@dataclass
class VadEvent:
    """A change of state in a stream: `"speech_started"` at `sample` (the first frame heard as speech) or
    `"speech_stopped"` at `sample` (where the silence that ended the speech began)."""

    type: str
    sample: int


class StreamingVad:
    """Speech start and stop in a live stream, by the offline segments' rule (`get_speech_timestamps_from_probs`,
    OpenAI's `server_vad` too): speech starts at a frame reaching `threshold`; it stops where the probability fell
    below `neg_threshold` (default `threshold - 0.15`) when `silence_duration_ms` later it has not reached
    `threshold` again. Each stream keeps its own state; the network is shared (`load_vad`). The probability of
    every frame judged is kept (`probabilities`, frame `i` covers samples `512 i` to `512 (i + 1)`)."""

    def __init__(self, threshold: float = 0.5, silence_duration_ms: int = 500, neg_threshold: float | None = None):
        options = VadOptions(threshold=threshold, neg_threshold=neg_threshold,
                             min_silence_duration_ms=silence_duration_ms)  # checks the values, naming them
        self.threshold = options.threshold
        self.neg_threshold = max(threshold - 0.15, 0.01) if neg_threshold is None else neg_threshold
        self.silence = int(silence_duration_ms * SAMPLING_RATE / 1000)
        self.model = load_vad()
        self.reset()

    def reset(self) -> None:
        self.pending = np.zeros(0, np.float32)  # samples not yet a whole frame
        self.dc_state = None  # the DC blocker's (`remove_dc`)
        self.context = np.zeros(CONTEXT, np.float32)
        self.state = None
        self.probabilities: list[float] = []
        self.speaking = False
        self.silence_start: int | None = None

    @property
    def position(self) -> int:
        """Samples judged so far."""
        return len(self.probabilities) * FRAME

    @torch.inference_mode()
    def feed(self, samples: np.ndarray) -> list[VadEvent]:
        """Judge `samples` (16 kHz mono float32) after what came before; the events they caused."""
        samples, self.dc_state = remove_dc(np.asarray(samples, np.float32).reshape(-1), self.dc_state)
        self.pending = np.concatenate([self.pending, samples])
        whole = len(self.pending) // FRAME * FRAME
        if not whole:
            return []
        audio, self.pending = self.pending[:whole], self.pending[whole:]
        probs, self.state = self.model(_frames(audio, self.context).unsqueeze(0), self.state)
        self.context = audio[-CONTEXT:].copy()
        events = []
        for prob in probs[0].tolist():
            start = self.position
            self.probabilities.append(prob)
            # silero's own rule (`get_speech_timestamps_from_probs`), a frame at a time
            if prob >= self.threshold:
                self.silence_start = None
                if not self.speaking:
                    self.speaking = True
                    events.append(VadEvent("speech_started", start))
            elif self.speaking and prob < self.neg_threshold:
                if self.silence_start is None:
                    self.silence_start = start
                if start - self.silence_start >= self.silence:
                    events.append(VadEvent("speech_stopped", self.silence_start))
                    self.speaking, self.silence_start = False, None
        return events


__all__ = ["FRAME", "SAMPLING_RATE", "SileroVad", "StreamingVad", "VadEvent", "VadOptions", "has_speech", "load_vad",
           "segments_from_probabilities", "speech_probabilities", "speech_segments"]
