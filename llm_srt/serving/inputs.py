"""What a client sends to `llm-srt serve`, checked once: the multipart form of `/v1/audio/*` read into an
[`AudioRequest`], the upload read within the limits and decoded. Every refusal is a `ServeError` naming the field."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..audio_llm_srt import UNKNOWN_FRAMES, AudioInputError, audio_file_info, describe_input, load_audio
from ..generation_llm_srt import MIN_TEMPERATURE, temperature_problem
from ..languages_llm_srt import normalize_language, normalize_targets, supported_languages_text
from .protocol import RESPONSE_FORMATS, ServeError, shown, target_on_transcription_message
from .settings import ServeSettings


FORM_SLACK_BYTES = 1 << 20  # room for the other form fields and multipart framing in the Content-Length check
# the form fields that name target languages: ours (a list as `target_language[]` too) and vLLM's `to_language`
TARGET_FIELDS = ("target_language", "target_language[]", "to_language")
# decoding fields of vLLM's transcription API (and OpenAI-like clients) that this server does not take per request:
# answering without them would give the client an answer decoded otherwise than it asked, without a word
SERVER_SET_FIELDS = {
    "max_completion_tokens": "--max-new-tokens", "max_tokens": "--max-new-tokens", "min_tokens": None,
    "use_beam_search": "--num-beams", "n": "--num-beams", "length_penalty": None, "top_p": None, "top_k": None,
    "min_p": None, "seed": None, "frequency_penalty": None, "presence_penalty": None, "repetition_penalty": None,
}
STREAMED_FORMATS = ("json", "text")  # what stream=true can send: text deltas, then the text
STREAM_VALUES = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False, "": False}


@dataclass
class AudioRequest:
    """A checked transcription or translation request. `src_lang` is None when it is to be detected; `targets` is
    None for a transcription, and defaults to English for a translation (as OpenAI's)."""

    task: str  # "transcribe" or "translate"
    src_lang: str | None
    targets: list[str] | None
    target_field: str  # the form field that named the targets (named in errors)
    response_format: str
    stream: bool
    settings: dict[str, Any]  # generate keywords
    upload: Any


def language(value: str, param: str) -> str:
    """A language a client named, as our code; 400 naming `param` when it is none of the 15."""
    try:
        return normalize_language(value)
    except ValueError:
        raise ServeError(
            400, f"Unsupported {param} {shown(value)}. Supported languages: {supported_languages_text()}.", param,
            "unsupported_language",
        ) from None


def generation_settings(settings: ServeSettings, temperature: str | None = None) -> dict[str, Any]:
    """Greedy (or beam) decoding by default; `temperature` > 0 samples, in batches of its own."""
    result: dict[str, Any] = {"do_sample": False, "num_beams": settings.num_beams}
    if settings.max_new_tokens is not None:
        result["max_new_tokens"] = settings.max_new_tokens
    if temperature not in (None, ""):
        try:
            value = float(temperature)
        except ValueError:
            raise ServeError(400, f"temperature must be a number, got {shown(temperature)}.", "temperature",
                             "invalid_value") from None
        if temperature_problem(value) or value > 2:  # one rule with the pipeline and generate; OpenAI's 2
            raise ServeError(400, f"temperature must be 0 (greedy) or between {MIN_TEMPERATURE:g} and 2, got "
                             f"{shown(temperature)}.", "temperature", "invalid_value")
        if value > 0:
            result.update(do_sample=True, temperature=value, num_beams=1)
    return result


def check_server_set_fields(form) -> None:
    """A 400 naming the first decoding field of `SERVER_SET_FIELDS` the form sends (this server's decoding is set
    when it starts), rather than an answer decoded otherwise than the client asked."""
    for name, flag in SERVER_SET_FIELDS.items():
        if name in form:
            where = f" (it is set for every request by `llm-srt serve {flag}`)" if flag else ""
            raise ServeError(400, f"{name} is not taken per request by this server{where}; send temperature "
                             "to sample, or leave it out.", name, "unsupported_parameter")


def check_openai_fields(form, response_format: str) -> None:
    """OpenAI's fields this server cannot honour, refused by name (400) rather than silently dropped:
    `timestamp_granularities` (the openai client sends `timestamp_granularities[]`) "word", as there are no word
    times (a window's text is decoded whole), and "segment" outside verbose_json, as OpenAI refuses it; a non-empty
    `prompt`, which LLM-SRT's models were never trained to follow (their prompt is the language tags)."""
    for name in ("timestamp_granularities", "timestamp_granularities[]"):
        values = [str(value).strip() for value in form.getlist(name) if str(value).strip()]
        for value in values:
            if value not in ("segment", "word"):
                raise ServeError(400, f"{name} must be 'segment' or 'word', got {shown(value)}.", name,
                                 "invalid_value")
        if "word" in values:
            raise ServeError(400, f"{name} 'word' is not supported: this server has no word timestamps (each "
                             "window's text is decoded whole); send 'segment' with response_format verbose_json "
                             "for segments with their start and end.", name, "unsupported_parameter")
        if values and response_format != "verbose_json":
            raise ServeError(400, f"{name} needs response_format verbose_json (as OpenAI's API), got "
                             f"{shown(response_format)}.", name, "invalid_value")
    if str(form.get("prompt") or "").strip():
        raise ServeError(400, "prompt is not supported: LLM-SRT models are prompted with language tags only and were "
                         "not trained to follow a text prompt (its words would be ignored); leave it out.", "prompt",
                         "unsupported_parameter")


def check_model(settings: ServeSettings, name: str | None) -> None:
    """404 for a `model` other than the served one (or one of its aliases)."""
    if name not in (None, "", settings.served_model_name, *settings.model_aliases):
        raise ServeError(
            404, f"The model {shown(name)} does not exist; this server serves {settings.served_model_name!r}.",
            "model", "model_not_found",
        )


def target_fields(form) -> tuple[list[str], str]:
    """The target languages a form names, and the field that named them: `target_language` (also as
    `target_language[]`) or vLLM's `to_language`, so a client written for vLLM's server is not answered in English
    without a word. Both at once is a 400: which one counts would be a guess."""
    given = {name: [v for v in form.getlist(name) if str(v).strip()] for name in TARGET_FIELDS}
    named = [name for name, values in given.items() if values]
    if "to_language" in named and len(named) > 1:
        raise ServeError(400, "Both to_language (vLLM's name) and target_language are given: send one of them.",
                         "to_language", "invalid_value")
    return [value for values in given.values() for value in values], (named[0] if named else "target_language")


def targets(values: Sequence[str], src: str | None = None, name: str = "target_language") -> list[str]:
    """`target_language` values (each may be comma-separated) -> codes, in order; English if none. A language named
    twice is a 400 naming it (`normalize_targets`, the pipeline's rule); the source language is allowed, with a
    logged warning. `name` is the form field the values came from, named in errors."""
    names = [part.strip() for value in values for part in str(value).split(",") if part.strip()]
    if not names:
        return ["eng"]
    for part in names:
        language(part, name)  # an unsupported one: 400 unsupported_language
    try:
        return normalize_targets(names, src, name)  # each valid, so short
    except ValueError as error:
        raise ServeError(400, str(error), name, "invalid_value") from None


def parse_form(form, task: str, settings: ServeSettings) -> AudioRequest:
    """The checked [`AudioRequest`] of a `/v1/audio/transcriptions` (`task="transcribe"`) or `/v1/audio/translations`
    form; the upload itself is read later ([`read_upload`])."""
    check_model(settings, form.get("model"))
    response_format = str(form.get("response_format") or "json")
    if response_format not in RESPONSE_FORMATS:
        raise ServeError(400, f"Unsupported response_format {shown(response_format)}; choose one of "
                         f"{', '.join(RESPONSE_FORMATS)}.", "response_format", "invalid_value")
    check_server_set_fields(form)
    check_openai_fields(form, response_format)
    stream = STREAM_VALUES.get(str(form.get("stream") or "").strip().lower())
    if stream is None:
        raise ServeError(400, f"stream must be true or false, got {shown(form.get('stream'))}.", "stream",
                         "invalid_value")
    if stream and response_format not in STREAMED_FORMATS:
        # the events carry text deltas alone: no cue times, no segments (nor does OpenAI stream these formats)
        raise ServeError(400, f"stream=true sends text deltas, which response_format {response_format} cannot be "
                         f"streamed as: use response_format {' or '.join(STREAMED_FORMATS)} with stream, or stream "
                         "false.", "stream", "invalid_value")
    spoken = form.get("language")
    # omitted or "auto" (as the CLI and the pipeline write it): detected from the audio
    detect = spoken in (None, "") or str(spoken).strip().lower() == "auto"
    src = None if detect else language(str(spoken), "language")
    target_values, target_field = target_fields(form)
    wanted = None
    if task == "translate":
        wanted = targets(target_values, src, target_field)
    elif target_values:
        # a transcript would come back where a translation was asked for, without a word
        raise ServeError(400, target_on_transcription_message(target_field), target_field, "invalid_value")
    if wanted and len(wanted) > 1 and (stream or response_format not in ("json", "verbose_json")):
        raise ServeError(400, "Several target languages are answered as JSON: use response_format json or "
                         "verbose_json, without stream.", target_field, "invalid_value")
    return AudioRequest(task, src, wanted, target_field, response_format, stream,
                        generation_settings(settings, form.get("temperature")), form.get("file"))


def file_name(upload) -> str:
    """The upload's file name for messages, cut as every echoed value is (`shown`)."""
    name = getattr(upload, "filename", None) or "file"
    return name if len(repr(name)) <= 60 else shown(name)


async def read_upload(upload, settings: ServeSettings) -> bytes:
    """The uploaded file's bytes: 400 without one or for an empty one, 413 past `max_file_mb`."""
    if upload is None or isinstance(upload, str):
        raise ServeError(400, "Upload the audio as the multipart form field 'file'.", "file",
                         "missing_required_parameter")
    limit = int(settings.max_file_mb * 1024 * 1024)
    data = await upload.read(limit + 1)
    name = file_name(upload)
    if len(data) > limit:
        raise ServeError(413, f"{name}: the file is larger than this server's limit of {settings.max_file_mb:g} MB.",
                         "file", "file_too_large")
    if not data:
        raise ServeError(400, f"{name}: the file is empty.", "file", "empty_file")
    return data


def decode_upload(data: bytes, name: str, settings: ServeSettings, sampling_rate: int) -> np.ndarray:
    """The upload's audio as mono samples at `sampling_rate`; 413 past `max_audio_seconds` (from its header, before
    decoding), 400 for what cannot be decoded."""
    check_duration(data, name, settings.max_audio_seconds)
    try:
        return load_audio(data, target_rate=sampling_rate)
    except AudioInputError as error:
        # load_audio names the input "<N bytes>"; the file name is more useful
        message = str(error).replace(describe_input(data), name, 1)
        if not message.startswith(name):
            message = f"{name}: {message}"
        raise ServeError(400, f"{message} Send a wav, flac, ogg or mp3 file.", "file", "invalid_file") from None


def check_duration(data: bytes, name: str, limit: float) -> None:
    """Refuse (413) audio longer than `limit` seconds from its header, before decoding it: a small file of compressed
    silence can hold days of audio. A header soundfile cannot read is left to `load_audio`."""
    import soundfile

    try:
        header = soundfile.info(io.BytesIO(data))
        # a header without the length (a streamed FLAC) is counted by decoding, never past the limits below
        most = min(limit * max(header.samplerate, 1), limit * 96_000 / max(header.channels, 1))
        info = audio_file_info(io.BytesIO(data), max_frames=int(most) + 1)
    except Exception:  # noqa: BLE001 - not a format soundfile reads: load_audio reports it
        return
    if info.samplerate <= 0 or info.frames < 0:
        return  # check_sampling_rate names a bad rate
    seconds = info.frames / info.samplerate
    # the decoded array holds every channel at the file's own rate: bound its size as well as its duration
    # (as much as 48 kHz stereo of the longest duration)
    if seconds > limit or info.frames * max(info.channels, 1) > limit * 96_000:
        if header.frames >= UNKNOWN_FRAMES:  # a header without the length: counted only until past the limit
            raise ServeError(413, f"{name}: longer than this server's limit of {limit:g} s of audio "
                             f"({info.channels} channel(s) at {info.samplerate} Hz; its header holds no length, "
                             "counted while decoding).", "file", "audio_too_long")
        raise ServeError(413, f"{name}: {seconds:.0f} s of audio ({info.channels} channel(s) at "
                         f"{info.samplerate} Hz), more than this server's limit of {limit:g} s.", "file",
                         "audio_too_long")


def counted(request, limit: int, limit_mb: float):
    """`request` reading its body through a counter: a 413 as soon as more than `limit` bytes have arrived, whether
    or not the client declared a Content-Length (a chunked upload is not read whole first)."""
    from starlette.requests import Request

    receive, seen = request.receive, 0

    async def receive_counted():
        nonlocal seen
        message = await receive()
        if message.get("type") == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise ServeError(413, f"The upload is larger than this server's limit of {limit_mb:g} MB.", "file",
                                 "file_too_large")
        return message

    return Request(request.scope, receive_counted)


async def read_form(request, settings: ServeSettings):
    """The request's multipart form, its size bounded by `max_file_mb` as it arrives (413), malformed bodies a 400."""
    limit = int(settings.max_file_mb * 1024 * 1024)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + FORM_SLACK_BYTES:
        raise ServeError(413, f"The upload is larger than this server's limit of {settings.max_file_mb:g} MB.",
                         "file", "file_too_large")
    request = counted(request, limit + FORM_SLACK_BYTES, settings.max_file_mb)
    try:
        return await request.form(max_files=1, max_fields=64)
    except ServeError:
        raise
    except Exception as error:  # starlette's MultiPartException and malformed bodies
        raise ServeError(400, f"Could not read the multipart form: {error}", None, "invalid_form") from None


__all__ = ["AudioRequest", "SERVER_SET_FIELDS", "TARGET_FIELDS", "check_model", "decode_upload", "generation_settings",
           "language", "parse_form", "read_form", "read_upload", "targets"]
