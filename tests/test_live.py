"""Live decoding (`llm_srt.live.translator`): chunks in, stable text out, equal to offline decoding; latency."""

import numpy as np
import pytest

from llm_srt.decoding_llm_srt import TransformersEngine, decode_windows
from llm_srt.evaluation.metrics import average_lagging, length_adaptive_average_lagging
from llm_srt.live.translator import TRANSCRIPT, LiveTranslator, common_prefix
from llm_srt.testing import SAMPLING_RATE as SR
from llm_srt.testing import PARROT_LINES, synthetic_speech


SETTINGS = {"num_beams": 1, "max_new_tokens": 12}
PARROT_SETTINGS = {"num_beams": 1, "max_new_tokens": 40}


def stream(translator: LiveTranslator, audio: np.ndarray, seconds: float) -> list:
    size = max(1, int(seconds * SR))
    events = []
    for i in range(0, len(audio), size):
        events += translator.feed(audio[i:i + size])
    return events + translator.finish()


def offline(engine, audio: np.ndarray, targets, settings) -> dict:
    handles, _ = engine.encode([audio])
    return decode_windows(engine, handles, ["eng"], "srt", targets, settings)[0]


def check_confirmed_text_never_changes(events, keys) -> None:
    """Each delta extends the segment's confirmed text, and the final text starts with every delta sent."""
    for key in keys:
        confirmed: dict[int, str] = {}
        for event in events:
            mine = event.language == key if key != TRANSCRIPT else event.type == "transcript_delta"
            if event.type in ("transcript_delta", "translation_delta") and mine:
                before = confirmed.get(event.segment, "")
                assert event.text == before + event.delta, (before, event.delta, event.text)
                confirmed[event.segment] = event.text
            if event.type == "segment_final":
                final = event.transcript if key == TRANSCRIPT else event.translations[key]
                assert final == confirmed.get(event.segment, ""), "the final text is the confirmed text"


# ------------------------------------------------------------------------------------------------------ latency
def test_average_lagging_on_hand_computed_examples():
    # 4 s source, 4 words: r = 1 word/s. Delays 1, 2, 4, 4: tau = 3 (the first delay reaching 4 s).
    # AL = ((1 - 0) + (2 - 1) + (4 - 2)) / 3 = 4/3
    assert average_lagging([1, 2, 4, 4], 4.0) == pytest.approx(4 / 3)
    # An ideal wait-0 policy lags 0 (each word at its share of the source)
    assert average_lagging([0, 1, 2, 3], 4.0) == pytest.approx(0.0)
    # A reference of 2 words: r = 0.5 word/s, ideal delays 0, 2: ((1-0) + (2-2) + (4-4)) / 3 = 1/3
    assert average_lagging([1, 2, 4, 4], 4.0, reference_length=2) == pytest.approx(1 / 3)
    # LAAL takes the longer length (the hypothesis' 4 words): as AL with the hypothesis length
    assert length_adaptive_average_lagging([1, 2, 4, 4], 4.0, reference_length=2) == pytest.approx(4 / 3)
    # A shorter hypothesis than the reference: LAAL = AL with the reference's length.
    # r = 8/4 = 2 words/s: ((3 - 0) + (4 - 0.5)) / 2 = 3.25
    assert length_adaptive_average_lagging([3, 4], 4.0, reference_length=8) == pytest.approx(3.25)
    assert average_lagging([3, 4], 4.0, reference_length=8) == pytest.approx(3.25)
    # Waiting for the whole source: AL = the source length (SimulEval's first-delay rule beyond it too)
    assert average_lagging([4, 4, 4], 4.0) == pytest.approx(4.0)
    assert average_lagging([5, 5], 4.0) == pytest.approx(5.0)
    # Computation-aware delays are the same function of larger delays
    assert average_lagging([1.5, 2.5, 4.5, 4.5], 4.0) == pytest.approx((1.5 + 1.5 + 4.5 - 2) / 3)
    assert average_lagging([], 4.0) == 0.0
    with pytest.raises(ValueError, match="source_length"):
        average_lagging([1], 0)


@pytest.mark.parametrize("delays, source_length, named", [
    ([1.0, float("nan")], 4.0, "delay 1 is nan"), ([float("inf")], 4.0, "delay 0 is inf"),
    ([1.0, -0.5], 4.0, "delay 1 is -0.5"), ([1.0, 2.0], float("nan"), "source_length"),
    ([1.0, 2.0], float("inf"), "source_length"),  # a ZeroDivisionError before
])
def test_average_lagging_refuses_what_cannot_be_measured_by_name(delays, source_length, named):
    """NaN inputs gave a NaN lag, an infinite source a ZeroDivisionError."""
    for measure in (average_lagging, length_adaptive_average_lagging):
        with pytest.raises(ValueError, match=named):
            measure(delays, source_length)


