"""A training run's output folder: finished runs (the completion marker), checkpoints to resume, overwrites that
keep what they replace, the final model published last."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Sequence
from typing import Any

from transformers.utils import logging


logger = logging.get_logger(__name__)


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
    from ..cli.safe_io import atomic_write

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
    from ..cli.safe_io import OutputExistsError, same_file

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
