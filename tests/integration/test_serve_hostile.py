"""Issue 21 part A: remote code only on request, limits on what the server actually reads, a bounded queue,
cancelled work of gone clients, cut answers flagged, entry type checks. Raw sockets, not only the openai client."""

import contextlib
import io
import json
import shutil
import socket
import threading
import time

import numpy as np
import pytest
import soundfile


pytest.importorskip("fastapi")

from llm_srt.cli.main import main as cli_main  # noqa: E402
from llm_srt.serving import create_app  # noqa: E402
from llm_srt.testing import ServerThread, synthetic_speech  # noqa: E402
from llm_srt.testing import MULTIPART_BOUNDARY, multipart_form as multipart  # noqa: E402


SR = 16000


def wav_bytes(seconds: float, seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, synthetic_speech(seconds, seed=seed, pause_every=0.9), SR, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def read_response(sock: socket.socket, timeout: float = 60.0) -> tuple[int, dict, bytes]:
    sock.settimeout(timeout)
    raw = b""
    while b"\r\n\r\n" not in raw:
        chunk = sock.recv(65536)
        if not chunk:
            break
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
    length = int(headers.get("content-length", "0") or 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


@pytest.fixture(scope="module")
def server(tiny_folder):
    app = create_app(tiny_folder, served_model_name="tiny", max_batch_size=4, max_wait_ms=5, max_file_mb=1,
                     max_new_tokens=4, max_queue=8)
    with ServerThread(app) as running:
        running.state = app.state.server
        running.port = int(running.url.rsplit(":", 1)[1])
        yield running


# --------------------------------------------------------------------------------------------------- remote code
def _edited_folder(tiny_folder, tmp_path):
    folder = tmp_path / "edited"
    shutil.copytree(tiny_folder, folder)
    marker = tmp_path / "marker"
    with open(folder / "modeling_llm_srt.py", "a") as f:
        f.write(f"\nopen({str(marker)!r}, 'w').write('ran')\n")
    return folder, marker


def test_translate_refuses_edited_model_code_without_the_flag(tiny_folder, tmp_path, capsys):
    folder, marker = _edited_folder(tiny_folder, tmp_path)
    audio = tmp_path / "a.wav"
    audio.write_bytes(wav_bytes(1.0))
    code = cli_main(["translate", str(audio), "--model", str(folder), "--src", "eng", "--tgt", "deu",
                     "--max-new-tokens", "3"])
    err = capsys.readouterr().err
    assert code != 0
    assert "--trust-remote-code" in err and "modeling_llm_srt.py" in err
    assert not marker.exists()
    code = cli_main(["translate", str(audio), "--model", str(folder), "--src", "eng", "--tgt", "deu",
                     "--max-new-tokens", "3", "--trust-remote-code"])
    assert code == 0, capsys.readouterr().err
    assert marker.exists()


def test_translate_loads_identical_code_without_the_flag(tiny_folder, tmp_path, capsys):
    audio = tmp_path / "a.wav"
    audio.write_bytes(wav_bytes(1.0))
    code = cli_main(["translate", str(audio), "--model", tiny_folder, "--src", "eng", "--tgt", "deu",
                     "--max-new-tokens", "3"])
    assert code == 0, capsys.readouterr().err


def test_serve_refuses_edited_model_code_without_the_flag(tiny_folder, tmp_path):
    folder, marker = _edited_folder(tiny_folder, tmp_path)
    with pytest.raises(ValueError, match="--trust-remote-code"):
        create_app(str(folder))
    assert not marker.exists()
    app = create_app(str(folder), trust_remote_code=True)
    assert marker.exists() and app.state.server is not None


def test_other_architecture_with_remote_code_needs_the_flag(tiny_folder, tmp_path):
    folder = tmp_path / "other"
    shutil.copytree(tiny_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "someone_else"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="--trust-remote-code"):
        create_app(str(folder))


# ------------------------------------------------------------------------------------------------ server limits
def test_chunked_upload_refused_as_soon_as_the_limit_is_passed(server):
    sock = socket.create_connection(("127.0.0.1", server.port))
    head = (f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            f"Content-Type: multipart/form-data; boundary={MULTIPART_BOUNDARY}\r\n\r\n").encode()
    sock.sendall(head)
    part = (f"--{MULTIPART_BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
            "Content-Type: audio/wav\r\n\r\n").encode()
    sock.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")
    chunk = b"\0" * 65536
    sent, status = 0, None
    sock.settimeout(0.05)
    try:
        while sent < 50 * 1024 * 1024:  # 50 MB: far beyond the 1 MB limit
            try:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            except socket.timeout:
                pass
            sent += len(chunk)
            try:
                peek = sock.recv(16, socket.MSG_PEEK)
                if peek:
                    break
            except socket.timeout:
                pass
        status, headers, body = read_response(sock)
    finally:
        sock.close()
    assert status == 413, body
    assert sent < 8 * 1024 * 1024, f"the server read {sent} bytes before refusing"
    assert json.loads(body)["error"]["code"] == "file_too_large"


def upload_request(body: bytes, endpoint: str = "transcriptions") -> bytes:
    """A raw HTTP request posting a multipart `body`."""
    return (f"POST /v1/audio/{endpoint} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
            f"Content-Type: multipart/form-data; boundary={MULTIPART_BOUNDARY}\r\n\r\n").encode() + body


@contextlib.contextmanager
def held_server(tiny_folder, **settings):
    """A running one-window-at-a-time server whose decoding waits until `gate.set()` (done on exit too); yields
    (server state, port, gate)."""
    app = create_app(tiny_folder, served_model_name="tiny", max_batch_size=1, max_wait_ms=0, max_file_mb=5,
                     max_new_tokens=4, **settings)
    state = app.state.server
    with ServerThread(app) as running:
        gate = threading.Event()
        original = state.batcher._decode

        def slow(jobs):
            gate.wait(30)
            return original(jobs)

        state.batcher._decode = slow
        try:
            yield state, int(running.url.rsplit(":", 1)[1]), gate
        finally:
            gate.set()


def test_full_queue_answers_503_with_retry_after(tiny_folder):
    with held_server(tiny_folder, max_queue=2) as (state, port, gate):
        request = upload_request(multipart({"language": "eng"}, wav_bytes(8.0, seed=1)))  # several windows
        first = socket.create_connection(("127.0.0.1", port))
        try:
            first.sendall(request)
            deadline = time.monotonic() + 30
            while state.batcher.queued < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            second = socket.create_connection(("127.0.0.1", port))
            second.sendall(request)
            status, headers, raw = read_response(second)
            second.close()
            assert status in (429, 503)
            assert "retry-after" in headers
            assert json.loads(raw)["error"]["code"] == "queue_full"
        finally:
            gate.set()
            status, _, _ = read_response(first)
            first.close()
        assert status == 200


def test_windows_of_a_gone_client_are_not_decoded(tiny_folder):
    with held_server(tiny_folder) as (state, port, gate):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(upload_request(multipart({"language": "eng"}, wav_bytes(10.0, seed=2))))
        deadline = time.monotonic() + 30
        while state.batcher.stats["submitted"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        submitted = state.batcher.stats["submitted"]
        assert submitted >= 3
        sock.close()  # the client goes
        time.sleep(1.0)  # the server notices the disconnect
        gate.set()
        deadline = time.monotonic() + 30
        while state.batcher.queued and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        assert state.batcher.stats["windows"] <= 2, state.batcher.stats
        assert state.batcher.stats["cancelled"] >= submitted - 2


def _post_raw(port, fields, data) -> tuple[int, dict, bytes]:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(upload_request(multipart(fields, data), "translations"))
    try:
        return read_response(sock)
    finally:
        sock.close()


def _post(port, fields, data):
    status, _, raw = _post_raw(port, fields, data)
    return status, json.loads(raw)


def test_tiny_temperature_is_a_400_not_a_500(server):
    status, body = _post(server.port, {"language": "eng", "target_language": "deu", "temperature": "1e-45"},
                         wav_bytes(1.0))
    assert status == 400, body
    assert body["error"]["param"] == "temperature"


def test_cut_answers_are_flagged_and_never_labelled_translations(server):
    # 4 new tokens never reach the tag pair: every answer is cut by the budget
    status, body = _post(server.port, {"language": "eng", "target_language": "deu",
                                       "response_format": "verbose_json"}, wav_bytes(1.0))
    assert status == 200, body
    assert body["complete"] is False
    for segment in body["segments"]:
        assert segment["complete"] is False and segment["finish_reason"] == "length"
        assert segment["text"] == ""
    assert body["text"] == ""
    status, body = _post(server.port, {"language": "eng", "target_language": "deu,fra"}, wav_bytes(1.0))
    assert status == 200, body
    assert [t["complete"] for t in body["translations"]] == [False, False]
    assert all(t["text"] == "" for t in body["translations"])
    # text, srt and vtt have no `complete` field: the header says the answer was cut, for JSON alike
    for response_format in ("text", "srt", "vtt", "json"):
        status, headers, raw = _post_raw(server.port, {"language": "eng", "target_language": "deu",
                                                       "response_format": response_format}, wav_bytes(1.0))
        assert status == 200, raw
        assert headers["x-llm-srt-finish-reason"] == "length", (response_format, headers)


def test_finished_answers_say_stop_in_the_finish_reason_header(parrot):
    model, processor, clips = parrot
    buffer = io.BytesIO()
    soundfile.write(buffer, clips[0], SR, format="WAV")
    with ServerThread(create_app((model, processor), max_new_tokens=40, max_wait_ms=5)) as running:
        for response_format in ("text", "srt", "vtt", "verbose_json"):
            status, headers, raw = _post_raw(running.port, {"language": "eng", "target_language": "deu",
                                                            "response_format": response_format}, buffer.getvalue())
            assert status == 200, raw
            assert "Ich sehe drei rote Katzen." in raw.decode(), (response_format, raw)
            assert headers["x-llm-srt-finish-reason"] == "stop", (response_format, headers)


def test_a_flac_without_its_length_is_served_and_its_true_length_limited(server, monkeypatch):
    """A streamed FLAC (total_samples 0 in its header) is decoded, not refused as 576460752303424 s of audio; the
    duration limit holds on its counted length."""
    from llm_srt.testing import flac_without_length

    speech = synthetic_speech(1.0, seed=3, pause_every=0.9)
    status, body = _post(server.port, {"language": "eng", "target_language": "deu"}, flac_without_length(speech))
    assert status == 200, body
    monkeypatch.setattr(server.state.settings, "max_audio_seconds", 2.0)
    status, body = _post(server.port, {"language": "eng"}, flac_without_length(np.tile(speech, 3)))
    assert status == 413 and body["error"]["code"] == "audio_too_long", body
    assert "longer than this server's limit of 2 s" in body["error"]["message"]
    assert "576460752303424" not in body["error"]["message"]


def test_duplicate_targets_are_refused_naming_the_language(server):
    status, body = _post(server.port, {"language": "eng", "target_language": "deu,fra,German"}, wav_bytes(1.0))
    assert status == 400 and body["error"]["param"] == "target_language", body
    assert body["error"]["code"] == "invalid_value" and "deu twice" in body["error"]["message"]


@pytest.mark.parametrize("field, value, flag", [
    ("use_beam_search", "true", "--num-beams"), ("max_completion_tokens", "-1", "--max-new-tokens"),
    ("max_completion_tokens", "1", "--max-new-tokens"), ("top_p", "0", None), ("seed", "3", None),
])
def test_decoding_fields_the_server_sets_are_refused_by_name_not_ignored(server, field, value, flag):
    """vLLM's transcription API takes these per request; this server decodes as it was started, so a client sending
    them got a 200 decoded otherwise than it asked, without a word."""
    status, body = _post(server.port, {"language": "eng", "target_language": "deu", field: value}, wav_bytes(1.0))
    assert status == 400, body
    assert body["error"]["param"] == field and body["error"]["code"] == "unsupported_parameter"
    assert (flag or "leave it out") in body["error"]["message"]


@pytest.mark.parametrize("value, streamed", [("on", None), ("TRUE", True), ("0", False), ("", False)])
def test_stream_is_true_or_false_and_anything_else_is_a_400(server, value, streamed):
    status, headers, raw = _post_raw(server.port, {"language": "eng", "stream": value}, wav_bytes(1.0))
    if streamed is None:
        assert status == 400 and json.loads(raw)["error"]["param"] == "stream", raw
    else:
        assert status == 200, raw
        assert ("text/event-stream" in headers.get("content-type", "")) == streamed, headers


@pytest.mark.parametrize("response_format, streamed", [("srt", False), ("vtt", False), ("verbose_json", False),
                                                       ("text", True), ("json", True)])
def test_stream_with_a_format_of_cue_times_or_segments_is_a_400(server, response_format, streamed):
    """Streamed, an srt answer was text deltas without a cue time (OpenAI streams none of these formats)."""
    status, headers, raw = _post_raw(server.port, {"language": "eng", "stream": "true",
                                                   "response_format": response_format}, wav_bytes(1.0))
    if streamed:
        assert status == 200 and "text/event-stream" in headers.get("content-type", ""), raw
    else:
        error = json.loads(raw)["error"]
        assert status == 400 and error["param"] == "stream" and response_format in error["message"], raw
