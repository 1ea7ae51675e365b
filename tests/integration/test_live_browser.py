"""The live page in a real browser: headless Chromium (Debian's package) whose fake microphone plays speech; the
transcript and the translation must appear on the page, as a person would see them."""

import base64
import contextlib
import json
import os
import re
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
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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


@contextlib.contextmanager
def live_page(page_url: str, tmp_path, *flags: str):
    """Headless Chromium on `page_url`, yielding a DevTools client of the page."""
    profile = str(tmp_path / "profile")
    browser = subprocess.Popen(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--autoplay-policy=no-user-gesture-required", "--remote-debugging-port=0", f"--user-data-dir={profile}",
         "--window-size=1200,800", *flags, page_url],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "chromium.log", "wb"))
    try:
        with websockets_sync.connect(devtools_page_url(profile, browser), max_size=None) as socket:
            yield DevTools(socket)
    finally:
        browser.terminate()
        browser.wait(timeout=30)


def wait_until_loaded(page: DevTools, timeout: float = 60) -> None:
    """Until the live page has loaded (it may still be loading when DevTools opens)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate("document.readyState == 'complete' && !!document.getElementById('columns')") \
            and time.monotonic() < deadline:
        time.sleep(0.2)


def wait_for_lines(page: DevTools, expected: list[str], timeout: float = 180) -> str:
    """The page's columns' text once every expected line is on it (or at the timeout)."""
    deadline, text = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        text = page.evaluate("document.getElementById('columns').innerText") or ""
        if all(line in text for line in expected):
            break
        time.sleep(0.5)
    return text


EXPECTED = ["I see three red cats.", "Ich sehe drei rote Katzen.", "Je vois trois chats rouges.",
            "Two blue dogs.", "Zwei blaue Hunde.", "Deux chiens bleus."]


def two_lines_wav(clips, path):
    import soundfile

    silence = np.zeros(int(0.6 * SR), dtype=np.float32)
    soundfile.write(path, np.concatenate([silence, clips[0], silence, clips[1], silence, silence]), SR,
                    subtype="PCM_16")
    return path


def test_the_live_page_shows_the_words_heard_by_a_fake_microphone(parrot, tmp_path):
    from llm_srt.serving import create_app

    model, processor, clips = parrot
    wav = two_lines_wav(clips, tmp_path / "speech.wav")
    with ServerThread(create_app((model, processor), max_new_tokens=40)) as server:
        with live_page(f"{server.url}/live?autostart=mic&language=eng&targets=deu,fra", tmp_path,
                       "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                       f"--use-file-for-fake-audio-capture={wav}") as page:
            text = wait_for_lines(page, EXPECTED)
            errors = page.evaluate("document.getElementById('errors').innerText")
            status = page.evaluate("document.getElementById('status').textContent")
            shot = base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"])
    (tmp_path / "live_page.png").write_bytes(shot)
    if os.environ.get("LLM_SRT_SAVE_SCREENSHOT"):  # the README's picture
        (open(os.path.join(ROOT, "docs", "live_page.png"), "wb")).write(shot)
    assert status == "listening" and not errors, (status, errors)
    for line in EXPECTED:
        assert line in text, f"{line!r} did not appear on the page:\n{text}"
    assert text.index("Transcript") < text.index("German (deu)") < text.index("French (fra)")


def test_an_uploaded_file_is_subtitled_and_its_srt_and_vtt_download(parrot, tmp_path):
    """The page's other way in: a file chosen in the file input is played to the server (here faster than real
    time), the lines appear, the session ends by itself ("done"), and "Download SRT/VTT" save the chosen track."""
    from llm_srt.serving import create_app

    model, processor, clips = parrot
    wav = two_lines_wav(clips, tmp_path / "talk.wav")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with ServerThread(create_app((model, processor), max_new_tokens=40)) as server:
        with live_page(f"{server.url}/live?language=eng&targets=deu,fra", tmp_path) as page:
            wait_until_loaded(page)
            page.call("Page.setDownloadBehavior", behavior="allow", downloadPath=str(downloads))
            page.evaluate("document.getElementById('fast').checked = true")
            chooser = page.call("Runtime.evaluate", expression="document.getElementById('file')")["result"]
            page.call("DOM.setFileInputFiles", objectId=chooser["objectId"], files=[str(wav)])  # fires "change"
            text = wait_for_lines(page, EXPECTED)
            deadline = time.monotonic() + 60
            while page.evaluate("document.getElementById('status').textContent") != "done" \
                    and time.monotonic() < deadline:
                time.sleep(0.2)
            status = page.evaluate("document.getElementById('status').textContent")
            errors = page.evaluate("document.getElementById('errors').innerText")
            for track, kind in (("deu", "srt"), ("fra", "vtt")):
                page.evaluate(f"document.getElementById('track').value = '{track}'; "
                              f"document.getElementById('{kind}').click()")
            deadline = time.monotonic() + 30
            while len(list(downloads.glob("live-*"))) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
    assert status == "done" and not errors, (status, errors)
    for line in EXPECTED:
        assert line in text, f"{line!r} did not appear on the page:\n{text}"
    srt = (downloads / "live-deu.srt").read_text(encoding="utf-8")
    vtt = (downloads / "live-fra.vtt").read_text(encoding="utf-8")
    cue_time = r"\d\d:\d\d:\d\d{mark}\d\d\d --> \d\d:\d\d:\d\d{mark}\d\d\d"
    assert re.fullmatch(r"1\n{t}\nIch sehe drei rote Katzen\.\n\n2\n{t}\nZwei blaue Hunde\.\n\n".format(
        t=cue_time.format(mark=",")), srt), srt
    assert re.fullmatch(r"WEBVTT\n\n{t}\nJe vois trois chats rouges\.\n\n{t}\nDeux chiens bleus\.\n\n".format(
        t=cue_time.format(mark=r"\.")), vtt), vtt
    # the cues follow the speech the detector heard (as the offline pipeline's windows): each starts where its line
    # starts in the file (after 0.6 s of silence), less the detector's padding (speech_pad_ms, 0.2 s)
    first, second = (float(m[0]) * 3600 + float(m[1]) * 60 + float(m[2].replace(",", "."))
                     for m in re.findall(r"(\d\d):(\d\d):(\d\d,\d\d\d) -->", srt))
    starts = (0.6, 0.6 + len(clips[0]) / SR + 0.6)
    assert all(start - 0.25 <= cue <= start + 0.2 for cue, start in zip((first, second), starts)), (first, second)


def test_a_link_with_a_stray_quote_or_unknown_languages_still_gives_a_working_page(tiny, tmp_path):
    """`/live?targets=deu%22` (a quote left in a shared link) threw in querySelector: no columns, no buttons. Unknown
    values are ignored with a note, and the rest of the link is taken."""
    from llm_srt.serving import create_app

    model, processor = tiny
    with ServerThread(create_app((model, processor), max_new_tokens=4)) as server:
        with live_page(f"{server.url}/live?language=xx%22&targets=deu%22,fra,toString,klingon", tmp_path) as page:
            wait_until_loaded(page)
            columns = page.evaluate("document.getElementById('columns').innerText")
            errors = page.evaluate("document.getElementById('errors').innerText")
            checked = page.evaluate("[...document.querySelectorAll('#targets input:checked')].map(b => b.value)")
            language = page.evaluate("document.getElementById('language').value")
            wired = page.evaluate("typeof document.getElementById('mic').onclick === 'function'")
    assert wired and "Transcript" in columns and "French (fra)" in columns, (columns, errors)
    assert checked == ["fra"] and language == "auto", (checked, language)
    for ignored in ('language xx"', 'target deu"', "target toString", "target klingon"):
        assert ignored in errors, errors
