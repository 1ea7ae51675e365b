"""Soak of `/v1/realtime` on the loopback: clients that vanish at any point of a session (mid-append, mid-decode,
mid-send, after an update) leave no slot held, no memory or open files behind, and a server holding sessions stops
on SIGTERM at once (the leak of round 4: such a client kept its slot forever and the server ignored SIGTERM)."""

import base64
import concurrent.futures
import json
import os
import random
import signal
import socket
import sys
import time
import urllib.request

import numpy as np
import pytest

from llm_srt.testing import SAMPLING_RATE as SR
from llm_srt.testing import ServerProcess, synthetic_speech


pytest.importorskip("fastapi")
websockets_sync = pytest.importorskip("websockets.sync.client")
# the clients leave at points a `with` block cannot express
pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SESSIONS, WARM_UP, CLIENTS_AT_ONCE = 280, 40, 6
SPEECH = synthetic_speech(2.0, seed=3)
CHUNK = SR // 10


def pcm16(audio: np.ndarray) -> str:
    return base64.b64encode((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()).decode()


def append(ws, audio: np.ndarray) -> None:
    for i in range(0, len(audio), CHUNK):
        ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": pcm16(audio[i:i + CHUNK])}))


def health(server) -> dict:
    with urllib.request.urlopen(server.url + "/health", timeout=10) as response:
        return json.load(response)


def server_usage(pid: int) -> tuple[int, int]:
    """(resident memory in kB, open file descriptors) of the server process."""
    with open(f"/proc/{pid}/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def settled(server) -> dict:
    """/health once no live session is left (or after 30 s: the caller's assertion names what is held)."""
    deadline = time.monotonic() + 30
    while (state := health(server))["live_sessions"] and time.monotonic() < deadline:
        time.sleep(0.1)
    return state


def session(url: str, index: int) -> str:
    """One client that leaves at a random point, gracefully or by dropping its socket; what it saw first."""
    rng = random.Random(index)
    point = rng.choice(["append", "decode", "send", "update"])
    ws = websockets_sync.connect(url, max_size=None, open_timeout=30)
    first = json.loads(ws.recv(timeout=30))["type"]
    if first == "error":  # every slot taken
        ws.close()
        return "refused"
    ws.send(json.dumps({"type": "transcription_session.update", "session": {
        "input_audio_transcription": {"language": "eng"}, "targets": rng.choice([["deu"], ["deu", "fra"], []])}}))
    if point == "append":  # gone in the middle of the audio
        append(ws, SPEECH[:CHUNK * rng.randint(1, 12)])
    elif point == "decode":  # gone while its windows decode (1 s of new audio starts a decode)
        append(ws, SPEECH[:int(SR * rng.uniform(1.1, 2.0))])
        time.sleep(rng.uniform(0.0, 0.3))
    elif point == "send":  # gone while the server sends the turn's events
        append(ws, SPEECH)
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        ws.recv(timeout=30)
    else:  # speech, then an update: refused during the turn, its reply queued behind the decode
        append(ws, SPEECH[:int(SR * rng.uniform(0.2, 2.0))])
        ws.send(json.dumps({"type": "transcription_session.update", "session": {"targets": ["fra"]}}))
    if rng.random() < 0.5:
        ws.close()
    else:  # vanished: no close frame
        ws.socket.shutdown(socket.SHUT_RDWR)
        ws.socket.close()
        ws.close()
    return point


@pytest.fixture(scope="module")
def server(tiny_folder, tmp_path_factory):
    log = tmp_path_factory.mktemp("soak") / "serve.log"
    command = [sys.executable, "-m", "llm_srt.cli", "serve", tiny_folder, "--port", "{port}", "--max-new-tokens",
               "6", "--max-live-sessions", str(SESSIONS)]  # a leak shows in /health; bursts are not refused
    with ServerProcess(command, env={**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}, log_path=log,
                       start_timeout=300) as running:
        yield running


def test_sessions_that_vanish_anywhere_leave_nothing_held(server):
    url = server.url.replace("http", "ws") + "/v1/realtime"
    with concurrent.futures.ThreadPoolExecutor(CLIENTS_AT_ONCE) as pool:
        seen = list(pool.map(session, [url] * WARM_UP, range(WARM_UP)))
        assert settled(server)["live_sessions"] == 0
        warm = server_usage(server.process.pid)
        middle = (WARM_UP + SESSIONS) // 2
        seen += pool.map(session, [url] * (middle - WARM_UP), range(WARM_UP, middle))
        assert settled(server)["live_sessions"] == 0
        half = server_usage(server.process.pid)
        seen += pool.map(session, [url] * (SESSIONS - middle), range(middle, SESSIONS))
    state = settled(server)
    rss, files = server_usage(server.process.pid)
    assert "refused" not in seen and {"append", "decode", "send", "update"} <= set(seen)
    assert state["status"] == "ok" and state["live_sessions"] == 0, state
    assert files <= warm[1] + 2, (warm, (rss, files))  # no socket, pipe or file left open
    # flat: the second 120 sessions add no more than the allocator's and kernels' caches settling (measured here:
    # +42 to +57 MB over the first 160 to 320 sessions after warm-up, not growing with their number)
    assert rss <= half[0] + 24 * 1024 and rss <= warm[0] + 96 * 1024, (warm, half, (rss, files))
    assert state["batches"] > 0  # windows were decoded on the way


def test_sigterm_stops_a_server_holding_sessions_at_once(server):
    """Three clients that sent speech and an update and stay connected without reading, one that vanished."""
    url = server.url.replace("http", "ws") + "/v1/realtime"
    held = []
    for index in range(4):
        ws = websockets_sync.connect(url, max_size=None, open_timeout=30)
        ws.recv(timeout=30)
        ws.send(json.dumps({"type": "transcription_session.update",
                            "session": {"input_audio_transcription": {"language": "eng"}, "targets": ["deu"]}}))
        append(ws, SPEECH)
        ws.send(json.dumps({"type": "transcription_session.update", "session": {"targets": ["fra"]}}))
        held.append(ws)
    held[3].socket.shutdown(socket.SHUT_RDWR)
    assert health(server)["live_sessions"] >= 3
    sent = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=5)
    except Exception:  # noqa: BLE001 - reported below with the server's log
        pass
    took = time.monotonic() - sent
    for ws in held:
        ws.close()
    assert server.process.poll() is not None, f"still running 5 s after SIGTERM:\n{server.log()[-3000:]}"
    assert took < 5 and server.process.returncode in (0, -signal.SIGTERM), (took, server.process.returncode)
