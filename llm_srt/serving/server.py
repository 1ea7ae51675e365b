"""The request logic behind `llm-srt serve`'s routes: [`SpeechServer`] holds the engine and the batcher and answers a
checked request (`inputs.AudioRequest`) along the one path every caller takes (`transcription_llm_srt`): the
recording planned into windows, the speech windows decoded through the shared batcher, the answers assembled per
target and written in the asked format."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import numpy as np
from transformers.utils import logging

from ..decoding_llm_srt import DecodingEngine, TransformersEngine, vote_language
from ..languages_llm_srt import LANGUAGES, UNSPACED_LANGUAGES, UntrainedDirectionError, UntrainedWarnings
from ..transcription_llm_srt import Transcription, assemble, plan_windows
from . import inputs
from .batcher import Batcher, Row
from .protocol import ServeError, compression_ratio, error_body, sse, to_srt, to_vtt, transcription_json
from .settings import ServeSettings


logger = logging.get_logger(__name__)

_DISCONNECT_POLL_SECONDS = 0.5  # how often a waiting request checks that its client is still there
# "stop", or "length" when --max-new-tokens cut any answer of the response (as OpenAI's finish_reason words it)
FINISH_REASON_HEADER = "X-LLM-SRT-Finish-Reason"


class SpeechServer:
    """The engine, the batcher and the request logic behind the HTTP routes and the live sessions."""

    PASS_LANGUAGE = f"Pass `language`, the language spoken in the audio (one of: {', '.join(LANGUAGES)})."

    def __init__(self, engine: DecodingEngine, config, settings: ServeSettings):
        self.engine, self.settings = engine, settings
        self.processor = engine.processor
        self.batcher = Batcher(self.engine, settings.max_batch_size, settings.max_wait_ms,
                               max_queue=settings.max_queue)
        self.sampling_rate = engine.sampling_rate
        self.window_seconds = engine.window_seconds
        self.created = int(time.time())
        # a request outside the model's recorded training data is answered, with a warning once per direction
        self.untrained_warnings = UntrainedWarnings(config, logger)
        self.live_sessions = 0  # open /v1/realtime sessions

    @classmethod
    def for_model(cls, model, processor, settings: ServeSettings) -> "SpeechServer":
        """A server decoding a loaded transformers model with its processor."""
        return cls(TransformersEngine(model, processor), model.config, settings)

    def generation_settings(self, temperature: str | None = None) -> dict:
        return inputs.generation_settings(self.settings, temperature)

    def detect_language(self, windows: Sequence[np.ndarray]) -> str:
        """The spoken language of the request's speech windows, where the model can detect it: each window
        detected (`DecodingEngine.detect_languages`, Whisper's way) and the majority taken (`vote_language`), as the
        pipeline does; else a 400. A model without a Whisper decoder raises `LanguageDetectionUnavailable` (a
        ValueError)."""
        try:
            with self.batcher.model_lock:
                found = vote_language(self.engine.detect_languages(list(windows)))
        except ValueError as error:  # LanguageDetectionUnavailable: no Whisper decoder to detect with
            raise ServeError(400, f"Language detection is not enabled for this model ({error}). "
                             + self.PASS_LANGUAGE, "language", "language_required") from None
        if found.get("unsupported"):
            raise ServeError(400, f"The audio sounds like {found['unsupported']!r}, which this model does "
                             "not support. " + self.PASS_LANGUAGE, "language", "unsupported_language")
        return inputs.language(str(found["language"]), "language")

    def check_direction(self, src: str, rows: Sequence[Row], target_field: str) -> None:
        """Warn once per direction outside the model's training data, or refuse it (400) with
        `--untrained-direction error`."""
        for row in rows:
            try:
                self.untrained_warnings.check(src, None if row.task == "asr" else row.tgt,
                                              refuse=self.settings.untrained_direction == "error")
            except UntrainedDirectionError as error:
                raise ServeError(400, str(error), target_field if row.task != "asr" else "language",
                                 "untrained_direction") from None

    # ---------------------------------------------------------------------------------------------- requests
    async def handle(self, request, task: str):
        """One transcription or translation request -> a Starlette response."""
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

        form = await inputs.read_form(request, self.settings)
        asked = inputs.parse_form(form, task, self.settings)
        data = await inputs.read_upload(asked.upload, self.settings)
        name = inputs.file_name(asked.upload)
        audio = await run_in_threadpool(inputs.decode_upload, data, name, self.settings, self.sampling_rate)

        windows = plan_windows(audio, self.sampling_rate, self.window_seconds, self.settings.vad_options())
        speech = [window for window in windows if window.speech]
        clips = [audio[window.start:window.end] for window in speech]
        src = asked.src_lang
        if src is None:
            src = await run_in_threadpool(self.detect_language,
                                          clips or [audio[window.start:window.end] for window in windows])
        targets = asked.targets or [src]
        rows = [Row("asr" if tgt == src else "srt", src, tgt) for tgt in targets]
        self.check_direction(src, rows, asked.target_field)
        submitted = self.batcher.submit_all(clips, rows, asked.settings)  # 503 when full
        futures = {window.index: asyncio.wrap_future(future) for window, future in zip(speech, submitted)}
        duration = len(audio) / self.sampling_rate

        if asked.stream:
            return StreamingResponse(self._stream(futures, targets[0]), media_type="text/event-stream")

        pending = set(futures.values())
        while pending:
            _, pending = await asyncio.wait(pending, timeout=_DISCONNECT_POLL_SECONDS)
            if pending and await request.is_disconnected():
                for future in pending:  # still queued: dropped undecoded (the batch in progress finishes)
                    future.cancel()
                logger.info(f"A client went away: {len(pending)} of its windows were cancelled.")
                return Response(status_code=499)
        try:
            done = {index: future.result() for index, future in futures.items()}
        except ServeError:
            raise
        except Exception as error:
            logger.warning(f"A request failed while decoding: {error}")
            raise ServeError(500, f"Decoding failed: {error}", None, "decoding_failed", "server_error") from None
        outputs = [assemble(speech, {index: answers[t] for index, answers in done.items()}, row.task, src, row.tgt,
                            self.sampling_rate, duration) for t, row in enumerate(rows)]
        # text, srt and vtt bodies have no room for the `complete` flag that JSON carries: a header says it for
        # every format, so an answer cut by --max-new-tokens (a translation cut before it began is empty) is never
        # taken for a finished one
        complete = all(output.complete for output in outputs)
        headers = {FINISH_REASON_HEADER: "stop" if complete else "length"}
        temperature = float(asked.settings.get("temperature", 0.0))
        if len(outputs) > 1:
            verbose = asked.response_format == "verbose_json"
            return JSONResponse({"translations": [transcription_json(o, task, verbose, temperature) for o in outputs]},
                                headers=headers)
        output = outputs[0]
        if asked.response_format in ("json", "verbose_json"):
            return JSONResponse(transcription_json(output, task, asked.response_format == "verbose_json",
                                                   temperature), headers=headers)
        text = {"text": lambda: output.text, "srt": lambda: to_srt(output.speech_segments),
                "vtt": lambda: to_vtt(output.speech_segments)}[asked.response_format]()
        return PlainTextResponse(text, headers=headers)

    async def _stream(self, futures: dict, tgt: str):
        """Server-sent events in OpenAI's format: one `transcript.text.delta` per window, then `...done`."""
        pieces = []
        separator = "" if tgt in UNSPACED_LANGUAGES else " "
        complete = True
        try:
            for future in futures.values():
                answer = (await future)[0]
                text, complete = (answer["text"] or "").strip(), complete and answer["complete"]
                if not text:
                    continue
                delta = (separator if pieces else "") + text
                pieces.append(delta)
                yield sse({"type": "transcript.text.delta", "delta": delta})
        except Exception as error:  # the status line is sent already: report the failure as an event
            logger.warning(f"A streamed request failed while decoding: {error}")
            yield sse({"type": "error", "error": error_body(f"Decoding failed: {error}", "server_error")["error"]})
            return
        finally:  # the client went away (the response is cancelled) or a window failed: drop the rest undecoded
            for future in futures.values():
                future.cancel()
        yield sse({"type": "transcript.text.done", "text": "".join(pieces), "complete": complete,
                   "finish_reason": "stop" if complete else "length"})


__all__ = ["FINISH_REASON_HEADER", "SpeechServer", "Transcription", "compression_ratio"]
