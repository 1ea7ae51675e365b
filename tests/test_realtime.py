"""`llm-srt serve`'s live sessions over a WebSocket (`/v1/realtime`, OpenAI's Realtime transcription events)."""

import base64
import contextlib
import json
import threading
import urllib.request

import numpy as np
import pytest

from llm_srt.testing import SAMPLING_RATE as SR
from llm_srt.testing import PARROT_LINES, ServerThread


pytest.importorskip("fastapi")
websockets_sync = pytest.importorskip("websockets.sync.client")

TRANSCRIPTION = "conversation.item.input_audio_transcription"
TRANSLATION = "conversation.item.input_audio_translation"


@pytest.fixture(scope="module")
def server(parrot):
    from llm_srt.serving import create_app

    model, processor, _ = parrot
    with ServerThread(create_app((model, processor), max_new_tokens=40, max_wait_ms=20)) as running:
        yield running


@pytest.fixture(scope="module")
def talk(parrot):
    """The two lines with half a second of silence between them."""
    _, _, clips = parrot
    return np.concatenate([clips[0], np.zeros(SR // 2, dtype=np.float32), clips[1]])


def pcm16(audio: np.ndarray) -> str:
    return base64.b64encode((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()).decode()


@contextlib.contextmanager
def connect(server, rate: int | None = SR):
    """A session, its audio declared as PCM16 at `rate` (the tests' 16 kHz; None: nothing sent)."""
    with websockets_sync.connect(server.url.replace("http", "ws") + "/v1/realtime", max_size=None) as socket:
        assert json.loads(socket.recv(timeout=10))["type"] == "transcription_session.created"
        if rate is not None:
            configure(socket, input_audio_sample_rate=rate)
        yield socket


def get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers["content-type"], response.read().decode()


def health(server) -> dict:
    return json.loads(get(server.url + "/health")[2])


def configure(socket, **session) -> dict:
    socket.send(json.dumps({"type": "transcription_session.update", "session": session}))
    event = json.loads(socket.recv(timeout=10))
    assert event["type"] == "transcription_session.updated", event
    return event["session"]


def stream_and_commit(socket, audio: np.ndarray, chunk_seconds: float = 0.2, rate: int = SR) -> list[dict]:
    """Send `audio` in chunks, commit, and return every server event up to `input_audio_buffer.committed`."""
    size = int(chunk_seconds * rate)
    for i in range(0, len(audio), size):
        socket.send(json.dumps({"type": "input_audio_buffer.append", "audio": pcm16(audio[i:i + size])}))
    socket.send(json.dumps({"type": "input_audio_buffer.commit"}))
    events = []
    while not events or events[-1]["type"] != "input_audio_buffer.committed":
        events.append(json.loads(socket.recv(timeout=120)))
    return events


def stream_in_chunks(socket, audio: np.ndarray, rate: int, chunk_seconds: float = 0.1) -> None:
    """Send PCM16 `audio` at `rate` in chunks, as a microphone's client sends them."""
    size = int(chunk_seconds * rate)
    for i in range(0, len(audio), size):
        socket.send(json.dumps({"type": "input_audio_buffer.append", "audio": pcm16(audio[i:i + size])}))


def events_until(socket, kind: str) -> list[dict]:
    """Every server event up to and including the first of type `kind`."""
    events = [json.loads(socket.recv(timeout=120))]
    while events[-1]["type"] != kind:
        events.append(json.loads(socket.recv(timeout=120)))
    return events


def results(events: list[dict]) -> dict:
    """Per item: the completed transcript and translations, and the deltas' concatenations."""
    out: dict[str, dict] = {}
    for event in events:
        item = out.setdefault(event.get("item_id"), {"deltas": {}, "completed": {}})
        if event["type"] == TRANSCRIPTION + ".delta":
            item["deltas"]["transcript"] = item["deltas"].get("transcript", "") + event["delta"]
        elif event["type"] == TRANSLATION + ".delta":
            item["deltas"][event["language"]] = item["deltas"].get(event["language"], "") + event["delta"]
        elif event["type"] == TRANSCRIPTION + ".completed":
            item["completed"]["transcript"] = event["transcript"]
            item["span"] = (event["start"], event["end"])
        elif event["type"] == TRANSLATION + ".completed":
            item["completed"][event["language"]] = event["translation"]
    return {k: v for k, v in out.items() if v["completed"]}


def test_two_concurrent_sessions_with_different_targets_get_their_own_results(server, talk):
    import librosa

    outcomes = {}

    def session(name, targets, rate):
        with connect(server) as socket:
            settings = configure(socket, targets=targets, input_audio_transcription={"language": "eng"},
                                 input_audio_sample_rate=rate)
            assert settings["targets"] == targets and settings["input_audio_sample_rate"] == rate
            audio = talk if rate == SR else librosa.resample(talk, orig_sr=SR, target_sr=rate)
            outcomes[name] = stream_and_commit(socket, audio, rate=rate)

    threads = [threading.Thread(target=session, args=("a", ["deu"], SR)),
               threading.Thread(target=session, args=("b", ["fra", "deu"], 24000))]  # b declares 24 kHz PCM
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    for name, targets in (("a", ["deu"]), ("b", ["fra", "deu"])):
        items = list(results(outcomes[name]).values())
        assert [i["completed"]["transcript"] for i in items] == [text for text, _ in PARROT_LINES]
        for item, (_, translations) in zip(items, PARROT_LINES):
            assert item["completed"] == {"transcript": item["completed"]["transcript"],
                                         **{t: translations[t] for t in targets}}  # its own targets only
            assert item["deltas"] == item["completed"]  # the confirmed deltas add up to the final text
        # the items are the stretches of speech, in order: the half second of silence between them is no item
        assert items[0]["span"][0] == 0.0 and items[0]["span"][1] < items[1]["span"][0]
        types = [e["type"] for e in outcomes[name]]
        assert types.count("input_audio_buffer.speech_started") == 2 and "error" not in types
    assert health(server)["live_sessions"] == 0


def test_bad_chunks_get_error_events_and_the_session_survives(server, talk):
    with connect(server) as socket:
        configure(socket, targets=["deu"], input_audio_transcription={"language": "eng"})

        def error_for(message) -> dict:
            socket.send(message if isinstance(message, str) else json.dumps(message))
            event = json.loads(socket.recv(timeout=10))
            assert event["type"] == "error", event
            return event["error"]

        assert error_for({"type": "input_audio_buffer.append", "audio": "not base64!"})["code"] == "invalid_audio"
        odd = base64.b64encode(b"\x00\x01\x02").decode()
        error = error_for({"type": "input_audio_buffer.append", "audio": odd})
        assert error["code"] == "invalid_audio" and "odd number of bytes" in error["message"]
        huge = pcm16(np.zeros(SR * 11, dtype=np.float32))  # more than the 10 s an append may carry
        assert error_for({"type": "input_audio_buffer.append", "audio": huge})["code"] == "audio_too_large"
        assert error_for({"type": "input_audio_buffer.append", "audio": 5})["code"] == "invalid_audio"
        assert error_for("{not json")["code"] == "invalid_json"
        assert error_for({"type": "response.create"})["code"] == "unknown_event"
        error = error_for({"type": "transcription_session.update", "session": {"targets": ["klingon"]}})
        assert error["code"] == "unsupported_language" and error["param"] == "targets"
        error = error_for({"type": "transcription_session.update", "session": {"input_audio_sample_rate": 16}})
        assert error["param"] == "input_audio_sample_rate"
        # the session is still open: a whole stream still comes back right
        items = list(results(stream_and_commit(socket, talk)).values())
        assert [i["completed"]["deu"] for i in items] == [t["deu"] for _, t in PARROT_LINES]


def test_a_disconnect_mid_stream_frees_the_session_and_the_server_stays_healthy(server, talk):
    with connect(server) as socket:
        configure(socket, targets=["deu", "fra"], input_audio_transcription={"language": "eng"})
        for i in range(0, len(talk) // 2, SR // 10):
            socket.send(json.dumps({"type": "input_audio_buffer.append", "audio": pcm16(talk[i:i + SR // 10])}))
        assert health(server)["live_sessions"] == 1
    # gone mid-stream, with decodes queued or running
    for _ in range(100):
        state = health(server)
        if state["live_sessions"] == 0:
            break
        threading.Event().wait(0.1)
    assert state["status"] == "ok" and state["live_sessions"] == 0
    with connect(server) as again:  # a new session is served in full
        configure(again, targets=["fra"], input_audio_transcription={"language": "eng"})
        items = list(results(stream_and_commit(again, talk, chunk_seconds=0.5)).values())
        assert [i["completed"]["fra"] for i in items] == [t["fra"] for _, t in PARROT_LINES]


def test_the_live_page_is_served(server):
    status, kind, page = get(server.url + "/live")
    assert status == 200 and "text/html" in kind
    assert "/v1/realtime" in page and "getUserMedia" in page
    assert get(server.url + "/")[2] == page


def test_a_turn_the_model_cannot_decode_is_reported_once_and_the_next_turn_is_served(server, talk):
    with connect(server) as socket:
        configure(socket, targets=["deu"])  # no language, and the parrot model has no detector
        events = stream_and_commit(socket, talk)
        errors = [e["error"] for e in events if e["type"] == "error"]
        assert len(errors) == 1 and errors[0]["code"] == "language_required", errors
        assert not results(events)
        configure(socket, input_audio_transcription={"language": "eng"})
        items = list(results(stream_and_commit(socket, talk)).values())
        assert [i["completed"]["deu"] for i in items] == [t["deu"] for _, t in PARROT_LINES]
        assert items[0]["span"][0] == round(len(talk) / SR, 3)  # times run on over the session's turns


def error_for(socket, message) -> dict:
    """Send `message` (an object, or text as is) and return the `error` event's body it gets."""
    socket.send(message if isinstance(message, str) else json.dumps(message))
    event = json.loads(socket.recv(timeout=10))
    assert event["type"] == "error", event
    return event["error"]


def wait_for_no_sessions(server) -> dict:
    for _ in range(300):
        state = health(server)
        if state["live_sessions"] == 0:
            break
        threading.Event().wait(0.1)
    return state


def test_clients_gone_after_speech_and_an_update_release_their_slots(parrot, talk):
    """The leak of round 4: a client that sent speech and a session update, then left, kept its slot forever (the
    reader waited for the worker, which died sending to the gone client); three such clients locked out a server
    of three live sessions."""
    from llm_srt.serving import create_app

    model, processor, _ = parrot
    with ServerThread(create_app((model, processor), max_new_tokens=40, max_wait_ms=20,
                                 max_live_sessions=3)) as server:
        for _ in range(3):
            with connect(server) as socket:
                configure(socket, targets=["deu"], input_audio_transcription={"language": "eng"})
                for i in range(0, len(talk), SR // 5):
                    socket.send(json.dumps({"type": "input_audio_buffer.append",
                                            "audio": pcm16(talk[i:i + SR // 5])}))
                socket.send(json.dumps({"type": "transcription_session.update", "session": {"targets": ["fra"]}}))
        assert wait_for_no_sessions(server)["live_sessions"] == 0
        with connect(server) as socket:  # a fourth client is served
            configure(socket, targets=["fra"], input_audio_transcription={"language": "eng"})
            items = list(results(stream_and_commit(socket, talk, chunk_seconds=0.5)).values())
            assert [i["completed"]["fra"] for i in items] == [t["fra"] for _, t in PARROT_LINES]


def test_deep_or_oversized_json_is_an_error_event_and_the_session_goes_on(server, talk):
    with connect(server) as socket:
        error = error_for(socket, "[" * 100_000 + "]" * 100_000)  # valid JSON, but json.loads would recurse
        assert error["code"] == "invalid_json" and "deeper than" in error["message"], error
        error = error_for(socket, json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 2_000_000}))
        assert error["code"] == "message_too_large", error
        nested_strings = json.dumps({"type": "input_audio_buffer.clear", "note": "[[[[" * 100})  # brackets in text
        socket.send(nested_strings)
        configure(socket, targets=["deu"], input_audio_transcription={"language": "eng"})
        items = list(results(stream_and_commit(socket, talk, chunk_seconds=0.5)).values())
        assert [i["completed"]["deu"] for i in items] == [t["deu"] for _, t in PARROT_LINES]


def test_a_refused_update_changes_nothing(server):
    with connect(server) as socket:
        before = configure(socket, targets=["deu"], input_audio_transcription={"language": "eng"},
                           input_audio_sample_rate=24000)
        refused = [
            ({"input_audio_transcription": {"language": "fra", "model": "nope"}, "targets": ["ita"]}, "model"),
            ({"targets": ["spa"], "language": "rus", "input_audio_sample_rate": "16k"}, "input_audio_sample_rate"),
            ({"targets": ["deu", "German", "de"]}, "targets"),  # one language named three times
            ({"input_audio_format": {"type": "audio/pcmu"}, "targets": ["fra"]}, "input_audio_format"),
            ({"input_audio_format": "g711_ulaw", "language": "fra"}, "input_audio_format"),
        ]
        for session, param in refused:
            error = error_for(socket, {"type": "transcription_session.update", "session": session})
            assert error["param"] == param, (session, error)
        assert configure(socket) == before  # an empty update: what the session holds


def test_update_values_follow_the_rules_of_the_other_entry_points(server):
    with connect(server) as socket:
        error = error_for(socket, {"type": "transcription_session.update",
                                   "session": {"targets": ["deu", "German"]}})
        assert "names deu twice" in error["message"]  # as normalize_targets and llm-srt translate --tgt say
        assert configure(socket, input_audio_sample_rate=16000.0)["input_audio_sample_rate"] == 16000
        assert configure(socket, input_audio_format={"type": "audio/pcm", "rate": 24000})[
            "input_audio_sample_rate"] == 24000
        error = error_for(socket, {"type": "transcription_session.update",
                                   "session": {"input_audio_sample_rate": 16000.5}})
        assert "whole number" in error["message"] and error["param"] == "input_audio_sample_rate"
        assert configure(socket, targets="fra, deu", input_audio_format="pcm16")["targets"] == ["fra", "deu"]
        assert configure(socket, targets=[])["targets"] == []  # the transcript alone


def test_turn_detection_is_openais_server_vad_or_null(server, talk):
    """`turn_detection` as OpenAI's Realtime API: by default the server's detector ends an item at each silence
    (speech_started / speech_stopped per item); a longer `silence_duration_ms` keeps the two lines, half a second
    apart, in one item; null leaves the turns to the client's commits. Noise starts no item either way."""
    with connect(server) as socket:
        default = configure(socket, targets=["deu"], input_audio_transcription={"language": "eng"})
        assert default["turn_detection"] == {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 200,
                                             "silence_duration_ms": 100}
        events = stream_and_commit(socket, talk)
        types = [e["type"] for e in events]
        assert types.count("input_audio_buffer.speech_started") == types.count("input_audio_buffer.speech_stopped") == 2
        assert len(results(events)) == 2
        started = [e["audio_start_ms"] for e in events if e["type"] == "input_audio_buffer.speech_started"]
        assert started[0] == 0 and 1000 < started[1] < len(talk) * 1000 // SR

        longer = configure(socket, turn_detection={"type": "server_vad", "silence_duration_ms": 2000})
        assert longer["turn_detection"]["silence_duration_ms"] == 2000
        assert len(results(stream_and_commit(socket, talk))) == 1

        assert configure(socket, turn_detection=None)["turn_detection"] is None
        events = stream_and_commit(socket, talk)
        assert [e["type"] for e in events].count("input_audio_buffer.speech_started") == 1  # the commit ends it
        noise = (np.random.default_rng(1).standard_normal(2 * SR) * 0.03).astype(np.float32)
        for detection in (None, {"type": "server_vad"}):
            configure(socket, turn_detection=detection)
            events = stream_and_commit(socket, noise)
            assert [e["type"] for e in events] == ["input_audio_buffer.committed"], events

        for detection, message in (({"type": "semantic_vad"}, "Unsupported turn_detection type 'semantic_vad'"),
                                   ({"type": "server_vad", "threshold": 2}, "threshold must be a number between"),
                                   ({"type": "server_vad", "silence_ms": 300}, "Unknown turn_detection field"),
                                   # a whole number too large for a float ended the session (1011, OverflowError)
                                   ({"type": "server_vad", "prefix_padding_ms": 10 ** 400},
                                    "turn_detection.prefix_padding_ms: VAD speech_pad_ms must be a whole number"),
                                   ({"type": "server_vad", "threshold": 10 ** 400},
                                    "turn_detection.threshold: VAD threshold must be a number between 0 and 1"),
                                   ("on", "turn_detection must be an object or null")):
            socket.send(json.dumps({"type": "transcription_session.update", "session": {"turn_detection": detection}}))
            error = json.loads(socket.recv(timeout=10))
            assert error["type"] == "error" and message in error["error"]["message"], error


def served_name(server) -> str:
    return json.loads(get(server.url + "/v1/models")[2])["data"][0]["id"]


def test_an_openai_realtime_client_gets_the_offline_words_and_no_item_for_silence(server, parrot):
    """A session as OpenAI's Realtime transcription clients make it: OpenAI's event and field names, `pcm16` (which
    OpenAI defines as 24 kHz) without a rate, 0.1 s chunks, server VAD, and a second of near-silence before, between
    and after the two lines. The words are the offline ones (the lines the model says), and the silent stretches
    are no items (no empty transcripts). Read as 16 kHz, the 24 kHz audio was slowed down into other words."""
    import librosa

    _, _, clips = parrot
    hush = (np.random.default_rng(3).standard_normal(SR) * 1e-3).astype(np.float32)  # a quiet room, 1 s
    audio = np.concatenate([hush, clips[0], hush, hush, clips[1], hush])
    audio = librosa.resample(audio, orig_sr=SR, target_sr=24000)
    with connect(server, rate=None) as socket:
        socket.send(json.dumps({"type": "transcription_session.update", "session": {
            "input_audio_format": "pcm16",
            "input_audio_transcription": {"model": served_name(server), "language": "en", "prompt": ""},
            "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                               "silence_duration_ms": 500},
        }}))
        session = json.loads(socket.recv(timeout=10))
        assert session["type"] == "transcription_session.updated", session
        assert session["session"]["input_audio_sample_rate"] == 24000
        stream_in_chunks(socket, audio, 24000)
        socket.send(json.dumps({"type": "input_audio_buffer.commit"}))
        events = events_until(socket, "input_audio_buffer.committed")
    completed = [e["transcript"] for e in events if e["type"] == TRANSCRIPTION + ".completed"]
    assert completed == [text for text, _ in PARROT_LINES], events
    assert [e["type"] for e in events].count("input_audio_buffer.speech_started") == 2
    assert "error" not in [e["type"] for e in events]


def test_vllms_realtime_convention_is_16_khz(server, talk):
    """vLLM's client: `session.update` with the model at the top (no `session`), PCM16 at 16 kHz, commits."""
    with connect(server, rate=None) as socket:
        socket.send(json.dumps({"type": "session.update", "model": served_name(server)}))
        session = json.loads(socket.recv(timeout=10))
        assert session["type"] == "session.updated" and session["session"]["input_audio_sample_rate"] == SR, session
        # the spoken language (vLLM's form has no field for it; the parrot model has no detector): the rate stays
        assert configure(socket, input_audio_transcription={"language": "eng"})["input_audio_sample_rate"] == SR
        socket.send(json.dumps({"type": "input_audio_buffer.commit"}))  # vLLM's clients commit to start
        assert events_until(socket, "input_audio_buffer.committed")[-1]["item_id"] is None
        stream_in_chunks(socket, talk, SR)
        socket.send(json.dumps({"type": "input_audio_buffer.commit", "final": True}))
        events = events_until(socket, "input_audio_buffer.committed")
    completed = [e["transcript"] for e in events if e["type"] == TRANSCRIPTION + ".completed"]
    assert completed == [text for text, _ in PARROT_LINES], events
    whole = " ".join(completed)  # vLLM's events: the deltas add up to the text of transcription.done
    assert "".join(e["delta"] for e in events if e["type"] == "transcription.delta") == whole
    assert [e["text"] for e in events if e["type"] == "transcription.done"] == [whole]
    with connect(server, rate=None) as socket:
        error = error_for(socket, {"type": "session.update", "model": "whisper-1"})
    assert error["param"] == "model" and error["code"] == "model_not_found", error