def test_common_prefix():
    assert common_prefix("a b c".split(), "a b d".split()) == 2
    assert common_prefix([], ["a"]) == 0


# ------------------------------------------------------------------------------------------- the tiny random model
def test_a_pipeline_loaded_with_the_folders_own_code_decodes_live(tiny, tiny_folder):
    """The README's `pipeline(..., trust_remote_code=True)` holds the folder's own copy of the decoding module, whose
    engine is not this package's class: LiveTranslator took it for something else and refused it."""
    from transformers import pipeline

    pipe = pipeline("speech-translation", model=tiny_folder, trust_remote_code=True)
    assert "transformers_modules" in type(pipe.engine).__module__
    audio = synthetic_speech(1.7, seed=4)
    remote = LiveTranslator(pipe, "eng", ["deu"], settings=SETTINGS, min_chunk_seconds=0.3)
    local = LiveTranslator(TransformersEngine(*tiny), "eng", ["deu"], settings=SETTINGS, min_chunk_seconds=0.3)
    for translator in (remote, local):
        stream(translator, audio, 0.5)
    assert remote.segments == local.segments and remote.segments


@pytest.mark.integration
@pytest.mark.parametrize("chunk_seconds", [0.1, 0.37, 1.0, 5.0])
def test_chunks_of_any_size_give_the_offline_text(tiny, chunk_seconds):
    model, processor = tiny
    engine = TransformersEngine(model, processor)
    audio = synthetic_speech(1.7, seed=4)  # no pause, within the tiny model's 2 s window: one segment
    translator = LiveTranslator(engine, "eng", ["deu", "fra"], settings=SETTINGS, min_chunk_seconds=0.3)
    events = stream(translator, audio, chunk_seconds)
    assert len(translator.segments) == 1
    segment = translator.segments[0]
    assert segment["start"] == 0.0 and 1.5 <= segment["end"] <= round(len(audio) / SR, 3)  # the speech heard
    expected = offline(engine, audio[:round(segment["end"] * SR)], ["deu", "fra"], SETTINGS)
    assert segment["transcript"] == " ".join(expected["deu"]["transcript"].split())
    for target in ("deu", "fra"):
        assert segment["translations"][target] == " ".join(expected[target]["text"].split())
    check_confirmed_text_never_changes(events, [TRANSCRIPT, "deu", "fra"])
    assert [e.type for e in events][0] == "segment_start" and events[-1].type == "segment_final"


@pytest.mark.integration
def test_a_long_stretch_without_pauses_is_cut_at_the_window(tiny):
    model, processor = tiny
    engine = TransformersEngine(model, processor)
    audio = synthetic_speech(5.0, seed=2)  # no pause, 2.5 windows of the tiny model
    translator = LiveTranslator(engine, "eng", ["deu"], settings=SETTINGS, min_chunk_seconds=0.5)
    events = stream(translator, audio, 0.25)
    spans = [(s["start"], s["end"]) for s in translator.segments]
    assert len(spans) >= 3 and spans[0][0] == 0.0 and spans[-1][1] == 5.0
    assert all(b[0] == a[1] for a, b in zip(spans, spans[1:]))  # contiguous: no audio lost
    assert all(end - start <= translator.window_seconds + 1e-9 for start, end in spans)
    for segment, (start, end) in zip(translator.segments, spans):  # each segment as offline decoding of its span
        expected = offline(engine, audio[round(start * SR):round(end * SR)], ["deu"], SETTINGS)["deu"]
        assert segment["translations"]["deu"] == " ".join(expected["text"].split())
        assert segment["transcript"] == " ".join(expected["transcript"].split())
    check_confirmed_text_never_changes(events, [TRANSCRIPT, "deu"])


@pytest.mark.integration
def test_a_gap_between_words_is_no_pause_but_silence_is_and_noise_is_no_segment(tiny):
    """Segments are the stretches of speech the detector hears, as offline: a 50 ms gap between words does not
    end one, half a second of silence does (the cut lies in it, the padding after the speech), and most of a
    second of noise between two sentences is part of no segment (the detector's probability falls over a few
    frames after speech)."""
    model, processor = tiny
    engine = TransformersEngine(model, processor)

    def spoken(gap: np.ndarray) -> np.ndarray:
        return np.concatenate([synthetic_speech(0.9, seed=5), gap, synthetic_speech(0.6, seed=6)])

    def segments(audio: np.ndarray) -> list:
        translator = LiveTranslator(engine, "eng", ["deu"], settings=SETTINGS, min_chunk_seconds=0.3)
        stream(translator, audio, 0.1)
        return [(s["start"], s["end"]) for s in translator.segments]

    word_gap = spoken(np.zeros(int(0.05 * SR), np.float32))
    assert len(segments(word_gap)) == 1
    silence = spoken(np.zeros(int(0.5 * SR), np.float32))
    (first, second) = segments(silence)
    assert 0.9 < first[1] <= 1.4 and first[1] < second[0]
    noise = np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.01
    (first, second) = segments(spoken(noise))
    assert first[1] <= 1.5 and second[0] >= 1.7  # the noise, 0.9 s to 1.9 s: the most of it in neither


