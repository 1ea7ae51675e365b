"""`pipeline("speech-translation")`: speech translation and recognition with LLM-SRT, long audio and many targets.

A `ChunkPipeline`, as Transformers' ASR pipeline: `preprocess` loads one input and yields its windows (the last one
marked `is_last`), windows of consecutive inputs are batched `batch_size` at a time for `_forward`, and `postprocess`
joins one input's windows. Inputs may be a single item, a list, a generator, a `KeyDataset`, a `datasets` column
(`ds["audio"]`) or a `datasets.Dataset` (rows with an `"audio"` column): lists give a list, iterables are consumed
lazily and give results in order as they complete.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset
from transformers import AutoModelForSpeechSeq2Seq
from transformers.pipelines.base import ChunkPipeline
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.pt_utils import PipelineIterator
from transformers.utils import logging

from .speech_llm_srt import VadOptions
from .audio_llm_srt import describe_input, load_audio
from .languages_llm_srt import (
    LANGUAGES, UNTRAINED_DIRECTION_ACTIONS, UntrainedWarnings, normalize_language, normalize_targets,
    same_language_note,
)
from .configuration_llm_srt import PIPELINE_TASK
from .decoding_llm_srt import TransformersEngine, decode_windows, vote_language
from .generation_llm_srt import temperature_problem
from .language_detection_llm_srt import whisper_language_name
from .processing_llm_srt import normalize_task
from .transcription_llm_srt import assemble, plan_windows


logger = logging.get_logger(__name__)

AUTO = "auto"
AUDIO_KEYS = ("array", "raw", "bytes", "path")
TASK_NAME = PIPELINE_TASK


def is_auto(language: Any) -> bool:
    """Whether a `src_lang` asks for detection: `None` or `"auto"`."""
    return language is None or (isinstance(language, str) and language.strip().lower() == AUTO)


class SpeechTranslationPipeline(ChunkPipeline):
    """Translate (or transcribe) speech with LLM-SRT.

    ```python
    from transformers import pipeline
    from transformers.pipelines.pt_utils import KeyDataset

    pipe = pipeline("speech-translation", model="path/or/repo", trust_remote_code=True)
    pipe("talk.wav", src_lang="eng", tgt_lang="deu")                 # {"text", "transcript", "src_lang", "tgt_lang"}
    pipe("talk.wav", src_lang="eng", tgt_lang=["deu", "fra", "jpn"])  # one audio, three targets, transcript once
    pipe("talk.wav", src_lang="auto", tgt_lang="deu")                 # the spoken language detected (Whisper's way)
    for out in pipe(KeyDataset(ds, "audio"), src_lang="eng", tgt_lang="deu", batch_size=16):  # lazy, in order
        ...
    ```

    Inputs: a file path, file bytes, a numpy array or torch tensor (with `sampling_rate`), a `datasets` Audio value
    (`{"array", "sampling_rate"}`, `{"path", "bytes"}` or a decoder), a `datasets` row (a dict with an `"audio"`
    key), or a list, generator, `KeyDataset`, `datasets` column or `datasets.Dataset` of these. Audio is mixed down
    to mono and resampled to 16 kHz. A voice-activity detector (Silero VAD, `speech_llm_srt`) finds the speech:
    each stretch of speech between silences becomes a window of at most `chunk_length_s` (default: the model's 30 s
    window), and the windows are translated and joined in order (the models learn one utterance per clip: a window
    of two sentences comes back with one). What is not speech (silence, noise, music, clicks) never reaches the
    model; an input without speech gives an empty result. `vad_parameters` (a dict of `VadOptions`' fields:
    `threshold`, `min_silence_duration_ms`, `speech_pad_ms`, ...) tune the detector; `vad_filter=False` turns it off
    (every window of the audio decoded, as faster-whisper's option).

    Call arguments: `src_lang` (a language, or `"auto"`/None: detected from the encoder output with Whisper's
    decoder, see [`LlmSrtForConditionalGeneration.detect_language`]; one language per input by majority vote over
    its windows, or per window with `language_per_window=True`; `unsupported_language="warn"` (default) or
    `"error"` when Whisper hears a language outside the 15; `untrained_direction="warn"` (default: a warning once
    per direction outside `config.trained_languages` / `trained_directions`) or `"error"` (refused, a
    `ValueError`)), `tgt_lang` (a language or a list), `task`
    (`"translate"`: speech translation, the default; `"transcribe"`: recognition), `return_transcript` (default
    True), `return_timestamps` (per-window results under `"chunks"`), `chunk_length_s`, `sampling_rate` (for
    arrays), `batch_size` (audio windows per forward pass, across inputs), `num_workers` (background workers that
    decode audio and compute features ahead), `streamer` (a `TextStreamer`-like object for greedy decoding of a
    single-target, single-window call), `generate_kwargs` (e.g. `num_beams`, `max_new_tokens`; also accepted
    directly), `shared_transcript` (several SRT targets: decode each window's transcript once and only
    the translations per target, `generate_many_targets`; on by default, `False` decodes every target on its own,
    exactly as single-target calls). With detection, results also hold
    `language_probability`.
    """

    _load_processor = True
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False
    _pipeline_calls_generate = False

    GENERATE_ARGS = ("num_beams", "max_new_tokens", "no_repeat_ngram_size", "do_sample", "length_penalty",
                     "repetition_penalty", "min_new_tokens", "shared_transcript")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # the base class keeps these for every call unchecked: refused here by the rule each call's values get
        _check_call_arguments({"batch_size": self._batch_size, "num_workers": self._num_workers})

    def _sanitize_parameters(
        self,
        src_lang: str | None = None,
        tgt_lang: str | Sequence[str] | None = None,
        task: str | None = None,
        return_transcript: bool | None = None,
        return_timestamps: bool | None = None,
        chunk_length_s: float | None = None,
        vad_filter: bool | None = None,
        vad_parameters: dict | VadOptions | None = None,
        sampling_rate: int | None = None,
        generate_kwargs: dict | None = None,
        streamer: Any = None,
        language_per_window: bool | None = None,
        unsupported_language: str | None = None,
        untrained_direction: str | None = None,
        **kwargs,
    ):
        generate_kwargs = dict(generate_kwargs or {})
        for name in list(kwargs):
            if name in self.GENERATE_ARGS:
                generate_kwargs[name] = kwargs.pop(name)
        if kwargs:
            raise TypeError(f"Unexpected arguments for the speech-translation pipeline: {sorted(kwargs)}.")
        if streamer is not None:
            generate_kwargs["streamer"] = streamer
        if vad_filter is not None and not isinstance(vad_filter, bool):
            raise ValueError(f"vad_filter must be True or False, got {vad_filter!r}.")
        if vad_filter is False and vad_parameters is not None:
            raise ValueError("vad_parameters tune the speech detector, which vad_filter=False turns off: pass one.")
        if unsupported_language not in (None, "warn", "error"):
            raise ValueError(f"unsupported_language must be 'warn' or 'error', got {unsupported_language!r}.")
        if untrained_direction not in (None, *UNTRAINED_DIRECTION_ACTIONS):
            raise ValueError(f"untrained_direction must be 'warn' or 'error', got {untrained_direction!r}.")

        def given(**values):
            return {name: value for name, value in values.items() if value is not None}

        preprocess = given(sampling_rate=sampling_rate, chunk_length_s=chunk_length_s)
        if vad_filter is not None or vad_parameters is not None:  # else preprocess's default: detection on
            preprocess["vad"] = None if vad_filter is False else VadOptions.from_value(vad_parameters)
        forward = given(src_lang=src_lang, tgt_lang=tgt_lang, task=task, generate_kwargs=generate_kwargs or None,
                        language_per_window=language_per_window, unsupported_language=unsupported_language,
                        untrained_direction=untrained_direction)
        postprocess = given(return_transcript=return_transcript, return_timestamps=return_timestamps)
        return preprocess, forward, postprocess

    # -------------------------------------------------------------------------------------------------------- call
    def __call__(self, inputs, *args, **kwargs):
        """Run on one input, a list (returns a list) or an iterable (returns a lazy iterator of results, in order);
        see the class docstring for the arguments."""
        _check_call_arguments(kwargs)
        inputs, single = self._as_pipeline_inputs(inputs)
        if isinstance(inputs, list) and not inputs:
            self._sanitize_parameters(**{k: v for k, v in kwargs.items() if k not in ("batch_size", "num_workers")})
            return []
        outputs = super().__call__(inputs, *args, **kwargs)
        return outputs[0] if single else outputs

    @staticmethod
    def _as_pipeline_inputs(inputs) -> tuple[Any, bool]:
        """What the base class iterates, and whether the call was for one input. `datasets` columns and datasets
        become indexable torch datasets (lazy, and `num_workers` can prefetch them in order)."""
        try:
            import datasets
        except ImportError:  # pragma: no cover - datasets is a dependency of the training extras only
            datasets = None
        if datasets is not None:
            column_type = getattr(datasets, "Column", None)
            if column_type is not None and isinstance(inputs, column_type):
                return _Indexable(inputs), False
            if isinstance(inputs, datasets.Dataset):
                return _Indexable(inputs), False
            if isinstance(inputs, datasets.IterableDataset):
                return (row for row in inputs), False
        if isinstance(inputs, tuple):
            return list(inputs), False
        if isinstance(inputs, (list, Dataset)) or isinstance(inputs, Iterator):
            if isinstance(inputs, Iterator) and not hasattr(inputs, "send"):
                inputs = (item for item in inputs)  # the base class streams generators: make any iterator one
            return inputs, False
        return _Single([inputs]), True

    def get_iterator(
        self, inputs, num_workers: int, batch_size: int, preprocess_params, forward_params, postprocess_params
    ):
        """Inputs -> (background workers) windows with features -> batches of `batch_size` windows -> `_forward`
        -> windows regrouped per input -> `postprocess`. Every stage is lazy and keeps the order."""
        forward_params = self._resolve(forward_params)
        postprocess_params = {**postprocess_params, "task": forward_params["task"],
                              "targets": forward_params["targets"], "single_target": forward_params["single_target"],
                              "forward_params": forward_params}
        name_inputs = not isinstance(inputs, _Single)
        if isinstance(inputs, Dataset) or isinstance(inputs, list):
            windows = _WindowedInputs(inputs, self._windows_of, preprocess_params, name_inputs)
        else:
            if num_workers > 1:
                logger.info("A generator is read by one background worker (num_workers=1), so its order is kept.")
                num_workers = 1
            windows = _WindowedStream(inputs, self._windows_of, preprocess_params)
        loader = DataLoader(windows, batch_size=1, collate_fn=_only, num_workers=num_workers)
        batches = _batch_windows(loader, batch_size)
        per_input = _regroup(self.forward(batch, **forward_params) for batch in batches)
        return PipelineIterator(per_input, self.postprocess, postprocess_params)

    # ------------------------------------------------------------------------------------------------------- steps
    def preprocess(self, inputs: Any, sampling_rate: int | None = None, chunk_length_s: float | None = None,
                   vad: VadOptions | None = VadOptions()):
        """Load one input and yield its windows (`transcription_llm_srt.plan_windows`: one per stretch of speech the
        detector hears with `vad`'s options, at most `chunk_length_s` long; `vad=None`: no detection):
        `input_features` (None for an input without speech), the `window`, and `is_last` on the input's last
        window."""
        if isinstance(inputs, dict) and "audio" in inputs and not any(key in inputs for key in ("array", "raw")):
            inputs = inputs["audio"]  # a datasets row
        rate = self.processor.feature_extractor.sampling_rate
        audio = load_audio(inputs, sampling_rate=sampling_rate, target_rate=rate)
        window_seconds = float(self.processor.feature_extractor.chunk_length)
        chunk = window_seconds if chunk_length_s is None else float(chunk_length_s)
        if not 0 < chunk <= window_seconds:
            raise ValueError(f"chunk_length_s must be in (0, {window_seconds:g}] (the model's window), got {chunk}.")
        windows = plan_windows(audio, rate, chunk, vad)
        for window in windows:
            yield {
                # Computed here, in the background workers when num_workers > 0, on CPU.
                "input_features": self.processor.extract_features([audio[window.start:window.end]], rate)
                if window.speech else None,
                "window": window,
                "is_last": window.index == len(windows) - 1,
            }

    def _windows_of(self, item: Any, index: int | None, params: dict) -> list[dict]:
        """All windows of one input; errors name the input (its position in a batch)."""
        try:
            return list(self.preprocess(item, **params))
        except (ValueError, FileNotFoundError) as error:
            if index is None:
                raise
            raise type(error)(f"input {index} ({describe_input(item)}): {error}") from None

    def _forward(
        self,
        model_inputs: list[dict],
        task: str = "srt",
        src_lang: str = "eng",
        targets: Sequence[str] = (),
        generate_kwargs: dict | None = None,
        language_per_window: bool = False,
        unsupported_language: str = "warn",
        **unused,
    ) -> list[dict]:
        """Encode the batch's windows once; detect languages when asked; decode every (window, target) pair whose
        source language is known in one `generate` batch. Windows of an input split across batches with a
        per-input vote wait (with their audio embeddings) for `postprocess`, which has all of them."""
        windows = [dict(window) for window in model_inputs]
        spoken = [i for i, window in enumerate(windows) if window["input_features"] is not None]
        auto = is_auto(src_lang)
        if spoken:
            features = torch.cat([windows[i]["input_features"] for i in spoken])
            audio_embeds, detections = self.engine.encode(input_features=features, detect_language=auto)
            for i, embeds, detection in zip(spoken, audio_embeds, detections or [None] * len(spoken)):
                windows[i].update(audio_embeds=embeds, detection=detection)
        for window in windows:
            window["silent"] = window.pop("input_features") is None
            window.setdefault("audio_embeds", None)
            window.setdefault("detection", None)
            window["decoded"] = None
        if auto:
            languages = self._languages_in_batch(windows, language_per_window)
        else:
            languages = {i: src_lang for i in spoken}
        ready = [i for i in spoken if languages.get(i) is not None]
        if ready:
            decoded = self._decode([windows[i]["audio_embeds"] for i in ready], [languages[i] for i in ready],
                                   task, targets, generate_kwargs)
            for i, result in zip(ready, decoded):
                windows[i]["decoded"] = result
                windows[i]["src_lang"] = languages[i]
        for i in ready:
            windows[i]["audio_embeds"] = None  # done with: do not carry it to postprocess
        return windows

    def postprocess(
        self,
        model_outputs: list[dict],
        return_transcript: bool = True,
        return_timestamps: bool = False,
        task: str = "srt",
        targets: Sequence[str] = (),
        single_target: bool = True,
        forward_params: dict | None = None,
    ):
        """Join each target's windows in order; one dict per target (a list when several targets were asked)."""
        windows = sorted(model_outputs, key=lambda w: w["window"].index)
        forward_params = forward_params or {}
        src = forward_params.get("src_lang")
        detected = None
        if is_auto(src):
            detected = vote_language([w["detection"] for w in windows if w["detection"] is not None])
            waiting = [w for w in windows if w["audio_embeds"] is not None]
            if waiting:  # an input whose windows came in several batches: decode them now with the vote
                language = detected["language"]
                if forward_params.get("language_per_window"):
                    languages = [w["detection"]["language"] for w in waiting]
                else:
                    languages = [language] * len(waiting)
                with torch.no_grad():
                    decoded = self._decode([w["audio_embeds"].to(self.device) for w in waiting], languages, task,
                                           targets, forward_params.get("generate_kwargs"))
                for window, result, lang in zip(waiting, decoded, languages):
                    window.update(decoded=result, src_lang=lang, audio_embeds=None)
            if detected is not None:
                self._check_supported(detected, forward_params.get("unsupported_language", "warn"))
                logger.info(f"Detected source language: {detected['language']} "
                            f"(probability {detected['probability']:.2f}).")
            src = detected["language"] if detected is not None else None
        else:
            src = normalize_language(src)
        spoken = {src} | {w.get("src_lang") for w in windows if w.get("src_lang")} if src else set()
        refuse = forward_params.get("untrained_direction") == "error"
        for language in sorted(spoken):  # warned once per direction the model was not trained on (or refused)
            for tgt in targets:
                # a target equal to the spoken language is its transcript (decoding_llm_srt.as_decoded): ASR
                self.untrained_warnings.check(language, None if task == "asr" or tgt == language else tgt,
                                              refuse=refuse)
                if detected is not None and tgt == language:
                    logger.info(same_language_note(language))
        rate = self.processor.feature_extractor.sampling_rate
        plan = [w["window"] for w in windows]
        outputs = []
        for tgt in targets:
            answers = {w["window"].index: w["decoded"][tgt] for w in windows if w["decoded"] is not None}
            found = assemble(plan, answers, task, src, None if task == "asr" else tgt, rate)
            output = {
                "text": found.text,
                "src_lang": src,
                "tgt_lang": found.tgt_lang,
                # False when the token budget cut a window's answer (its text is then partial or, for a
                # translation cut before the tag pair, left out)
                "complete": found.complete,
            }
            if is_auto(forward_params.get("src_lang")):
                output["language_probability"] = None if detected is None else detected["probability"]
            if return_transcript:
                output["transcript"] = found.transcript
            if return_timestamps:
                output["chunks"] = []
                for window, segment in zip(windows, found.segments):
                    chunk = {"timestamp": (segment.start, segment.end), "text": segment.text,
                             "transcript": segment.transcript, "complete": segment.complete}
                    if window["detection"] is not None:
                        chunk["src_lang"] = window.get("src_lang")
                        chunk["detected_language"] = window["detection"]["language"]
                        chunk["language_probability"] = window["detection"]["probability"]
                    output["chunks"].append(chunk)
            outputs.append(output)
        if all(w["silent"] for w in windows):
            logger.warning("An input holds no speech (the detector heard none): returning an empty result without "
                           "running the model.")
        return outputs[0] if len(outputs) == 1 and single_target else outputs

    # ----------------------------------------------------------------------------------------------------- helpers
    def _resolve(self, forward_params: dict) -> dict:
        """Check task and languages once per call (before any input is read) and resolve them."""
        params = dict(forward_params)
        task_name = normalize_task(params.pop("task", None) or "translate")
        if task_name == "smt":
            raise ValueError(
                "The speech-translation pipeline runs task='translate' (SRT: speech -> transcript and translation) "
                "or 'transcribe' (ASR). SMT, the paper's speech-aided text translation (the audio and its transcript "
                "in the prompt), goes through the processor: processor(audio, task='smt', src_lang=..., "
                "tgt_lang=..., transcript=...), then model.generate(**inputs)."
            )
        src = params.pop("src_lang", None)
        tgt_lang = params.pop("tgt_lang", None)
        if is_auto(src):
            src = AUTO
            self.model.get_language_detector()  # fails now, with how to enable it, rather than mid-iteration
        else:
            src = normalize_language(src)
        if task_name == "asr":
            targets, single_target = ["asr"], True
        else:
            if tgt_lang is None:
                raise ValueError("Pass tgt_lang= (one language or a list) for speech translation, or task='transcribe'.")
            targets = [tgt_lang] if isinstance(tgt_lang, str) else list(tgt_lang)
            targets = normalize_targets(targets, None if src == AUTO else src)  # a target named twice is refused
            single_target = isinstance(tgt_lang, str)
        untrained = params.pop("untrained_direction", None) or "warn"
        if untrained == "error" and src != AUTO:  # a given source: refused before any input is read
            for tgt in targets:
                self.untrained_warnings.check(src, None if task_name == "asr" or tgt == src else tgt, refuse=True)
        generate_kwargs = dict(params.pop("generate_kwargs", None) or {})
        if not isinstance(generate_kwargs.get("shared_transcript", True), bool):
            raise ValueError(f"shared_transcript must be True or False, got {generate_kwargs['shared_transcript']!r}.")
        if generate_kwargs.get("streamer") is not None:
            if len(targets) > 1 or generate_kwargs.get("num_beams", self.model.generation_config.num_beams) != 1:
                raise ValueError(
                    "streamer= streams greedy decoding of one target: pass num_beams=1 and a single tgt_lang."
                )
        return {"task": task_name, "src_lang": src, "targets": targets, "single_target": single_target,
                "generate_kwargs": generate_kwargs, "language_per_window": bool(params.pop("language_per_window", False)),
                "unsupported_language": params.pop("unsupported_language", None) or "warn",
                "untrained_direction": untrained}

    @property
    def untrained_warnings(self) -> UntrainedWarnings:
        """Warns once per direction outside the model's recorded training data (`config.trained_languages`)."""
        if getattr(self, "_untrained_warnings", None) is None:
            self._untrained_warnings = UntrainedWarnings(self.model.config, logger)
        return self._untrained_warnings

    @property
    def engine(self) -> TransformersEngine:
        """The decoding engine every window goes through (`generation_llm_srt`)."""
        if getattr(self, "_engine", None) is None:
            self._engine = TransformersEngine(self.model, self.processor)
        return self._engine

    def _decode(self, audio_embeds: list[torch.Tensor], src_langs: list[str], task: str, targets: Sequence[str],
                generate_kwargs: dict | None) -> list[dict]:
        """Every (window, target) pair through the decoding seam (`decode_windows`: several SRT targets share each
        window's transcript unless `shared_transcript=False`); per window `{target: answer}`, `"asr"` for
        transcription."""
        settings = dict(generate_kwargs or {})
        shared_transcript = settings.pop("shared_transcript", True)
        if settings.get("streamer") is not None and len(audio_embeds) * len(targets) > 1:
            raise ValueError(
                f"streamer= streams one sequence, but this batch decodes {len(audio_embeds) * len(targets)} (windows "
                "x targets): use batch_size=1, one target and audio of one window."
            )
        return decode_windows(self.engine, audio_embeds, src_langs, task, targets, settings, shared_transcript)

    def _languages_in_batch(self, windows: list[dict], per_window: bool) -> dict[int, str]:
        """Source language of each window of the batch that can be decoded now: per window, or the vote of its
        input when all of the input's windows are in this batch (windows of one input are consecutive)."""
        if per_window:
            return {i: w["detection"]["language"] for i, w in enumerate(windows) if w["detection"] is not None}
        languages, group = {}, []
        for i, window in enumerate(windows):
            group.append(i)
            if window["is_last"]:
                complete = windows[group[0]]["window"].index == 0
                vote = vote_language([windows[j]["detection"] for j in group if windows[j]["detection"] is not None])
                if complete and vote is not None:
                    languages.update({j: vote["language"] for j in group if windows[j]["detection"] is not None})
                group = []
        return languages

    @staticmethod
    def _check_supported(detected: dict, policy: str) -> None:
        """Whisper heard a language outside the 15 (in most windows): warn and go on with the most likely
        supported one, or raise with `unsupported_language="error"`."""
        heard = detected.get("unsupported")
        if heard is None:
            return
        message = (
            f"Whisper hears {whisper_language_name(heard)} ({heard}), which LLM-SRT does not support "
            f"(supported: {', '.join(LANGUAGES)}); "
        )
        if policy == "error":
            raise ValueError(message + "pass src_lang= to choose the language, or unsupported_language='warn'.")
        logger.warning(message + f"using the most likely supported language, {detected['language']} "
                                 f"(probability {detected['probability']:.2f} among them). Pass src_lang= to override.")



# ------------------------------------------------------------------------------------------------ entry checks
MIN_CHUNK_LENGTH_S = 1.0  # shorter windows hold too little speech to translate (and multiply the decode calls)
_INT_SETTINGS = {"num_beams": 1, "max_new_tokens": 1, "min_new_tokens": 0, "no_repeat_ngram_size": 0}
_FLOAT_SETTINGS = ("length_penalty", "repetition_penalty", "temperature")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_call_arguments(kwargs: dict) -> None:
    """Types and ranges of a call's arguments, checked before any work, each error naming the argument (the
    values would otherwise fail deep inside with a raw TypeError, or not at all)."""
    for name in ("src_lang",):
        value = kwargs.get(name)
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name} must be a language name or code (a string) or 'auto', got {value!r}.")
    tgt = kwargs.get("tgt_lang")
    if tgt is not None and not isinstance(tgt, str):
        if not isinstance(tgt, (list, tuple)) or not all(isinstance(t, str) for t in tgt):
            raise TypeError(f"tgt_lang must be a language (a string) or a list of languages, got {tgt!r}.")
    for name, low in (("batch_size", 1), ("num_workers", 0)):
        value = kwargs.get(name)
        if value is not None and (not _is_int(value) or value < low):
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
    chunk = kwargs.get("chunk_length_s")
    if chunk is not None and (not _is_number(chunk) or not chunk >= MIN_CHUNK_LENGTH_S):
        raise ValueError(f"chunk_length_s must be a number of seconds, at least {MIN_CHUNK_LENGTH_S:g} (and at most "
                         f"the model's window), got {chunk!r}.")
    generate_kwargs = kwargs.get("generate_kwargs")
    if generate_kwargs is not None and not isinstance(generate_kwargs, dict):
        raise TypeError(f"generate_kwargs must be a dict of generate's keywords, got {generate_kwargs!r}.")
    settings = {**(generate_kwargs or {}), **kwargs}
    for name, low in _INT_SETTINGS.items():
        value = settings.get(name)
        if value is not None and (not _is_int(value) or value < low):
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
    for name in _FLOAT_SETTINGS:
        value = settings.get(name)
        if value is not None and not _is_number(value):
            raise ValueError(f"{name} must be a number, got {value!r}.")
    if settings.get("temperature") is not None and temperature_problem(settings["temperature"]):
        raise ValueError(temperature_problem(settings["temperature"]))
    if settings.get("do_sample") is not None and not isinstance(settings["do_sample"], bool):
        raise ValueError(f"do_sample must be True or False, got {settings['do_sample']!r}.")


# ------------------------------------------------------------------------------------------------ iteration stages
class _Single(list):
    """A one-input call (errors do not name a position)."""


class _Indexable(Dataset):
    """A `datasets` column or dataset as a torch map-style dataset (rows read on demand, by index)."""

    def __init__(self, data):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        if index >= len(self.data):
            raise IndexError(index)
        return self.data[index]


class _WindowedInputs(Dataset):
    """Input `i` -> its windows (map-style: several workers prefetch in order)."""

    def __init__(self, inputs, windows_of, params: dict, name_inputs: bool):
        self.inputs, self.windows_of, self.params, self.name_inputs = inputs, windows_of, params, name_inputs

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> list[dict]:
        return self.windows_of(self.inputs[index], index if self.name_inputs else None, self.params)


class _WindowedStream(IterableDataset):
    """A generator's inputs -> their windows, read as they are needed."""

    def __init__(self, inputs: Iterable, windows_of, params: dict):
        self.inputs, self.windows_of, self.params = inputs, windows_of, params

    def __iter__(self):
        for index, item in enumerate(self.inputs):
            yield self.windows_of(item, index, self.params)


def _only(items: list):
    return items[0]


def _batch_windows(per_input: Iterable[list[dict]], batch_size: int) -> Iterator[list[dict]]:
    """Windows of consecutive inputs, `batch_size` at a time (the last batch may be smaller)."""
    batch = []
    for windows in per_input:
        for window in windows:
            batch.append(window)
            if len(batch) == batch_size:
                yield batch
                batch = []
    if batch:
        yield batch


def _regroup(batches: Iterable[list[dict]]) -> Iterator[list[dict]]:
    """Processed windows -> one list per input (closed by its `is_last` window)."""
    windows = []
    for batch in batches:
        for window in batch:
            windows.append(window)
            if window["is_last"]:
                yield windows
                windows = []


if TASK_NAME not in PIPELINE_REGISTRY.supported_tasks:  # remote-code copies of this module need not re-register
    PIPELINE_REGISTRY.register_pipeline(
        TASK_NAME, pipeline_class=SpeechTranslationPipeline, pt_model=AutoModelForSpeechSeq2Seq, type="multimodal"
    )

__all__ = ["SpeechTranslationPipeline", "TASK_NAME", "is_auto"]
