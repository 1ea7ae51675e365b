"""Training helpers for the ASR -> SMT -> SRT curriculum with `Seq2SeqTrainer`.

Data rows (a JSON-lines manifest or a `datasets` folder) hold one utterance in SRT form:
`{"audio": path | {"array", "sampling_rate"}, "src_lang", "tgt_lang", "transcript", "translation", "key"}`; ASR-only
rows (Common Voice) have no `tgt_lang`/`translation`. A precomputed `input_features` column replaces the audio.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature
from transformers.utils import logging

from .audio_llm_srt import audio_file_info, load_audio, resolve_path
from .configuration_llm_srt import normalize_language, recorded_directions, recorded_languages
from .metrics import score_directions, split_srt_response
from .processing_llm_srt import IGNORE_INDEX, LlmSrtProcessor, normalize_task


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


# ---------------------------------------------------------------------------------------- output folder, resume
# What `Trainer._save_checkpoint` writes, in order: the model (weights, config), then optimizer/scheduler/RNG
# state, and `trainer_state.json` last. A checkpoint is complete when its state parses and its weights exist.
TRAINER_STATE_NAME = "trainer_state.json"
WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json", "adapter_model.safetensors", "adapter_model.bin")
# Files whose presence at the top of an output folder means it holds a model.
FINISHED_MODEL_FILES = ("config.json", *WEIGHTS_FILES)
# train.py's final save: written into FINAL_STAGING, moved into the output folder file by file, and FINAL_MARKER
# written last (after the final metrics). Without the marker the final files are a save a kill cut short.
FINAL_MARKER = "training_complete.json"
FINAL_STAGING = ".final-save.partial"
# Where `--overwrite_output_dir` keeps a replaced run's checkpoints: `replaced-1/checkpoint-N`, out of the resume's
# reach (it looks at the top level only).
REPLACED_PREFIX = "replaced-"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_WEIGHTS_SHARD = re.compile(r"^(model|pytorch_model|adapter_model)-\d+-of-\d+\.(safetensors|bin)$")


def _is_weights_file(name: str) -> bool:
    return name in WEIGHTS_FILES or bool(_WEIGHTS_SHARD.match(name))


def _is_local_main_process() -> bool:
    return int(os.environ.get("LOCAL_RANK", "0")) == 0


def finished_run(output_dir: str) -> dict | None:
    """The completion marker of a finished `train.py` run in `output_dir` (parsed), or None: no finished run (no
    marker, or one cut short)."""
    try:
        with open(os.path.join(output_dir, FINAL_MARKER), encoding="utf-8") as handle:
            marker = json.load(handle)
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def publish_final_model(staging: str, output_dir: str) -> list[str]:
    """Move the final save's files from `staging` into `output_dir` (one rename each) and remove `staging`.

    Weights files of an earlier save that this one does not have go first (a stale `model.safetensors` would be
    loaded instead of new shards), and so does an old completion marker. Returns the files moved in; the caller
    writes the marker (`mark_finished`) once everything else is written.
    """
    names = sorted(os.listdir(staging))
    for name in (FINAL_MARKER, *(n for n in os.listdir(output_dir) if _is_weights_file(n) and n not in names)):
        target = os.path.join(output_dir, name)
        if os.path.isfile(target):
            os.remove(target)
    for name in names:
        target = os.path.join(output_dir, name)
        if os.path.isdir(target):
            shutil.rmtree(target)
        os.replace(os.path.join(staging, name), target)
    os.rmdir(staging)
    return names


def mark_finished(output_dir: str, files: Sequence[str], **info: Any) -> None:
    """Write the completion marker (atomically), listing the final files; the last thing a finished run writes."""
    from .safe_io import atomic_write

    with atomic_write(os.path.join(output_dir, FINAL_MARKER)) as handle:
        json.dump({"files": sorted(files), **info}, handle, indent=2)


def checkpoint_problem(folder: str) -> str | None:
    """Why a `checkpoint-N` folder cannot be resumed from (a run killed while writing it), or None if complete."""
    state = os.path.join(folder, TRAINER_STATE_NAME)
    if not os.path.isfile(state):
        return f"no {TRAINER_STATE_NAME} (the Trainer writes it last)"
    try:
        with open(state, encoding="utf-8") as handle:
            json.load(handle)
    except (OSError, ValueError):
        return f"{TRAINER_STATE_NAME} is cut short"
    entries = os.listdir(folder)
    has_weights = any(name in entries for name in WEIGHTS_FILES) or any(
        name.startswith(("pytorch_model_fsdp", "global_step")) for name in entries  # FSDP / DeepSpeed layouts
    ) or any(os.path.isfile(os.path.join(folder, name, "adapter_model.safetensors")) for name in entries)
    return None if has_weights else "no model weights"


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The newest complete `checkpoint-N` in `output_dir`; partial ones (newer) are skipped with a warning naming
    them. None when there is none (or no folder)."""
    if not os.path.isdir(output_dir):
        return None
    steps = sorted(((int(m.group(1)), name) for name in os.listdir(output_dir)
                    if (m := _CHECKPOINT.match(name)) and os.path.isdir(os.path.join(output_dir, name))), reverse=True)
    for _, name in steps:
        folder = os.path.join(output_dir, name)
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        logger.warning(f"Skipping the partial checkpoint {folder}: {problem}; a run stopped while saving it.")
    return None


