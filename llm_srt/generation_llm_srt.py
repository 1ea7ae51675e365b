"""Decoding LLM-SRT: the model's `generate`, one audio into many targets, and the one seam every caller decodes through.

In the spirit of Whisper's `generation_whisper.py`, everything about turning audio windows and prompts into answers
lives here:

- [`LlmSrtGenerationMixin`]: the model's `generate` (argument checks, the audio placeholder suppressed, a prefix KV
  cache expanded per beam).
- [`generate_many_targets`]: one audio into several SRT targets with the transcript decoded once.
- The decoding seam: a [`DecodingEngine`] turns audio windows into engine-private audio handles (`encode`, with
  Whisper-style language detection on the way) and decodes rows (`decode_rows`: each (window, task, languages)
  row on its own, the original's decoding; `decode_shared_transcript`: every target of a window after one
  transcript). [`decode_windows`] applies the rules every caller shares (several SRT targets share the transcript
  by default) and [`vote_language`] / [`join_window_texts`] combine the windows of one input. The pipeline,
  evaluation, the server and live streaming all decode through these; [`TransformersEngine`] is the engine of a
  transformers model, and another engine (vLLM) implements the same three methods.

Engine-neutral data: windows are 16 kHz mono float32 numpy arrays (or log-mel features an engine accepts), settings
are plain generate keywords (`num_beams`, `max_new_tokens`, `no_repeat_ngram_size`, `do_sample`, `temperature`,
...), and every answer is a plain dict:

    {"text": str,             # what the reader of this task wants: the transcript (asr) or the translation
     "transcript": str | None, "translation": str | None,
     "raw": str,              # the decoded answer, special tags kept
     "well_formed": bool,     # an SRT answer holding its tag pair (always True for asr/smt)
     "complete": bool,        # ended by EOS; False when the token budget (max_new_tokens) cut it (a cut SRT
                              # answer without its tag pair has an empty translation: its text is a transcript)
     "token_ids": list[int]}  # the answer's ids, without EOS and padding
"""

from __future__ import annotations

import abc
import collections
import copy
import math
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import (
    DynamicCache,
    GenerationConfig,
    GenerationMixin,
    LogitsProcessor,
    LogitsProcessorList,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    StoppingCriteriaList,
    StopStringCriteria,
    SuppressTokensLogitsProcessor,
)
from transformers.utils import logging

from .configuration_llm_srt import UNSPACED_LANGUAGES, generation_setting, normalize_targets


logger = logging.get_logger(__name__)


# -------------------------------------------------------------------------------------------------- model.generate
# Smallest sampling temperature: below it logits / temperature overflow (1e-45 gives inf) and sampling fails inside
# generate ("probability tensor contains inf"). 0 means greedy where a caller offers it (the server).
MIN_TEMPERATURE = 0.01


def temperature_problem(value) -> str | None:
    """Why `value` cannot be a sampling temperature (not a number, not finite, negative, or positive but below
    `MIN_TEMPERATURE`), in one sentence naming it; None when it can (0 included: greedy)."""
    number = value.item() if isinstance(value, (np.generic, torch.Tensor)) and np.size(value) == 1 else value
    if (isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number) or number < 0
            or 0 < number < MIN_TEMPERATURE):
        return f"temperature must be 0 (greedy) or a number >= {MIN_TEMPERATURE:g}, got {value!r}."
    return None


