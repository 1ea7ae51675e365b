"""One way to decode: the pipeline, `llm-srt translate` and `llm-srt serve` give the same answers for the same audio
and settings (they all decode through `generation_llm_srt`), including the detected language and the shared
transcript of several targets, on multi-window audio."""

import json
import os
import subprocess
import sys

import pytest
import soundfile
import torch
from transformers import pipeline

from llm_srt.decoding_llm_srt import DecodeRow, TransformersEngine, decode_window_rows, decode_windows
from llm_srt.testing import SAMPLING_RATE as SR
from llm_srt.testing import attach_detector_hearing, build_tiny_model_and_processor, save_model, synthetic_speech


pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
TARGETS = ["fra", "jpn", "spa"]  # not the spoken German: the server answers that with a transcription
SETTINGS = {"num_beams": 1, "max_new_tokens": 8}


@pytest.fixture(scope="module")
def folder_with_detector(tokenizer, tmp_path_factory):
    """A tiny model saved with a Whisper language detector whose decoder hears German in any audio."""
    model, processor = build_tiny_model_and_processor(seed=0, tokenizer=tokenizer)
    attach_detector_hearing(model, "de", tmp_path_factory.mktemp("whisper"))
    return save_model(model, processor, tmp_path_factory.mktemp("tiny_with_detector"))


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory, folder_with_detector):
    audio = synthetic_speech(5.0, seed=2, pause_every=1.2)  # several of the tiny model's 2 s windows
    path = tmp_path_factory.mktemp("audio") / "talk.wav"
    soundfile.write(path, audio, SR, subtype="FLOAT")
    return str(path)


@pytest.mark.integration
def test_pipeline_cli_and_server_give_the_same_answers(folder_with_detector, long_wav, tmp_path):
    from llm_srt.serving import create_app
    from llm_srt.testing import ServerThread

    pipe = pipeline("speech-translation", model=folder_with_detector, trust_remote_code=True)
    from_pipeline = pipe(long_wav, tgt_lang=TARGETS, return_timestamps=True, generate_kwargs=SETTINGS)
    assert len(from_pipeline[0]["chunks"]) > 1  # the audio really is cut into several windows
    assert [r["src_lang"] for r in from_pipeline] == ["deu"] * 3  # detected (the detector hears German)

    out = tmp_path / "out.jsonl"
    cli = subprocess.run([sys.executable, "-m", "llm_srt.cli", "translate", long_wav, "--model", folder_with_detector,
                          "--tgt", ",".join(TARGETS), "--beams", "1", "--max-new-tokens", "8", "--output", str(out)],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert cli.returncode == 0, cli.stderr
    from_cli = [json.loads(line) for line in out.read_text().splitlines()]

    app = create_app(folder_with_detector, max_new_tokens=8, num_beams=1)
    with ServerThread(app) as running:
        client = openai.OpenAI(base_url=running.url + "/v1", api_key="unused", max_retries=0)
        with open(long_wav, "rb") as audio:
            # `model` given as the path on the command line (vLLM's default served name) is accepted too
            served = client.audio.translations.create(model=folder_with_detector, file=audio,
                                                      extra_body={"target_language": ",".join(TARGETS)})
    from_server = served.to_dict()["translations"]

    for target, p, c, s in zip(TARGETS, from_pipeline, from_cli, from_server):
        assert p["tgt_lang"] == c["tgt_lang"] == s["target_language"] == target
        assert p["src_lang"] == c["src_lang"] == s["language"] == "deu"
        assert p["transcript"] == c["transcript"] == s["transcript"]
        assert p["text"] == c["text"] == s["text"]
    assert len({r["transcript"] for r in from_pipeline}) == 1  # one transcript shared by the targets


class _RecordingEngine(TransformersEngine):
    """Counts what reaches the engine."""

    def __init__(self, *args):
        super().__init__(*args)
        self.calls = []

    def decode_rows(self, audio, rows, settings=None):
        self.calls.append(("rows", len(rows)))
        return super().decode_rows(audio, rows, settings)

    def decode_shared_transcript(self, audio, src_lang, targets, settings=None):
        self.calls.append(("shared", len(audio), tuple(targets)))
        return super().decode_shared_transcript(audio, src_lang, targets, settings)


def test_the_seam_shares_transcripts_and_batches_the_rest(tiny):
    model, processor = tiny
    engine = _RecordingEngine(model, processor)
    windows = [synthetic_speech(0.8 + 0.3 * i, seed=i) for i in range(3)]
    audio, detections = engine.encode(windows)
    assert detections is None and len(audio) == 3
    rows = [
        [DecodeRow(0, "srt", "eng", "deu"), DecodeRow(0, "srt", "eng", "fra")],  # shared transcript
        [DecodeRow(1, "asr", "eng")],
        [DecodeRow(2, "srt", "eng", "deu"), DecodeRow(2, "srt", "eng", "fra")],  # same source and targets: together
    ]
    answers = decode_window_rows(engine, audio, rows, SETTINGS)
    assert engine.calls == [("shared", 2, ("deu", "fra")), ("rows", 1)]
    assert [len(a) for a in answers] == [2, 1, 2]
    for answer in (a for window in answers for a in window):
        assert set(answer) == {"text", "transcript", "translation", "raw", "well_formed", "complete", "token_ids"}
        assert isinstance(answer["complete"], bool) and isinstance(answer["text"], str)
    asr = answers[1][0]  # decoded from its prompt: the budget counts all its tokens
    assert asr["complete"] == (len(asr["token_ids"]) < SETTINGS["max_new_tokens"])
    # independent decoding of the same rows: one batch, and answers equal to decode_windows' per-task calls
    engine.calls.clear()
    alone = decode_window_rows(engine, audio, rows, SETTINGS, shared_transcript=False)
    assert engine.calls == [("rows", 5)]
    by_windows = decode_windows(engine, [audio[0], audio[2]], ["eng", "eng"], "srt", ["deu", "fra"], SETTINGS,
                                shared_transcript=False)
    assert [alone[0][0], alone[0][1]] == [by_windows[0]["deu"], by_windows[0]["fra"]]
    assert alone[1][0]["text"] == alone[1][0]["transcript"]  # asr: the reader's text is the transcript


def test_complete_is_false_when_the_token_budget_cuts_the_answer(tiny):
    model, processor = tiny
    engine = TransformersEngine(model, processor)
    audio, _ = engine.encode([synthetic_speech(0.8, seed=5)])
    # A random tiny model rarely ends on its own: with a budget of 2 tokens the answer is cut
    cut = engine.decode_rows(audio, [DecodeRow(0, "srt", "eng", "deu")], {"num_beams": 1, "max_new_tokens": 2})[0]
    assert len(cut["token_ids"]) == 2 and cut["complete"] is False
    # the same answer forced to end: EOS wins every step once the hook makes it the only choice
    eos = processor.eos_token_id
    head = model.get_output_embeddings()
    hook = head.register_forward_hook(lambda m, a, out: torch.where(
        torch.arange(out.shape[-1]) == eos, torch.full_like(out, 1e4), torch.full_like(out, -1e4)))
    try:
        ended = engine.decode_rows(audio, [DecodeRow(0, "srt", "eng", "deu")], {"num_beams": 1, "max_new_tokens": 2})[0]
    finally:
        hook.remove()
    assert ended["token_ids"] == [] and ended["complete"] is True
    assert ended["text"] == ""