def _remove_final_model(output_dir: str, marker: dict | None) -> None:
    """Remove a finished or cut final save (the files its marker lists, config and weights), nothing else."""
    listed = [n for n in (marker or {}).get("files", []) if isinstance(n, str) and os.sep not in n and n not in
              ("", ".", "..") and not _CHECKPOINT.match(n)]
    for name in (*listed, *(n for n in os.listdir(output_dir) if n in FINISHED_MODEL_FILES or _is_weights_file(n)),
                 FINAL_MARKER):
        path = os.path.join(output_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)


def _set_aside_checkpoints(output_dir: str, names: Sequence[str]) -> str:
    """Move a replaced run's checkpoints into the next free `replaced-N/` folder; returns that folder."""
    number = 1
    while os.path.exists(os.path.join(output_dir, f"{REPLACED_PREFIX}{number}")):
        number += 1
    folder = os.path.join(output_dir, f"{REPLACED_PREFIX}{number}")
    os.makedirs(folder)
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.rename(os.path.join(output_dir, name), os.path.join(folder, name))
    return folder


def plan_output_dir(output_dir: str, overwrite: bool = False, inputs: Sequence[str] = ()) -> str | None:
    """Check a training `--output_dir` and return the checkpoint to resume from (None: start afresh).

    - an output folder that is one of `inputs` (the starting model) is refused, whatever `overwrite` says;
    - a finished run (its completion marker `FINAL_MARKER`, which `train.py` writes last) is refused unless
      `overwrite`;
    - a model without the marker (a final save a kill cut short) is not finished: the newest complete checkpoint
      is resumed from, and the final model written again; with no checkpoint it is refused unless `overwrite`;
    - `overwrite` starts afresh: it removes the final model only, and moves the replaced run's `checkpoint-*`
      folders into `replaced-N/` (kept, never resumed);
    - a folder with other files and no checkpoint to resume from is refused unless `overwrite`.
    A staging folder left by a cut final save is removed.

    Raises:
        ValueError: the output folder is an input.
        OutputExistsError: the folder holds a model or other files and `overwrite` is not set.
    """
    from .safe_io import OutputExistsError, same_file

    for source in inputs:
        if source and os.path.exists(source) and os.path.exists(output_dir) and same_file(source, output_dir):
            raise ValueError(f"--output_dir {output_dir} is the --init_from model: a stage's output goes to a new folder.")
    if not os.path.exists(output_dir):
        return None
    if not os.path.isdir(output_dir):
        raise OutputExistsError(f"--output_dir {output_dir} is a file, not a folder.")
    staging = os.path.join(output_dir, FINAL_STAGING)
    if os.path.isdir(staging) and _is_local_main_process():
        logger.warning(f"Removing {staging}: the staging folder of a final save that did not finish.")
        shutil.rmtree(staging, ignore_errors=True)
    entries = sorted(name for name in os.listdir(output_dir) if name != FINAL_STAGING)
    marker = finished_run(output_dir)
    model_files = [name for name in FINISHED_MODEL_FILES if name in entries]
    if marker is not None and not overwrite:
        raise OutputExistsError(
            f"--output_dir {output_dir} holds a finished model ({', '.join([FINAL_MARKER, *model_files])}); pass "
            "--overwrite_output_dir true to train again and replace it (its checkpoints are kept in "
            f"{REPLACED_PREFIX}N/), or choose another folder."
        )
    checkpoints = [name for name in entries if _CHECKPOINT.match(name) and os.path.isdir(os.path.join(output_dir, name))]
    if overwrite:
        if not _is_local_main_process():
            return None
        if entries:
            logger.warning(f"--overwrite_output_dir: training from scratch into {output_dir}; its final model is "
                           "replaced.")
        _remove_final_model(output_dir, marker)
        # The replaced run's checkpoints are kept, but out of the resume's reach: left in place, a kill of the new
        # run before it passes their step would resume the old run from them.
        if checkpoints:
            folder = _set_aside_checkpoints(output_dir, checkpoints)
            logger.warning(f"--overwrite_output_dir: the replaced run's checkpoints {', '.join(checkpoints)} are kept "
                           f"in {folder} (never resumed; delete it to free the space).")
        return None
    checkpoint = last_complete_checkpoint(output_dir)
    if model_files:
        if checkpoint is None:
            raise OutputExistsError(
                f"--output_dir {output_dir} holds a model ({', '.join(model_files)}) but no {FINAL_MARKER} and no "
                "checkpoint to resume from (a model from elsewhere, or a train.py run whose final save did not "
                "finish); pass --overwrite_output_dir true to train afresh into it, or choose another folder."
            )
        logger.warning(f"{output_dir} holds a final save that did not finish (no {FINAL_MARKER}, which train.py "
                       f"writes last): resuming from {checkpoint}; the final model is written again.")
    if checkpoint:
        return checkpoint
    others = [name for name in entries if not _CHECKPOINT.match(name) and name != "runs"
              and not re.fullmatch(rf"{REPLACED_PREFIX}\d+", name)]
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise OutputExistsError(
            f"--output_dir {output_dir} is not empty ({shown}) and holds no checkpoint to resume from; pass "
            "--overwrite_output_dir true to train into it anyway, or choose another folder."
        )
    return None


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


