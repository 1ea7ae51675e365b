"""LLM-SRT processor: Whisper log-mel features + Qwen2 tokenizer, the three task prompts, batching and decoding."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from transformers import BatchFeature, ProcessorMixin
from transformers.utils import logging

from .audio_llm_srt import as_float_mono, check_sampling_rate, describe_input, undecoded_kind
from .languages_llm_srt import (
    LANGUAGES, MANDARIN_TAGS, language_tag, normalize_language, normalize_targets, text_after_last_tag,
)


logger = logging.get_logger(__name__)

TASKS = ("asr", "smt", "srt")
TASK_ALIASES = {"transcribe": "asr", "translate": "srt", "text_translate": "smt", "mt": "smt", "st": "srt"}
IGNORE_INDEX = -100
# The paper's SMT (speech-aided text translation): the audio AND its transcript in the prompt.
SMT_WITHOUT_AUDIO = (
    "task='smt' without audio: the paper's SMT is speech-aided (the audio and its transcript, which the prompt "
    "carries), and the models learn it only that way; from the transcript alone a trained model may repeat it, loop "
    "or answer in another language. Pass the audio as well (processor(audio, task='smt', transcript=...))."
)
SRT_TRANSCRIPT_IGNORED = (
    "transcript= was given for task='srt' without translation=: SRT prompts hold no transcript (the model writes "
    "one), so it is ignored; it is used only as the training answer, with translation=. To translate a known "
    "transcript, use task='smt' with the audio."
)
_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    """Log `message` once per process (a training or decoding loop calls the processor over and over)."""
    if message not in _WARNED:
        _WARNED.add(message)
        logger.warning(message)


def normalize_task(task: str) -> str:
    """`asr`, `smt` or `srt` (also accepts `transcribe` and `translate`)."""
    key = str(task).lower()
    key = TASK_ALIASES.get(key, key)
    if key not in TASKS:
        raise ValueError(f"Unknown task {task!r}; choose one of {TASKS} (or 'transcribe' / 'translate').")
    return key


def _per_example(value: Any, batch_size: int, name: str) -> list:
    """Broadcast one value to the batch, or check that a list has one value per example."""
    if value is None or isinstance(value, str):
        return [value] * batch_size
    values = list(value)
    if len(values) != batch_size:
        raise ValueError(f"Got {len(values)} values for {name} but the batch has {batch_size} examples.")
    return values


class LlmSrtProcessor(ProcessorMixin):
    r"""Builds LLM-SRT inputs exactly as the original implementation does.

    Sequences are `[num_audio_tokens audio slots][prompt][answer][eos]`, prompt and answer tokenized together as one
    string with `tokenizer.encode`. Prompts (the language tags are plain text, not added tokens):

    | task | prompt | answer |
    |---|---|---|
    | asr | `<|src|>` | `transcript` |
    | smt | `transcript<|src|><|tgt|>` | `translation` |
    | srt | `<|src|><|tgt|>` | `transcript<|src|><|tgt|>translation` |

    In a batch the `[audio + prompt]` block is left-padded and the `[answer + eos]` block right-padded; labels are
    -100 over audio, prompt and padding (masked by position: Qwen2.5's pad and eos are the same token).

    Args:
        feature_extractor (`WhisperFeatureExtractor`): log-mel features, audio padded to the encoder window.
        tokenizer: the LLM's tokenizer.
        num_audio_tokens (`int`, defaults to 80): audio slots per example (the model's `num_queries`).
        audio_token_id (`int`): placeholder id of the audio slots (the model's `config.audio_token_id`).
        mandarin_tag (`str`, defaults to `"zho"`): how Mandarin is tagged (`zho` or `cmn`), as the model was trained.
    """

    def __init__(
        self,
        feature_extractor=None,
        tokenizer=None,
        num_audio_tokens: int = 80,
        audio_token_id: int | None = None,
        mandarin_tag: str = "zho",
    ):
        if audio_token_id is None:
            raise ValueError("LlmSrtProcessor needs audio_token_id (the model's config.audio_token_id).")
        if audio_token_id < len(tokenizer):
            raise ValueError(
                f"audio_token_id {audio_token_id} is an id the tokenizer can emit (its vocabulary has {len(tokenizer)} "
                "tokens); it must be a spare row of the LLM's embedding matrix."
            )
        if mandarin_tag not in MANDARIN_TAGS:
            raise ValueError(f"mandarin_tag must be one of {MANDARIN_TAGS}, got {mandarin_tag!r}.")
        if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
            raise ValueError("The tokenizer needs pad and eos tokens (Qwen2.5 uses <|endoftext|> for both).")
        self.num_audio_tokens = num_audio_tokens
        self.audio_token_id = audio_token_id
        self.mandarin_tag = mandarin_tag
        super().__init__(feature_extractor, tokenizer)

    # ---------------------------------------------------------------------------------------------------- prompts
    def tag(self, language: str) -> str:
        """The prompt tag of a language, e.g. `tag("English") == "<|eng|>"`."""
        return language_tag(language, self.mandarin_tag)

    def build_prompt(self, task: str, src_lang: str, tgt_lang: str | None = None, transcript: str | None = None) -> str:
        """The prompt string the original writes after the audio slots."""
        task = normalize_task(task)
        src = self.tag(src_lang)
        if task == "asr":
            return src
        if tgt_lang is None:
            raise ValueError(f"Task {task!r} needs a target language (tgt_lang).")
        pair = src + self.tag(tgt_lang)
        if task == "srt":
            return pair
        if transcript is None:
            raise ValueError("Task 'smt' translates a transcript: pass transcript=...")
        return transcript + pair

    def build_answer(
        self, task: str, src_lang: str, tgt_lang: str | None, transcript: str | None, translation: str | None
    ) -> str | None:
        """The training target; None when the parts it needs are not given (inference)."""
        task = normalize_task(task)
        if task == "asr":
            return transcript
        if translation is None:
            return None
        if task == "smt":
            return translation
        if transcript is None:
            return None
        return transcript + self.tag(src_lang) + self.tag(tgt_lang) + translation

    # ------------------------------------------------------------------------------------------------------ audio
    @staticmethod
    def _audio_batch(audio: Any) -> list:
        """The clips of `audio`. A batch is a list (or tuple) of clips; anything else is one clip: a 1-D array or
        tensor, a 2-D multi-channel one (`(channels, frames)` or `(frames, channels)`, mixed down), or a list of
        numbers."""
        if isinstance(audio, (list, tuple)):
            first = audio[0] if len(audio) else None
            # a list of samples: numbers, or 0-d arrays / tensors (`list(tensor)`), as `load_audio` reads it
            if isinstance(first, (numbers.Number, np.number, np.bool_)) or getattr(first, "ndim", None) == 0:
                return [audio]
            return list(audio)
        return [audio]

    def _check_audio(self, audio: Any, sampling_rate: int | None) -> list[np.ndarray]:
        """The clips of `audio` as mono float32 arrays, with the pipeline's normalisation ([`as_float_mono`]).

        Only decoded samples at the feature extractor's rate are taken: file paths, file bytes and audio dicts are
        refused with a pointer to `load_audio` (which decodes, resamples and mixes down) and the pipeline.
        """
        expected_rate = self.feature_extractor.sampling_rate
        if sampling_rate is None:
            raise ValueError(f"Pass sampling_rate= with the audio; the model expects {expected_rate} Hz.")
        sampling_rate = check_sampling_rate(sampling_rate, "audio")
        if sampling_rate != expected_rate:
            raise ValueError(
                f"Audio sampled at {sampling_rate} Hz, but the model expects {expected_rate} Hz: resample it first "
                "(llm_srt.load_audio(array, sampling_rate=...) or the speech-translation pipeline resample for you)."
            )
        max_samples = int(self.feature_extractor.chunk_length * expected_rate)
        arrays = []
        for index, clip in enumerate(self._audio_batch(audio)):
            where = f"audio[{index}]"
            undecoded = undecoded_kind(clip)
            if undecoded:
                raise ValueError(
                    f"{where} is {undecoded} ({describe_input(clip)}); the processor takes decoded samples at "
                    f"{expected_rate} Hz: decode it with llm_srt.load_audio(...) (which also resamples and mixes "
                    "down), or use the speech-translation pipeline, which takes files directly."
                )
            if not (hasattr(clip, "detach") or isinstance(clip, (np.ndarray, list, tuple))):
                raise ValueError(
                    f"{where} is of type {type(clip).__name__}, not a clip: pass a 1-D array of samples, or a list of them."
                )
            array = as_float_mono(clip, where)
            if array.size > max_samples:
                raise ValueError(
                    f"{where} lasts {array.size / expected_rate:.1f} s, longer than the model's "
                    f"{self.feature_extractor.chunk_length} s window; split it, or use the speech-translation "
                    "pipeline, which chunks long audio."
                )
            arrays.append(array)
        return arrays

    def extract_features(
        self, audio: Any, sampling_rate: int | None, device: str | None = None
    ) -> "torch.Tensor":  # noqa: F821
        """Check the clips (one clip or a list, as in `__call__`) and compute padded log-mel features
        `(batch, mel_bins, frames)` as a torch tensor.

        `device` ("cuda", ...) computes the spectrogram there, so feature extraction keeps up with a GPU model.
        """
        arrays = self._check_audio(audio, sampling_rate)
        features = self.feature_extractor(
            arrays, sampling_rate=self.feature_extractor.sampling_rate, padding="max_length", return_attention_mask=False,
            return_tensors="pt", device=str(device) if device is not None else "cpu",
        )
        return features["input_features"]

    # ------------------------------------------------------------------------------------------------------- call
    def __call__(
        self,
        audio: np.ndarray | Sequence[np.ndarray] | None = None,
        *,
        task: str = "srt",
        src_lang: str | Sequence[str] | None = None,
        tgt_lang: str | Sequence[str] | None = None,
        transcript: str | Sequence[str] | None = None,
        translation: str | Sequence[str] | None = None,
        sampling_rate: int | None = None,
        return_tensors: str | None = "pt",
        **kwargs,
    ) -> BatchFeature:
        """Prepare a batch for `forward` (with `labels` when the answers are given) or `generate`.

        Args:
            audio: one clip or a list of clips of 16 kHz samples. Every task carries the audio as the paper's
                models were trained: SMT is speech-aided, the audio with its transcript in the prompt; SMT without
                audio (text only) is prepared, with a warning (outside what the models learn). A clip is a
                1-D numpy array, torch tensor or list of numbers, or a 2-D multi-channel one (`(channels, frames)`
                or `(frames, channels)` with at most 8 channels) that is mixed down to mono: a 2-D array is never a
                batch. Integer PCM is scaled by its width, half-precision is converted (the pipeline's rules,
                [`as_float_mono`]). Files, bytes and audio dicts are refused: decode them with `load_audio`.
            task: `"asr"`, `"smt"` or `"srt"` (also `"transcribe"`, `"translate"`).
            src_lang / tgt_lang: one language for the batch or one per example (codes, ISO 639-1 or names).
                `src_lang="auto"`: the language is to be detected, so no prompt can be written yet: only
                `input_features` are returned; `model.detect_language(input_features)` gives the languages to call
                the processor with (the speech-translation pipeline does both steps).
            transcript: the source text; in the prompt for smt, the target for asr and the first part of srt's
                (training only: an srt prompt holds no transcript, so one given without `translation` is ignored,
                with a warning).
            translation: the target text for smt and srt.
            sampling_rate: the audio's rate; must be the feature extractor's (16000).

        Returns:
            `BatchFeature` with `input_ids`, `attention_mask`, `input_features` (with audio), `labels` (when answers
            are given).
        """
        if kwargs:
            raise TypeError(f"Unexpected arguments: {sorted(kwargs)}.")
        task = normalize_task(task)
        if audio is not None:
            audio = self._audio_batch(audio)  # one clip becomes a batch of one
        if audio is None and task != "smt":
            raise ValueError(f"Task {task!r} needs audio; only 'smt' (translating a given transcript) runs without it.")
        if audio is None:
            _warn_once(SMT_WITHOUT_AUDIO)
        if task == "srt" and transcript is not None and translation is None:
            _warn_once(SRT_TRANSCRIPT_IGNORED)
        if audio is not None:
            batch_size = len(audio)
        elif transcript is not None:
            batch_size = 1 if isinstance(transcript, str) else len(transcript)
        else:
            raise ValueError("Nothing to process: pass audio, or a transcript for text translation.")
        if batch_size == 0:
            raise ValueError("The batch is empty.")
        if isinstance(src_lang, str) and src_lang.strip().lower() == "auto":
            if audio is None:
                raise ValueError("src_lang='auto' detects the language from audio; text translation needs src_lang.")
            features = self.extract_features(audio, sampling_rate)
            return BatchFeature(data={"input_features": features}, tensor_type=return_tensors)
        if src_lang is None:
            raise ValueError(f"Pass src_lang (one of: {', '.join(LANGUAGES)}, or 'auto' to detect it).")
        src_langs = _per_example(src_lang, batch_size, "src_lang")
        tgt_langs = _per_example(tgt_lang, batch_size, "tgt_lang")
        if task != "asr":  # a target equal to its source: kept, with the warning every entry point gives
            for src, tgt in dict.fromkeys(zip(src_langs, tgt_langs)):
                if src is not None and tgt is not None:
                    normalize_targets([tgt], src, "tgt_lang")
        transcripts = _per_example(transcript, batch_size, "transcript")
        translations = _per_example(translation, batch_size, "translation")

        data = self.prepare_text(
            task, src_langs, tgt_langs, transcripts, translations, with_audio=audio is not None
        )
        if audio is not None:
            data["input_features"] = self.extract_features(audio, sampling_rate)
        return BatchFeature(data=data, tensor_type=return_tensors)

    def prepare_text(
        self,
        task: str,
        src_langs: Sequence[str],
        tgt_langs: Sequence[str | None],
        transcripts: Sequence[str | None],
        translations: Sequence[str | None],
        with_audio: bool = True,
    ) -> dict[str, list[list[int]]]:
        """Token ids, attention mask and (when every answer is known) labels of a batch, one entry per example.

        With `with_audio` each sequence starts with `num_audio_tokens` audio slots for the model to fill.
        """
        task = normalize_task(task)
        audio_slots = self.num_audio_tokens if with_audio else 0
        prompt_blocks, answer_blocks = [], []
        for src, tgt, text, target in zip(src_langs, tgt_langs, transcripts, translations, strict=True):
            prompt = self.build_prompt(task, src, tgt, text)
            answer = self.build_answer(task, src, tgt, text, target)
            prompt_ids, answer_ids = self.tokenizer.encode(prompt), None
            if answer is not None:
                # As the original: the input is the joint encode(prompt + answer) + eos, and its first
                # len(encode(prompt)) positions count as prompt. The answer's first character may merge with the
                # prompt's last `>` in Qwen's BPE (`>"`), so the joint ids are not encode(prompt) + the rest.
                full_ids = self.tokenizer.encode(prompt + answer) + [self.tokenizer.eos_token_id]
                prompt_ids, answer_ids = full_ids[: len(prompt_ids)], full_ids[len(prompt_ids):]
            prompt_blocks.append([self.audio_token_id] * audio_slots + prompt_ids)
            answer_blocks.append(answer_ids)
        with_labels = all(block is not None for block in answer_blocks)
        if not with_labels and any(block is not None for block in answer_blocks):
            raise ValueError("Either every example or none must carry its answer (for labels).")
        return self._pad(prompt_blocks, answer_blocks if with_labels else None)

    def _pad(
        self, prompt_blocks: list[list[int]], answer_blocks: list[list[int]] | None, after: int = 0
    ) -> dict[str, list]:
        """Left-pad the prompt blocks (right-pad the answers). With `after`, the padding goes after the blocks'
        first `after` ids (a prefix they share, whose KV cache is computed once) instead of before them."""
        pad = self.tokenizer.pad_token_id
        prompt_len = max(len(block) for block in prompt_blocks)
        answer_len = max(len(block) for block in answer_blocks) if answer_blocks else 0
        input_ids, attention_mask, labels = [], [], []
        for index, prompt in enumerate(prompt_blocks):
            answer = answer_blocks[index] if answer_blocks else []
            left = prompt_len - len(prompt)
            right = answer_len - len(answer)
            head, tail = prompt[:after], prompt[after:]
            input_ids.append(head + [pad] * left + tail + answer + [pad] * right)
            attention_mask.append([1] * len(head) + [0] * left + [1] * (len(tail) + len(answer)) + [0] * right)
            labels.append([IGNORE_INDEX] * (left + len(prompt)) + answer + [IGNORE_INDEX] * right)
        data = {"input_ids": input_ids, "attention_mask": attention_mask}
        if answer_blocks:
            data["labels"] = labels
        return data

    # ------------------------------------------------------------------------------------ one audio, many targets
    def shared_prompt_prefix(self, task: str, src_lang: str, tgt_langs: Sequence[str]) -> list[int]:
        """The ids every `[audio + prompt]` block of these targets starts with: the audio slots and the prompt's
        first BPE chunks (`<|eng|><|` for SRT), whose KV cache can be computed once for all targets. The last
        chunk of a prompt is left out: the text after the prompt may merge into it. A target named twice is refused
        (`normalize_targets`)."""
        if tgt_langs:
            normalize_targets(tgt_langs, name="tgt_langs")
        blocks = self.prompt_blocks(task, src_lang, list(tgt_langs) or [None])
        prompts = [block[self.num_audio_tokens:] for block in blocks]
        shared = prompts[0][:-1]
        for prompt in prompts[1:]:
            length = 0
            while length < min(len(shared), len(prompt)) and shared[length] == prompt[length]:
                length += 1
            shared = shared[:length]
        return [self.audio_token_id] * self.num_audio_tokens + shared

    def prompt_blocks(
        self, task: str, src_lang: str, tgt_langs: Sequence[str | None], transcripts: Sequence[str | None] | None = None
    ) -> list[list[int]]:
        """Unpadded `[audio slots] + encode(prompt)` ids of inference rows, one per target (what `prepare_text`
        left-pads into a batch), for callers that pad them themselves (`pad_prompt_blocks`). `transcripts` (one per
        target) are the SMT prompts' source texts."""
        slots = [self.audio_token_id] * self.num_audio_tokens
        transcripts = [None] * len(tgt_langs) if transcripts is None else transcripts
        return [slots + self.tokenizer.encode(self.build_prompt(task, src_lang, tgt, text))
                for tgt, text in zip(tgt_langs, transcripts, strict=True)]

    def forced_answer_inputs(
        self, src_lang: str, tgt_langs: Sequence[str], transcripts: Sequence[str]
    ) -> tuple[list[list[int]], list[list[int]]]:
        """Inputs for decoding only the translations of SRT answers whose transcript is known, one row per
        (transcript, target), transcript-major.

        Returns `(input_blocks, answer_prefixes)`: `input_blocks[r]` is `[audio slots] + encode(prompt + transcript +
        <|src|><|tgt|>)`, the joint encoding the processor gives a training example whose answer starts with that
        text (Qwen's BPE merges across the prompt/answer and transcript/tag boundaries, so the parts may not be
        encoded apart); `answer_prefixes[r]` is `encode(transcript + <|src|><|tgt|>)`, the answer's start as
        returned to the caller."""
        slots = [self.audio_token_id] * self.num_audio_tokens
        blocks, prefixes = [], []
        for transcript in transcripts:
            for tgt in tgt_langs:
                forced = transcript + self.tag(src_lang) + self.tag(tgt)
                blocks.append(slots + self.tokenizer.encode(self.build_prompt("srt", src_lang, tgt) + forced))
                prefixes.append(self.tokenizer.encode(forced))
        return blocks, prefixes

    def transcripts_before_source_tag(self, generated_ids, src_lang: str) -> list[str | None]:
        """The transcript of each SRT answer decoded up to the source tag that ends it (`transcript<|src|>`), or
        None where the answer holds no source tag."""
        tag = self.tag(src_lang)
        return [text.split(tag)[0].strip() if tag in text else None for text in self.batch_decode(generated_ids)]

    def pad_prompt_blocks(self, blocks: list[list[int]], shared_prefix_length: int = 0) -> dict[str, list]:
        """`input_ids` and `attention_mask` of `[audio + prompt]` blocks, left-padded as the processor batches them;
        with `shared_prefix_length`, padded after that many leading ids (a prefix all blocks share and whose KV
        cache is reused), so the prefix sits at the same positions in every row."""
        if any(block[:shared_prefix_length] != blocks[0][:shared_prefix_length] for block in blocks):
            raise ValueError(f"The blocks do not share their first {shared_prefix_length} ids.")
        return self._pad(blocks, None, after=shared_prefix_length)

    # ---------------------------------------------------------------------------------------------------- decoding
    def batch_decode(self, *args, **kwargs) -> list[str]:
        """Decode generated ids (special tokens skipped, as the original)."""
        kwargs.setdefault("skip_special_tokens", True)
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs) -> str:
        kwargs.setdefault("skip_special_tokens", True)
        return self.tokenizer.decode(*args, **kwargs)

    def split_srt_output(self, text: str, src_lang: str, tgt_lang: str) -> dict[str, Any]:
        """Split `transcript<|src|><|tgt|>translation` into its parts.

        A malformed output (the tag pair is missing) is not lost: `raw` keeps it whole, `transcript` is None and
        `translation` is the text after the last `|>` (what the original scorer uses), `well_formed` is False.
        """
        pair = self.tag(src_lang) + self.tag(tgt_lang)
        parts = text.split(pair)
        if len(parts) >= 2:
            return {"transcript": parts[0].strip(), "translation": parts[1].strip(), "raw": text, "well_formed": True}
        return {"transcript": None, "translation": text_after_last_tag(text), "raw": text, "well_formed": False}

    def post_process(
        self,
        generated_ids,
        task: str = "srt",
        src_lang: str | Sequence[str] | None = None,
        tgt_lang: str | Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Decode `generate`'s output into one dict per example: `transcript` (asr, srt), `translation` (smt, srt)."""
        task = normalize_task(task)
        texts = self.batch_decode(generated_ids)
        src_langs = _per_example(src_lang, len(texts), "src_lang")
        tgt_langs = _per_example(tgt_lang, len(texts), "tgt_lang")
        results = []
        for text, src, tgt in zip(texts, src_langs, tgt_langs):
            if task == "asr":
                results.append({"transcript": text.strip(), "raw": text})
            elif task == "smt":
                results.append({"translation": text.strip(), "raw": text})
            else:
                results.append(self.split_srt_output(text, src, tgt))
        return results

    @property
    def pad_token_id(self) -> int:
        """The tokenizer's pad id (what trainers pad generated ids with)."""
        return self.tokenizer.pad_token_id

    @property
    def eos_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "input_features"]

    @staticmethod
    def language_code(language: str) -> str:
        """Canonical ISO 639-3 code of a language name or code."""
        return normalize_language(language)


LlmSrtProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["LlmSrtProcessor", "normalize_task", "TASKS"]
