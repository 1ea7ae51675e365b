"""The speech detector (`speech_llm_srt`): Silero VAD's network run in plain PyTorch, the frames-to-segments rule, the
streaming detector, and what it hears: speech, quiet or noisy, and none of the sounds that are not speech."""

import shutil

import numpy as np
import pytest
import torch

from llm_srt.evaluation.quality import non_speech_clips
from llm_srt.speech_llm_srt import (
    FRAME, SileroVad, StreamingVad, VadOptions, has_speech, remove_dc, speech_probabilities, speech_segments,
)
from llm_srt.testing import speak, synthetic_speech
from llm_srt.transcription_llm_srt import plan_windows


SR = 16000
espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng (Debian package) not installed")


def level(audio: np.ndarray, dbfs: float) -> np.ndarray:
    return (audio / np.abs(audio).max() * 10 ** (dbfs / 20)).astype(np.float32)


@pytest.fixture(scope="module")
def spoken():
    """Two sentences spoken by espeak-ng, or speech-like synthetic audio without it."""
    if shutil.which("espeak-ng") is None:
        return [synthetic_speech(1.5, seed=1), synthetic_speech(1.2, seed=2)]
    return [speak("I see three red cats."), speak("Ich sehe zwei blaue Hunde.", voice="de")]


def the_package_model():
    """Silero's own TorchScript model, imported the way its users do (the import sets torch to one thread)."""
    threads = torch.get_num_threads()
    import silero_vad

    torch.set_num_threads(threads)
    return silero_vad


