"""Training data for the ASR -> SMT -> SRT curriculum: rows, their checks, stage selection and the collator.

Data rows (a JSON-lines manifest or a `datasets` folder) hold one utterance in SRT form:
`{"audio": path | {"array", "sampling_rate"}, "src_lang", "tgt_lang", "transcript", "translation", "key"}`; ASR-only
rows (Common Voice) have no `tgt_lang`/`translation`. A precomputed `input_features` column replaces the audio.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature
from transformers.utils import logging

from ..audio_llm_srt import audio_file_info, load_audio, resolve_path
from ..languages_llm_srt import normalize_language
from ..processing_llm_srt import LlmSrtProcessor, normalize_task


logger = logging.get_logger(__name__)

STAGES = ("asr", "smt", "srt")
# What each stage needs of a row.
STAGE_FIELDS = {"asr": ("src_lang", "transcript"), "smt": ("src_lang", "tgt_lang", "transcript", "translation"),
                "srt": ("src_lang", "tgt_lang", "transcript", "translation")}


class DataError(ValueError):
    """A data row that cannot be used; the message names the file, the row and the field."""


# Fields of a row and what each may hold (None: absent). Keys are strings (whole numbers are read as strings).
TEXT_FIELDS = ("src_lang", "tgt_lang", "transcript", "translation")
AUDIO_EXPECTED = "expected an audio file path (or an array with its sampling_rate)"
_KINDS = {str: "a string", int: "a number", float: "a number", bool: "true/false", list: "a list", dict: "an object"}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return _KINDS.get(type(value), type(value).__name__)


def _shown(value: Any) -> str:
    """A value as a message shows it: short, and its kind when that is the problem."""
    if value is None:
        return "null"
    if isinstance(value, (bool, int, float)):
        return json.dumps(value)
    return _kind(value)


def _json_rows(path: str) -> tuple[list[dict], list[str]]:
    """The rows of a JSON-lines file (or a JSON array) and where each is ("line 3", "item 3"); blank lines skipped.

    Raises `DataError` naming the line for text that is not JSON, or a row that is not an object.
    """
    with open(path, encoding="utf-8-sig") as handle:  # -sig: a BOM (editors' exports) is no part of line 1
        text = handle.read()
    if not text.strip():  # `datasets` fails obscurely on an empty file
        raise DataError(f"{path} is empty: no rows.")
    if path.endswith(".json") and text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}: not valid JSON ({error}).") from None
        labels = [f"item {i + 1}" for i in range(len(items))]
    else:
        items, labels = [], []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise DataError(f"{path} line {number}: not valid JSON ({error.msg}, column {error.colno}).") from None
            labels.append(f"line {number}")
    for item, label in zip(items, labels):
        if not isinstance(item, dict):
            raise DataError(f"{path} {label}: expected a JSON object (one row), got {_kind(item)}.")
    return items, labels


def _columns(path: str, rows: list[dict], labels: list[str]) -> dict[str, list]:
    """Rows -> columns for `datasets`, refusing (by line and field) a value of the wrong kind, or a field whose kind
    changes between rows (Arrow cannot store it)."""
    names = list(dict.fromkeys(name for row in rows for name in row))
    columns = {name: [] for name in names}
    first_kind: dict[str, tuple[str, str]] = {}
    for row, label in zip(rows, labels):
        if isinstance(row.get("key"), int) and not isinstance(row.get("key"), bool):
            row["key"] = str(row["key"])
        where = f"{path} {label}" + (f" (key {row['key']})" if isinstance(row.get("key"), str) else "")
        for name in names:
            value = row.get(name)
            columns[name].append(value)
            if value is None:
                continue
            if name in TEXT_FIELDS or name == "key":
                if not isinstance(value, str):
                    raise DataError(f"{where}, field {name!r}: expected a string, got {_shown(value)}.")
                continue
            if name == "audio" and not isinstance(value, (str, dict)):
                raise DataError(f"{where}, field 'audio': {AUDIO_EXPECTED}, got {_shown(value)}.")
            kind = _kind(value)
            seen = first_kind.setdefault(name, (kind, label))
            if seen[0] != kind:
                raise DataError(f"{where}, field {name!r}: {kind}, but {seen[0]} on {seen[1]}; a field holds one "
                                "kind of value in every row.")
    return columns


def load_rows(path: str):
    """Load a manifest (`.jsonl`/`.json`) or a `save_to_disk` folder as a `datasets.Dataset`.

    Manifest lines are parsed here, so malformed JSON and values of the wrong kind are named by line and field.
    """
    import datasets

    if not os.path.exists(path):
        raise FileNotFoundError(f"Data not found: {path}")
    if os.path.isdir(path):
        try:
            return datasets.load_from_disk(path)
        except FileNotFoundError as error:
            raise DataError(f"{path}: not a datasets folder (save_to_disk): {error}") from None
    if path.endswith((".jsonl", ".json")):
        rows, labels = _json_rows(path)
        try:
            return datasets.Dataset.from_dict(_columns(path, rows, labels))
        except DataError:
            raise
        except Exception as error:  # pyarrow's ArrowInvalid / ArrowTypeError: nested values of mixed kinds
            raise DataError(f"{path}: the rows cannot form one table ({error}).") from None
    raise DataError(f"{path}: expected a .jsonl manifest or a datasets folder (save_to_disk).")


def row_labels(source: str | None, count: int) -> list[str]:
    """Where each row of a data file is, for messages: `line N` of a JSON-lines file, else `row N` (1-based)."""
    if source and os.path.isfile(source) and source.endswith((".jsonl", ".json")):
        try:
            _, labels = _json_rows(source)
        except (DataError, OSError):
            labels = []
        if len(labels) == count:
            return labels
    return [f"row {i + 1}" for i in range(count)]


def audio_seconds(path: str) -> float:
    """A file's duration from its header (frames / sample rate), without decoding it (a header without the length,
    as streaming FLAC encoders write, is counted: `audio_file_info`)."""
    info = audio_file_info(path)
    if not info.samplerate or info.samplerate <= 0:
        raise ValueError(f"sample rate {info.samplerate}")
    return info.frames / info.samplerate


class RowChecker:
    """Checks rows one at a time: kinds of values, languages, audio (readable, within the window), duplicate keys.

    Every message names the file, the row and the field: `train.jsonl line 3 (key u2), field 'audio': ...`.

    Args:
        source: the data file or folder (named in messages).
        base_dir: folder relative audio paths are under.
        max_seconds: the model's audio window (clips longer than it are refused); None: not checked.
        check_audio: whether to check the `audio` field (False when precomputed `input_features` replace it).
        processor, max_positions: the processor that builds a row's token ids and the LLM's context
            (`max_position_embeddings`): `check_length` refuses rows longer than it. None: not checked.
    """

    def __init__(self, source: str, base_dir: str | None = None, max_seconds: float | None = None,
                 check_audio: bool = True, processor: LlmSrtProcessor | None = None, max_positions: int | None = None):
        self.source, self.base_dir, self.max_seconds, self.check_audio = source, base_dir, max_seconds, check_audio
        self.processor, self.max_positions = processor, max_positions
        self.same_language: list[str] = []  # rows whose target is their source (kept; `report` warns once)
        self.keys: dict[str, str] = {}
        self._durations: dict[str, float | str] = {}  # path -> seconds, or why it cannot be read

    def where(self, row: dict[str, Any], label: str) -> str:
        key = row.get("key")
        return f"{self.source} {label}" + (f" (key {key})" if key not in (None, "") else "")

    def __call__(self, row: dict[str, Any], label: str, needed: Sequence[str] = ()) -> None:
        """Check `row` (at `label`); `needed` fields must be non-empty. Raises `DataError`."""
        where = self.where(row, label)
        key = row.get("key")
        if key is not None:
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise DataError(f"{where}, field 'key': expected a string, got {_shown(key)}.")
            key = str(key)
            if key in self.keys:
                raise DataError(f"{where}, field 'key': duplicate key {key!r}, also on {self.keys[key]}.")
            self.keys[key] = label
        for name in TEXT_FIELDS:
            value = row.get(name)
            if value is None or (value == "" and name not in needed):
                if name in needed:
                    raise DataError(f"{where}, field {name!r}: missing (needed here).")
                continue
            if not isinstance(value, str):
                raise DataError(f"{where}, field {name!r}: expected a string, got {_shown(value)}.")
            if not value.strip():
                raise DataError(f"{where}, field {name!r}: empty.")
            if name.endswith("_lang"):
                try:
                    normalize_language(value)
                except ValueError as error:
                    raise DataError(f"{where}, field {name!r}: {error}") from None
        if "tgt_lang" in needed and normalize_language(row["src_lang"]) == normalize_language(row["tgt_lang"]):
            self.same_language.append(label)
        if self.check_audio:
            problem = self._audio_problem(row.get("audio"))
            if problem:
                raise DataError(f"{where}, field 'audio': {problem}")

    def report(self) -> None:
        """One warning for the rows translating into their own language (src_lang == tgt_lang): kept, as the
        pipeline and the server keep such a target (`normalize_targets`)."""
        if self.same_language:
            count = len(self.same_language)
            rows = f"{count} rows translate" if count > 1 else "1 row translates"
            logger.warning(f"{self.source}: {rows} into their own language (src_lang == tgt_lang; first: "
                           f"{self.same_language[0]}): kept, trained and scored as given.")

    def check_length(self, row: dict[str, Any], label: str, stage: str) -> None:
        """Refuse (`DataError`) a row whose tokens (audio slots, prompt, target, end token, as the processor builds
        them for `stage`) do not fit the LLM's context. A row already checked by `__call__`."""
        if self.processor is None or not self.max_positions:
            return
        ids = self.processor.prepare_text(stage, [row["src_lang"]], [row.get("tgt_lang")], [row.get("transcript")],
                                          [row.get("translation")])["input_ids"][0]
        if len(ids) > self.max_positions:
            fields = ("transcript",) if stage == "asr" else ("transcript", "translation")
            named = f"field {fields[0]!r}" if len(fields) == 1 else "fields " + ", ".join(map(repr, fields))
            raise DataError(
                f"{self.where(row, label)}, {named}: {len(ids)} tokens with the {self.processor.num_audio_tokens} "
                f"audio slots, more than the LLM's context of {self.max_positions} positions "
                "(max_position_embeddings); shorten or drop the row."
            )

    def _audio_problem(self, audio: Any) -> str | None:
        seconds: float | str
        if isinstance(audio, str):
            if not audio.strip():
                return "empty path."
            if audio.startswith(("http://", "https://")):
                return f"{audio}: URLs are not fetched; download the file first."
            path = resolve_path(audio, self.base_dir)
            if path not in self._durations:
                if not os.path.isfile(path):
                    self._durations[path] = f"audio file not found: {path}"
                else:
                    try:
                        self._durations[path] = audio_seconds(path)
                    except Exception as error:  # soundfile: LibsndfileError / RuntimeError for unreadable files
                        self._durations[path] = f"cannot read {path} as audio ({str(error).strip() or type(error).__name__})."
            seconds, name = self._durations[path], path
        elif isinstance(audio, dict):
            if audio.get("array") is not None:
                rate = audio.get("sampling_rate")
                if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
                    return f"an audio array needs a positive sampling_rate, got {_shown(rate)}."
                shape = np.shape(audio["array"])
                seconds, name = (max(shape) if shape else 0) / rate, "the audio array"
            elif audio.get("bytes") is not None:
                try:
                    info = audio_file_info(io.BytesIO(bytes(audio["bytes"])))
                    seconds = info.frames / info.samplerate
                except Exception as error:
                    seconds = f"cannot read the audio bytes ({str(error).strip()})."
                name = audio.get("path") or "the audio bytes"
            elif audio.get("path") is not None:
                return self._audio_problem(audio["path"])
            else:
                return "an audio object needs 'array' and 'sampling_rate', 'bytes' or 'path'."
        else:
            return f"{AUDIO_EXPECTED}, got {_shown(audio)}."
        if isinstance(seconds, str):
            return seconds
        if seconds <= 0:
            return f"{name} is empty (0 samples)."
        if self.max_seconds and seconds > self.max_seconds:
            return (f"{name} lasts {seconds:.1f} s, longer than the model's {self.max_seconds:g} s window; split it "
                    "(prepare_data.py drops such clips).")
        return None