def check_generate_kwargs(kwargs: dict, generation_config: GenerationConfig) -> None:
    """Refuse decoding settings that transformers would fail on obscurely (`num_beams=0` is a ZeroDivisionError).

    Looks at `kwargs` first, then `kwargs["generation_config"]`, then the model's `generation_config`.

    Raises:
        ValueError: naming the setting and its value.
    """

    def value(name):
        return generation_setting(kwargs, generation_config, name)

    def is_int(number) -> bool:
        return isinstance(number, (int, np.integer)) and not isinstance(number, (bool, np.bool_))

    for name, minimum in (("num_beams", 1), ("num_return_sequences", 1), ("max_new_tokens", 1),
                          ("min_new_tokens", 0), ("no_repeat_ngram_size", 0), ("num_beam_groups", 1)):
        number = value(name)
        if number is not None and (not is_int(number) or number < minimum):
            kind = "a positive integer" if minimum == 1 else "an integer >= 0"
            raise ValueError(f"{name} must be {kind}, got {number!r}.")
    beams, returned = value("num_beams") or 1, value("num_return_sequences") or 1
    if not value("do_sample") and returned > beams:
        raise ValueError(f"num_return_sequences ({returned}) cannot exceed num_beams ({beams}) without sampling.")
    penalty = value("repetition_penalty")
    if penalty is not None and not (isinstance(penalty, (int, float)) and penalty > 0):
        raise ValueError(f"repetition_penalty must be a positive number, got {penalty!r}.")
    temperature = value("temperature")
    if value("do_sample") and temperature is not None and temperature_problem(temperature):
        raise ValueError(temperature_problem(temperature))


class LlmSrtGenerationMixin(GenerationMixin):
    """`generate` for LLM-SRT: audio embeddings in front of the prompt, only the new tokens returned."""

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor | None = None,
        input_features: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        audio_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> torch.LongTensor:
        """Generate the answer; returns only the new tokens `(batch, new_tokens)` (or a generate output object).

        Given a training batch (`labels` set, as `Seq2SeqTrainer(predict_with_generate=True)` passes it), the
        answers are cut off first: the processor left-pads every prompt block to one width, so the columns before
        the first labelled one are the prompts (as the original's training rows hold them: where Qwen's BPE merged
        the answer's first character into the prompt's last token, that token stays merged).

        As in the original, the LLM receives only `inputs_embeds` (audio + left-padded prompt), so
        `no_repeat_ngram_size` looks at generated tokens alone: the SRT answer repeats the prompt's tag pair, which
        must not count as history. Positions are derived from the attention mask, skipping left padding. The audio
        placeholder id (`config.audio_token_id`) is suppressed, and generated ids are always ordinary tokens.

        `cache=` may hold the KV of the inputs' first positions, computed once for prompts that share them (e.g.
        [`prefix_cache`]): only the positions after it are prefilled, and it is repeated per beam.
        """
        check_generate_kwargs(kwargs, self.generation_config)
        if labels is not None:
            if input_ids is None:
                raise ValueError("labels are only understood together with input_ids (a training batch).")
            labelled = (labels != -100).any(dim=0).nonzero()
            if len(labelled):
                prompt_width = int(labelled[0])
                input_ids = input_ids[:, :prompt_width]
                if attention_mask is not None:
                    attention_mask = attention_mask[:, :prompt_width]
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("generate needs input_ids (from the processor) or inputs_embeds.")
            inputs_embeds, _ = self.embed_inputs(input_ids, input_features, audio_embeds)
        elif input_features is not None or audio_embeds is not None:
            raise ValueError("inputs_embeds already hold the audio: do not pass input_features or audio_embeds too.")
        if attention_mask is None:
            attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        if kwargs.get("cache") is not None:
            self._expand_prefix_cache(kwargs, inputs_embeds.shape[:2])
        if kwargs.get("max_length") is not None and "max_new_tokens" not in kwargs:
            # The LLM sees no input_ids, so lengths count new tokens: a caller's max_length (e.g. the trainer's
            # generation_max_length) means max_new_tokens, which would otherwise take precedence at 400.
            kwargs["max_new_tokens"] = kwargs.pop("max_length")
        # The audio placeholder is a spare embedding row, never an answer token: suppressed last, after any
        # processors of the caller's, so no output can hold it.
        logits_processor = LogitsProcessorList(kwargs.pop("logits_processor", None) or [])
        logits_processor.append(
            SuppressTokensLogitsProcessor([self.config.audio_token_id], device=inputs_embeds.device)
        )
        with warnings.catch_warnings():
            # Transformers warns that n-gram blocking skips the prompt here: that is the original's behaviour.
            warnings.filterwarnings("ignore", message=".*no_repeat_ngram_size.*inputs_embeds.*")
            return super().generate(
                inputs_embeds=inputs_embeds, attention_mask=attention_mask, logits_processor=logits_processor,
                **kwargs,
            )

    def _expand_prefix_cache(self, kwargs: dict, input_shape: torch.Size) -> None:
        """A `cache` passed to `generate` holds the KV of the inputs' first positions (a prefix computed once, e.g.
        the audio and prompt start shared by several targets): the rows after it are prefilled. Transformers does
        not expand a given cache for beams or returned sequences, so it is repeated here, row by row as the inputs."""
        cache = kwargs["cache"]
        rows, length = input_shape
        if cache.get_seq_length() >= length:
            raise ValueError(f"The cache holds {cache.get_seq_length()} positions, the input {length}: a prefix cache "
                             "must be shorter than the input it starts.")
        cache_rows = cache.layers[0].keys.shape[0]
        if cache_rows != rows:
            raise ValueError(f"The cache has {cache_rows} rows, the input {rows}.")
        expand = max(generation_setting(kwargs, self.generation_config, "num_beams") or 1,
                     generation_setting(kwargs, self.generation_config, "num_return_sequences") or 1)
        if expand > 1:
            cache.batch_repeat_interleave(expand)


