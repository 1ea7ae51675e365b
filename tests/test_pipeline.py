import json
import logging
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch
from transformers import pipeline

from llm_srt import SpeechTranslationPipeline
from llm_srt.audio_llm_srt import load_audio
from llm_srt.speech_llm_srt import VadOptions
from llm_srt.transcription_llm_srt import plan_windows
from llm_srt.testing import build_tiny_model_and_processor, synthetic_speech


SR = 16000
GEN = {"num_beams": 1, "max_new_tokens": 6}


@pytest.fixture(scope="module")
def pipe(tiny_folder):
    return pipeline("speech-translation", model=tiny_folder, trust_remote_code=True)


@pytest.fixture(scope="module")
def speech():
    return synthetic_speech(1.3, seed=7)


def run(pipe, audio, **kwargs):
    return pipe(audio, src_lang="eng", tgt_lang="deu", generate_kwargs=GEN, **kwargs)


def test_pipeline_loads_from_folder_with_remote_code(pipe):
    assert type(pipe).__name__ == "SpeechTranslationPipeline"
    assert "transformers_modules" in type(pipe).__module__  # the class saved with the model, not this package's


def test_every_input_form_matches_the_array(pipe, speech, tmp_path):
    expected = run(pipe, speech, sampling_rate=SR)
    assert set(expected) == {"text", "transcript", "src_lang", "tgt_lang", "complete"}
    assert expected["src_lang"] == "eng" and expected["tgt_lang"] == "deu"
    path = tmp_path / "clip.wav"
    soundfile.write(path, speech, SR, subtype="FLOAT")
    stereo = np.stack([speech, speech], axis=1)
    forms = {
        "path": str(path),
        "bytes": path.read_bytes(),
        "dict": {"array": speech, "sampling_rate": SR},
        "datasets path": {"path": str(path), "bytes": None},
        "datasets bytes": {"path": None, "bytes": path.read_bytes()},
        "tensor": torch.from_numpy(speech),
    }
    for name, form in forms.items():
        kwargs = {"sampling_rate": SR} if name == "tensor" else {}
        assert run(pipe, form, **kwargs) == expected, name
    assert run(pipe, stereo, sampling_rate=SR) == expected  # mixed down
    assert run(pipe, stereo.T.copy(), sampling_rate=SR) == expected  # channels first


def test_resampling(pipe, speech):
    import librosa

    at_8k = librosa.resample(speech, orig_sr=SR, target_sr=8000)
    assert np.allclose(load_audio(at_8k, sampling_rate=8000), librosa.resample(at_8k, orig_sr=8000, target_sr=SR))
    result = run(pipe, at_8k, sampling_rate=8000)
    assert result == run(pipe, librosa.resample(at_8k, orig_sr=8000, target_sr=SR), sampling_rate=SR)


@pytest.mark.integration
def test_batch_size_does_not_change_results(pipe):
    clips = [synthetic_speech(0.5 + 0.4 * i, seed=i) for i in range(5)]
    one = pipe(clips, sampling_rate=SR, src_lang="eng", tgt_lang=["deu", "fra"], generate_kwargs=GEN, batch_size=1)
    four = pipe(clips, sampling_rate=SR, src_lang="eng", tgt_lang=["deu", "fra"], generate_kwargs=GEN, batch_size=4)
    assert one == four and len(one) == 5 and all(len(r) == 2 for r in one)


def test_one_to_many_equals_single_calls_and_encodes_once(pipe, speech):
    """With `shared_transcript=False` every target decodes on its own: the results are the single-target calls'."""
    targets = ["deu", "fra", "jpn", "zho"]
    calls = []
    hook = pipe.model.audio_tower.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        many = pipe(speech, sampling_rate=SR, src_lang="eng", tgt_lang=targets, generate_kwargs=GEN,
                    shared_transcript=False)
        assert calls == [1]  # one audio -> the encoder runs once, on one row
        singles = [run_target(pipe, speech, t) for t in targets]
    finally:
        hook.remove()
    assert [r["tgt_lang"] for r in many] == targets
    assert many == singles


def run_target(pipe, audio, target):
    return pipe(audio, sampling_rate=SR, src_lang="eng", tgt_lang=target, generate_kwargs=GEN)


