"""The evaluation's cache: every rank appends its decoded rows to `hypotheses.<task>.rank<N>.jsonl` as it goes, whose
first line is the fingerprint of what produced them (the model's files and the decoding settings). A killed run
started again resumes where it stopped; a cache of another model or other settings is never reused."""

from __future__ import annotations

import hashlib
import json
import os

from ..audio_llm_srt import resolve_path
from ..cli.safe_io import UsageError
from ..processing_llm_srt import normalize_task
from .decoding import clip_key


# Written at the end, results.json last: its presence marks a finished evaluation.
REPORTS = ("results.md", "bleu_heatmap.png", "results.json")
_HASHED_BELOW = 16 * 2**20  # files smaller than this (configs, tokenizer) are hashed; weights by size and mtime


def model_fingerprint(model: str) -> dict:
    """What identifies a model: its folder and the contents of its files (a Hub id: the id)."""
    if not os.path.isdir(model):
        return {"model": model}
    files = {}
    for name in sorted(os.listdir(model)):
        path = os.path.join(model, name)
        if not os.path.isfile(path):
            continue
        stat = os.stat(path)
        if stat.st_size < _HASHED_BELOW:
            with open(path, "rb") as handle:
                files[name] = "sha256:" + hashlib.sha256(handle.read()).hexdigest()[:16]
        else:
            files[name] = f"size:{stat.st_size},mtime:{stat.st_mtime_ns}"
    fingerprint = {"model": os.path.abspath(model), "files": files}
    try:
        with open(os.path.join(model, "config.json"), encoding="utf-8") as handle:
            fingerprint["mandarin_tag"] = json.load(handle).get("mandarin_tag")
    except (OSError, ValueError):
        pass
    return fingerprint


def cache_fingerprint(args) -> dict:
    """The fingerprint stored in (and required of) every cache: the model and the settings behind a hypothesis."""
    return {**model_fingerprint(args.model), "task": normalize_task(args.task), "num_beams": args.num_beams,
            "max_new_tokens": args.max_new_tokens, "dtype": args.dtype,
            "shared_transcript": bool(args.shared_transcript),
            # only when not the default, so caches written before engines, quantization or the speech detector
            # existed still match
            **({"engine": args.engine} if args.engine != "transformers" else {}),
            **({"quantization": args.quantization} if getattr(args, "quantization", None) else {}),
            **({"vad_filter": False} if not getattr(args, "vad_filter", True) else {})}


def fingerprint_differences(old: dict | None, new: dict) -> str:
    """What differs between two fingerprints, for a message."""
    if not old:
        return "it has no fingerprint (written by an older version)"
    names = []
    for name in new.keys() | old.keys():
        if name == "files":
            changed = sorted(f for f in old.get("files", {}).keys() | new.get("files", {}).keys()
                             if old.get("files", {}).get(f) != new.get("files", {}).get(f))
            if changed:
                names.append("model files (" + ", ".join(changed[:4]) + ("..." if len(changed) > 4 else "") + ")")
        elif old.get(name) != new.get(name):
            names.append(f"{name} {old.get(name)!r} -> {new.get(name)!r}")
    return "; ".join(sorted(names))


def row_input(row: dict, base_dir: str | None, task: str) -> str:
    """The identity of what a row feeds the model: its clip (a file by path, size and modification time; bytes,
    arrays and precomputed features by a digest of their whole content, `decoding.clip_key`), its languages and
    SMT's transcript. A cached hypothesis is reused only for the same input under the same key, so a changed clip is
    decoded again."""
    audio = row.get("audio")
    path = audio.get("path") if isinstance(audio, dict) and audio.get("array") is None and \
        audio.get("bytes") is None else audio
    if "input_features" not in row and isinstance(path, str):
        resolved = resolve_path(path, base_dir)
        try:
            stat = os.stat(resolved)
            clip = [os.path.abspath(resolved), stat.st_size, stat.st_mtime_ns]
        except OSError:
            clip = os.path.abspath(resolved)
    else:
        clip = list(clip_key(row, base_dir)[:2])
    parts = [clip, row["src_lang"], row.get("tgt_lang"), row.get("transcript") if task == "smt" else None]
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False, default=str).encode()).hexdigest()[:16]


def read_cache(path: str) -> tuple[dict | None, dict[str, dict]]:
    """(fingerprint, decoded rows by key) of a cache file; later lines win. Lines cut by a kill are skipped."""
    fingerprint, done = None, {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle):
                line = line.strip()
                if line:
                    try:
                        item = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut by a kill: that row is decoded again
                    if number == 0 and isinstance(item, dict) and "fingerprint" in item:
                        fingerprint = item["fingerprint"]
                        if isinstance(fingerprint, dict):  # caches from before the option decoded independently
                            fingerprint.setdefault("shared_transcript", False)
                    elif isinstance(item, dict) and "key" in item:
                        done[item["key"]] = item
    return fingerprint, done


def cache_files(output_dir: str, task: str) -> list[str]:
    """Every rank's cache of `task` in `output_dir` (any world size's)."""
    if not os.path.isdir(output_dir):
        return []
    return [os.path.join(output_dir, name) for name in sorted(os.listdir(output_dir))
            if name.startswith(f"hypotheses.{task}.rank") and name.endswith(".jsonl")]


def check_output_dir(args, fingerprint: dict) -> list[str]:
    """Refuse (`UsageError`) what would replace a user's work without `--overwrite`: finished results, or caches of
    another model or other settings. Returns the stale caches that `--overwrite` discards (a fresh cache)."""
    task = normalize_task(args.task)
    out = args.output_dir
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--output_dir {out} is a file, not a folder.")
    stale, matching = [], []
    for path in cache_files(out, task):
        old, done = read_cache(path)
        if old == fingerprint:
            matching.append(path)
        elif done:  # a header cut short with no rows is nothing to keep
            stale.append((path, fingerprint_differences(old, fingerprint)))
        else:
            stale.append((path, None))
    if args.overwrite:
        return [path for path, _ in stale]
    if os.path.exists(os.path.join(out, "results.json")):
        raise UsageError(f"{os.path.join(out, 'results.json')} exists already; pass --overwrite true to replace it "
                         "(its caches are reused when the model and settings match), or choose another --output_dir.")
    for path, why in stale:
        if why:
            raise UsageError(f"{out} holds hypotheses of another evaluation ({os.path.basename(path)}: {why}); pass "
                             "--overwrite true to discard them and start a fresh cache, or choose another --output_dir.")
    leftovers = [name for name in (f"hypotheses.{task}.jsonl", *REPORTS) if os.path.exists(os.path.join(out, name))]
    if leftovers and not matching:
        raise UsageError(f"{out} holds {', '.join(leftovers)} of another evaluation; pass --overwrite true to replace "
                         "them, or choose another --output_dir.")
    return [path for path, _ in stale]  # only caches with no rows are left here


__all__ = ["REPORTS", "cache_files", "cache_fingerprint", "check_output_dir", "fingerprint_differences",
           "model_fingerprint", "read_cache", "row_input"]