# ------------------------------------------------------------------------------------------------ FSDP on CPU
def requested_fsdp_version(fsdp_plugin_args: dict | None = None) -> int | None:
    """The FSDP version asked for: by the Trainer's `fsdp_plugin_args` (`--fsdp` / `--fsdp_config`), else by
    `accelerate launch`'s FSDP config (`ACCELERATE_USE_FSDP`, `FSDP_VERSION`). None when FSDP is not asked for."""
    if fsdp_plugin_args is not None:
        return int(fsdp_plugin_args.get("fsdp_version", 2))
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return int(os.environ.get("FSDP_VERSION", "1"))  # Accelerate's own default
    return None


def fsdp_offload_requested(fsdp_plugin_args: dict | None = None) -> bool:
    """Whether FSDP's parameter offload to CPU is asked for: `--fsdp offload` / fsdp_config's `cpu_offload`, or
    accelerate's `fsdp_offload_params`."""
    if fsdp_plugin_args is not None:
        return bool(fsdp_plugin_args.get("cpu_offload"))
    return os.environ.get("FSDP_OFFLOAD_PARAMS", "false").lower() in ("true", "1", "yes")


def is_fsdp_checkpoint(folder: str) -> bool:
    """Whether a checkpoint holds FSDP's model state (`pytorch_model_fsdp_0/` sharded, `pytorch_model_fsdp.bin`
    full), as `Trainer._load_from_checkpoint` tells them apart."""
    entries = os.listdir(folder) if os.path.isdir(folder) else []
    return any(n.startswith("pytorch_model_fsdp") and os.path.isdir(os.path.join(folder, n)) for n in entries) or (
        "pytorch_model_fsdp.bin" in entries)