def test_long_audio_is_cut_in_silences_and_joined_in_order(tokenizer):
    """With a long minimum silence (faster-whisper's 2 s) the detector keeps 2 s stretches of speech together and
    cuts them to the 30 s window at their longest silence: 95 s become a few windows, each cut inside a pause, none
    over the window, the speech all kept, one encoder batch; the text joins the windows in order."""
    model, processor = build_tiny_model_and_processor(tokenizer=tokenizer, window_seconds=30)
    pipe = SpeechTranslationPipeline(model=model, processor=processor)
    audio = synthetic_speech(95.0, seed=3, pause_every=2.5)  # 0.5 s of silence every 2.5 s
    vad = VadOptions(min_silence_duration_ms=2000)
    windows = plan_windows(audio, SR, 30.0, vad)
    spans = [(w.start, w.end) for w in windows]
    assert all(w.speech for w in windows) and 4 <= len(spans) <= 6
    assert all(0 < end - start <= 30 * SR for start, end in spans)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))  # in order, never overlapping
    for (_, end), (start, _) in zip(spans, spans[1:]):  # every cut falls in a pause (t mod 2.5 > 2.0)
        assert (end / SR) % 2.5 > 2.0 and (start / SR) % 2.5 > 2.0
    spoken = np.flatnonzero(audio)
    assert all(any(s <= i < e for s, e in spans) for i in spoken[::997])  # no speech left out
    calls = []
    hook = model.audio_tower.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        result = pipe(audio, sampling_rate=SR, src_lang="eng", task="transcribe", return_timestamps=True,
                      generate_kwargs={"num_beams": 1, "max_new_tokens": 3, "min_new_tokens": 3}, batch_size=8,
                      vad_parameters={"min_silence_duration_ms": 2000})
    finally:
        hook.remove()
    assert calls == [len(spans)]  # every window, one batch
    chunks = result["chunks"]
    assert [c["timestamp"] for c in chunks] == [(s / SR, e / SR) for s, e in spans]
    assert result["text"] == " ".join(c["text"].strip() for c in chunks if c["text"].strip())


def test_without_the_detector_every_window_of_the_audio_is_decoded(tokenizer):
    """`vad_filter=False` (faster-whisper's switch): the audio in consecutive windows, silence and all."""
    model, processor = build_tiny_model_and_processor(tokenizer=tokenizer, window_seconds=2)
    pipe = SpeechTranslationPipeline(model=model, processor=processor)
    audio = np.concatenate([np.zeros(3 * SR, np.float32), synthetic_speech(1.0, seed=2)])
    assert [(w.start, w.end) for w in plan_windows(audio, SR, 2.0, None)] == [(0, 2 * SR), (2 * SR, 4 * SR)]
    result = pipe(audio, sampling_rate=SR, src_lang="eng", tgt_lang="deu", return_timestamps=True, vad_filter=False,
                  generate_kwargs={"num_beams": 1, "max_new_tokens": 2, "min_new_tokens": 2})
    assert [c["timestamp"] for c in result["chunks"]] == [(0.0, 2.0), (2.0, 4.0)]
    assert all(c["transcript"] for c in result["chunks"])  # the silent window was decoded too
    detected = pipe(audio, sampling_rate=SR, src_lang="eng", tgt_lang="deu", return_timestamps=True,
                    generate_kwargs={"num_beams": 1, "max_new_tokens": 2, "min_new_tokens": 2})
    (chunk,) = detected["chunks"]  # only the speech, with its own times
    assert 2.6 <= chunk["timestamp"][0] <= 3.0 and chunk["timestamp"][1] == 4.0
    for kwargs, message in (({"vad_filter": "yes"}, "vad_filter must be True or False"),
                            ({"vad_filter": False, "vad_parameters": {"threshold": 0.4}}, "turns off"),
                            ({"vad_parameters": {"threshold": 1.5}}, "VAD threshold must be a number between 0"),
                            ({"vad_parameters": {"min_silence": 100}}, "Unknown VAD parameter.*min_silence"),
                            ({"vad_parameters": {"speech_pad_ms": -1}}, "speech_pad_ms"),
                            ({"vad_parameters": "strict"}, "vad_parameters must be a dict")):
        with pytest.raises(ValueError, match=message):
            pipe(audio, sampling_rate=SR, src_lang="eng", tgt_lang="deu", **kwargs)


