"""`llm-srt serve`: an OpenAI-compatible speech recognition and translation server with request batching.

```bash
pip install -e ".[serve]"
llm-srt serve path/to/model --port 8000 --max-batch-size 16 --max-wait-ms 10
```

```python
from openai import OpenAI

client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
client.audio.transcriptions.create(model="model", file=open("talk.wav", "rb"), language="en")
client.audio.translations.create(model="model", file=open("talk.wav", "rb"), extra_body={"language": "de"})
```

Endpoints: `POST /v1/audio/transcriptions`, `POST /v1/audio/translations` (into English by default; the extra form
field `target_language`, or vLLM's `to_language`, names one of the 15 languages or several, comma-separated),
`GET /v1/models`, `GET /health`, the WebSocket `/v1/realtime` (live transcription and translation after OpenAI's
Realtime transcription events, `realtime.py`) and the live page `GET /` (`/live`, `static/live.html`).

Batching: every request is cut into the model's windows (at pauses, as the pipeline does); a background worker
thread collects queued windows of all concurrent requests and decodes them together in one `generate` call (at most
`max_batch_size` rows, a row being one (window, target) pair, waiting at most `max_wait_ms` for the batch to fill).
Prompts are per row, so transcriptions and translations into different languages share a batch; only requests with
the same generation settings (`temperature`) are batched together. The prompt block is left-padded, so with greedy
decoding (the server's default) a batched request gets exactly the answer it would get alone.
"""

import importlib


# public name -> its module; imported on first use, so the `llm-srt` command reads the serve flags (`settings.py`)
# without importing FastAPI or the model code
_PUBLIC = {"create_app": "app", "Batcher": "batcher", "Row": "batcher", "ServeError": "protocol", "to_srt": "protocol",
           "to_vtt": "protocol", "SpeechServer": "server", "ServeSettings": "settings"}


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)


__all__ = list(_PUBLIC)
