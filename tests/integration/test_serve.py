"""`llm-srt serve`: the OpenAI-compatible server, run in-process on 127.0.0.1 and called with the real `openai` client."""

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile
import torch


pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

from llm_srt.decoding_llm_srt import DecodeRow, answer_record  # noqa: E402
from llm_srt.serving import create_app  # noqa: E402
from llm_srt.testing import ServerThread  # noqa: E402
from llm_srt.testing import synthetic_speech  # noqa: E402


# openai 3.x marks audio.translations deprecated; it is the endpoint under test
pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")

SR = 16000
MAX_NEW_TOKENS = 6
NAME = "tiny"


def wav_bytes(audio: np.ndarray, rate: int = SR) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def clip(seconds: float, seed: int, pause_every: float | None = 0.9) -> tuple[np.ndarray, bytes]:
    """A speech-like clip as the server will see it (16-bit PCM round trip) and its wav bytes."""
    data = wav_bytes(synthetic_speech(seconds, seed=seed, pause_every=pause_every))
    return soundfile.read(io.BytesIO(data), dtype="float32")[0], data


@pytest.fixture(scope="module")
def server(tiny_folder):
    app = create_app(tiny_folder, served_model_name=NAME, max_batch_size=16, max_wait_ms=5, max_file_mb=1,
                     max_new_tokens=MAX_NEW_TOKENS)
    with ServerThread(app) as running:
        running.state = app.state.server
        yield running