def test_silent_audio_returns_empty_without_running_the_llm(pipe, caplog):
    calls = []
    original = pipe.model.generate
    pipe.model.generate = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        with caplog.at_level(logging.WARNING):
            result = pipe(np.zeros(SR, dtype=np.float32), sampling_rate=SR, src_lang="eng", tgt_lang="deu")
    finally:
        del pipe.model.generate
    assert result == {"text": "", "transcript": "", "src_lang": "eng", "tgt_lang": "deu", "complete": True}
    assert calls == [] and "no speech" in caplog.text


@pytest.mark.parametrize(
    "make_input, kwargs, error, message",
    [
        (lambda tmp: str(tmp / "missing.wav"), {}, FileNotFoundError, "missing.wav"),
        (lambda tmp: _write(tmp / "corrupt.wav", b"RIFF not really a wave file"), {}, ValueError, "corrupt.wav: cannot decode"),
        (lambda tmp: _write(tmp / "empty.wav", b""), {}, ValueError, "empty.wav"),
        (lambda tmp: np.ones(1600, dtype=np.float32) * 0.1, {}, ValueError, "sampling_rate is required"),
        (lambda tmp: np.ones(1600, dtype=np.float32) * 0.1, {"sampling_rate": 0}, ValueError, "got 0"),
        (lambda tmp: np.full(1600, np.nan, dtype=np.float32), {"sampling_rate": SR}, ValueError, "NaN"),
        (lambda tmp: np.zeros(0, dtype=np.float32), {"sampling_rate": SR}, ValueError, "empty"),
    ],
)
def test_bad_inputs_raise_naming_the_input(pipe, tmp_path, make_input, kwargs, error, message):
    with pytest.raises(error, match=message):
        pipe(make_input(tmp_path), src_lang="eng", tgt_lang="deu", **kwargs)


def test_bad_input_in_a_list_is_named_by_index(pipe, speech, tmp_path):
    with pytest.raises(FileNotFoundError, match="input 1 .*nope.wav"):
        pipe([speech, str(tmp_path / "nope.wav")], sampling_rate=SR, src_lang="eng", tgt_lang="deu",
             generate_kwargs=GEN)


def test_unknown_language_lists_codes(pipe, speech):
    with pytest.raises(ValueError, match="Unsupported language 'xyz'.*deu \\(German\\).*zho"):
        pipe(speech, sampling_rate=SR, src_lang="eng", tgt_lang=["deu", "xyz"])
    with pytest.raises(ValueError, match="load_language_detector.*src_lang"):  # no src_lang: detection, unavailable
        pipe(speech, sampling_rate=SR, tgt_lang="deu")


def _write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


@pytest.mark.integration
def test_cli_writes_a_line_per_file_and_target_and_reports_bad_files(tiny_folder, tmp_path):
    files = []
    for i in range(2):
        files.append(str(tmp_path / f"clip{i}.wav"))
        soundfile.write(files[-1], synthetic_speech(0.8, seed=i), SR)
    bad = _write(tmp_path / "bad.wav", b"garbage")
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "llm_srt.cli", "translate", files[0], bad, files[1], "--model", tiny_folder,
           "--src", "eng", "--tgt", "deu,fra", "--beams", "1", "--max-new-tokens", "4", "--output", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert f"{bad}: cannot decode" in result.stderr and "1 of 3 files failed" in result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["file"], r["tgt_lang"]) for r in rows] == [(f, t) for f in files for t in ("deu", "fra")]
    assert all({"text", "transcript", "src_lang"} <= set(r) for r in rows)


