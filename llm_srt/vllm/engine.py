"""The vLLM decoding engine: the decoding seam (`generation_llm_srt.DecodingEngine`) on vLLM's engine.

`VllmEngine(folder)` runs vLLM's `AsyncLLM` (continuous batching, paged KV cache, prefix caching, tensor
parallelism) on an event loop of its own, so that the pipeline-free callers of the seam (`llm-srt serve --engine
vllm`, `trainer_scripts/evaluate_model.py --engine vllm`, live decoding) can call it from any thread, several batches at
once: vLLM merges concurrent calls into its running batch. The model is this package's vLLM model
(`llm_srt.vllm.model`, registered by the `vllm.general_plugins` entry point); it needs vLLM installed (README, "Serving with
vLLM"), which pins an older transformers than this package's default environment.

Decoding rules are the transformers engine's: the same prompts (the processor's), the same shared transcript
(decoded once up to the source tag, then every target's translation after its forced `transcript<|src|><|tgt|>`),
the same n-gram ban and repetition penalty over the generated tokens and the forced prefix
(`model.LlmSrtHistoryLogitsProcessor`), the same answer records. Greedy decoding gives the transformers
engine's tokens. vLLM has no beam search with these rules: `num_beams > 1` is refused by name.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
from transformers import GenerationConfig
from transformers.utils import logging

from ..languages_llm_srt import normalize_targets
from ..decoding_llm_srt import DecodeRow, DecodingEngine, answer_record
from ..generation_llm_srt import checked_transcripts


logger = logging.get_logger(__name__)

LOGITS_PROCESSOR = "llm_srt.vllm.model:LlmSrtHistoryLogitsProcessor"
# generate settings the engine maps onto vLLM's SamplingParams; any other is refused by name
GIB = 1 << 30
# the KV cache's default room, in answers of the longest length at once (llm-srt serve: --max-batch-size)
DEFAULT_KV_CACHE_SEQUENCES = 16


def default_kv_cache_gib(config, max_model_len: int, sequences: int, dtype: str = "auto") -> float:
    """GiB of KV cache that hold `sequences` sequences of `max_model_len` tokens of `config`'s LLM (keys and values
    of every layer; 4 bytes an element unless `dtype` is a 16-bit one), and a quarter more: vLLM fits fewer tokens
    than the bytes say (its blocks; 0.91 of them on CPU). The default of [`VllmEngine`]: vLLM's own default
    reserves 92% of the machine's memory on CPU (`--gpu-memory-utilization 0.92`) and refuses to start when less is
    free, as on a machine where something else runs."""
    text = config.text_config
    heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    head_size = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    element = 2 if str(dtype).replace("torch.", "") in ("bfloat16", "float16", "half") else 4
    return 1.25 * 2 * text.num_hidden_layers * heads * head_size * element * max_model_len * sequences / GIB


SUPPORTED_SETTINGS = {
    "max_new_tokens", "num_beams", "do_sample", "temperature", "top_p", "top_k", "no_repeat_ngram_size",
    "repetition_penalty", "min_new_tokens", "seed",
}


class VllmEngine(DecodingEngine):
    """LLM-SRT decoded by vLLM. Handles are the windows themselves (vLLM encodes the audio with the prompt).

    Args:
        model: a folder saved by this project (full, adapter-only or converted).
        processor: its `LlmSrtProcessor` (default: loaded from `model`).
        tensor_parallel_size: GPUs (or CPU processes) the LLM is split over.
        dtype: vLLM's dtype ("auto": the config's).
        max_model_len: the longest prompt + answer (default: 80 audio slots + prompt room + `max_new_tokens`).
        language_detector: what `encode(..., detect_language=True)` uses: an object with `detect_language(
            input_features=...)` (default: Whisper's encoder and language decoder of `model`, loaded on first use on
            the CPU, without the LLM).
        concurrent_batches: how many batches callers may have in flight at once (the server's batcher uses it:
            vLLM joins them into its running batch).
        kv_cache_gib: vLLM's KV cache in GiB (`kv_cache_memory_bytes`). Default: room for `kv_cache_sequences`
            sequences of `max_model_len` tokens ([`default_kv_cache_gib`]), so the engine starts on a machine whose
            memory is partly taken (vLLM's own default wants 92% of it free on CPU), unless `engine_kwargs` set
            `kv_cache_memory_bytes` or `gpu_memory_utilization`. On CPU, `VLLM_CPU_KVCACHE_SPACE` (GiB), when set,
            overrides it (vLLM's rule).
        kv_cache_sequences: see `kv_cache_gib` (`llm-srt serve` passes `--max-batch-size`, evaluation its
            `--batch_size`).
        engine_kwargs: more `vllm.AsyncEngineArgs` (e.g. `gpu_memory_utilization`, `enforce_eager`).
    """

    name = "vllm"

    def __init__(self, model: str | os.PathLike, processor=None, tensor_parallel_size: int = 1, dtype: str = "auto",
                 max_model_len: int | None = None, language_detector=None, concurrent_batches: int = 8,
                 kv_cache_gib: float | None = None, kv_cache_sequences: int = DEFAULT_KV_CACHE_SEQUENCES,
                 **engine_kwargs):
        try:
            from vllm import AsyncEngineArgs, SamplingParams
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as error:
            raise ImportError(
                f"The vLLM engine needs vLLM ({error}); install it as docs/vllm.md says, or use "
                "the default transformers engine."
            ) from None
        if processor is None:
            from ..processing_llm_srt import LlmSrtProcessor

            processor = LlmSrtProcessor.from_pretrained(model)
        super().__init__(processor)
        if tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size must be at least 1, got {tensor_parallel_size}.")
        if concurrent_batches < 1:
            raise ValueError(f"concurrent_batches must be at least 1, got {concurrent_batches}.")
        self.model_path, self.concurrent_batches = str(model), concurrent_batches
        from ..configuration_llm_srt import LlmSrtConfig

        self.config = LlmSrtConfig.from_pretrained(self.model_path)
        self._sampling_params = SamplingParams
        self.generation_config = self._generation_config(self.model_path)
        self._language_detector = language_detector
        self._detector_lock = threading.Lock()
        self._ids = itertools.count()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="llm-srt-vllm", daemon=True)
        self._thread.start()
        if max_model_len is None:
            max_model_len = processor.num_audio_tokens + 128 + 2 * int(self.generation_config.max_new_tokens or 400)
        if kv_cache_gib is None and not {"kv_cache_memory_bytes", "gpu_memory_utilization"} & set(engine_kwargs):
            kv_cache_gib = default_kv_cache_gib(self.config, max_model_len, kv_cache_sequences, dtype)
            logger.info(f"vLLM's KV cache: {kv_cache_gib:.3g} GiB, room for {kv_cache_sequences} sequences of "
                        f"{max_model_len} tokens (kv_cache_gib / --kv-cache-gib to change it).")
        if kv_cache_gib is not None:
            if not kv_cache_gib > 0:
                raise ValueError(f"kv_cache_gib must be a number of GiB above 0, got {kv_cache_gib!r}.")
            engine_kwargs["kv_cache_memory_bytes"] = int(kv_cache_gib * GIB)
        args = AsyncEngineArgs(model=self.model_path, tensor_parallel_size=tensor_parallel_size, dtype=dtype,
                               max_model_len=max_model_len, logits_processors=[LOGITS_PROCESSOR], seed=0,
                               **engine_kwargs)

        async def start():
            return AsyncLLM.from_engine_args(args)

        try:
            self.llm = self._run(start())
        except BaseException:
            self._stop_loop()
            raise

    # --------------------------------------------------------------------------------------------------- lifecycle
    @staticmethod
    def _generation_config(folder: str) -> GenerationConfig:
        """The folder's generation config (the original's settings when it has none)."""
        try:
            return GenerationConfig.from_pretrained(folder)
        except OSError:
            from ..configuration_llm_srt import LlmSrtConfig
            from ..modeling_llm_srt import LlmSrtForConditionalGeneration

            return LlmSrtForConditionalGeneration.default_generation_config(LlmSrtConfig.from_pretrained(folder))

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    @staticmethod
    async def _cancel(task: asyncio.Task) -> None:
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):  # cancelled, or it had failed already (and logged why)
            pass

    def shutdown(self) -> None:
        """Stop vLLM's engine processes and the event loop."""
        llm = getattr(self, "llm", None)
        if llm is not None:
            # AsyncLLM.shutdown stops the engine process before it cancels its output handler, which then often sees
            # the dead engine first and logs "AsyncLLM output_handler failed ... EngineDeadError" at the end of a
            # successful run; cancel the handler first, on the loop that runs it.
            handler = getattr(llm, "output_handler", None)
            if handler is not None and self._thread.is_alive():
                self._run(self._cancel(handler))
            llm.shutdown()
            self.llm = None
        if self._thread.is_alive():
            self._stop_loop()

    def __enter__(self) -> "VllmEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    # ------------------------------------------------------------------------------------------------ settings
    def sampling_params(self, settings: dict | None = None, history: Sequence[int] = (), stop: str | None = None):
        """vLLM `SamplingParams` for generate-style `settings` (the folder's generation config fills the rest;
        decoding is greedy unless `do_sample`). `history`: a forced answer prefix the n-gram ban and repetition
        penalty count as generated; `stop`: a text that ends the answer (kept in it)."""
        settings = dict(settings or {})
        unknown = sorted(set(settings) - SUPPORTED_SETTINGS)
        if unknown:
            raise ValueError(f"The vLLM engine does not support the generate setting(s) {', '.join(unknown)}; it "
                             f"takes {', '.join(sorted(SUPPORTED_SETTINGS))}. Use the transformers engine for others.")
        config = self.generation_config

        def value(name, default=None):
            found = settings.get(name)
            return found if found is not None else getattr(config, name, default)

        beams = settings.get("num_beams") or 1
        if beams > 1:
            raise ValueError(f"num_beams={beams}: the vLLM engine decodes greedily (or samples with do_sample); beam "
                             "search with LLM-SRT's rules needs the transformers engine (--engine transformers).")
        sample = bool(settings.get("do_sample", False))
        kwargs: dict[str, Any] = {
            "max_tokens": int(value("max_new_tokens", 400)),
            "temperature": float(value("temperature", 1.0)) if sample else 0.0,
            "stop_token_ids": [self.processor.eos_token_id],
            "extra_args": {
                "llm_srt_history": [int(token) for token in history],
                "llm_srt_no_repeat_ngram_size": int(value("no_repeat_ngram_size", 0) or 0),
                "llm_srt_repetition_penalty": float(value("repetition_penalty", 1.0) or 1.0),
            },
        }
        if sample:
            kwargs.update(top_p=float(value("top_p", 1.0) or 1.0), top_k=int(value("top_k", 0) or 0) or -1)
            if settings.get("seed") is not None:
                kwargs["seed"] = int(settings["seed"])
        if settings.get("min_new_tokens"):
            kwargs["min_tokens"] = int(settings["min_new_tokens"])
        if stop is not None:
            kwargs.update(stop=[stop], include_stop_str_in_output=True)
        return self._sampling_params(**kwargs)

    # ----------------------------------------------------------------------------------------------- decoding
    async def _generate_one(self, prompt_ids: list[int], audio: np.ndarray, params) -> list[int]:
        """One answer's ids; EOS appended when the answer ended (vLLM leaves it out of a stop string's output)."""
        prompt = {"prompt_token_ids": prompt_ids,
                  "multi_modal_data": {"audio": (np.asarray(audio, dtype=np.float32), self.sampling_rate)}}
        final = None
        async for output in self.llm.generate(prompt, params, request_id=f"llm-srt-{uuid.uuid4().hex}"):
            final = output
        completion = final.outputs[0]
        ids = list(completion.token_ids)
        if completion.finish_reason == "stop" and (not ids or ids[-1] != self.processor.eos_token_id):
            ids.append(self.processor.eos_token_id)
        return ids

    def generate(self, requests: Sequence[tuple[list[int], np.ndarray, Any]]) -> list[list[int]]:
        """`(prompt ids after the audio slots, audio, SamplingParams)` -> generated ids, all submitted at once."""

        async def run_all():
            return await asyncio.gather(*(self._generate_one(ids, audio, params) for ids, audio, params in requests))

        return self._run(run_all()) if requests else []

    def _prompt(self, block: list[int]) -> list[int]:
        """A processor block without its audio slots (vLLM's processor inserts them in front)."""
        return block[self.processor.num_audio_tokens:]

    def encode(self, windows=None, input_features=None, detect_language=False):
        if (windows is None) == (input_features is None):
            raise ValueError("Pass exactly one of windows and input_features.")
        if input_features is not None:
            raise ValueError("The vLLM engine encodes the audio itself: pass the windows (16 kHz float32 arrays), not "
                             "precomputed input_features.")
        windows = [np.asarray(window, dtype=np.float32) for window in windows]
        detections = self.detect_languages(windows) if detect_language else None
        return windows, detections

    def detect_languages(self, windows: Sequence[np.ndarray]) -> list[dict]:
        with self._detector_lock:
            if self._language_detector is None:
                from .language import AudioLanguageIdentifier

                self._language_detector = AudioLanguageIdentifier.from_pretrained(self.model_path)
            features = self.processor.extract_features(list(windows), self.sampling_rate)
            return self._language_detector.detect_language(input_features=features)

    def decode_rows(self, audio, rows, settings=None):
        if not rows:
            return []
        params = self.sampling_params(settings)
        blocks = [self.processor.prompt_blocks(row.task, row.src_lang, [row.tgt_lang], [row.transcript])[0]
                  for row in rows]
        ids = self.generate([(self._prompt(block), audio[row.window], params) for block, row in zip(blocks, rows)])
        return [answer_record(self.processor, row_ids, row) for row_ids, row in zip(ids, rows)]

    def decode_shared_transcript(self, audio, src_lang, targets, settings=None, transcripts=None):
        """As `generate_many_targets(shared_transcript=True)`: the first target's answer decoded up to the source
        tag gives the transcript; every target's translation is then decoded after its forced
        `transcript<|src|><|tgt|>`; an audio whose answer holds no source tag is decoded independently."""
        targets, processor = list(targets), self.processor
        normalize_targets(targets, name="targets")  # empty, or a target named twice: refused (as generate_many_targets)
        tag = processor.tag(src_lang)
        transcripts = checked_transcripts(processor, src_lang, [None] * len(audio) if transcripts is None
                                          else transcripts, len(audio))
        unknown = [a for a, transcript in enumerate(transcripts) if transcript is None]
        if unknown:
            first_block = processor.prompt_blocks("srt", src_lang, [targets[0]])[0]
            firsts = self.generate([(self._prompt(first_block), audio[a], self.sampling_params(settings, stop=tag))
                                    for a in unknown])
            decoded = processor.transcripts_before_source_tag(firsts, src_lang)  # unpadded rows: batch_decode takes them
            for a, transcript in zip(unknown, decoded):
                transcripts[a] = transcript
        answers: list[list[dict | None]] = [[None] * len(targets) for _ in audio]
        lost = [a for a, transcript in enumerate(transcripts) if transcript is None]
        if lost:
            logger.info(f"{len(lost)} of {len(audio)} audio decoded no source tag: decoding them independently.")
            rows = [DecodeRow(a, "srt", src_lang, target) for a in lost for target in targets]
            for row, answer in zip(rows, self.decode_rows(audio, rows, settings)):
                answers[row.window][targets.index(row.tgt_lang)] = answer
        shared = [a for a, transcript in enumerate(transcripts) if transcript is not None]
        if shared:
            blocks, prefixes = processor.forced_answer_inputs(src_lang, targets, [transcripts[a] for a in shared])
            slots = [(a, k) for a in shared for k in range(len(targets))]
            ids = self.generate([(self._prompt(block), audio[a], self.sampling_params(settings, history=prefix))
                                 for (a, _), block, prefix in zip(slots, blocks, prefixes)])
            for (a, k), prefix, row_ids in zip(slots, prefixes, ids):
                answers[a][k] = answer_record(processor, prefix + row_ids, DecodeRow(a, "srt", src_lang, targets[k]))
        return answers