@pytest.fixture(scope="module")
def client(server):
    # max_retries=0: the client would otherwise resend requests answered with 5xx
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture
def count_generate(server, monkeypatch):
    """Record every `generate` call of the served model: (batch rows, kwargs)."""
    model = server.state.engine.model
    original = model.generate
    calls = []

    def counting(*args, **kwargs):
        calls.append((kwargs["input_ids"].shape[0], kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "generate", counting)
    return calls


def direct(server, audio: np.ndarray, task: str, src: str, tgt: str | None = None) -> dict:
    """What the model itself decodes for one window, through the processor (no server)."""
    model, processor = server.state.engine.model, server.state.processor
    inputs = processor(audio, task=task, src_lang=src, tgt_lang=tgt, sampling_rate=SR)
    with torch.inference_mode():
        ids = model.generate(**inputs, num_beams=1, do_sample=False, max_new_tokens=MAX_NEW_TOKENS)
    # the seam's answer record: a translation cut before its tag pair is empty, never the transcript (issue 21)
    return answer_record(processor, ids[0].tolist(), DecodeRow(0, task, src, tgt if task == "srt" else None))


SHORT, SHORT_WAV = clip(1.3, seed=1, pause_every=None)  # one window (no pause) (the tiny model's window is 2 s)
LONG, LONG_WAV = clip(4.5, seed=2)  # five stretches of speech between pauses


# ------------------------------------------------------------------------------------------------------- endpoints
def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == [NAME]
    model = client.models.list().data[0].to_dict()  # what the model knows, for the live page: not recorded here
    assert (model["trained_languages"], model["trained_directions"]) == (None, None)
    import httpx2

    before = httpx2.get(server.url + "/health").json()
    assert before["status"] == "ok" and before["model"] == NAME
    # a two-target translation of one window: 1 window encoded, 2 rows decoded (counts serve_load.py reads)
    client.audio.translations.create(model=NAME, file=("a.wav", SHORT_WAV), extra_body={"language": "en",
                                     "target_language": "deu,fra"})
    after = httpx2.get(server.url + "/health").json()
    assert (after["windows"] - before["windows"], after["rows"] - before["rows"]) == (1, 2)


def test_transcription_is_the_models_own_output(server, client):
    result = client.audio.transcriptions.create(model=NAME, file=("a.wav", SHORT_WAV), language="en")
    assert result.text == direct(server, SHORT, "asr", "eng")["transcript"]
    assert result.text  # the random tiny model still emits tokens
    assert result.usage.seconds == pytest.approx(1.3, abs=1e-3)


def test_translation_into_english_by_default_and_into_another_language(server, client):
    into_english = client.audio.translations.create(model=NAME, file=("a.wav", SHORT_WAV),
                                                    extra_body={"language": "de"})
    expected = direct(server, SHORT, "srt", "deu", "eng")
    assert into_english.text == expected["translation"]
    assert into_english.target_language == "eng" and into_english.language == "deu"
    assert into_english.transcript == (expected["transcript"] or "")
    into_french = client.audio.translations.create(model=NAME, file=("a.wav", SHORT_WAV),
                                                   extra_body={"language": "eng", "target_language": "fr"})
    assert into_french.text == direct(server, SHORT, "srt", "eng", "fra")["translation"]
    assert into_french.target_language == "fra"


def test_several_targets_come_back_as_a_list(server, client):
    several = client.audio.translations.create(
        model=NAME, file=("a.wav", SHORT_WAV), extra_body={"language": "eng", "target_language": "deu,jpn, eng"}
    )
    assert [t["target_language"] for t in several.translations] == ["deu", "jpn", "eng"]
    for entry in several.translations:
        alone = client.audio.translations.create(
            model=NAME, file=("a.wav", SHORT_WAV),
            extra_body={"language": "eng", "target_language": entry["target_language"]},
        )
        assert entry["text"] == alone.text
    # eng -> eng is the transcript
    assert several.translations[2]["text"] == direct(server, SHORT, "asr", "eng")["transcript"]
    # the client's list form (target_language[]) means the same
    as_list = client.audio.translations.create(
        model=NAME, file=("a.wav", SHORT_WAV), extra_body={"language": "eng", "target_language": ["deu", "jpn", "eng"]}
    )
    assert as_list.translations == several.translations


def test_every_response_format_of_long_audio(server, client):
    def ask(fmt):
        return client.audio.transcriptions.create(model=NAME, file=("long.wav", LONG_WAV), language="eng",
                                                  response_format=fmt)

    verbose = ask("verbose_json")
    segments = verbose.segments
    assert len(segments) == 5 and verbose.language == "english" and verbose.duration == pytest.approx(4.5, abs=1e-3)
    # a window per stretch of speech the detector hears (speech 0.4 s every 0.9 s, padded by 0.2 s), each holding
    # its whole stretch, in order, without overlap; the silence after the last one is not decoded
    for k, segment in enumerate(segments):
        assert segment.start <= 0.9 * k and 0.9 * k + 0.4 <= segment.end <= 0.9 * k + 0.9, (k, segment)
    assert segments[0].start == 0 and all(a.end <= b.start for a, b in zip(segments, segments[1:]))
    for segment in segments:  # each window is the model's output on that window alone
        window = LONG[int(round(segment.start * SR)):int(round(segment.end * SR))]
        assert segment.text == direct(server, window, "asr", "eng")["transcript"]
    text = " ".join(s.text for s in segments if s.text)
    assert verbose.text == text and ask("json").text == text and ask("text") == text

    def clock(seconds, separator):
        millis = int(round(seconds * 1000))
        return f"{millis // 3600000:02d}:{millis // 60000 % 60:02d}:{millis // 1000 % 60:02d}{separator}{millis % 1000:03d}"

    cues = [s for s in segments if s.text]
    srt = "".join(f"{n}\n{clock(s.start, ',')} --> {clock(s.end, ',')}\n{s.text}\n\n" for n, s in enumerate(cues, 1))
    assert ask("srt") == srt
    vtt = "WEBVTT\n\n" + "".join(f"{clock(s.start, '.')} --> {clock(s.end, '.')}\n{s.text}\n\n" for s in cues)
    assert ask("vtt") == vtt


def test_streaming_sends_one_delta_per_window_then_done(client):
    events = list(client.audio.transcriptions.create(model=NAME, file=("long.wav", LONG_WAV), language="eng",
                                                     stream=True))
    assert [e.type for e in events[:-1]] == ["transcript.text.delta"] * (len(events) - 1)
    assert events[-1].type == "transcript.text.done"
    full = client.audio.transcriptions.create(model=NAME, file=("long.wav", LONG_WAV), language="eng")
    assert "".join(e.delta for e in events[:-1]) == events[-1].text == full.text
    assert len(events) >= 3  # several windows -> several deltas


def test_sounds_that_are_not_speech_are_answered_without_the_model(client, count_generate):
    """Noise, tones, hum, clicks, knocks, typing, music, a DC offset, silence, a lone sample: the server's tiny model
    writes text for any window it is given, and it is given none (at most 1 in 16 may get text; none does)."""
    from llm_srt.evaluation.quality import non_speech_clips

    sounds = dict(non_speech_clips(), zeros=np.zeros(SR, np.float32), one_sample=np.array([0.3], np.float32))
    written = {}
    for name, samples in sounds.items():
        result = client.audio.transcriptions.create(model=NAME, file=("sound.wav", wav_bytes(samples)),
                                                    language="eng", response_format="verbose_json")
        written[name] = result.text
        assert result.segments == []
    assert sum(bool(text) for text in written.values()) <= len(sounds) / 16 and count_generate == [], written


# ---------------------------------------------------------------------------------------------------------- errors
def error_of(call) -> tuple[int, dict]:
    with pytest.raises(openai.APIStatusError) as caught:
        call()
    return caught.value.status_code, caught.value.body


def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(client):
    def transcribe(file=("a.wav", SHORT_WAV), **kwargs):
        fields = {k: v for k, v in {"model": NAME, "language": "en", **kwargs}.items() if v is not None}
        return lambda: client.audio.transcriptions.create(file=file, **fields)

    cases = {
        "bad file": (transcribe(file=("a.wav", b"this is not audio")), 400, "file", "invalid_file"),
        "empty file": (transcribe(file=("a.wav", b"")), 400, "file", "empty_file"),
        "too large": (transcribe(file=("a.wav", b"\0" * (1024 * 1024 + 1))), 413, "file", "file_too_large"),
        "unknown language": (transcribe(language="klingon"), 400, "language", "unsupported_language"),
        "unknown model": (transcribe(model="whisper-1"), 404, "model", "model_not_found"),
        "bad format": (transcribe(response_format="docx"), 400, "response_format", "invalid_value"),
        "no language": (transcribe(language=None), 400, "language", "language_required"),
        "unknown target": (lambda: client.audio.translations.create(
            model=NAME, file=("a.wav", SHORT_WAV), extra_body={"language": "en", "target_language": "deu,elvish"}),
            400, "target_language", "unsupported_language"),
        "several targets as text": (lambda: client.audio.translations.create(
            model=NAME, file=("a.wav", SHORT_WAV), response_format="srt",
            extra_body={"language": "en", "target_language": "deu,fra"}), 400, "target_language", "invalid_value"),
    }
    for name, (call, status, param, code) in cases.items():
        got_status, body = error_of(call)
        assert (got_status, body["param"], body["code"]) == (status, param, code), name
        assert body["type"] == "invalid_request_error" and body["message"], name
    assert "klingon" in error_of(cases["unknown language"][0])[1]["message"]
    assert "language" in error_of(cases["no language"][0])[1]["message"]
    # libsndfile's reason, named by the upload's file name and not by Python's repr of the buffer read from
    bad_file = error_of(cases["bad file"][0])[1]["message"]
    assert bad_file.startswith("a.wav: cannot decode audio (Format not recognised)"), bad_file
    assert "BytesIO" not in bad_file and " at 0x" not in bad_file, bad_file
    assert client.audio.transcriptions.create(model=NAME, file=("a.wav", SHORT_WAV), language="en").text


def test_openai_fields_the_server_cannot_honour_are_refused_by_name(client):
    """`timestamp_granularities=["word"]` came back with `"words": null` and `prompt=` was dropped without a word:
    each is a 400 naming it; "segment" with verbose_json (what OpenAI's API takes) and an empty prompt are
    answered."""
    def transcribe(**fields):
        return lambda: client.audio.transcriptions.create(model=NAME, file=("a.wav", SHORT_WAV), language="en",
                                                          **fields)

    cases = {
        "word timestamps": (transcribe(response_format="verbose_json", timestamp_granularities=["word"]),
                            "unsupported_parameter"),
        "both": (transcribe(response_format="verbose_json", timestamp_granularities=["segment", "word"]),
                 "unsupported_parameter"),
        "segment without verbose_json": (transcribe(timestamp_granularities=["segment"]), "invalid_value"),
        "unknown granularity": (transcribe(response_format="verbose_json", extra_body={
            "timestamp_granularities[]": "sentence"}), "invalid_value"),
    }
    for name, (call, code) in cases.items():
        status, body = error_of(call)
        assert (status, body["param"], body["code"]) == (400, "timestamp_granularities[]", code), (name, body)
    status, body = error_of(transcribe(prompt="The speaker talks about cats."))
    assert (status, body["param"], body["code"]) == (400, "prompt", "unsupported_parameter")
    assert "prompt is not supported" in body["message"]
    status, body = error_of(lambda: client.audio.translations.create(
        model=NAME, file=("a.wav", SHORT_WAV), prompt="Cats.", extra_body={"language": "en"}))
    assert (status, body["param"]) == (400, "prompt")
    segments = transcribe(response_format="verbose_json", timestamp_granularities=["segment"], prompt="")()
    assert segments.segments and segments.segments[0].end > segments.segments[0].start


# -------------------------------------------------------------------------------------------------------- batching
def hold_worker(server, expected_jobs: int, send):
    """Run `send()` in a thread while the worker is held, and release it once `expected_jobs` windows have been
    queued (so they are batched whatever the machine's speed); returns what `send` returned."""
    batcher = server.state.batcher
    before = batcher.stats["submitted"]
    result = {}
    with batcher.model_lock:  # the worker takes its first batch, then waits here
        thread = threading.Thread(target=lambda: result.setdefault("value", send()))
        thread.start()
        deadline = time.monotonic() + 120  # a safety net against a hang, not a timing assertion
        while batcher.stats["submitted"] - before < expected_jobs and time.monotonic() < deadline:
            time.sleep(0.01)
    thread.join()
    return result["value"]


REQUESTS = [  # (seconds, seed, endpoint, language, target) - transcriptions and translations, 1-3 windows each
    (0.8 + 0.25 * i, 10 + i, "translations" if i % 2 else "transcriptions", ["eng", "deu", "fra"][i % 3],
     ["jpn", "eng", "spa", "deu,kor"][i % 4] if i % 2 else None)
    for i in range(16)
]


def send(client, request):
    seconds, seed, endpoint, language, target = request
    data = clip(seconds, seed)[1]
    extra = {"language": language}
    if target:
        extra["target_language"] = target
    api = client.audio.translations if endpoint == "translations" else client.audio.transcriptions
    result = api.create(model=NAME, file=("clip.wav", data), response_format="verbose_json", extra_body=extra)
    return result.to_dict()


def test_concurrent_requests_are_batched_and_each_equals_its_single_answer(server, client, count_generate):
    singles = [send(client, request) for request in REQUESTS]
    single_calls = len(count_generate)
    assert single_calls >= len(REQUESTS)
    count_generate.clear()
    windows = sum(len(s["segments"]) if "segments" in s else len(s["translations"][0]["segments"]) for s in singles)

    def send_all():
        with ThreadPoolExecutor(16) as pool:
            return list(pool.map(lambda r: send(client, r), REQUESTS))

    together = hold_worker(server, windows, send_all)
    assert together == singles
    assert 1 <= len(count_generate) < len(REQUESTS)
    assert max(rows for rows, _ in count_generate) > 1
    assert all(rows <= 16 for rows, _ in count_generate)  # --max-batch-size counts rows


def test_a_request_that_fails_inside_a_batch_fails_alone(server, client, count_generate, monkeypatch):
    processor = server.state.processor
    poison = processor.prepare_text("srt", ["eng"], ["kor"], [None], [None])["input_ids"][0]
    generate = server.state.engine.model.generate

    def failing(*args, **kwargs):
        if any(row[-len(poison):].tolist() == poison for row in kwargs["input_ids"]):
            raise RuntimeError("poisoned row")
        return generate(*args, **kwargs)

    monkeypatch.setattr(server.state.engine.model, "generate", failing)
    good = [REQUESTS[0], REQUESTS[1], REQUESTS[2]]
    singles = [send(client, request) for request in good]
    bad = (1.0, 99, "translations", "eng", "kor")

    def send_all():
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(send, client, request) for request in good + [bad]]
            return [f.result() if f.exception() is None else f.exception() for f in futures]

    results = hold_worker(server, 4, send_all)
    assert results[:3] == singles
    assert isinstance(results[3], openai.InternalServerError)
    assert "poisoned row" in results[3].body["message"]


