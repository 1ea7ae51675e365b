"""Batched decoding of data rows and their scoring, shared by the evaluation script and the demo curriculum."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch

from ..audio_llm_srt import load_audio, resolve_path
from .metrics import score_directions, split_srt_response
from ..decoding_llm_srt import DecodeRow, DecodingEngine, as_decoded
from ..processing_llm_srt import LlmSrtProcessor, normalize_task
from ..speech_llm_srt import VadOptions, has_speech


def clip_key(row: dict[str, Any], base_dir: str | None = None) -> tuple:
    """What identifies a row's clip: its audio (the resolved file path, the bytes or array's digest, or the
    precomputed features' digest) and its source language. Rows of one clip differ only in their target (FLEURS'
    many-to-many rows repeat each clip per target)."""
    features = row.get("input_features")
    if features is not None:
        array = np.ascontiguousarray(np.asarray(features, dtype=np.float32))
        return ("features", _digest(array.tobytes(), array.shape), row["src_lang"])
    audio = row.get("audio")
    if isinstance(audio, str):
        return ("path", os.path.abspath(resolve_path(audio, base_dir)), row["src_lang"])
    if isinstance(audio, dict):
        if audio.get("bytes") is not None:  # a datasets Audio column read undecoded: the file's bytes
            return ("bytes", _digest(bytes(audio["bytes"])), row["src_lang"])
        if audio.get("array") is not None:
            array = np.ascontiguousarray(np.asarray(audio["array"]))
            return ("array", _digest(array.tobytes(), array.shape, array.dtype.str, audio.get("sampling_rate")),
                    row["src_lang"])
        if audio.get("path"):
            return ("path", os.path.abspath(resolve_path(audio["path"], base_dir)), row["src_lang"])
    raise ValueError(f"Row {row.get('key')!r}: no audio to group by (neither a path, bytes, an array nor "
                     "input_features).")


def _digest(data: bytes, *extra: Any) -> str:
    return hashlib.sha256(data + repr(extra).encode()).hexdigest()


def group_clips(rows: Sequence[dict[str, Any]], base_dir: str | None = None) -> list[list[int]]:
    """Indices of `rows` per clip (`clip_key`), clips in order of first appearance, rows in their order."""
    groups: dict[tuple, list[int]] = {}
    for index, row in enumerate(rows):
        groups.setdefault(clip_key(row, base_dir), []).append(index)
    return list(groups.values())


def make_batches(
    rows: Sequence[dict[str, Any]],
    batch_size: int,
    shared_transcript: bool = False,
    base_dir: str | None = None,
) -> list[list[int]]:
    """Indices of `rows` in batches of `batch_size`. With `shared_transcript` a clip's rows are never split: a batch
    holds whole clips, up to `batch_size` rows (a clip with more targets than that is a batch of its own)."""
    if not shared_transcript:
        return [list(range(start, min(start + batch_size, len(rows)))) for start in range(0, len(rows), batch_size)]
    batches: list[list[int]] = []
    current: list[int] = []
    for group in group_clips(rows, base_dir):
        if current and len(current) + len(group) > batch_size:
            batches.append(current)
            current = []
        current.extend(group)
    if current:
        batches.append(current)
    return batches


def _audio(engine: DecodingEngine, rows: Sequence[dict[str, Any]], base_dir: str | None) -> list[Any]:
    """The rows' audio handles: from their precomputed features, or from their audio read at the model's rate."""
    if rows[0].get("input_features") is not None:
        features = torch.stack([torch.as_tensor(np.asarray(r["input_features"])) for r in rows])
        return engine.encode(input_features=features)[0]
    rate = engine.sampling_rate
    return engine.encode([load_audio(resolve_path(row["audio"], base_dir), target_rate=rate) for row in rows])[0]


def _result(processor: LlmSrtProcessor, row: dict[str, Any], out: dict[str, Any], task: str) -> dict[str, Any]:
    """One row's result from its post-processed answer."""
    result = {"key": row.get("key"), "src_lang": row["src_lang"], "tgt_lang": row.get("tgt_lang"), "raw": out["raw"],
              "complete": out.get("complete")}  # False: max_new_tokens cut the answer (a loop, for the report)
    if task == "asr":
        result.update(hypothesis=out["transcript"], reference=row["transcript"])
    elif task == "smt":
        result.update(hypothesis=out["translation"], reference=row["translation"])
    else:  # scored by the original's split rule, not the pipeline's richer one (paper-comparable numbers)
        pair = processor.tag(row["src_lang"]) + processor.tag(row["tgt_lang"])
        transcript, translation = split_srt_response(out["raw"], pair)
        result.update(hypothesis=translation, reference=row["translation"], transcript=transcript,
                      transcript_reference=row["transcript"])
    return result


# the answer of a clip the speech detector hears nothing in: not decoded, nothing written
NO_SPEECH = {"text": "", "transcript": "", "translation": "", "raw": "", "well_formed": True, "complete": True,
             "token_ids": []}