@pytest.mark.integration
def test_the_transcript_is_decoded_once_for_all_targets(tiny):
    model, processor = tiny
    calls = []

    class Counting(TransformersEngine):
        def decode_rows(self, audio, rows, settings=None):
            calls.append("rows")
            return super().decode_rows(audio, rows, settings)

        def decode_shared_transcript(self, audio, src_lang, targets, settings=None):
            calls.append(tuple(targets))
            return super().decode_shared_transcript(audio, src_lang, targets, settings)

    translator = LiveTranslator(Counting(model, processor), "eng", ["deu", "fra", "spa"], settings=SETTINGS)
    stream(translator, synthetic_speech(1.5, seed=1), 0.5)
    assert calls and set(calls) == {("deu", "fra", "spa")}  # one shared-transcript call per decode, no other rows
    assert translator.decodes == len(calls)
    transcript_only = LiveTranslator(Counting(model, processor), "eng", [], settings=SETTINGS)
    calls.clear()
    stream(transcript_only, synthetic_speech(1.5, seed=1), 0.5)
    assert set(calls) == {"rows"}  # ASR alone
    assert transcript_only.segments[0]["translations"] == {}


def test_silence_makes_no_segment_and_bad_chunks_are_refused(tiny):
    model, processor = tiny
    translator = LiveTranslator(TransformersEngine(model, processor), "eng", ["deu"], settings=SETTINGS)
    assert stream(translator, np.zeros(SR * 3, dtype=np.float32), 0.5) == []
    assert translator.segments == [] and translator.decodes == 0
    with pytest.raises(RuntimeError, match="finished"):
        translator.feed(np.zeros(10, dtype=np.float32))
    fresh = LiveTranslator(TransformersEngine(model, processor), "eng", ["deu"], settings=SETTINGS)
    with pytest.raises(ValueError, match="NaN"):
        fresh.feed(np.array([0.0, np.nan], dtype=np.float32))
    with pytest.raises(ValueError, match="window"):
        LiveTranslator(TransformersEngine(model, processor), "eng", ["deu"], window_seconds=60)
    with pytest.raises(ValueError, match="names deu twice"):  # not silently one column fewer
        LiveTranslator(TransformersEngine(model, processor), "eng", ["deu", "German", "de"])


# ------------------------------------------------------------------------------------- a model that says words
@pytest.mark.integration
@pytest.mark.parametrize("chunk_seconds", [0.1, 0.32, 1.1])
def test_two_spoken_lines_with_a_pause_give_two_segments_of_real_words(parrot, chunk_seconds, tmp_path):
    model, processor, clips = parrot
    engine = TransformersEngine(model, processor)
    pause = np.zeros(int(0.5 * SR), dtype=np.float32)
    audio = np.concatenate([clips[0], pause, clips[1]])
    translator = LiveTranslator(engine, "eng", ["deu", "fra"], settings=PARROT_SETTINGS, min_chunk_seconds=0.3)
    events = stream(translator, audio, chunk_seconds)
    assert [s["transcript"] for s in translator.segments] == [text for text, _ in PARROT_LINES]
    for segment, (_, translations) in zip(translator.segments, PARROT_LINES):
        assert segment["translations"] == translations
    # the pause closed the first segment: its speech and padding end before the second line starts
    first_end, second_start = translator.segments[0]["end"], translator.segments[1]["start"]
    assert 1.0 < first_end <= second_start < (len(clips[0]) + len(pause)) / SR
    check_confirmed_text_never_changes(events, [TRANSCRIPT, "deu", "fra"])
    # the whole stream's text, and offline decoding of the same audio (the pipeline cuts at the same pause)
    assert translator.text("deu") == "Ich sehe drei rote Katzen. Zwei blaue Hunde."
    # latency: every word has its delay; later words are confirmed later
    delays = translator.delays["deu"]
    assert len(delays) == len(translator.text("deu").split())
    assert [d[0] for d in delays] == sorted(d[0] for d in delays)
    if chunk_seconds != 0.32:
        return
    # offline: the pipeline on the whole audio (cut at the same pause) gives the same text
    from transformers import pipeline

    folder = tmp_path / "parrot"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    pipe = pipeline("speech-translation", model=str(folder), trust_remote_code=True)
    whole = pipe({"raw": audio, "sampling_rate": SR}, src_lang="eng", tgt_lang=["deu", "fra"],
                 generate_kwargs=PARROT_SETTINGS)
    assert [r["text"] for r in whole] == [translator.text("deu"), translator.text("fra")]
    assert whole[0]["transcript"] == translator.text()