def _audio_column_undecoded(dataset):
    """The dataset with an `Audio` column left undecoded (path/bytes), so checking reads headers only."""
    import datasets

    feature = dataset.features.get("audio")
    if isinstance(feature, datasets.Audio) and feature.decode:
        return dataset.cast_column("audio", datasets.Audio(decode=False))
    return dataset


def default_base_dir(path: str, base_dir: str | None = None) -> str:
    """The folder relative audio paths of a data file are under: `base_dir` if given, else the manifest's folder
    (or the datasets folder itself)."""
    if base_dir:
        return base_dir
    return os.path.dirname(os.path.abspath(path)) if os.path.isfile(path) else path


def select_stage_rows(dataset, stage: str, base_dir: str | None = None, source: str | None = None,
                      max_seconds: float | None = None, processor: LlmSrtProcessor | None = None,
                      max_positions: int | None = None):
    """Keep the rows a stage can use and check every one of them before training.

    Rows lacking a translation are dropped from the SMT/SRT stages (counted and logged: ASR-only corpora). A value
    of the wrong kind, a language outside the 15, an empty text, a duplicate key, or audio that is missing,
    unreadable or longer than `max_seconds` (the model's window) raise `DataError` naming `source` (the data file),
    the row (`line N` of a manifest) and the field. Audio is checked from file headers, not decoded. With a
    `processor` and the LLM's context (`max_positions`), a kept row whose tokens do not fit is refused as well.
    """
    from tqdm.auto import tqdm

    stage = normalize_task(stage)
    needed = STAGE_FIELDS[stage]
    source = source or "the data"
    columns = set(dataset.column_names)
    missing_columns = [f for f in needed if f not in columns]
    if missing_columns:
        raise DataError(f"{source} has no {', '.join(missing_columns)} column(s), needed by the {stage} stage.")
    has_features = "input_features" in columns
    if not has_features and "audio" not in columns:
        raise DataError(f"{source} has neither an 'audio' nor an 'input_features' column.")
    check_columns = [c for c in ("key", "audio", *TEXT_FIELDS) if c in columns and not (c == "audio" and has_features)]
    view = _audio_column_undecoded(dataset.select_columns(check_columns))
    labels = row_labels(source, len(dataset))
    check = RowChecker(source, base_dir=base_dir, max_seconds=max_seconds, check_audio=not has_features,
                       processor=processor, max_positions=max_positions)
    kept = []
    rows = tqdm(view, total=len(view), desc=f"checking {os.path.basename(source)}", unit="row",
                disable=len(view) < 1000)
    for index, row in enumerate(rows):
        usable = all(row.get(f) not in (None, "") for f in needed if f in ("tgt_lang", "translation"))
        check(row, labels[index], needed=needed if usable else ("src_lang", "transcript"))
        if usable:
            check.check_length(row, labels[index], stage)
            kept.append(index)
    check.report()
    dropped = len(dataset) - len(kept)
    if dropped:
        logger.warning(f"{stage}: dropped {dropped} of {len(dataset)} rows without a translation (ASR-only rows).")
    if not kept:
        raise DataError(f"No row of {source} is usable for the {stage} stage.")
    return dataset.select(kept) if dropped else dataset


