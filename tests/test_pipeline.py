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
from llm_srt.audio_llm_srt import load_audio, split_on_silence
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
    assert set(expected) == {"text", "transcript", "src_lang", "tgt_lang"}
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


def test_batch_size_does_not_change_results(pipe):
    clips = [synthetic_speech(0.5 + 0.4 * i, seed=i) for i in range(5)]
    one = pipe(clips, sampling_rate=SR, src_lang="eng", tgt_lang=["deu", "fra"], generate_kwargs=GEN, batch_size=1)
    four = pipe(clips, sampling_rate=SR, src_lang="eng", tgt_lang=["deu", "fra"], generate_kwargs=GEN, batch_size=4)
    assert one == four and len(one) == 5 and all(len(r) == 2 for r in one)


def test_one_to_many_equals_single_calls_and_encodes_once(pipe, speech):
    targets = ["deu", "fra", "jpn", "zho"]
    calls = []
    hook = pipe.model.audio_tower.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        many = pipe(speech, sampling_rate=SR, src_lang="eng", tgt_lang=targets, generate_kwargs=GEN)
        assert calls == [1]  # one audio -> the encoder runs once, on one row
        singles = [run_target(pipe, speech, t) for t in targets]
    finally:
        hook.remove()
    assert [r["tgt_lang"] for r in many] == targets
    assert many == singles


def run_target(pipe, audio, target):
    return pipe(audio, sampling_rate=SR, src_lang="eng", tgt_lang=target, generate_kwargs=GEN)


def test_long_audio_is_split_at_pauses_and_joined_in_order(tokenizer):
    model, processor = build_tiny_model_and_processor(tokenizer=tokenizer, window_seconds=30)
    pipe = SpeechTranslationPipeline(model=model, processor=processor)
    audio = synthetic_speech(95.0, seed=3, pause_every=2.5)
    spans = split_on_silence(audio, SR, 30.0)
    assert spans[0][0] == 0 and spans[-1][1] == len(audio)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # contiguous: nothing dropped or repeated
    assert all(0 < end - start <= 30 * SR for start, end in spans) and len(spans) == 4
    for _, cut in spans[:-1]:  # every cut falls inside a pause (t mod 2.5 > 2.2)
        assert (cut / SR) % 2.5 > 2.2
    calls = []
    hook = model.audio_tower.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        result = pipe(audio, sampling_rate=SR, src_lang="eng", task="transcribe", return_timestamps=True,
                      generate_kwargs={"num_beams": 1, "max_new_tokens": 3, "min_new_tokens": 3}, batch_size=8)
    finally:
        hook.remove()
    assert calls == [4]  # the four windows, one batch
    chunks = result["chunks"]
    assert [c["timestamp"] for c in chunks] == [(s / SR, e / SR) for s, e in spans]
    assert result["text"] == " ".join(c["text"].strip() for c in chunks if c["text"].strip())


def test_silent_audio_returns_empty_without_running_the_llm(pipe, caplog):
    calls = []
    original = pipe.model.generate
    pipe.model.generate = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        with caplog.at_level(logging.WARNING):
            result = pipe(np.zeros(SR, dtype=np.float32), sampling_rate=SR, src_lang="eng", tgt_lang="deu")
    finally:
        del pipe.model.generate
    assert result == {"text": "", "transcript": "", "src_lang": "eng", "tgt_lang": "deu"}
    assert calls == [] and "silent" in caplog.text


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
        pipe([speech, str(tmp_path / "nope.wav")], sampling_rate=SR, src_lang="eng", tgt_lang="deu")


def test_unknown_language_lists_codes(pipe, speech):
    with pytest.raises(ValueError, match="Unsupported language 'xyz'.*deu \\(German\\).*zho"):
        pipe(speech, sampling_rate=SR, src_lang="eng", tgt_lang=["deu", "xyz"])
    with pytest.raises(ValueError, match="src_lang"):
        pipe(speech, sampling_rate=SR, tgt_lang="deu")


def _write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


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


def test_cli_missing_file_and_bad_language(tiny_folder, tmp_path):
    cmd = [sys.executable, "-m", "llm_srt.cli", "translate", str(tmp_path / "none.wav"), "--model", tiny_folder,
           "--src", "eng", "--tgt", "deu"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Audio file not found" in result.stderr and "none.wav" in result.stderr
    cmd[-1] = "klingon"
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Unsupported language 'klingon'" in result.stderr


def test_cli_languages():
    result = subprocess.run([sys.executable, "-m", "llm_srt.cli", "languages"], capture_output=True, text=True)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert sum(1 for line in lines[1:16] if line[:3].isalpha()) == 15 and "yue" in result.stdout
