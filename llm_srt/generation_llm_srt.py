"""LLM-SRT's `generate`: the model's decoding (in the spirit of Whisper's `generation_whisper.py`), and one audio into
many targets with the transcript decoded once.

- [`LlmSrtGenerationMixin`]: the model's `generate` (argument checks, the audio placeholder suppressed, a prefix KV
  cache expanded per beam).
- [`generate_many_targets`]: one audio into several SRT targets with the transcript decoded once.

The callers of the model (pipeline, evaluation, server, live) decode through the seam in `decoding_llm_srt.py`.
"""

from __future__ import annotations

import copy
import math
import warnings
import weakref
from collections.abc import Sequence

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

from .languages_llm_srt import normalize_targets


logger = logging.get_logger(__name__)


# -------------------------------------------------------------------------------------------------- model.generate
def generation_setting(generate_kwargs: dict, generation_config, name: str):
    """A decoding option as `generate` resolves it: the call's keyword, else the `generation_config` the call
    passes, else `generation_config` (the model's)."""
    if generate_kwargs.get(name) is not None:
        return generate_kwargs[name]
    return getattr(generate_kwargs.get("generation_config") or generation_config, name, None)


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


__all__ = ["LlmSrtGenerationMixin", "MIN_TEMPERATURE", "check_generate_kwargs", "checked_transcripts",
           "generate_many_targets", "generation_setting", "prefix_cache", "stop_after_text", "temperature_problem"]
