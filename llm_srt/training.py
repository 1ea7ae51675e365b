"""Training helpers for the ASR -> SMT -> SRT curriculum with `Seq2SeqTrainer`.

Data rows (a JSON-lines manifest or a `datasets` folder) hold one utterance in SRT form:
`{"audio": path | {"array", "sampling_rate"}, "src_lang", "tgt_lang", "transcript", "translation", "key"}`; ASR-only
rows (Common Voice) have no `tgt_lang`/`translation`. A precomputed `input_features` column replaces the audio.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature
from transformers.utils import logging

from .audio_llm_srt import load_audio, resolve_path
from .configuration_llm_srt import normalize_language
from .metrics import score_directions
from .processing_llm_srt import IGNORE_INDEX, LlmSrtProcessor, normalize_task


logger = logging.get_logger(__name__)

STAGES = ("asr", "smt", "srt")
# What each stage needs of a row.
STAGE_FIELDS = {"asr": ("src_lang", "transcript"), "smt": ("src_lang", "tgt_lang", "transcript", "translation"),
                "srt": ("src_lang", "tgt_lang", "transcript", "translation")}


class DataError(ValueError):
    """A data row that cannot be used; the message names the row and the field."""


def load_rows(path: str):
    """Load a manifest (`.jsonl`/`.json`) or a `save_to_disk` folder as a `datasets.Dataset`."""
    import datasets

    if not os.path.exists(path):
        raise FileNotFoundError(f"Data not found: {path}")
    if os.path.isdir(path):
        return datasets.load_from_disk(path)
    if path.endswith((".jsonl", ".json")):
        with open(path, encoding="utf-8") as handle:
            if not any(line.strip() for line in handle):  # `datasets` fails obscurely on an empty file
                raise DataError(f"{path} is empty: no rows.")
        return datasets.load_dataset("json", data_files=path, split="train")
    raise DataError(f"{path}: expected a .jsonl manifest or a datasets folder (save_to_disk).")


def default_base_dir(path: str, base_dir: str | None = None) -> str:
    """The folder relative audio paths of a data file are under: `base_dir` if given, else the manifest's folder
    (or the datasets folder itself)."""
    if base_dir:
        return base_dir
    return os.path.dirname(os.path.abspath(path)) if os.path.isfile(path) else path


def select_stage_rows(dataset, stage: str, base_dir: str | None = None):
    """Keep the rows a stage can use and check them.

    Rows lacking a translation are dropped from the SMT/SRT stages (counted and logged: ASR-only corpora). Rows
    with a language outside the 15, an empty transcript or translation, or a missing audio file raise `DataError`.
    """
    stage = normalize_task(stage)
    needed = STAGE_FIELDS[stage]
    columns = set(dataset.column_names)
    missing_columns = [f for f in needed if f not in columns]
    if missing_columns:
        raise DataError(f"The data has no {', '.join(missing_columns)} column(s), needed by the {stage} stage.")
    has_audio = "input_features" in columns or "audio" in columns
    if not has_audio:
        raise DataError("The data has neither an 'audio' nor an 'input_features' column.")

    def usable(row) -> bool:
        return all(row.get(f) not in (None, "") for f in needed if f in ("tgt_lang", "translation"))

    kept = dataset.filter(usable)
    dropped = len(dataset) - len(kept)
    if dropped:
        logger.warning(f"{stage}: dropped {dropped} of {len(dataset)} rows without a translation (ASR-only rows).")
    if len(kept) == 0:
        raise DataError(f"No row of the data is usable for the {stage} stage.")
    check_columns = [c for c in ("key", "audio", *needed) if c in columns and c != "input_features"]
    for index, row in enumerate(kept.select_columns(check_columns)):
        where = f"row {index}" + (f" (key {row['key']})" if row.get("key") else "")
        for field in needed:
            value = row.get(field)
            if value is None or (isinstance(value, str) and not value.strip()):
                raise DataError(f"{where}: empty {field}.")
            if field.endswith("_lang"):
                try:
                    normalize_language(value)
                except ValueError as error:
                    raise DataError(f"{where}: {error}") from None
        audio = row.get("audio")
        if isinstance(audio, str) and "input_features" not in columns:
            path = resolve_path(audio, base_dir)
            if not os.path.isfile(path):
                raise DataError(f"{where}: audio file not found: {path}")
    return kept


class LlmSrtDataCollator:
    """Batches rows for one curriculum stage with the processor (dynamic padding, labels on answers only).

    Args:
        processor: the model's processor.
        task: the stage, `asr`, `smt` or `srt`.
        base_dir: folder that relative audio paths are relative to.
    """

    def __init__(self, processor: LlmSrtProcessor, task: str, base_dir: str | None = None):
        self.processor = processor
        self.task = normalize_task(task)
        self.base_dir = base_dir

    def _audio(self, row: dict[str, Any]) -> np.ndarray:
        rate = self.processor.feature_extractor.sampling_rate
        return load_audio(resolve_path(row["audio"], self.base_dir), target_rate=rate)

    def __call__(self, rows: Sequence[dict[str, Any]]) -> BatchFeature:
        data = self.processor.prepare_text(
            self.task,
            [r["src_lang"] for r in rows],
            [r.get("tgt_lang") for r in rows] if self.task != "asr" else [None] * len(rows),
            [r.get("transcript") for r in rows],
            [r.get("translation") for r in rows] if self.task != "asr" else [None] * len(rows),
        )
        if "labels" not in data:
            raise DataError(f"Rows lack the answers the {self.task} stage trains on.")
        batch = {k: torch.tensor(v) for k, v in data.items()}
        if rows[0].get("input_features") is not None:
            batch["input_features"] = torch.stack([torch.as_tensor(np.asarray(r["input_features"])) for r in rows])
        else:
            audio = [self._audio(r) for r in rows]
            batch["input_features"] = self.processor.extract_features(
                audio, self.processor.feature_extractor.sampling_rate
            )
        return BatchFeature(batch)


def add_input_features(dataset, processor: LlmSrtProcessor, base_dir: str | None = None, num_proc: int | None = None):
    """Precompute log-mel features once (a dataset column), so every stage and epoch reuses them."""
    rate = processor.feature_extractor.sampling_rate

    def featurize(batch):
        audio = [load_audio(resolve_path(item, base_dir), target_rate=rate) for item in batch["audio"]]
        return {"input_features": processor.extract_features(audio, rate).numpy()}

    return dataset.map(featurize, batched=True, batch_size=32, num_proc=num_proc, desc="log-mel features")


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
        if len(texts) != len(rows):
            raise ValueError(f"Got {len(texts)} predictions for {len(rows)} evaluation rows.")
        scored = []
        for text, row in zip(texts, rows):
            if task == "asr":
                scored.append({"src_lang": row["src_lang"], "hypothesis": text.strip(), "reference": row["transcript"]})
                continue
            if task == "srt":
                parts = processor.split_srt_output(text, row["src_lang"], row["tgt_lang"])
                hypothesis, transcript = parts["translation"], parts["transcript"] or ""
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


__all__ = [
    "STAGES",
    "DataError",
    "LlmSrtDataCollator",
    "add_input_features",
    "build_compute_metrics",
    "configure_stage",
    "decode_ids",
    "default_base_dir",
    "load_rows",
    "select_stage_rows",
    "write_jsonl",
]