# ------------------------------------------------------------------------------------------ one audio, many targets
_STOP_CRITERIA: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def stop_after_text(tokenizer, text: str) -> StoppingCriteriaList:
    """Stop a row once its decoded text ends with `text` (transformers' `StopStringCriteria`), built once per
    tokenizer and text: building it scans the whole vocabulary (~0.2 s for Qwen's 151k tokens)."""
    per_tokenizer = _STOP_CRITERIA.setdefault(tokenizer, {})
    if text not in per_tokenizer:
        per_tokenizer[text] = StopStringCriteria(tokenizer, [text])
    return StoppingCriteriaList([per_tokenizer[text]])


def prefix_cache(model, prefix_ids: list[int], audio_embeds: torch.Tensor) -> DynamicCache:
    """The LLM's KV cache of `[audio + prefix]` for each audio row: `prefix_ids` (audio slots, then prompt ids)
    computed once and reused by every prompt that starts with them."""
    ids = torch.tensor([prefix_ids] * audio_embeds.shape[0], device=audio_embeds.device)
    return model(input_ids=ids, audio_embeds=audio_embeds, use_cache=True, logits_to_keep=1).cache


def _cache_rows(cache: DynamicCache, rows: list[int]) -> DynamicCache:
    """A copy of `cache` holding `rows` (generate extends the cache it is given)."""
    copied = copy.deepcopy(cache)
    copied.batch_select_indices(torch.tensor(rows, device=cache.layers[0].keys.device))
    return copied