def test_requests_with_other_settings_are_not_batched_together(server, client, count_generate):
    temperatures = (0, 0.8, 0, 0.8)

    def send_all():
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(client.audio.transcriptions.create, model=NAME, file=("a.wav", SHORT_WAV),
                                   language="en", temperature=t) for t in temperatures]
            return [f.result().text for f in futures]

    greedy = direct(server, SHORT, "asr", "eng")["transcript"]
    count_generate.clear()
    texts = hold_worker(server, 4, send_all)
    assert texts[0] == texts[2] == greedy
    rows_by_kind = {True: 0, False: 0}
    for rows, kwargs in count_generate:
        rows_by_kind[kwargs["do_sample"]] += rows
    assert rows_by_kind == {True: 2, False: 2}  # a mixed batch would put 3 rows under one kind
    assert any(kwargs.get("temperature") == 0.8 for _, kwargs in count_generate if kwargs["do_sample"])


# ------------------------------------------------------------------------------------------------------------- CLI
def test_cli_serve_arguments(tiny_folder, capsys):
    from llm_srt.cli.main import build_parser

    args = build_parser().parse_args(["serve", tiny_folder, "--max-batch-size", "4", "--max-wait-ms", "0"])
    assert (args.command, args.model, args.max_batch_size, args.max_wait_ms, args.host) == (
        "serve", tiny_folder, 4, 0.0, "127.0.0.1")
    for bad in (["--max-batch-size", "0"], ["--max-wait-ms", "-1"], ["--port", "70000"], ["--max-file-mb", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args(["serve", tiny_folder, *bad])
        assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_cli_serve_refuses_a_missing_model(tmp_path, capsys):
    from llm_srt.cli.main import main

    assert main(["serve", str(tmp_path / "missing")]) == 1  # failed work: the model does not load
    err = capsys.readouterr().err
    assert err.startswith("llm-srt: error:") and "missing" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------------------ benchmark
def test_load_benchmark_runs_and_reports_every_level(tiny_folder, tmp_path, capsys):
    """Only that benchmarks/serve_load.py runs and reports: no timing is asserted."""
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "benchmarks", "serve_load.py")
    spec = importlib.util.spec_from_file_location("serve_load", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    manifest = tmp_path / "rows.jsonl"
    soundfile.write(tmp_path / "a.wav", SHORT, SR)
    manifest.write_text('{"audio": "a.wav", "src_lang": "eng", "tgt_lang": "deu"}\n')
    for extra in ({}, {"manifest": str(manifest)}):
        report = bench.run(bench.LoadArguments(model=tiny_folder, concurrency="1,3", requests=3, seconds=1.0,
                                               max_new_tokens=2, output="", **extra))
        assert [row["clients"] for row in report["rows"]] == [1, 3]
        for row in report["rows"]:
            assert row["same_answers_as_one_at_a_time"] and row["requests"] == 3
            assert row["requests_per_s"] > 0 and row["p95_latency_s"] >= row["p50_latency_s"] > 0
        assert report["rows"][0]["generate_calls"] == 3  # one at a time: one call per request
        # the encoder ceiling: its per-window time measured at batch 1, 4 and the server's batch size, and each
        # level's windows at the cheapest of them: the synthetic 1 s speech pauses at 0.9 s (2 windows a request,
        # the server cuts at pauses), the manifest's 1.3 s clip is one window
        ceiling = report["encoder_seconds_per_window"]
        assert sorted(ceiling["per_batch"]) == [1, 4, 16]
        assert ceiling["seconds_per_window"] == min(ceiling["per_batch"].values()) > 0
        windows = 3 if extra else 6
        for row in report["rows"]:
            assert row["windows"] == windows
            assert row["encoder_ceiling_requests_per_s"] == pytest.approx(
                3 / (windows * ceiling["seconds_per_window"]), rel=1e-2)
    out = capsys.readouterr().out
    assert "| clients | requests/s |" in out and "| clients | windows | ceiling requests/s | ceiling / transformers |" in out


def test_language_omitted_is_detected_where_the_model_can(server, client, monkeypatch):
    seen = []

    def detect_language(input_features=None, encoder_hidden_states=None):
        states = encoder_hidden_states if encoder_hidden_states is not None else input_features
        seen.append(tuple(states.shape))
        return [{"language": "deu", "probability": 0.9, "probabilities": {"deu": 0.9, "eng": 0.1}, "supported": True,
                 "whisper_language": "de", "whisper_probability": 0.9}] * states.shape[0]

    monkeypatch.setattr(server.state.engine.model, "detect_language", detect_language, raising=False)
    detected = client.audio.transcriptions.create(model=NAME, file=("a.wav", SHORT_WAV), response_format="verbose_json")
    given = client.audio.transcriptions.create(model=NAME, file=("a.wav", SHORT_WAV), language="de",
                                               response_format="verbose_json")
    auto = client.audio.transcriptions.create(model=NAME, file=("a.wav", SHORT_WAV), language="auto",
                                              response_format="verbose_json")
    assert detected.language == "german" and detected.to_dict() == given.to_dict() == auto.to_dict()
    assert len(seen) == 2 and seen[0][0] == 1  # every speech window (here one), once per detecting request


# ------------------------------------------------------------------------------------- found in QA (round 2)
def test_audio_longer_than_the_limit_is_refused_from_its_header(server, client, monkeypatch):
    # 180 kB of FLAC silence decoded to an hour of samples; a 25 MB one to days of them (gigabytes per request).
    import llm_srt.serving.inputs as serve_module

    decoded = []
    monkeypatch.setattr(server.state.settings, "max_audio_seconds", 10.0)
    monkeypatch.setattr(serve_module, "load_audio", lambda *a, **k: decoded.append(a) or np.zeros(SR, np.float32))
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(12 * SR, np.int16), SR, format="FLAC")
    status, body = error_of(lambda: client.audio.transcriptions.create(
        model=NAME, file=("long.flac", buffer.getvalue()), language="en"))
    assert (status, body["param"], body["code"]) == (413, "file", "audio_too_long")
    assert "long.flac" in body["message"] and "10 s" in body["message"]
    assert not decoded  # refused before decoding
    monkeypatch.undo()
    assert client.audio.transcriptions.create(model=NAME, file=("a.wav", SHORT_WAV), language="en").text


def test_vllms_to_language_field_names_the_target_as_target_language_does(server, client):
    # A client written for vLLM's server sends to_language; it was ignored, and English came back without a word.
    into_german = client.audio.translations.create(model=NAME, file=("a.wav", SHORT_WAV),
                                                   extra_body={"language": "en", "to_language": "de"})
    assert into_german.target_language == "deu"
    assert into_german.text == direct(server, SHORT, "srt", "eng", "deu")["translation"]
    several = client.audio.translations.create(model=NAME, file=("a.wav", SHORT_WAV),
                                               extra_body={"language": "en", "to_language": "deu,fr"})
    assert [t["target_language"] for t in several.translations] == ["deu", "fra"]
    for extra, code in (({"to_language": "elvish"}, "unsupported_language"),
                        ({"to_language": "de", "target_language": "fr"}, "invalid_value")):
        status, body = error_of(lambda: client.audio.translations.create(
            model=NAME, file=("a.wav", SHORT_WAV), extra_body={"language": "en", **extra}))
        assert (status, body["param"], body["code"]) == (400, "to_language", code), body
    status, body = error_of(lambda: client.audio.transcriptions.create(
        model=NAME, file=("a.wav", SHORT_WAV), language="en", extra_body={"to_language": "deu"}))
    assert (status, body["param"], body["code"]) == (400, "to_language", "invalid_value")


def test_target_language_on_the_transcription_endpoint_is_refused(client):
    # It was ignored: a transcript came back where a translation was asked for.
    status, body = error_of(lambda: client.audio.transcriptions.create(
        model=NAME, file=("a.wav", SHORT_WAV), language="en", extra_body={"target_language": "deu"}))
    assert (status, body["param"], body["code"]) == (400, "target_language", "invalid_value")
    assert "/v1/audio/translations" in body["message"]


def test_errors_do_not_echo_huge_values(client):
    status, body = error_of(lambda: client.audio.transcriptions.create(
        model=NAME, file=("a.wav", SHORT_WAV), language="x" * 100_000))
    assert (status, body["code"]) == (400, "unsupported_language")
    assert "xxxx" in body["message"] and "100000 characters" in body["message"]
    assert len(body["message"]) < 1000


def test_an_undecodable_file_is_named_by_its_file_name(client):
    buffer = io.BytesIO()
    soundfile.write(buffer, np.full(SR, np.nan, np.float32), SR, format="WAV", subtype="FLOAT")
    status, body = error_of(lambda: client.audio.transcriptions.create(
        model=NAME, file=("nan.wav", buffer.getvalue()), language="en"))
    assert (status, body["code"]) == (400, "invalid_file")
    assert body["message"].startswith("nan.wav") and "NaN" in body["message"]
    assert "bytes>" not in body["message"]