def decode_batch(
    engine: DecodingEngine,
    rows: Sequence[dict[str, Any]],
    task: str,
    base_dir: str | None = None,
    generate_kwargs: dict | None = None,
    shared_transcript: bool = False,
    vad: VadOptions | None = VadOptions(),
) -> list[dict[str, Any]]:
    """Decode one batch of rows; returns per row (in order) the hypothesis (and for SRT the transcript) with its
    references.

    Rows carry `src_lang`, `tgt_lang`, `transcript`, `translation`, and `audio` (a path, relative to `base_dir`, or
    an array dict) or precomputed `input_features`. `shared_transcript` (SRT only): the rows of one clip
    (`clip_key`) are decoded together (`DecodingEngine.decode_shared_transcript`), the audio encoded and the
    transcript decoded once for all its targets; the results have the same fields, scored by the same rule.
    `engine` decodes (`engines.loading.open_engine`, or a `TransformersEngine(model, processor)`). A clip the speech
    detector (`vad`'s options; None: off) hears no speech in is not decoded: its hypothesis is empty, as the
    pipeline answers it (rows with precomputed features are always decoded).
    """
    task = normalize_task(task)
    processor = engine.processor
    if vad is not None and rows and rows[0].get("input_features") is None:
        rate = engine.sampling_rate
        clips = [load_audio(resolve_path(row["audio"], base_dir), target_rate=rate) for row in rows]
        loaded = [{**row, "audio": {"array": clip, "sampling_rate": rate}} for row, clip in zip(rows, clips)]
        spoken = [i for i, clip in enumerate(clips) if has_speech(clip, vad)]
        results = [_result(processor, row, NO_SPEECH, task) for row in rows]
        if spoken:
            decoded = decode_batch(engine, [loaded[i] for i in spoken], task, base_dir, generate_kwargs,
                                   shared_transcript, vad=None)
            for i, result in zip(spoken, decoded):
                results[i] = result
        return results
    if shared_transcript:
        if task != "srt":
            raise ValueError(f"shared_transcript applies to the srt task only, not {task}.")
        # a row into its own language is its transcript (as_decoded): nothing to share, decoded on its own
        own = [as_decoded(DecodeRow(i, "srt", r["src_lang"], r["tgt_lang"])).task == "asr" for i, r in enumerate(rows)]
        if any(own):
            results: list = [None] * len(rows)
            for alone in (False, True):
                group = [i for i in range(len(rows)) if own[i] == alone]
                decoded = decode_batch(engine, [rows[i] for i in group], task, base_dir, generate_kwargs, not alone)
                for i, result in zip(group, decoded):
                    results[i] = result
            return results
        return _decode_shared_transcript(engine, processor, rows, base_dir, generate_kwargs or {})
    audio = _audio(engine, rows, base_dir)
    # a row into its own language is decoded as its transcript (ASR), as everywhere (decoding_llm_srt.as_decoded)
    row_specs = [as_decoded(DecodeRow(i, task, r["src_lang"], r.get("tgt_lang") if task != "asr" else None,
                                      r.get("transcript") if task == "smt" else None)) for i, r in enumerate(rows)]
    answers = engine.decode_rows(audio, row_specs, generate_kwargs)
    return [_result(processor, row, out, task) for row, out in zip(rows, answers)]


def _decode_shared_transcript(engine, processor, rows, base_dir, generate_kwargs) -> list[dict[str, Any]]:
    """SRT rows grouped by clip; clips with the same source and targets are decoded together, each clip's targets
    in one batch after its transcript. A clip's targets are sorted (the first one's prompt decodes the transcript),
    so its results do not depend on the order of the rows. A clip with one target has nothing to share: decoded
    on its own."""
    calls: dict[tuple[str, tuple[str, ...]], list[list[int]]] = {}
    for group in group_clips(rows, base_dir):
        targets = tuple(sorted({rows[i]["tgt_lang"] for i in group}))  # a repeated target is decoded once
        calls.setdefault((rows[group[0]]["src_lang"], targets), []).append(group)
    results: list[dict[str, Any] | None] = [None] * len(rows)
    for (src, targets), groups in calls.items():
        audio = _audio(engine, [rows[group[0]] for group in groups], base_dir)
        if len(targets) > 1:
            answers = engine.decode_shared_transcript(audio, src, targets, generate_kwargs)
        else:
            answers = [[a] for a in engine.decode_rows(
                audio, [DecodeRow(c, "srt", src, targets[0]) for c in range(len(groups))], generate_kwargs)]
        for clip, group in enumerate(groups):
            for i in group:
                results[i] = _result(processor, rows[i], answers[clip][targets.index(rows[i]["tgt_lang"])], "srt")
    return results


def decode_rows(
    engine: DecodingEngine,
    rows: Iterable[dict[str, Any]],
    task: str,
    batch_size: int = 16,
    base_dir: str | None = None,
    generate_kwargs: dict | None = None,
    progress: Callable[[int], None] | None = None,
    shared_transcript: bool = False,
    vad: VadOptions | None = VadOptions(),
) -> list[dict[str, Any]]:
    """Decode all rows in batches (`make_batches`); results in the rows' order. `progress(n)` is called after each
    batch. `shared_transcript`, `vad`: see `decode_batch`."""
    rows = list(rows)
    results: list[dict[str, Any] | None] = [None] * len(rows)
    for batch in make_batches(rows, batch_size, shared_transcript, base_dir):
        decoded = decode_batch(engine, [rows[i] for i in batch], task, base_dir, generate_kwargs, shared_transcript,
                               vad)
        for i, result in zip(batch, decoded):
            results[i] = result
        if progress is not None:
            progress(len(batch))
    return results


def evaluate_rows(engine: DecodingEngine, rows, task: str, **kwargs) -> dict[str, Any]:
    """Decode and score: per-direction results and the paper's averages (see `metrics.score_directions`)."""
    return score_directions(decode_rows(engine, rows, task, **kwargs), task)


__all__ = ["clip_key", "decode_batch", "decode_rows", "evaluate_rows", "group_clips", "make_batches"]