@pytest.mark.integration
def test_cli_missing_file_and_bad_language(tiny_folder, tmp_path):
    cmd = [sys.executable, "-m", "llm_srt.cli", "translate", str(tmp_path / "none.wav"), "--model", tiny_folder,
           "--src", "eng", "--tgt", "deu"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode in (1, 2) and "audio file not found" in result.stderr.lower()
    assert "none.wav" in result.stderr
    cmd[-1] = "klingon"
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Unsupported language 'klingon'" in result.stderr


def test_cli_languages():
    result = subprocess.run([sys.executable, "-m", "llm_srt.cli", "languages"], capture_output=True, text=True)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert sum(1 for line in lines[1:16] if line[:3].isalpha()) == 15 and "yue" in result.stdout


# ------------------------------------------------------------------------------------- iteration over datasets
@pytest.fixture(scope="module")
def varied_clips():
    """Clips of different lengths (one spans two 2 s windows, one is silent), so order mistakes show in spans."""
    return [synthetic_speech(0.6, seed=1), synthetic_speech(3.5, seed=2, pause_every=1.2),
            np.zeros(SR // 2, dtype=np.float32), synthetic_speech(0.9, seed=3), synthetic_speech(1.2, seed=4)]


def iterate(pipe, inputs, **kwargs):
    return pipe(inputs, src_lang="eng", tgt_lang="deu", generate_kwargs=GEN, return_timestamps=True, **kwargs)


@pytest.mark.integration
def test_lists_generators_keydatasets_columns_and_rows_match_one_by_one_calls(pipe, varied_clips):
    import datasets
    from transformers.pipelines.pt_utils import KeyDataset

    expected = [iterate(pipe, {"array": clip, "sampling_rate": SR}) for clip in varied_clips]
    assert len({tuple(r["chunks"][-1]["timestamp"]) for r in expected}) == len(varied_clips)  # all distinguishable
    assert len(expected[1]["chunks"]) > 1 and expected[2]["text"] == ""
    ds = datasets.Dataset.from_dict({"audio": [{"array": c.tolist(), "sampling_rate": SR} for c in varied_clips]})
    forms = {
        "list": lambda: [{"array": c, "sampling_rate": SR} for c in varied_clips],
        "generator": lambda: ({"array": c, "sampling_rate": SR} for c in varied_clips),
        "KeyDataset": lambda: KeyDataset(ds, "audio"),
        "column": lambda: ds["audio"],
        "dataset rows": lambda: ds,
    }
    for batch_size, num_workers in [(1, 0), (4, 0), (1, 2), (4, 2)]:
        for name, make in forms.items():
            if num_workers and name in ("column", "dataset rows") or (batch_size, num_workers, name) == (1, 2, "list"):
                continue  # the same map-style path as KeyDataset
            result = iterate(pipe, make(), batch_size=batch_size, num_workers=num_workers)
            assert isinstance(result, list) == (name == "list"), name
            assert list(result) == expected, (name, batch_size, num_workers)


def test_generator_is_consumed_lazily(pipe, varied_clips):
    pulled = []

    def clips():
        for index, clip in enumerate(varied_clips):
            pulled.append(index)
            yield {"array": clip, "sampling_rate": SR}

    results = iterate(pipe, clips(), batch_size=1)
    assert len(pulled) <= 1  # the base class peeks at a generator's first item; nothing more is read
    first = next(iter(results))
    assert first == iterate(pipe, {"array": varied_clips[0], "sampling_rate": SR})
    assert len(pulled) < len(varied_clips)  # the first result came before the generator was exhausted


def test_errors_in_an_iterable_name_the_input(pipe, varied_clips, tmp_path):
    stream = iterate(pipe, (x for x in [varied_clips[0], str(tmp_path / "gone.wav")]), sampling_rate=SR)
    with pytest.raises(FileNotFoundError, match="input 1 .*gone.wav"):
        list(stream)
    assert pipe([], src_lang="eng", tgt_lang="deu") == []


def test_windows_of_an_input_split_across_batches_are_joined(pipe, varied_clips):
    long = varied_clips[1]
    whole = iterate(pipe, long, sampling_rate=SR, batch_size=8)
    split = iterate(pipe, [varied_clips[0], long], sampling_rate=SR, batch_size=2)  # windows 0 | 1 in two batches
    assert split[1] == whole


class TokenCollector:
    def __init__(self):
        self.chunks, self.ended = [], False

    def put(self, value):
        self.chunks.append(value.tolist())

    def end(self):
        self.ended = True


def test_streamer_receives_greedy_tokens_of_a_single_target(pipe, speech):
    streamer = TokenCollector()
    gen = {"num_beams": 1, "max_new_tokens": 5, "min_new_tokens": 5}
    streamed = pipe(speech, sampling_rate=SR, src_lang="eng", tgt_lang="deu", generate_kwargs=gen, streamer=streamer)
    assert streamed == pipe(speech, sampling_rate=SR, src_lang="eng", tgt_lang="deu", generate_kwargs=gen)
    assert streamer.ended and len(streamer.chunks) >= 5  # the prompt once, then one chunk per new token
    with pytest.raises(ValueError, match="streamer"):
        pipe(speech, sampling_rate=SR, src_lang="eng", tgt_lang=["deu", "fra"], generate_kwargs=gen,
             streamer=TokenCollector())
    with pytest.raises(ValueError, match="streamer"):
        pipe(speech, sampling_rate=SR, src_lang="eng", tgt_lang="deu", streamer=TokenCollector())  # beam 5


# ------------------------------------------------------------------------------------------ src_lang="auto"
def force_language(detector, code):
    """Make a detector hear `code` whatever the audio: the final layer norm outputs a fixed vector, and only the
    output row of `code` points along it."""
    with torch.no_grad():
        direction = torch.zeros_like(detector.decoder.layer_norm.bias)
        direction[0] = 1.0
        detector.decoder.layer_norm.weight.zero_()
        detector.decoder.layer_norm.bias.copy_(direction)
        detector.proj_out.weight.zero_()
        detector.proj_out.weight[detector.languages.index(code)] = 12.0 * direction


@pytest.fixture(scope="module")
def whisper_folder(tiny, tmp_path_factory):
    """A tiny random Whisper with the tiny model's encoder shape, its decoder made to hear German."""
    from llm_srt.testing import whisper_hearing

    model, _ = tiny
    whisper = whisper_hearing(model.config.audio_config, "de")
    folder = tmp_path_factory.mktemp("tiny_whisper")
    whisper.save_pretrained(folder)
    return str(folder)


@pytest.fixture
def auto_pipe(tokenizer, whisper_folder):
    model, processor = build_tiny_model_and_processor(seed=0, tokenizer=tokenizer)
    model.config.audio_model_name_or_path = whisper_folder
    return SpeechTranslationPipeline(model=model, processor=processor)


def test_auto_detects_the_language_from_the_whisper_checkpoint(auto_pipe, speech, caplog):
    from transformers.utils import logging as hf_logging

    assert not auto_pipe.model.has_language_detector  # loaded on first use
    hf_logging.set_verbosity_info()
    try:
        with caplog.at_level(logging.INFO):
            result = auto_pipe(speech, sampling_rate=SR, tgt_lang="fra", generate_kwargs=GEN)  # src_lang=None
    finally:
        hf_logging.set_verbosity_warning()
    assert result["src_lang"] == "deu" and result["language_probability"] > 0.9
    assert "Detected source language: deu" in caplog.text
    explicit = auto_pipe(speech, sampling_rate=SR, src_lang="deu", tgt_lang="fra", generate_kwargs=GEN)
    assert {k: v for k, v in result.items() if k != "language_probability"} == explicit
    detector = auto_pipe.model.get_language_detector()
    for whisper_code, ours in [("ja", "jpn"), ("zh", "zho"), ("yue", "yue"), ("en", "eng")]:
        force_language(detector, whisper_code)
        result = auto_pipe(speech, sampling_rate=SR, src_lang="auto", tgt_lang="fra", generate_kwargs=GEN)
        assert result["src_lang"] == ours
    features = auto_pipe.processor.extract_features([speech], SR)
    (detection,) = auto_pipe.model.detect_language(features)
    assert detection["language"] == "eng" and detection["supported"]
    assert list(detection["probabilities"])[0] == "eng" and len(detection["probabilities"]) == 15
    (restricted,) = auto_pipe.model.detect_language(features, languages=["deu", "French"])
    assert set(restricted["probabilities"]) == {"deu", "fra"}
    # the processor accepts "auto": features only, then the prompt with the detected language
    inputs = auto_pipe.processor(speech, sampling_rate=SR, src_lang="auto", tgt_lang="fra")
    assert set(inputs) == {"input_features"} and torch.equal(inputs["input_features"], features)
    languages = [d["language"] for d in auto_pipe.model.detect_language(inputs["input_features"])]
    inputs = auto_pipe.processor(speech, sampling_rate=SR, src_lang=languages, tgt_lang="fra")
    assert auto_pipe.processor.tag("eng") in auto_pipe.processor.decode(inputs["input_ids"][0])


def test_auto_runs_the_encoder_once_per_window(auto_pipe, varied_clips):
    auto_pipe.model.get_language_detector()
    calls = []
    hook = auto_pipe.model.audio_tower.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        results = auto_pipe(varied_clips, sampling_rate=SR, src_lang="auto", tgt_lang=["fra", "eng"],
                            generate_kwargs=GEN, batch_size=8, return_timestamps=True)
    finally:
        hook.remove()
    assert calls == [6]  # 3 + 1 + 1 + 1 spoken windows (the silent clip is skipped), one batch, one encoder pass
    assert [r[0]["src_lang"] for r in results] == ["deu", "deu", None, "deu", "deu"]
    assert results[2][0]["text"] == "" and results[2][0]["language_probability"] is None


def test_auto_vote_over_windows_in_several_batches(auto_pipe, varied_clips):
    long = varied_clips[1]
    together = auto_pipe(long, sampling_rate=SR, tgt_lang="fra", generate_kwargs=GEN, batch_size=8)
    apart = auto_pipe([varied_clips[0], long], sampling_rate=SR, tgt_lang="fra", generate_kwargs=GEN, batch_size=2)
    assert apart[1] == together and together["src_lang"] == "deu"
    from llm_srt.decoding_llm_srt import vote_language as vote
    detections = [{"language": lang, "probabilities": {lang: p, "eng": 1 - p}, "supported": True,
                   "whisper_language": lang, "whisper_probability": p}
                  for lang, p in [("deu", 0.6), ("eng", 0.9), ("deu", 0.7)]]
    detections[1]["probabilities"] = {"eng": 0.9, "deu": 0.1}
    assert vote(detections)["language"] == "deu"  # two windows of three
    assert vote(detections)["probability"] == pytest.approx((0.6 + 0.1 + 0.7) / 3)


def test_auto_with_a_language_llm_srt_does_not_support(auto_pipe, speech, caplog):
    detector = auto_pipe.model.get_language_detector()
    force_language(detector, "hi")
    with caplog.at_level(logging.WARNING):
        result = auto_pipe(speech, sampling_rate=SR, tgt_lang="fra", generate_kwargs=GEN)
    assert "Whisper hears Hindi (hi), which LLM-SRT does not support" in caplog.text
    assert result["src_lang"] in {"deu", "eng", "fra", "ind", "ita", "jpn", "kor", "nld", "por", "rus", "spa",
                                  "tha", "vie", "yue", "zho"}
    with pytest.raises(ValueError, match="Whisper hears Hindi.*pass src_lang="):
        auto_pipe(speech, sampling_rate=SR, tgt_lang="fra", generate_kwargs=GEN, unsupported_language="error")
    with pytest.raises(ValueError, match="Unsupported language 'xyz'"):
        auto_pipe.model.detect_language(auto_pipe.processor.extract_features([speech], SR), languages=["xyz"])


def test_detection_unavailable_says_how_to_enable_it(tokenizer, speech, tmp_path):
    from llm_srt.language_detection_llm_srt import LanguageDetectionUnavailable

    model, processor = build_tiny_model_and_processor(seed=0, tokenizer=tokenizer)
    pipe = SpeechTranslationPipeline(model=model, processor=processor)
    with pytest.raises(LanguageDetectionUnavailable, match="load_language_detector.*save_with_model.*src_lang="):
        pipe(speech, sampling_rate=SR, src_lang="auto", tgt_lang="deu")
    model.config.audio_model_name_or_path = str(tmp_path / "no_whisper_here")
    with pytest.raises(LanguageDetectionUnavailable, match="Cannot load Whisper's decoder .*no_whisper_here"):
        pipe(speech, sampling_rate=SR, src_lang="auto", tgt_lang="deu")


@pytest.mark.integration
def test_detector_saved_with_the_model_loads_as_remote_code(tokenizer, whisper_folder, speech, tmp_path):
    import shutil

    model, processor = build_tiny_model_and_processor(seed=0, tokenizer=tokenizer)
    copy = shutil.copytree(whisper_folder, tmp_path / "whisper")
    model.load_language_detector(str(copy), save_with_model=True)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    shutil.rmtree(copy)  # the saved model needs no Whisper checkpoint any more
    assert (tmp_path / "model" / "language_detection_llm_srt.py").exists()
    loaded = pipeline("speech-translation", model=str(tmp_path / "model"), trust_remote_code=True)
    assert "transformers_modules" in type(loaded).__module__
    assert loaded.model.has_language_detector
    result = loaded(speech, sampling_rate=SR, src_lang="auto", tgt_lang="fra", generate_kwargs=GEN)
    assert result["src_lang"] == "deu"
    clip = tmp_path / "talk.wav"
    soundfile.write(clip, speech, SR)
    cmd = [sys.executable, "-m", "llm_srt.cli", "translate", str(clip), "--model", str(tmp_path / "model"),
           "--tgt", "fra", "--beams", "1", "--max-new-tokens", "4"]  # no --src: detected
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    (row,) = [json.loads(line) for line in run.stdout.splitlines()]
    assert row["src_lang"] == "deu" and row["tgt_lang"] == "fra" and row["language_probability"] > 0.9


def test_shared_transcript_must_be_a_bool(pipe, speech):
    """`shared_transcript="no"` is refused rather than read as true (the transcript shared)."""
    with pytest.raises(ValueError, match="shared_transcript must be True or False"):
        pipe(speech, sampling_rate=SR, src_lang="eng", tgt_lang=["deu", "fra"], generate_kwargs=GEN,
             shared_transcript="no")


def sentences_with_pauses(lengths, pauses, seed=11):
    """Speech-like 'sentences' of `lengths` seconds separated by silent `pauses` (seconds); returns the audio and
    each sentence's (start, end) in samples."""
    parts, spans, at = [], [], 0
    for i, seconds in enumerate(lengths):
        sentence = synthetic_speech(seconds, seed=seed + i)
        parts.append(sentence)
        spans.append((at, at + len(sentence)))
        at += len(sentence)
        if i < len(pauses):
            parts.append(np.zeros(int(pauses[i] * SR), dtype=np.float32))
            at += int(pauses[i] * SR)
    return np.concatenate(parts), spans


@pytest.mark.parametrize("pauses", [(0.4, 0.6, 0.5), (1.0, 0.45, 2.0), (0.5, 0.5, 0.5)])
def test_every_sentence_gets_a_window_of_its_own(pauses):
    """A window holding two sentences came back with one (the models learn one utterance per clip): every pause
    between sentences ends a window, even where the audio would fit one, and no sentence is cut; the silence
    around them is no window."""
    audio, sentences = sentences_with_pauses([1.0, 1.1, 1.2, 0.9], pauses)
    spans = [(w.start, w.end) for w in plan_windows(audio, SR, 3.0)]
    assert all(0 < end - start <= 3 * SR for start, end in spans)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    holders = [[w for w, (start, end) in enumerate(spans) if start <= s and e <= end] for s, e in sentences]
    assert all(len(h) == 1 for h in holders), holders  # no sentence straddles a cut
    assert len({h[0] for h in holders}) == len(sentences) == len(spans)  # no window holds two sentences


def test_a_long_sentence_is_still_cut_to_the_window():
    audio, sentences = sentences_with_pauses([7.0, 1.0], [0.5])
    spans = [(w.start, w.end) for w in plan_windows(audio, SR, 3.0)]
    assert all(0 < end - start <= 3 * SR for start, end in spans) and len(spans) >= 4
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    assert spans[0][0] <= sentences[0][0] and spans[-1][1] >= sentences[-1][1]


def test_pipeline_decodes_every_sentence_window(tokenizer):
    model, processor = build_tiny_model_and_processor(tokenizer=tokenizer, window_seconds=3)
    pipe = SpeechTranslationPipeline(model=model, processor=processor)
    audio, sentences = sentences_with_pauses([0.8, 0.9, 1.0], (0.5, 0.6))
    result = pipe(audio, sampling_rate=SR, src_lang="eng", tgt_lang="deu", return_timestamps=True,
                  generate_kwargs={"num_beams": 1, "max_new_tokens": 3, "min_new_tokens": 3})
    chunks = result["chunks"]
    assert len(chunks) == 3 and all(c["transcript"].strip() for c in chunks)  # each window decoded
    for (start, end), chunk in zip(sentences, chunks):
        assert chunk["timestamp"][0] <= start / SR and end / SR <= chunk["timestamp"][1]
    joined = pipe(audio, sampling_rate=SR, src_lang="eng", tgt_lang="deu", return_timestamps=True,
                  vad_parameters={"min_silence_duration_ms": 2000},
                  generate_kwargs={"num_beams": 1, "max_new_tokens": 3})
    assert len(joined["chunks"]) == 2  # a long minimum silence cuts only where the 3 s window requires


def test_an_undecoded_datasets_audio_column_needs_no_torchcodec(pipe, tmp_path):
    """`Audio(decode=False)` rows ({"bytes", "path"}) are decoded by the pipeline itself (soundfile), so a CPU
    machine without torchcodec reads a `datasets` corpus: column, rows and KeyDataset all give the array's result."""
    datasets = pytest.importorskip("datasets")
    from transformers.pipelines.pt_utils import KeyDataset

    clips = [synthetic_speech(0.6 + 0.2 * i, seed=30 + i) for i in range(3)]
    paths = []
    for i, clip in enumerate(clips):
        paths.append(str(tmp_path / f"c{i}.wav"))
        soundfile.write(paths[-1], clip, SR, subtype="FLOAT")
    ds = datasets.Dataset.from_dict({"audio": paths}).cast_column("audio", datasets.Audio(decode=False))
    assert set(ds[0]["audio"]) == {"bytes", "path"}  # undecoded: nothing needed torchcodec
    expected = [run(pipe, clip, sampling_rate=SR) for clip in clips]
    assert list(run(pipe, ds["audio"])) == expected
    assert list(run(pipe, ds)) == expected
    assert list(run(pipe, KeyDataset(ds, "audio"))) == expected
    embedded = datasets.Dataset.from_dict({"audio": [{"bytes": open(p, "rb").read(), "path": None} for p in paths]})
    embedded = embedded.cast_column("audio", datasets.Audio(decode=False))
    assert list(run(pipe, embedded["audio"])) == expected  # bytes only, as a Parquet corpus holds them


def test_a_target_equal_to_the_spoken_language_is_the_transcript(auto_pipe, speech, caplog):
    """Translating German audio into German (or English into English): the models never learned SRT into the
    source's own language, and the transcript of that answer came back wrong. The answer is the transcript (an ASR
    decode), with a given or a detected language, alone or among other targets, as llm-srt serve and live decoding
    answer it; a logged note, not an error."""
    asr = auto_pipe(speech, sampling_rate=SR, src_lang="deu", task="transcribe", generate_kwargs=GEN)
    with caplog.at_level(logging.WARNING):
        same = auto_pipe(speech, sampling_rate=SR, src_lang="deu", tgt_lang="German", generate_kwargs=GEN)
    assert "deu is the spoken language: its answer is the transcript" in caplog.text
    assert same["text"] == same["transcript"] == asr["text"] != "" and same["tgt_lang"] == "deu"
    several = auto_pipe(speech, sampling_rate=SR, src_lang="deu", tgt_lang=["fra", "deu"], generate_kwargs=GEN)
    assert several[1]["text"] == asr["text"]
    assert several[0] == auto_pipe(speech, sampling_rate=SR, src_lang="deu", tgt_lang="fra", generate_kwargs=GEN)
    # "everything into German" with the language detected (the detector hears German): the transcript again
    detected = auto_pipe([speech, speech], sampling_rate=SR, tgt_lang="deu", generate_kwargs=GEN)
    assert [(r["src_lang"], r["text"], r["transcript"]) for r in detected] == [("deu", asr["text"], asr["text"])] * 2


def test_the_seam_decodes_a_translation_into_the_spoken_language_as_asr(tiny):
    """`as_decoded`, the one rule: every caller of `decode_window_rows` (pipeline, server, live) and evaluation."""
    from llm_srt.decoding_llm_srt import DecodeRow, TransformersEngine, as_decoded, decode_window_rows

    assert as_decoded(DecodeRow(0, "srt", "eng", "en")) == DecodeRow(0, "asr", "eng")
    assert as_decoded(DecodeRow(0, "srt", "eng", "deu")) == DecodeRow(0, "srt", "eng", "deu")
    engine = TransformersEngine(*tiny)
    handles, _ = engine.encode([synthetic_speech(0.9, seed=3)])
    asr, = decode_window_rows(engine, handles, [[DecodeRow(0, "asr", "eng")]], GEN)[0]
    rows = [DecodeRow(0, "srt", "eng", "deu"), DecodeRow(0, "srt", "eng", "eng"), DecodeRow(0, "srt", "eng", "fra")]
    mixed = decode_window_rows(engine, handles, [rows], GEN)[0]
    shared = decode_window_rows(engine, handles, [[rows[0], rows[2]]], GEN)[0]
    assert mixed[1] == asr and mixed[1]["text"] == asr["transcript"]
    assert [mixed[0], mixed[2]] == shared  # the other targets still share their transcript