def test_the_network_is_silero_vads_frame_for_frame(spoken):
    """`SileroVad` scores every frame as the package's TorchScript model does one call at a time, and the segments
    are the package's `get_speech_timestamps`."""
    silero_vad = the_package_model()
    audio = np.concatenate([np.zeros(SR // 2, np.float32), spoken[0], level(np.random.default_rng(0)
                            .standard_normal(SR), -30), spoken[1]]).astype(np.float32)
    ours = speech_probabilities(audio)
    audio = remove_dc(audio)[0]  # as the detector hears it
    model = silero_vad.load_silero_vad()
    model.reset_states()
    padded = np.zeros(len(ours) * FRAME, np.float32)
    padded[:len(audio)] = audio
    theirs = [model(torch.from_numpy(padded[i * FRAME:(i + 1) * FRAME]), SR).item() for i in range(len(ours))]
    assert len(ours) == -(-len(audio) // FRAME) and np.abs(np.array(theirs) - ours).max() < 1e-4
    options = VadOptions()
    expected = silero_vad.get_speech_timestamps(
        torch.from_numpy(audio), model, threshold=options.threshold, min_speech_duration_ms=options.min_speech_duration_ms,
        min_silence_duration_ms=options.min_silence_duration_ms, speech_pad_ms=options.speech_pad_ms)
    assert speech_segments(audio) == [(s["start"], s["end"]) for s in expected] and len(expected) == 2


def test_the_detector_keeps_torchs_thread_count():
    torch.set_num_threads(2)
    SileroVad.from_package()
    has_speech(synthetic_speech(1.0))
    the_package_model()
    assert torch.get_num_threads() == 2


def test_no_sound_that_is_not_speech_is_heard_as_speech():
    """Noise of three colours at three levels, a tone, mains hum, a chirp, a DC offset, clicks, knocks, typing,
    music, a melody, a bell and dither: at most 1 in 16 gets a stretch of speech (none does)."""
    clips = non_speech_clips()
    heard = {name: speech_segments(audio) for name, audio in clips.items()}
    assert len(clips) >= 16 and sum(bool(segments) for segments in heard.values()) <= len(clips) / 16
    assert {name for name, segments in heard.items() if segments} == set()


@espeak
@pytest.mark.parametrize("condition", ["clean", "quiet -30 dBFS", "quiet -45 dBFS", "white noise 10 dB SNR",
                                       "pink noise 10 dB SNR", "silence around"])
def test_speech_is_heard_quiet_noisy_and_with_silence_around(spoken, condition):
    rng = np.random.default_rng(7)
    for voice_text, voice in (("Je vois trois chats rouges.", "fr-fr"), ("I see five black dogs.", "en-us")):
        speech = level(speak(voice_text, voice=voice), -3)
        audio = np.concatenate([np.zeros(SR // 4, np.float32), speech, np.zeros(SR // 4, np.float32)])
        span = (SR // 4, SR // 4 + len(speech))
        if condition.startswith("quiet"):
            audio = audio * 10 ** ((float(condition.split()[1]) + 3) / 20)
        elif condition.endswith("SNR"):
            noise = rng.standard_normal(len(audio))
            if condition.startswith("pink"):
                spectrum = np.fft.rfft(noise)
                spectrum /= np.sqrt(np.maximum(np.fft.rfftfreq(len(noise)), 1 / len(noise)))
                noise = np.fft.irfft(spectrum, len(noise))
            noise *= np.sqrt(np.mean(speech ** 2) / np.mean(noise ** 2)) * 10 ** (-10 / 20)
            audio = audio + noise
        elif condition == "silence around":
            audio = np.concatenate([np.zeros(2 * SR), audio, np.zeros(3 * SR)])
            span = (span[0] + 2 * SR, span[1] + 2 * SR)
        segments = speech_segments(audio.astype(np.float32))
        covered = sum(max(0, min(end, span[1]) - max(start, span[0])) for start, end in segments)
        assert segments and covered / (span[1] - span[0]) >= 0.85, (condition, voice, segments, span)
        outside = sum(end - start for start, end in segments) - covered
        assert outside <= 0.6 * SR  # the padding, not the silence around


def test_the_stream_detector_finds_the_offline_segments_in_chunks_of_any_size(spoken):
    audio = np.concatenate([np.zeros(SR, np.float32), spoken[0], np.zeros(SR // 2, np.float32), spoken[1],
                            np.zeros(SR, np.float32)])
    offline = speech_segments(audio, VadOptions(speech_pad_ms=0, min_speech_duration_ms=0))
    assert len(offline) == 2
    for chunk in (160, 512, 1600, 7000, len(audio)):
        detector, events = StreamingVad(), []
        for start in range(0, len(audio), chunk):
            events += detector.feed(audio[start:start + chunk])
        assert [(e.type, e.sample) for e in events] == [
            (kind, sample) for segment in offline for kind, sample in zip(("speech_started", "speech_stopped"),
                                                                         segment)], chunk
        assert detector.position == len(audio) // FRAME * FRAME


def test_speech_that_is_half_the_recording_costs_half_the_encoder_passes(tiny):
    """What is not speech never reaches the encoder: a recording of speech, silence, speech and noise in 2 s slots
    decodes two windows where, without the detector, it decodes four."""
    from llm_srt.pipeline_llm_srt import SpeechTranslationPipeline
    from llm_srt.testing import build_tiny_model_and_processor

    model, processor = build_tiny_model_and_processor(tokenizer=tiny[1].tokenizer, window_seconds=2)
    pipe = SpeechTranslationPipeline(model=model, processor=processor)
    rest = np.zeros(SR // 2, np.float32)
    noise = level(np.random.default_rng(3).standard_normal(2 * SR), -25)
    audio = np.concatenate([synthetic_speech(1.5, seed=4), rest, np.zeros(2 * SR, np.float32),
                            synthetic_speech(1.5, seed=5), rest, noise])
    windows = []
    hook = model.audio_tower.register_forward_hook(lambda module, args, out: windows.append(args[0].shape[0]))
    try:
        encoded = []
        for vad_filter in (False, True):
            windows.clear()
            pipe(audio, sampling_rate=SR, src_lang="eng", tgt_lang="deu", vad_filter=vad_filter,
                 generate_kwargs={"num_beams": 1, "max_new_tokens": 2})
            encoded.append(sum(windows))
    finally:
        hook.remove()
    assert encoded == [4, 2]
    first, second = plan_windows(audio, SR, 2.0)  # the speech (1.5 s at 0 s and at 4 s) and its padding
    assert first.start == 0 and first.end <= 2 * SR and 3.7 * SR <= second.start and second.end <= 6 * SR


@pytest.mark.parametrize("options, message", [
    ({"threshold": 1.2}, "threshold must be a number between 0 and 1"),
    ({"threshold": float("nan")}, "threshold"),
    ({"threshold": 0.5, "neg_threshold": 0.6}, "neg_threshold \\(0.6\\) must not exceed threshold"),
    ({"min_silence_duration_ms": -5}, "min_silence_duration_ms must be a whole number of milliseconds >= 0"),
    ({"speech_pad_ms": 2.5}, "speech_pad_ms must be a whole number"),
    ({"min_speech_duration_ms": True}, "min_speech_duration_ms"),
    ({"max_speech_duration_s": 0}, "max_speech_duration_s must be a number of seconds > 0"),
    # an int too large for a float (JSON's 1000...0 digits): OverflowError came out of the check
    ({"threshold": 10 ** 400}, "threshold must be a number between 0 and 1, got 1000"),
    ({"speech_pad_ms": 10 ** 400}, "speech_pad_ms must be a whole number of milliseconds >= 0, got 1000"),
    ({"max_speech_duration_s": 10 ** 400}, "max_speech_duration_s must be a number of seconds > 0"),
    ({"max_speech_duration_s": 0.05}, "max_speech_duration_s must be at least 0.064 s"),
])
def test_bad_detector_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        VadOptions(**options)
    with pytest.raises(ValueError, match="Unknown VAD parameter"):
        VadOptions.from_value({"silence_ms": 100})
    with pytest.raises(ValueError, match="threshold must be a number between"):
        StreamingVad(threshold=2.0)


@espeak
def test_quiet_speech_under_a_dc_offset_is_heard():
    """A DC offset (a cheap microphone's bias) hid quiet speech from the network: at -46 dBFS under an offset of
    0.05 a third of it was heard, under 0.1 none. The detector hears the audio without its offset, in a stream too."""
    speech = level(speak("I see three red cats sitting on the mat."), -46)
    span = (SR // 2, SR // 2 + len(speech))
    for offset in (0.05, 0.1, -0.3):
        audio = np.concatenate([np.zeros(SR // 2, np.float32), speech, np.zeros(SR // 2, np.float32)]) + offset
        segments = speech_segments(audio.astype(np.float32))
        covered = sum(max(0, min(end, span[1]) - max(start, span[0])) for start, end in segments)
        assert covered >= 0.85 * len(speech), (offset, segments)
        stream = StreamingVad()
        events = [event for start in range(0, len(audio), 1000) for event in stream.feed(audio[start:start + 1000])]
        assert np.allclose(stream.probabilities, speech_probabilities(audio.astype(np.float32))[:len(stream.probabilities)],
                           atol=1e-4) and events[0].type == "speech_started"


@espeak
@pytest.mark.parametrize("options, max_seconds", [({"speech_pad_ms": 10 ** 9}, 30.0),
                                                  ({"max_speech_duration_s": 0.3}, 30.0), ({}, 0.3), ({}, 0.01)])
def test_windows_hold_the_speech_whatever_the_padding_and_the_limit(spoken, options, max_seconds):
    """The detector cuts speech longer than its limit so that it fits with its padding: a padding of half the limit or
    more (speech_pad_ms=10**9, or the default 200 ms with a limit under 0.43 s) cut the speech into 64 ms windows,
    and a window under two frames (chunk_length_s=0.01) dropped every other frame. Padding is bounded by a quarter
    of the limit; a max_speech_duration_s under two frames is refused."""
    audio = np.concatenate([np.zeros(SR, np.float32), spoken[0], np.zeros(SR, np.float32)])
    windows = plan_windows(audio, SR, max_seconds, VadOptions(**options))
    limit = min(options.get("max_speech_duration_s", max_seconds), max_seconds)
    assert all(w.speech for w in windows) and all(w.end - w.start <= limit * SR for w in windows)
    heard = speech_segments(audio, VadOptions(speech_pad_ms=0))  # the speech, unpadded and uncut
    covered = sum(max(0, min(end, w.end) - max(start, w.start)) for start, end in heard for w in windows)
    assert covered >= 0.95 * sum(end - start for start, end in heard)  # none of it dropped between windows
    assert len(windows) <= 2 * len(spoken[0]) / (limit * SR) + 2  # no piece much shorter than the limit allows


def test_detector_options_take_numpys_numbers_as_plain_ones():
    """A pipeline user's settings read from numpy (np.int64(300)) were refused as not whole numbers."""
    options = VadOptions(speech_pad_ms=np.int64(300), threshold=np.float32(0.25), min_silence_duration_ms=250.0)
    assert (options.speech_pad_ms, options.threshold, options.min_silence_duration_ms) == (300, 0.25, 250)
    assert type(options.speech_pad_ms) is int and type(options.threshold) is float  # as JSON writes them back
    with pytest.raises(ValueError, match="speech_pad_ms must be a whole number"):
        VadOptions(speech_pad_ms=np.bool_(True))


@pytest.fixture(scope="module")
def sounds():
    return non_speech_clips()


def test_the_pipeline_writes_nothing_for_sounds_that_are_not_speech(tiny, sounds):
    from llm_srt.pipeline_llm_srt import SpeechTranslationPipeline

    model, processor = tiny  # a random model: it writes text for any window it is given
    pipe = SpeechTranslationPipeline(model=model, processor=processor)
    results = pipe([{"array": audio, "sampling_rate": SR} for audio in sounds.values()], src_lang="eng",
                   tgt_lang="deu", generate_kwargs={"num_beams": 1, "max_new_tokens": 2})
    written = [r["text"] or r["transcript"] for r in results]
    assert sum(bool(text) for text in written) <= len(sounds) / 16 and not any(written)
    forced = pipe({"array": sounds["music (chords and a beat)"], "sampling_rate": SR}, src_lang="eng",
                  tgt_lang="deu", vad_filter=False, generate_kwargs={"num_beams": 1, "max_new_tokens": 2,
                                                                      "min_new_tokens": 2})
    assert forced["transcript"]  # without the detector the same model writes text for music


def test_the_cli_writes_nothing_for_sounds_that_are_not_speech(tiny_folder, sounds, tmp_path, capsys):
    import json

    import soundfile

    from llm_srt.cli.main import main

    files = []
    for index, audio in enumerate(sounds.values()):
        files.append(str(tmp_path / f"sound{index}.wav"))
        soundfile.write(files[-1], audio, SR)
    output = tmp_path / "out.jsonl"
    assert main(["translate", *files, "--model", tiny_folder, "--src", "eng", "--tgt", "deu", "--beams", "1",
                 "--max-new-tokens", "2", "--output", str(output)]) == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == len(files) and sum(bool(r["text"] or r["transcript"]) for r in rows) <= len(files) / 16
    assert main(["translate", files[0], "--model", tiny_folder, "--src", "eng", "--tgt", "deu",
                 "--no-vad-filter", "--vad-threshold", "0.3"]) == 2
    assert "--vad-threshold tune the speech detector, which --no-vad-filter turns off" in capsys.readouterr().err
    assert main(["translate", files[0], "--model", tiny_folder, "--src", "eng", "--tgt", "deu",
                 "--vad-threshold", "3"]) == 2
    assert "--vad-threshold: VAD threshold must be a number between 0 and 1, got 3.0" in capsys.readouterr().err


def test_live_decoding_writes_nothing_for_sounds_that_are_not_speech(tiny, sounds):
    from llm_srt.decoding_llm_srt import TransformersEngine
    from llm_srt.live.translator import LiveTranslator

    engine = TransformersEngine(*tiny)
    heard = 0
    for audio in sounds.values():
        translator = LiveTranslator(engine, "eng", ["deu"], settings={"num_beams": 1, "max_new_tokens": 2})
        for start in range(0, len(audio), SR // 10):
            translator.feed(audio[start:start + SR // 10])
        translator.finish()
        heard += bool(translator.segments)
    assert heard <= len(sounds) / 16 and heard == 0