def fsdp_layer_classes(model: torch.nn.Module, names: str | Sequence[str] | None, flag: str) -> str:
    """The layer classes FSDP shards one by one, checked against `model`: `names` (comma-separated or a list, from
    `flag`), or by default the model's `_no_split_modules` that it has (it also names classes of configurations it
    does not build, which Accelerate would refuse). Raises ValueError naming `flag` for a class the model lacks."""
    present = list(dict.fromkeys(type(m).__name__ for m in model.modules()))
    if names is None:
        return ",".join(n for n in (getattr(model, "_no_split_modules", None) or []) if n in present)
    wanted = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    missing = [n for n in wanted if n not in present]
    if missing:
        layers = [n for n in present if n.endswith("Layer")]
        raise ValueError(f"{flag} names {', '.join(missing)}, not a layer class of this model (its layers: "
                         f"{', '.join(layers)}).")
    return ",".join(wanted)


def enable_fsdp_on_cpu(accelerator, fsdp_plugin_args: dict | None = None) -> bool:
    """Shard with FSDP2 on a multi-process CPU launch (gloo), where Accelerate would run DDP instead.

    Accelerate (1.15) honours an FSDP plugin only on accelerator process groups (`AcceleratorState.__init__`:
    MULTI_GPU, MULTI_XPU, ...). On a CPU launch (MULTI_CPU) it drops the plugin the Trainer built from `--fsdp` /
    `--fsdp_config` (or from `accelerate launch`'s FSDP config), and training silently runs as DDP. torch's FSDP2
    (`fully_shard`) runs on CPU with gloo, so this does what Accelerate does on GPUs: the distributed type becomes
    FSDP with that plugin, and `Accelerator.prepare` then shards the model (`fsdp2_prepare_model`).

    Call it right after creating the accelerator, before `prepare`. `fsdp_plugin_args` are the Trainer's
    (`TrainingArguments.fsdp_plugin_args`); without them the plugin is read from Accelerate's `FSDP_*` environment
    variables (`accelerate launch --config_file fsdp.yaml`). Returns True when it enabled FSDP; does nothing (False)
    when FSDP is not asked for, the launch is not multi-process CPU, or Accelerate already enabled it.

    Raises:
        ValueError: FSDP version 1 asked for (Accelerate's FSDP1 plugin needs an accelerator device).
    """
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = accelerator.state
    version = requested_fsdp_version(fsdp_plugin_args)
    if version is None or state.distributed_type != DistributedType.MULTI_CPU or getattr(state, "fsdp_plugin", None):
        return False
    if version != 2:
        raise ValueError(
            f"FSDP on CPU runs FSDP2 only; the FSDP config asks for version {version} "
            "(set fsdp_config's version, or accelerate's fsdp_version, to 2)."
        )
    plugin = FullyShardedDataParallelPlugin(**(fsdp_plugin_args or {}))
    if state.mixed_precision != "no":  # as AcceleratorState does for accelerator groups
        plugin.set_mixed_precision(state.mixed_precision)
    state.fsdp_plugin = plugin
    state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    logger.info(f"FSDP{plugin.fsdp_version} on CPU over {state.num_processes} processes (gloo): Accelerate enables "
                "FSDP only on accelerators and would have run DDP.")
    return True


def sharded_parameter_count(model: torch.nn.Module) -> tuple[int, int]:
    """(parameters held as DTensors, i.e. sharded by FSDP2, all parameters) of a model."""
    from torch.distributed.tensor import DTensor

    params = list(model.parameters())
    return sum(isinstance(p, DTensor) for p in params), len(params)


def unsharded_model(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A plain copy of an FSDP2-sharded model holding `state_dict` (its full weights, e.g. gathered on rank 0).

    `fully_shard` swaps a model's class for a generated `FSDP<Name>` defined in torch; `save_pretrained` on it would
    write torch's files as the folder's remote code (auto_map `_fsdp_init.FSDP<Name>`). The copy has the original
    class, built on the meta device and filled with the given tensors (no second copy of the weights).
    """
    import copy

    from torch.distributed.fsdp import FSDPModule

    cls = next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))
    with torch.device("meta"):
        plain = cls(copy.deepcopy(model.config))
    plain.load_state_dict(state_dict, strict=True, assign=True)
    plain.tie_weights()
    plain.generation_config = copy.deepcopy(model.generation_config)
    return plain


__all__ = [
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
