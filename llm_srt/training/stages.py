"""Training helpers for the ASR -> SMT -> SRT curriculum with `Seq2SeqTrainer`: what each stage trains, its
metrics and the record of trained languages. The data (`training_data`), the output folder (`training_runs`) and FSDP
on CPU (`training_fsdp`) have modules of their own, re-exported here."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from transformers.utils import logging

from ..languages_llm_srt import recorded_directions, recorded_languages
from ..evaluation.metrics import score_directions, split_srt_response
from ..processing_llm_srt import IGNORE_INDEX, LlmSrtProcessor, normalize_task
from .data import (
    DataError, LlmSrtDataCollator, RowChecker, STAGES, add_input_features, audio_seconds, default_base_dir, load_rows, row_labels, select_stage_rows, tag_base_dir,
)
from .runs import (
    FINAL_MARKER, FINAL_STAGING, checkpoint_problem, finished_run, last_complete_checkpoint, mark_finished, plan_output_dir, publish_final_model,
)
from .fsdp import (
    enable_fsdp_on_cpu, fsdp_layer_classes, fsdp_offload_requested, is_fsdp_checkpoint, requested_fsdp_version, sharded_parameter_count, unsharded_model,
)


logger = logging.get_logger(__name__)


def record_trained_languages(config, rows, stage: str) -> tuple[list[str], list[str]]:
    """Add a stage's training data to what `config` records the model was trained on: the source languages of every
    stage, and for SMT/SRT also their targets and directions (`trained_languages`, `trained_directions`). Adds to
    the starting model's record; a model that records none (None) gets this stage's alone. Returns both lists."""
    stage = normalize_task(stage)
    languages, directions = set(rows.unique("src_lang")), set()
    if stage != "asr":
        pairs = rows.select_columns(["src_lang", "tgt_lang"]).to_dict()
        directions = set(zip(pairs["src_lang"], pairs["tgt_lang"]))
        languages |= {tgt for _, tgt in directions}
    config.trained_languages = recorded_languages([*languages, *(config.trained_languages or ())],
                                                  "trained_languages")
    config.trained_directions = recorded_directions([*directions, *(config.trained_directions or ())])
    return config.trained_languages, config.trained_directions


def configure_stage(model, stage: str, use_lora: bool = False, lora_kwargs: dict | None = None) -> dict[str, int]:
    """Freeze as the paper does: the projector trains in every stage; LoRA (when asked) only in the SRT stage.

    Returns the count of trainable parameters per part.
    """
    stage = normalize_task(stage)
    if use_lora and stage != "srt":
        raise ValueError("The paper adds LoRA in the SRT stage only; use_lora is for --stage srt.")
    if use_lora and model.config.lora_config is None:
        model.enable_lora(**(lora_kwargs or {}))
    model.set_trainable(projector=True, audio_tower=False, language_model=False, lora=use_lora)
    counts = {"projector": 0, "lora": 0}
    for name, param in model.named_parameters():
        if param.requires_grad:
            counts["lora" if ".lora_" in name else "projector"] += param.numel()
    return counts


def decode_ids(processor: LlmSrtProcessor, ids) -> list[str]:
    """Decode prediction or label ids, treating -100 as padding."""
    ids = np.asarray(ids)
    ids = np.where(ids == IGNORE_INDEX, processor.tokenizer.pad_token_id, ids)
    return processor.batch_decode(ids.tolist())


def build_compute_metrics(
    processor: LlmSrtProcessor, task: str, eval_rows: Sequence[dict[str, Any]]
) -> Callable[[Any], dict[str, float]]:
    """`compute_metrics` for `Seq2SeqTrainer(predict_with_generate=True)`: BLEU (smt, srt) and WER (asr, srt).

    `eval_rows` are the evaluation rows in order (their languages and references); the trainer's predictions come
    back in the same order.
    """
    task = normalize_task(task)
    rows = [{k: r.get(k) for k in ("src_lang", "tgt_lang", "transcript", "translation")} for r in eval_rows]

    def compute_metrics(prediction) -> dict[str, float]:
        predictions = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        texts = decode_ids(processor, predictions)
        if len(texts) > len(rows) and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            # Several processes evaluate batches of equal size: Accelerate pads the dev set with its first rows, after
            # the last one, and `Seq2SeqTrainer.evaluate` gathers with `gather` (the padding kept).
            texts = texts[: len(rows)]
        if len(texts) != len(rows):
            raise ValueError(f"Got {len(texts)} predictions for {len(rows)} evaluation rows.")
        scored = []
        for text, row in zip(texts, rows):
            if task == "asr":
                scored.append({"src_lang": row["src_lang"], "hypothesis": text.strip(), "reference": row["transcript"]})
                continue
            if task == "srt":
                # The original scorer's split rule, as evaluate.py scores (see metrics.split_srt_response).
                pair = processor.tag(row["src_lang"]) + processor.tag(row["tgt_lang"])
                transcript, hypothesis = split_srt_response(text, pair)
            else:
                hypothesis, transcript = text.strip(), None
            scored.append({"src_lang": row["src_lang"], "tgt_lang": row["tgt_lang"], "hypothesis": hypothesis,
                           "reference": row["translation"], "transcript": transcript,
                           "transcript_reference": row["transcript"] if task == "srt" else None})
        averages = score_directions(scored, task)["averages"]
        return {k: v for k, v in averages.items() if isinstance(v, float)}

    return compute_metrics


def write_jsonl(path: str, rows: Sequence[dict[str, Any]]) -> None:
    """Write rows as JSON lines (UTF-8, one object a line), creating the folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


__all__ = ["audio_seconds", "FINAL_STAGING", 
    "STAGES",
    "DataError",
    "LlmSrtDataCollator",
    "add_input_features",
    "build_compute_metrics",
    "configure_stage",
    "record_trained_languages",
    "decode_ids",
    "enable_fsdp_on_cpu",
    "fsdp_layer_classes",
    "fsdp_offload_requested",
    "is_fsdp_checkpoint",
    "requested_fsdp_version",
    "sharded_parameter_count",
    "default_base_dir",
    "tag_base_dir",
    "unsharded_model",
    "load_rows",
    "RowChecker",
    "checkpoint_problem",
    "FINAL_MARKER",
    "finished_run",
    "last_complete_checkpoint",
    "mark_finished",
    "publish_final_model",
    "plan_output_dir",
    "row_labels",
    "select_stage_rows",
    "write_jsonl",
]