# ---------------------------------------------------------------------------------------------------- llm-srt live
@pytest.mark.integration
def test_cli_live_prints_subtitles_of_a_file_played_faster_than_real_time(parrot, tmp_path):
    import os
    import subprocess
    import sys

    import soundfile

    model, processor, clips = parrot
    folder = tmp_path / "parrot"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    wav = tmp_path / "talk.wav"
    soundfile.write(wav, np.concatenate([clips[0], np.zeros(SR // 2, dtype=np.float32), clips[1]]), SR)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = [sys.executable, "-m", "llm_srt.cli", "live", str(wav), "--model", str(folder), "--src", "eng",
               "--tgt", "deu,fra", "--speed", "4", "--max-new-tokens", "40", "--min-chunk", "0.5"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=root)
    assert result.returncode == 0, result.stderr
    finals = [line.split("] ", 1)[1] for line in result.stdout.splitlines() if line.startswith("[")]
    assert finals == ["eng: I see three red cats.", "eng: Two blue dogs."]
    assert "deu: Ich sehe drei rote Katzen." in result.stdout and "fra: Deux chiens bleus." in result.stdout
    assert result.stdout.index("I see three red cats.") < result.stdout.index("Two blue dogs.")
    # no microphone package here, or no file and no --mic: one clear line, exit status 2
    mic = subprocess.run(command[:4] + ["--mic", "--model", str(folder)], capture_output=True, text=True,
                         timeout=600, cwd=root)
    try:
        import sounddevice  # noqa: F401
    except (ImportError, OSError):
        assert mic.returncode == 2 and "sounddevice" in mic.stderr
    neither = subprocess.run(command[:4] + ["--model", str(folder)], capture_output=True, text=True, timeout=600,
                             cwd=root)
    assert neither.returncode == 2 and "--mic" in neither.stderr


@pytest.mark.integration
def test_live_latency_benchmark_reports_every_direction(tiny_folder, tmp_path):
    import json
    import os
    import sys

    import soundfile

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    from live_latency import main

    data = tmp_path / "data"
    (data / "audio").mkdir(parents=True)
    rows = []
    for n in range(2):
        soundfile.write(data / "audio" / f"{n}.wav", synthetic_speech(1.2, seed=n), SR)
        rows += [{"audio": f"audio/{n}.wav", "src_lang": "eng", "tgt_lang": tgt, "transcript": "I see three red cats.",
                  "translation": text} for tgt, text in (("deu", "Ich sehe drei rote Katzen."),
                                                         ("fra", "Je vois trois chats rouges."))]
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = main(["--model", tiny_folder, "--data_dir", str(data), "--pace", "0", "--max_new_tokens", "6",
                   "--output", str(tmp_path / "live.json")])
    assert set(report["results"]) == {"eng-deu", "eng-fra", "transcript"}
    for row in report["results"].values():
        assert row["clips"] == 2 and row["al_ca"] >= row["al"] >= 0 and row["laal"] >= 0
    assert {"bleu_live", "bleu_offline", "bleu_live_vs_offline"} <= set(report["results"]["eng-deu"])
    assert {"wer_live", "wer_offline", "wer_live_vs_offline"} <= set(report["results"]["transcript"])
    assert json.loads((tmp_path / "live.json").read_text())["clips"] == 2


@pytest.mark.integration
def test_the_spoken_language_is_detected_per_segment_when_not_given(tmp_path):
    from llm_srt.testing import build_tiny_model_and_processor, build_tiny_tokenizer, whisper_hearing

    model, processor = build_tiny_model_and_processor(seed=0, tokenizer=build_tiny_tokenizer())
    whisper_folder = tmp_path / "whisper"
    whisper_hearing(model.config.audio_config, "de").save_pretrained(whisper_folder)  # hears German in any audio
    model.load_language_detector(str(whisper_folder))
    engine = TransformersEngine(model, processor)
    audio = synthetic_speech(3.0, seed=3, pause_every=1.5)
    translator = LiveTranslator(engine, "auto", ["fra"], settings=SETTINGS, min_chunk_seconds=0.5)
    events = stream(translator, audio, 0.3)
    assert len(translator.segments) == 2 and {s["language"] for s in translator.segments} == {"deu"}
    finals = [e for e in events if e.type == "segment_final"]
    assert [e.language for e in finals] == ["deu", "deu"]
    no_detector = LiveTranslator(TransformersEngine(*build_tiny_model_and_processor(
        seed=0, tokenizer=build_tiny_tokenizer())), None, ["fra"], settings=SETTINGS)
    with pytest.raises(ValueError, match="Language detection"):
        stream(no_detector, audio, 1.0)
