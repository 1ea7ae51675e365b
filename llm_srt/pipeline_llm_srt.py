"""`pipeline("speech-translation")`: speech translation and recognition with LLM-SRT, long audio and many targets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForSpeechSeq2Seq, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.utils import logging

from .audio_llm_srt import AudioInputError, describe_input, is_silent, load_audio, split_on_silence
from .configuration_llm_srt import normalize_language
from .processing_llm_srt import normalize_task


logger = logging.get_logger(__name__)

TASK_NAME = "speech-translation"
# Targets written without spaces between sentences when windows are joined.
UNSPACED_LANGUAGES = {"jpn", "zho", "yue", "tha"}


class SpeechTranslationPipeline(Pipeline):
    """Translate (or transcribe) speech with LLM-SRT.

    ```python
    from transformers import pipeline

    pipe = pipeline("speech-translation", model="path/or/repo", trust_remote_code=True)
    pipe("talk.wav", src_lang="eng", tgt_lang="deu")                 # {"text", "transcript", "src_lang", "tgt_lang"}
    pipe("talk.wav", src_lang="eng", tgt_lang=["deu", "fra", "jpn"])  # one audio, three targets, one LLM batch
    pipe(array, sampling_rate=8000, src_lang="eng", task="transcribe")
    ```

    Inputs: a file path, file bytes, a numpy array or torch tensor (with `sampling_rate`), a `datasets` Audio row
    (`{"array", "sampling_rate"}`), or a list of these. Audio is mixed down to mono and resampled to 16 kHz. Audio
    longer than `chunk_length_s` (default: the model's 30 s window) is split at pauses into windows that are
    translated as one batch and joined in order. Silent windows are skipped without running the LLM.

    Call arguments: `src_lang`, `tgt_lang` (a language or a list), `task` (`"translate"`: speech translation, the
    default; `"transcribe"`: recognition), `return_transcript` (default True), `return_timestamps` (per-window
    results under `"chunks"`), `chunk_length_s`, `sampling_rate` (for arrays), `batch_size` (audio windows per
    forward pass), `generate_kwargs` (e.g. `num_beams`, `max_new_tokens`; also accepted directly).
    """

    _load_processor = True
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False
    _pipeline_calls_generate = False

    GENERATE_ARGS = ("num_beams", "max_new_tokens", "no_repeat_ngram_size", "do_sample", "length_penalty",
                     "repetition_penalty", "min_new_tokens")

    def _sanitize_parameters(
        self,
        src_lang: str | None = None,
        tgt_lang: str | Sequence[str] | None = None,
        task: str | None = None,
        return_transcript: bool | None = None,
        return_timestamps: bool | None = None,
        chunk_length_s: float | None = None,
        sampling_rate: int | None = None,
        generate_kwargs: dict | None = None,
        **kwargs,
    ):
        generate_kwargs = dict(generate_kwargs or {})
        for name in list(kwargs):
            if name in self.GENERATE_ARGS:
                generate_kwargs[name] = kwargs.pop(name)
        if kwargs:
            raise TypeError(f"Unexpected arguments for the speech-translation pipeline: {sorted(kwargs)}.")

        def given(**values):
            return {name: value for name, value in values.items() if value is not None}

        preprocess = given(sampling_rate=sampling_rate, chunk_length_s=chunk_length_s)
        forward = given(src_lang=src_lang, tgt_lang=tgt_lang, task=task, generate_kwargs=generate_kwargs or None)
        postprocess = given(return_transcript=return_transcript, return_timestamps=return_timestamps)
        return preprocess, forward, postprocess

    # ------------------------------------------------------------------------------------------------------- steps
    def preprocess(self, inputs: Any, sampling_rate: int | None = None, chunk_length_s: float | None = None) -> dict:
        """Load one input and split it into windows: `{"windows": [arrays], "spans": [(start_s, end_s)]}`."""
        rate = self.processor.feature_extractor.sampling_rate
        audio = load_audio(inputs, sampling_rate=sampling_rate, target_rate=rate)
        window_seconds = float(self.processor.feature_extractor.chunk_length)
        chunk = window_seconds if chunk_length_s is None else float(chunk_length_s)
        if not 0 < chunk <= window_seconds:
            raise ValueError(f"chunk_length_s must be in (0, {window_seconds:g}] (the model's window), got {chunk}.")
        spans = split_on_silence(audio, rate, chunk)
        return {
            "windows": [audio[start:end] for start, end in spans],
            "spans": [(start / rate, end / rate) for start, end in spans],
            "duration": len(audio) / rate,
        }

    def _forward(
        self,
        model_inputs: dict,
        src_lang: str | None = None,
        tgt_lang: str | Sequence[str] | None = None,
        task: str = "translate",
        generate_kwargs: dict | None = None,
    ) -> dict:
        """Encode each window once, then decode every (window, target) pair in one `generate` batch."""
        processor, model = self.processor, self.model
        windows: list[np.ndarray] = model_inputs["windows"]
        task_name, src, targets = self._resolve_languages(src_lang, tgt_lang, task)
        features = processor.extract_features(windows, processor.feature_extractor.sampling_rate, device=self.device)
        features = features.to(device=self.device, dtype=next(model.audio_tower.parameters()).dtype)
        audio_embeds = model.get_audio_features(features)
        # Rows: window 0 x every target, window 1 x every target, ...
        rows = [(w, tgt) for w in range(len(windows)) for tgt in targets]
        text = processor.prepare_text(
            task_name, [src] * len(rows), [tgt for _, tgt in rows], [None] * len(rows), [None] * len(rows)
        )
        input_ids = torch.tensor(text["input_ids"], device=self.device)
        attention_mask = torch.tensor(text["attention_mask"], device=self.device)
        generated = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            audio_embeds=audio_embeds.repeat_interleave(len(targets), dim=0),
            **(generate_kwargs or {}),
        )
        decoded = processor.post_process(
            generated, task=task_name, src_lang=src, tgt_lang=[tgt for _, tgt in rows] if task_name == "srt" else None
        )
        return {"rows": rows, "decoded": decoded}

    def postprocess(self, model_outputs: dict, return_transcript: bool = True, return_timestamps: bool = False):
        """Join each target's windows in order; one dict per target (a list when several targets were asked)."""
        task, src, targets = model_outputs["task"], model_outputs["src_lang"], model_outputs["targets"]
        spans, results_by_window = model_outputs["spans"], model_outputs["results_by_window"]
        outputs = []
        for tgt in targets:
            pieces = [results_by_window[w].get(tgt) for w in range(len(spans))]
            transcripts = [p["transcript"] for p in pieces if p is not None and p.get("transcript")]
            translations = [p["translation"] for p in pieces if p is not None and p.get("translation")]
            transcript = self._join(transcripts, src)
            output = {
                "text": transcript if task == "asr" else self._join(translations, tgt),
                "src_lang": src,
                "tgt_lang": None if task == "asr" else tgt,
            }
            if return_transcript:
                output["transcript"] = transcript
            if return_timestamps:
                output["chunks"] = [
                    {"timestamp": span, "text": "" if p is None else (p.get("transcript") if task == "asr" else p.get("translation")) or "",
                     "transcript": "" if p is None else p.get("transcript") or ""}
                    for span, p in zip(spans, pieces)
                ]
            outputs.append(output)
        return outputs[0] if len(outputs) == 1 and model_outputs["single_target"] else outputs

    # -------------------------------------------------------------------------------------------------------- call
    def __call__(self, inputs, batch_size: int | None = None, **kwargs):
        """Run on one input or a list of inputs; see the class docstring for the arguments."""
        preprocess_params, forward_params, postprocess_params = self._sanitize_parameters(**kwargs)
        preprocess_params = {**self._preprocess_params, **preprocess_params}
        forward_params = {**self._forward_params, **forward_params}
        postprocess_params = {**self._postprocess_params, **postprocess_params}
        batch_size = batch_size or self._batch_size or 1
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        task, src, targets = self._resolve_languages(
            forward_params.get("src_lang"), forward_params.get("tgt_lang"), forward_params.get("task", "translate")
        )
        tgt_arg = forward_params.get("tgt_lang")
        single_target = task == "asr" or isinstance(tgt_arg, str)
        single_input = not isinstance(inputs, (list, tuple))
        items = [inputs] if single_input else list(inputs)

        prepared = []
        for index, item in enumerate(items):
            try:
                prepared.append(self.preprocess(item, **preprocess_params))
            except (AudioInputError, FileNotFoundError, ValueError) as error:
                where = "" if single_input else f"input {index} ({describe_input(item)}): "
                raise type(error)(f"{where}{error}") from None

        # Every non-silent window of every input, batched `batch_size` windows at a time.
        work = []
        for index, item in enumerate(prepared):
            silent = [is_silent(window) for window in item["windows"]]
            if all(silent):
                logger.warning(f"Input {index} is silent: returning an empty result without running the model.")
            work.extend((index, w) for w, quiet in enumerate(silent) if not quiet)
        results = [[{} for _ in item["windows"]] for item in prepared]
        for start in range(0, len(work), batch_size):
            chunk = work[start:start + batch_size]
            out = self.forward({"windows": [prepared[i]["windows"][w] for i, w in chunk]}, **forward_params)
            for (window_index, tgt), decoded in zip(out["rows"], out["decoded"]):
                owner, w = chunk[window_index]
                results[owner][w][tgt] = decoded

        outputs = [
            self.postprocess(
                {"task": task, "src_lang": src, "targets": targets, "single_target": single_target,
                 "spans": item["spans"], "results_by_window": results[index]},
                **postprocess_params,
            )
            for index, item in enumerate(prepared)
        ]
        return outputs[0] if single_input else outputs

    # ----------------------------------------------------------------------------------------------------- helpers
    def _resolve_languages(self, src_lang, tgt_lang, task) -> tuple[str, str, list[str]]:
        task_name = normalize_task(task or "translate")
        if task_name == "smt":
            raise ValueError("The speech-translation pipeline runs 'translate' (speech) or 'transcribe'.")
        if src_lang is None:
            raise ValueError("Pass src_lang=, the language spoken in the audio (e.g. 'eng').")
        src = normalize_language(src_lang)
        if task_name == "asr":
            return task_name, src, [src]
        if tgt_lang is None:
            raise ValueError("Pass tgt_lang= (one language or a list) for speech translation, or task='transcribe'.")
        targets = [tgt_lang] if isinstance(tgt_lang, str) else list(tgt_lang)
        if not targets:
            raise ValueError("tgt_lang is an empty list.")
        targets = list(dict.fromkeys(normalize_language(t) for t in targets))
        return task_name, src, targets

    @staticmethod
    def _join(parts: list[str], language: str) -> str:
        return ("" if language in UNSPACED_LANGUAGES else " ").join(p.strip() for p in parts if p.strip())


if TASK_NAME not in PIPELINE_REGISTRY.supported_tasks:  # remote-code copies of this module need not re-register
    PIPELINE_REGISTRY.register_pipeline(
        TASK_NAME, pipeline_class=SpeechTranslationPipeline, pt_model=AutoModelForSpeechSeq2Seq, type="multimodal"
    )

__all__ = ["SpeechTranslationPipeline", "TASK_NAME"]
