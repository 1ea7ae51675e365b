"""The live page in a real browser: headless Chromium (Debian's package) whose fake microphone plays speech; the
transcript and the translation must appear on the page, as a person would see them."""

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.request

import numpy as np
import pytest

from llm_srt.testing import SAMPLING_RATE as SR
from llm_srt.testing import ServerThread


pytest.importorskip("fastapi")
websockets_sync = pytest.importorskip("websockets.sync.client")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium (Debian package) not installed")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class DevTools:
    """A minimal Chrome DevTools protocol client over the page's WebSocket."""

    def __init__(self, socket):
        self.socket = socket
        self.ids = iter(range(1, 1 << 30))

    def call(self, method: str, **params) -> dict:
        message_id = next(self.ids)
        self.socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.socket.recv(timeout=60))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")



def devtools_page_url(profile: str, process: subprocess.Popen, timeout: float = 60) -> str:
    """The DevTools WebSocket address of the browser's page, once Chromium has written its DevTools port."""
    port_file = os.path.join(profile, "DevToolsActivePort")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with status {process.returncode}: see chromium.log beside the profile")
        if os.path.exists(port_file) and open(port_file).read().strip():
            port = open(port_file).read().split()[0]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
                pages = [p for p in json.load(response) if p.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
        time.sleep(0.2)
    raise RuntimeError("chromium did not open its DevTools port")


def test_the_live_page_shows_the_words_heard_by_a_fake_microphone(parrot, tmp_path):
    import soundfile
    from llm_srt.serving import create_app

    model, processor, clips = parrot
    wav = tmp_path / "speech.wav"
    silence = np.zeros(int(0.6 * SR), dtype=np.float32)
    soundfile.write(wav, np.concatenate([silence, clips[0], silence, clips[1], silence, silence]), SR,
                    subtype="PCM_16")
    profile = str(tmp_path / "profile")
    with ServerThread(create_app((model, processor), max_new_tokens=40)) as server:
        page_url = f"{server.url}/live?autostart=mic&language=eng&targets=deu,fra"
        browser = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
             f"--use-file-for-fake-audio-capture={wav}", "--autoplay-policy=no-user-gesture-required",
             "--remote-debugging-port=0", f"--user-data-dir={profile}", "--window-size=1200,800", page_url],
            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "chromium.log", "wb"))
        try:
            with websockets_sync.connect(devtools_page_url(profile, browser), max_size=None) as socket:
                page = DevTools(socket)
                expected = ["I see three red cats.", "Ich sehe drei rote Katzen.", "Je vois trois chats rouges.",
                            "Two blue dogs.", "Zwei blaue Hunde.", "Deux chiens bleus."]
                deadline, text = time.monotonic() + 180, ""
                while time.monotonic() < deadline:
                    text = page.evaluate("document.getElementById('columns').innerText") or ""
                    if all(line in text for line in expected):
                        break
                    time.sleep(0.5)
                errors = page.evaluate("document.getElementById('errors').innerText")
                status = page.evaluate("document.getElementById('status').textContent")
                shot = base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"])
        finally:
            browser.terminate()
            browser.wait(timeout=30)
    (tmp_path / "live_page.png").write_bytes(shot)
    if os.environ.get("LLM_SRT_SAVE_SCREENSHOT"):  # the README's picture
        (open(os.path.join(ROOT, "docs", "live_page.png"), "wb")).write(shot)
    assert status == "listening" and not errors, (status, errors)
    for line in expected:
        assert line in text, f"{line!r} did not appear on the page:\n{text}"
    assert text.index("Transcript") < text.index("German (deu)") < text.index("French (fra)")