class LlmSrtDataCollator:
    """Batches rows for one curriculum stage with the processor (dynamic padding, labels on answers only).

    Args:
        processor: the model's processor.
        task: the stage, `asr`, `smt` or `srt`.
        base_dir: folder that relative audio paths are relative to, unless a row names its own in an
            `audio_base_dir` field (train and eval manifests may live in different folders: see `tag_base_dir`).
    """

    def __init__(self, processor: LlmSrtProcessor, task: str, base_dir: str | None = None):
        self.processor = processor
        self.task = normalize_task(task)
        self.base_dir = base_dir

    def _audio(self, row: dict[str, Any]) -> np.ndarray:
        rate = self.processor.feature_extractor.sampling_rate
        return load_audio(resolve_path(row["audio"], row.get("audio_base_dir") or self.base_dir), target_rate=rate)

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


def tag_base_dir(dataset, base_dir: str | None):
    """Give every row an `audio_base_dir` field, so the collator resolves its relative audio paths against its
    own manifest's folder, whichever split (train or eval) it comes from."""
    if not base_dir or "audio" not in dataset.column_names or "audio_base_dir" in dataset.column_names:
        return dataset
    return dataset.add_column("audio_base_dir", [base_dir] * len(dataset))


def add_input_features(dataset, processor: LlmSrtProcessor, base_dir: str | None = None, num_proc: int | None = None):
    """Precompute log-mel features once (a dataset column), so every stage and epoch reuses them."""
    rate = processor.feature_extractor.sampling_rate

    def featurize(batch):
        audio = [load_audio(resolve_path(item, base_dir), target_rate=rate) for item in batch["audio"]]
        return {"input_features": processor.extract_features(audio, rate).numpy()}

    return dataset.map(featurize, batched=True, batch_size=32, num_proc=num_proc, desc="log-mel features")
