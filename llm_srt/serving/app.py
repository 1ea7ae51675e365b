"""The OpenAI-compatible app of `llm-srt serve`: [`create_app`] opens the engine and wires the FastAPI routes to the
request logic (`server.SpeechServer`) and the live sessions (`realtime.py`)."""

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

from transformers.utils import logging

from ..engines.loading import open_engine
from .protocol import ServeError, error_body
from .realtime import run_session
from .server import SpeechServer
from .settings import ServeSettings


logger = logging.get_logger(__name__)

LIVE_PAGE = Path(__file__).parent / "static" / "live.html"


def create_app(model: str | os.PathLike | tuple[Any, Any], **settings):
    """The FastAPI app serving `model` (a saved model folder or Hub id, or a `(model, processor)` pair).

    `settings` are [`ServeSettings`]' fields (the `llm-srt serve` flags: `max_batch_size`, `engine`, ...), checked
    before the model loads. `engine` decodes: "transformers" (default; `device`, `dtype`) or "vllm" (a model folder;
    vLLM's engine with `tensor_parallel_size`, greedy or sampled decoding, see `llm_srt.vllm.engine.VllmEngine`).

    The decoding worker starts and stops with the app (its lifespan); `app.state.server` is the [`SpeechServer`]
    (its `batcher.stats` counts the `generate` calls).
    """
    try:
        from fastapi import FastAPI, Request, WebSocket
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import HTMLResponse, JSONResponse
        from starlette.exceptions import HTTPException as StarletteHTTPException
    except ImportError as error:
        raise ImportError(f"llm-srt serve needs FastAPI: pip install 'llm-srt[serve]' ({error}).") from None
    options = ServeSettings(**settings)
    if isinstance(model, (str, os.PathLike)):
        options.served_model_name = options.served_model_name or os.path.basename(os.path.normpath(os.fspath(model)))
        options.model_aliases = tuple(dict.fromkeys([os.fspath(model), os.path.normpath(os.fspath(model))]))
    else:
        options.served_model_name = options.served_model_name or "llm-srt"
    # vLLM's KV cache: room for a full batch of the longest answers unless --kv-cache-gib says otherwise
    vllm_options = {"kv_cache_gib": options.kv_cache_gib, "kv_cache_sequences": options.max_batch_size} \
        if options.engine == "vllm" else {}
    engine = open_engine(model, options.engine, device=options.device, dtype=options.dtype,
                         trust_remote_code=options.trust_remote_code, tensor_parallel_size=options.tensor_parallel_size,
                         quantization=options.quantization, log=logger.warning, **vllm_options)
    server = SpeechServer(engine, engine.config, options)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        server.batcher.start()
        try:
            yield
        finally:
            await asyncio.to_thread(server.batcher.stop)
            if hasattr(server.engine, "shutdown"):
                await asyncio.to_thread(server.engine.shutdown)

    app = FastAPI(title="llm-srt", description="OpenAI-compatible speech recognition and translation with LLM-SRT",
                  lifespan=lifespan)
    app.state.server = server

    @app.exception_handler(ServeError)
    async def serve_error(request: Request, error: ServeError):
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        return JSONResponse(error_body(str(error)), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        code = "not_found" if error.status_code == 404 else None
        return JSONResponse(error_body(str(error.detail), code=code), status_code=error.status_code)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception):
        logger.error(f"Unexpected error on {request.url.path}: {error!r}")
        return JSONResponse(error_body(f"Internal error: {error}", "server_error"), status_code=500)

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request):
        """Speech recognition, OpenAI's `audio.transcriptions.create`."""
        return await server.handle(request, "transcribe")

    @app.post("/v1/audio/translations")
    async def translations(request: Request):
        """Speech translation into English (default) or `target_language` (one or several, comma-separated)."""
        return await server.handle(request, "translate")

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [
            {"id": server.settings.served_model_name, "object": "model", "created": server.created,
             "owned_by": "llm-srt"}
        ]}

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": server.settings.served_model_name, "queued_windows": server.batcher.queued,
                "batches": server.batcher.stats["batches"], "rows": server.batcher.stats["rows"],
                "windows": server.batcher.stats["windows"], "live_sessions": server.live_sessions}

    @app.websocket("/v1/realtime")
    async def realtime(websocket: WebSocket):
        """Live transcription and translation (`serving/realtime.py`: OpenAI's Realtime transcription events)."""
        await run_session(server, websocket, server.settings.max_live_sessions)

    @app.get("/", include_in_schema=False)
    @app.get("/live", include_in_schema=False)
    async def live_page():
        """The live subtitle page: microphone or file, targets, live transcript and translations, SRT/VTT."""
        return HTMLResponse(LIVE_PAGE.read_text(encoding="utf-8"))

    return app