class _WithForcedHistory(LogitsProcessor):
    """N-gram blocking and the repetition penalty of rows that continue a forced answer prefix: they look at the
    prefix too, as if it had been generated (the LLM sees only embeddings, so `generate`'s own processors would see
    only the tokens after it). Independent decoding generates that prefix itself, so both see the same history.

    `histories` are one id list per input row; rows of `generate`'s batch are the input rows repeated (beams).
    The histories are left-padded with `filler`, an id the model never emits (the audio placeholder, suppressed):
    an n-gram holding it can never match what follows, so only that id could be banned or penalised."""

    def __init__(self, histories: list[list[int]], filler: int, no_repeat_ngram_size: int,
                 repetition_penalty: float):
        width = max(len(h) for h in histories)
        self.histories = torch.tensor([[filler] * (width - len(h)) + h for h in histories], dtype=torch.long)
        self.processors = ([RepetitionPenaltyLogitsProcessor(repetition_penalty)] if repetition_penalty != 1.0
                           else []) + ([NoRepeatNGramLogitsProcessor(no_repeat_ngram_size)]
                                       if no_repeat_ngram_size > 0 else [])

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        histories = self.histories.to(input_ids.device).repeat_interleave(input_ids.shape[0] // len(self.histories), 0)
        seen = torch.cat([histories, input_ids], dim=1)
        for processor in self.processors:  # in generate's order: the penalty, then the n-gram ban
            scores = processor(seen, scores)
        return scores


def checked_transcripts(processor, src_lang: str, transcripts: str | Sequence[str | None], num_audio: int
                        ) -> list[str | None]:
    """Known transcripts of `num_audio` audio (one per audio, None where unknown) as a list, each refused if it holds
    the source tag: the answer would be split at it, giving a wrong transcript and translation."""
    transcripts = [transcripts] if isinstance(transcripts, str) else list(transcripts)
    if len(transcripts) != num_audio:
        raise ValueError(f"Got {len(transcripts)} transcripts for {num_audio} audio rows.")
    tag = processor.tag(src_lang)
    for index, transcript in enumerate(transcripts):
        if transcript is not None and tag in transcript:
            raise ValueError(f"transcripts[{index}] holds the source tag {tag}, which ends a transcript in the "
                             f"answer: {transcript!r}.")
    return transcripts


@torch.no_grad()
def generate_many_targets(
    model,
    processor,
    src_lang: str,
    tgt_langs: Sequence[str],
    input_features: torch.FloatTensor | None = None,
    audio_embeds: torch.FloatTensor | None = None,
    shared_transcript: bool = True,
    transcripts: Sequence[str] | None = None,
    **generate_kwargs,
) -> torch.LongTensor:
    """Speech translation of each audio into every target language.

    Returns `(num_audio * len(tgt_langs), length)` answer ids, audio-major (row `a * len(tgt_langs) + k` is audio
    `a` into `tgt_langs[k]`), each `transcript<|src|><|tgt_k|>translation<eos>` right-padded: decode them with
    `processor.post_process(ids, "srt", src_lang, tgt_langs * num_audio)`.

    - `shared_transcript=False`: every (audio, target) row decodes its whole answer on its own, in one `generate`
      batch (the original's decoding, what paper-comparable evaluations use).
    - `shared_transcript=True`: the transcript is decoded once per audio. The answer for the first target is
      decoded up to the source tag that ends its transcript (a stop string; the target tag after it is the
      prompt's); then every target's `transcript<|src|><|tgt_k|>` is fed after the prompt as a forced prefix,
      tokenized jointly with the prompt as in training (`processor.forced_answer_inputs`), and only the
      translations are decoded, all targets in one batch. The KV cache of the audio and the prompt start every
      target shares (`processor.shared_prompt_prefix`) is computed once for both steps. An audio whose first
      decode ends without the source tag (a malformed answer) falls back to independent decoding, so nothing is
      lost. `transcripts` (one per audio, e.g. known or from an ASR pass) skips the first decode. The translation
      step's `no_repeat_ngram_size` and `repetition_penalty` count the forced `transcript<|src|><|tgt_k|>` as
      generated, as independent decoding does: for a well-formed answer the rows equal independent decoding's
      (greedy, and beams with the same translation budget).

    `generate_kwargs` apply to every decode (e.g. `num_beams`, `max_new_tokens`: the translation step gets the
    full `max_new_tokens` too).
    """
    # As `generate` resolves them (a `generation_config` given or the model's too), not only the kwargs.
    if (generation_setting(generate_kwargs, model.generation_config, "return_dict_in_generate")
            or (generation_setting(generate_kwargs, model.generation_config, "num_return_sequences") or 1) != 1):
        raise ValueError("generate_many_targets returns one answer per row: return_dict_in_generate and "
                         "num_return_sequences are not supported.")
    for name in ("cache", "past_key_values"):
        if generate_kwargs.get(name) is not None:
            raise ValueError(f"generate_many_targets sets {name} itself; do not pass it.")
    for name in ("stopping_criteria", "stop_strings") if shared_transcript else ():
        if generate_kwargs.get(name):
            raise ValueError(f"generate_many_targets sets {name} itself to end the transcript decode; do not pass "
                             "it, or pass shared_transcript=False to decode every target whole with it.")
    targets = [tgt_langs] if isinstance(tgt_langs, str) else list(tgt_langs)
    normalize_targets(targets, name="tgt_langs")  # empty, or a target named twice: refused
    if (input_features is None) == (audio_embeds is None):
        raise ValueError("Pass exactly one of input_features and audio_embeds.")
    if audio_embeds is None:
        audio_embeds = model.get_audio_features(input_features.to(model.audio_tower.conv1.weight.device))
    num_audio, device = audio_embeds.shape[0], audio_embeds.device
    if transcripts is not None:
        transcripts = checked_transcripts(processor, src_lang, transcripts, num_audio)
        if not shared_transcript:
            raise ValueError("transcripts are only used with shared_transcript=True (the translations decoded after "
                             "them); shared_transcript=False decodes every answer whole.")
    eos, pad = processor.eos_token_id, processor.pad_token_id
    answers: list[list[int] | None] = [None] * (num_audio * len(targets))

    def until_eos(ids: torch.Tensor) -> list[int]:
        ids = ids.tolist()
        return ids[: ids.index(eos) + 1] if eos in ids else ids

    def run(blocks: list[list[int]], rows: list[int], cache: DynamicCache | None = None, **kwargs) -> torch.LongTensor:
        # With a prefix cache, the padding goes after the prefix (positions follow the attention mask).
        prefix_length = 0
        if cache is not None:
            prefix_length = cache.get_seq_length()
            if all(block[:prefix_length] == shared_prefix for block in blocks):
                kwargs["cache"] = _cache_rows(cache, rows)
            else:  # a prompt that does not start as expected: prefilled whole, never mismatched
                prefix_length = 0
        padded = processor.pad_prompt_blocks(blocks, prefix_length)
        return model.generate(
            input_ids=torch.tensor(padded["input_ids"], device=device),
            attention_mask=torch.tensor(padded["attention_mask"], device=device),
            audio_embeds=audio_embeds[torch.tensor(rows, device=device)], **kwargs,
        )

    def independent(audio_rows: list[int]) -> None:
        rows = [(a, k) for a in audio_rows for k in range(len(targets))]
        # Unpadded prompts, padded once by `run` (prompts of different targets differ in length).
        out = run(processor.prompt_blocks("srt", src_lang, [targets[k] for _, k in rows]), [a for a, _ in rows],
                  **generate_kwargs)
        for (a, k), ids in zip(rows, out):
            answers[a * len(targets) + k] = until_eos(ids)

    if not shared_transcript:
        independent(list(range(num_audio)))
    else:
        shared_prefix = processor.shared_prompt_prefix("srt", src_lang, targets)
        cache = prefix_cache(model, shared_prefix, audio_embeds)
        if transcripts is None:
            # The transcript ends where the answer's tag pair starts: the target tag after it is known (it is the
            # prompt's), so decoding stops at the source tag and every target's tag is forced with its transcript.
            first = run(processor.prompt_blocks("srt", src_lang, [targets[0]] * num_audio), list(range(num_audio)),
                        cache, **generate_kwargs,
                        stopping_criteria=stop_after_text(processor.tokenizer, processor.tag(src_lang)))
            transcripts = processor.transcripts_before_source_tag(first, src_lang)
        shared = [a for a, t in enumerate(transcripts) if t is not None]
        if len(shared) < num_audio:
            logger.info(f"{num_audio - len(shared)} of {num_audio} audio decoded no source tag: decoding them "
                        "independently.")
            independent([a for a, t in enumerate(transcripts) if t is None])
        if shared:
            blocks, prefixes = processor.forced_answer_inputs(src_lang, targets, [transcripts[a] for a in shared])
            step_kwargs = dict(generate_kwargs)
            ngram = generation_setting(generate_kwargs, model.generation_config, "no_repeat_ngram_size") or 0
            penalty = generation_setting(generate_kwargs, model.generation_config, "repetition_penalty") or 1.0
            if ngram > 0 or penalty != 1.0:
                # The forced transcript and tag pair count as generated, as in independent decoding.
                step_kwargs.update(no_repeat_ngram_size=0, repetition_penalty=1.0, logits_processor=LogitsProcessorList(
                    [_WithForcedHistory(prefixes, model.config.audio_token_id, ngram, penalty)]
                    + list(generate_kwargs.get("logits_processor") or [])))
            out = run(blocks, [a for a in shared for _ in targets], cache, **step_kwargs)
            slots = [a * len(targets) + k for a in shared for k in range(len(targets))]
            for slot, prefix, ids in zip(slots, prefixes, out):
                answers[slot] = prefix + until_eos(ids)
    width = max(len(a) for a in answers)
    return torch.tensor([a + [pad] * (width - len(a)) for a in answers], dtype=torch.long, device=device)


# ------------------------------------------------------------------------------------------------ the decoding seam
# The engines behind the seam: this module's `TransformersEngine`, and `vllm_engine.VllmEngine` (needs vLLM).
ENGINES = ("transformers", "vllm")


@dataclass(frozen=True)
class DecodeRow:
    """One answer to decode: audio window `window` (an index into the handles given with it) for `task` (asr, smt,
    srt) from `src_lang` into `tgt_lang` (None for asr); `transcript` is the SMT prompt's source text."""

    window: int
    task: str
    src_lang: str
    tgt_lang: str | None = None
    transcript: str | None = None


def answer_record(processor, token_ids: Sequence[int], row: DecodeRow) -> dict[str, Any]:
    """The engine-neutral answer dict (module docstring) of one row's generated ids (EOS and padding included or
    not): `complete` is whether EOS ended it."""
    ids = [int(i) for i in token_ids]
    eos, pad = processor.eos_token_id, processor.pad_token_id
    complete = eos in ids
    if complete:
        ids = ids[: ids.index(eos)]
    while ids and ids[-1] == pad:  # right padding of a batch (pad may differ from eos)
        ids.pop()
        complete = True
    decoded = processor.post_process(torch.tensor([ids], dtype=torch.long), task=row.task, src_lang=row.src_lang,
                                     tgt_lang=row.tgt_lang if row.task == "srt" else None)[0]
    transcript, translation = decoded.get("transcript"), decoded.get("translation")
    if row.task == "srt" and not complete and not decoded.get("well_formed", True):
        # cut by the token budget before the tag pair: what was decoded is (part of) the transcript, never a
        # translation (split_srt_output's fallback would label it one)
        transcript, translation = decoded["raw"].split("<|")[0].strip(), ""
    return {
        "text": (transcript if row.task == "asr" else translation) or "",
        "transcript": transcript,
        "translation": translation,
        "raw": decoded["raw"],
        "well_formed": bool(decoded.get("well_formed", True)),
        "complete": complete,
        "token_ids": ids,
    }


class DecodingEngine(abc.ABC):
    """Audio windows + prompts -> answers: what the pipeline, evaluation, the server and live streaming call.

    An engine owns a model and its processor. `encode` turns windows into per-window handles (engine-private: the
    transformers engine keeps audio embeddings, another engine may keep the audio itself), detecting the spoken
    language on the way when asked; the decode methods take those handles and return answer dicts.
    """

    name: str = "abstract"

    def __init__(self, processor):
        self.processor = processor

    @property
    def sampling_rate(self) -> int:
        return self.processor.feature_extractor.sampling_rate

    @property
    def window_seconds(self) -> float:
        """The model's window: longer audio is cut at pauses into windows at most this long."""
        return float(self.processor.feature_extractor.chunk_length)

    @abc.abstractmethod
    def encode(
        self, windows: Sequence[np.ndarray] | None = None, input_features: torch.Tensor | None = None,
        detect_language: bool = False,
    ) -> tuple[list[Any], list[dict] | None]:
        """Per-window handles of `windows` (16 kHz float32 arrays) or of their log-mel `input_features`, and with
        `detect_language` one detection per window (`{"language", "probability", "probabilities",
        "whisper_language", "supported"}`), else None."""

    @abc.abstractmethod
    def decode_rows(self, audio: Sequence[Any], rows: Sequence[DecodeRow], settings: dict | None = None
                    ) -> list[dict[str, Any]]:
        """Each row decoded on its own (the original's decoding), all in one batch where the engine can; one answer
        per row, in order."""

    @abc.abstractmethod
    def decode_shared_transcript(self, audio: Sequence[Any], src_lang: str, targets: Sequence[str],
                                 settings: dict | None = None, transcripts: Sequence[str | None] | None = None
                                 ) -> list[list[dict[str, Any]]]:
        """SRT of every audio into every target with each audio's transcript decoded once; per audio, one answer
        per target (in `targets`' order). `transcripts` (one per audio; None where unknown) skip that decode: only
        the translations after them are decoded."""

    def detect_languages(self, windows: Sequence[np.ndarray]) -> list[dict]:
        """One language detection per window."""
        return self.encode(windows, detect_language=True)[1]


class TransformersEngine(DecodingEngine):
    """The engine of an `LlmSrtForConditionalGeneration`: `generate` and [`generate_many_targets`]; handles are the
    windows' audio embeddings `(num_queries, hidden)`."""

    name = "transformers"

    def __init__(self, model, processor):
        super().__init__(processor)
        self.model = model

    @property
    def device(self) -> torch.device:
        return next(self.model.audio_tower.parameters()).device

    @torch.inference_mode()
    def encode(self, windows=None, input_features=None, detect_language=False):
        if (windows is None) == (input_features is None):
            raise ValueError("Pass exactly one of windows and input_features.")
        if input_features is None:
            input_features = self.processor.extract_features(list(windows), self.sampling_rate)
        tower = next(self.model.audio_tower.parameters())
        features = input_features.to(device=tower.device, dtype=tower.dtype)
        if not detect_language:
            return list(self.model.get_audio_features(features)), None
        embeds, states = self.model.get_audio_features(features, return_encoder_states=True)
        return list(embeds), self.model.detect_language(encoder_hidden_states=states)

    @torch.inference_mode()
    def decode_rows(self, audio, rows, settings=None):
        if not rows:
            return []
        processor = self.processor
        blocks = [processor.prompt_blocks(row.task, row.src_lang, [row.tgt_lang], [row.transcript])[0] for row in rows]
        padded = processor.pad_prompt_blocks(blocks)
        device = self.device
        embeds = torch.stack([audio[row.window] for row in rows]).to(device)
        generated = self.model.generate(
            input_ids=torch.tensor(padded["input_ids"], device=device),
            attention_mask=torch.tensor(padded["attention_mask"], device=device),
            audio_embeds=embeds, **dict(settings or {}),
        )
        return [answer_record(processor, ids.tolist(), row) for ids, row in zip(generated, rows)]

    @torch.inference_mode()
    def decode_shared_transcript(self, audio, src_lang, targets, settings=None, transcripts=None):
        targets = list(targets)
        if transcripts is not None and any(t is None for t in transcripts):
            # generate_many_targets takes all transcripts or none: decode the unknown ones first
            known = [a for a, t in enumerate(transcripts) if t is not None]
            unknown = [a for a, t in enumerate(transcripts) if t is None]
            answers: list = [None] * len(audio)
            for group, given in ((known, [transcripts[a] for a in known]), (unknown, None)):
                if group:
                    for a, per_target in zip(group, self.decode_shared_transcript(
                            [audio[a] for a in group], src_lang, targets, settings, given)):
                        answers[a] = per_target
            return answers
        ids = generate_many_targets(self.model, self.processor, src_lang, targets,
                                    audio_embeds=torch.stack(list(audio)).to(self.device), shared_transcript=True,
                                    transcripts=None if transcripts is None else list(transcripts),
                                    **dict(settings or {}))
        answers = [answer_record(self.processor, row_ids.tolist(), DecodeRow(0, "srt", src_lang, targets[r % len(targets)]))
                   for r, row_ids in enumerate(ids)]
        return [answers[a * len(targets):(a + 1) * len(targets)] for a in range(len(audio))]


def decode_window_rows(
    engine: DecodingEngine,
    audio: Sequence[Any],
    rows: Sequence[Sequence[DecodeRow]],
    settings: dict | None = None,
    shared_transcript: bool = True,
) -> list[list[dict[str, Any]]]:
    """The general form of [`decode_windows`]: `rows[w]` are window `w`'s rows (their `window` field is ignored);
    returns their answers in the same shape.

    The rule every caller shares: a window with several SRT rows shares its transcript among them
    (`shared_transcript=True`, the default; 4 targets cost 1.23x one instead of 1.78x, 14 1.45x instead of 2.28x,
    with the same demo BLEU, see benchmarks/), windows with the same source and targets decoded together; every
    other row is decoded on its own, all of them in one batch."""
    answers: list[list[dict | None]] = [[None] * len(window_rows) for window_rows in rows]
    groups: dict[tuple[str, tuple[str, ...]], list[int]] = {}
    alone: list[tuple[int, int]] = []
    for w, window_rows in enumerate(rows):
        srt = [row for row in window_rows if row.task == "srt"]
        if shared_transcript and len(srt) == len(window_rows) > 1 and len({row.src_lang for row in srt}) == 1:
            groups.setdefault((srt[0].src_lang, tuple(row.tgt_lang for row in srt)), []).append(w)
        else:
            alone.extend((w, r) for r in range(len(window_rows)))
    for (src, targets), windows in groups.items():
        for w, per_target in zip(windows, engine.decode_shared_transcript([audio[w] for w in windows], src, targets,
                                                                          settings)):
            answers[w] = list(per_target)
    if alone:
        specs = [DecodeRow(w, rows[w][r].task, rows[w][r].src_lang, rows[w][r].tgt_lang, rows[w][r].transcript)
                 for w, r in alone]
        for (w, r), answer in zip(alone, engine.decode_rows(audio, specs, settings)):
            answers[w][r] = answer
    return answers


def decode_windows(
    engine: DecodingEngine,
    audio: Sequence[Any],
    src_langs: Sequence[str],
    task: str,
    targets: Sequence[str],
    settings: dict | None = None,
    shared_transcript: bool = True,
) -> list[dict[str, dict[str, Any]]]:
    """Every (window, target) pair of windows whose source languages are known: per window `{target: answer}`
    (the key is `"asr"` for transcription); several SRT targets share each window's transcript unless
    `shared_transcript=False` ([`decode_window_rows`])."""
    targets = ["asr"] if task == "asr" else list(targets)
    rows = [[DecodeRow(w, task, src_langs[w], None if task == "asr" else tgt) for tgt in targets]
            for w in range(len(audio))]
    answers = decode_window_rows(engine, audio, rows, settings, shared_transcript)
    return [dict(zip(targets, window_answers)) for window_answers in answers]


# ---------------------------------------------------------------------------------------------- windows of one input
def vote_language(detections: Sequence[dict]) -> dict | None:
    """One language for an input from its windows' detections: the most frequent per-window choice (ties: the
    larger summed probability); its probability is the mean over the windows of that language's probability.
    `unsupported` names the language Whisper heard outside the supported ones, when most windows heard one."""
    if not detections:
        return None
    counts = collections.Counter(d["language"] for d in detections)
    mass = collections.defaultdict(float)
    for detection in detections:
        for code, p in detection["probabilities"].items():
            mass[code] += p
    language = max(counts, key=lambda code: (counts[code], mass[code]))
    unsupported = [d for d in detections if not d["supported"]]
    return {
        "language": language,
        "probability": mass[language] / len(detections),
        "unsupported": collections.Counter(d["whisper_language"] for d in unsupported).most_common(1)[0][0]
        if 2 * len(unsupported) > len(detections) else None,
        "whisper_probability": max((d["whisper_probability"] for d in unsupported), default=None),
    }


def join_window_texts(parts: Sequence[str], language: str | None) -> str:
    """The texts of an input's windows joined in order (no spaces for Japanese, Chinese, Cantonese and Thai)."""
    return ("" if language in UNSPACED_LANGUAGES else " ").join(p.strip() for p in parts if p and p.strip())


__all__ = ["DecodeRow", "DecodingEngine", "LlmSrtGenerationMixin", "TransformersEngine", "answer_record",
           "check_generate_kwargs", "decode_window_rows", "decode_windows", "generate_many_targets", "join_window_texts", "prefix_cache",
           "stop_after_text", "vote_language"]
