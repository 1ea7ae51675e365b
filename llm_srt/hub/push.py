"""Upload an LLM-SRT model folder (or a stage's training output) to the Hugging Face Hub, with its model card.

    python trainer_scripts/push_to_hub.py --folder runs/srt --repo_id me/llm-srt-3b [--private] [--revision main] \
        [--commit_message "..."] [--results eval/results.json] [--dry_run]

The folder must load as an LLM-SRT model (config with `model_type: llm_srt`, weights, processor, remote code).
Trainer checkpoints, optimizer states and logs are left out. When the folder has no README.md, the card is rendered
from `card_template.md` (a `results.json` from `evaluate_model.py` fills the results table). A folder that has a
README.md keeps it: `--results` is then refused unless `--overwrite_card` (re-render the card with the results,
replacing README.md). `--dry_run` prints what would be uploaded and the card, and writes nothing, neither to the Hub
nor to the folder. Errors are one line `push_to_hub: error: ...` (exit 2 for bad usage, 1 for a failed upload).
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from ..cli.safe_io import UsageError, atomic_write, run_reporting_errors
from .cards import model_card_for, read_json


PROG = "push_to_hub"
IGNORE_PATTERNS = ["checkpoint-*", "checkpoint-*/**", "runs/**", "optimizer.pt", "scheduler.pt", "rng_state*.pth",
                   "training_args.bin", "*.partial", ".git/**", "__pycache__/**"]
REQUIRED_FILES = ("config.json", "modeling_llm_srt.py", "configuration_llm_srt.py", "processing_llm_srt.py",
                  "processor_config.json")

@dataclass
class PushArguments:
    folder: str = field(metadata={"help": "Model folder (save_pretrained / train.py output / converter output)."})
    repo_id: str = field(metadata={"help": "Hub repository, e.g. me/llm-srt-3b."})
    private: bool = field(default=False)
    revision: str = field(default="main", metadata={"help": "Branch to upload to (created when missing)."})
    commit_message: str = field(default="Upload LLM-SRT model")
    results: str | None = field(default=None, metadata={"help": "evaluate.py results.json for the card's table."})
    overwrite_card: bool = field(default=False, metadata={"help": "Re-render README.md (with --results) even though "
                                                                   "the folder has one; replaces it."})
    token: str | None = field(default=None, metadata={"help": "Hub token (default: the logged-in one)."})
    dry_run: bool = field(default=False, metadata={"help": "Only print the files and card that would be uploaded."})


def read_results(path: str) -> dict:
    """An `evaluate.py` results.json, checked for what the card uses (`task`, numeric `averages`)."""
    if not os.path.isfile(path):
        raise UsageError(f"--results {path}: no such file.")
    results = read_json(path)
    averages = results.get("averages")
    if not isinstance(results.get("task"), str) or not isinstance(averages, dict):
        raise ValueError(f"--results {path} is not an evaluate.py results.json (needs 'task' and 'averages').")
    scores = {k: averages.get(k) for k in ("bleu", "wer") if k in averages}
    bad = [k for k, v in scores.items() if isinstance(v, bool) or not isinstance(v, (int, float))]
    if not scores or bad:
        raise ValueError(f"--results {path}: 'averages' needs a numeric 'bleu' or 'wer'"
                         + (f"; not numbers: {', '.join(bad)}" if bad else "") + ".")
    return results


def files_to_upload(folder: str) -> list[str]:
    """Relative paths that would be uploaded (training leftovers excluded)."""
    out = []
    for base, dirs, files in os.walk(folder):
        for name in files:
            rel = os.path.relpath(os.path.join(base, name), folder)
            if not any(fnmatch.fnmatch(rel, pattern) for pattern in IGNORE_PATTERNS):
                out.append(rel)
    return sorted(out)


def check_folder(folder: str) -> None:
    """Raise when the folder is not a loadable LLM-SRT model."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"No folder {folder}")
    missing = [f for f in REQUIRED_FILES if not os.path.isfile(os.path.join(folder, f))]
    weights = [f for f in os.listdir(folder) if f.endswith(".safetensors") or f == "model.safetensors.index.json"]
    if not weights:
        missing.append("*.safetensors")
    if missing:
        raise ValueError(f"{folder} is not a complete LLM-SRT model folder; missing: {', '.join(missing)}")
    model_type = read_json(os.path.join(folder, "config.json")).get("model_type")
    if model_type != "llm_srt":
        raise ValueError(f"{folder}/config.json has model_type {model_type!r}, not 'llm_srt'.")


def check_repo_id(repo_id: str) -> None:
    """Refuse a malformed Hub repository id before anything is uploaded."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise UsageError(f"--repo_id {repo_id!r} is not a Hub repository id (owner/name): "
                         f"{str(error).splitlines()[0]}") from None


def push(args: PushArguments, api=None) -> list[str]:
    """Upload (or, with --dry_run, list) the folder; returns the uploaded relative paths."""
    check_repo_id(args.repo_id)
    check_folder(args.folder)
    results = read_results(args.results) if args.results else None
    has_card = os.path.isfile(os.path.join(args.folder, "README.md"))
    if has_card and results is not None and not args.overwrite_card:
        raise UsageError(
            f"{args.folder}/README.md exists, so --results {args.results} would not reach the card: pass "
            "--overwrite_card to re-render it with these results (replaces README.md), or drop --results and "
            "edit the card yourself.")
    card = None
    if not has_card or args.overwrite_card:
        card = model_card_for(args.folder, repo_id=args.repo_id, results=results)
    files = files_to_upload(args.folder)
    if args.dry_run:  # nothing written, not even the card: a later real push must see the folder as it is
        if card is not None:
            files = sorted(set(files) | {"README.md"})
        print(f"Would upload to {args.repo_id}@{args.revision} ({'private' if args.private else 'public'}):")
        print("\n".join(f"  {f}" + (" (generated card)" if f == "README.md" and card is not None else "")
                        for f in files))
        if card is not None:
            print("\n--- README.md ---\n" + card)
        return files
    if card is not None:
        with atomic_write(os.path.join(args.folder, "README.md")) as handle:
            handle.write(card)
        files = files_to_upload(args.folder)
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=args.token)
    api.create_repo(args.repo_id, private=args.private, exist_ok=True, repo_type="model")
    if args.revision != "main":
        api.create_branch(args.repo_id, branch=args.revision, exist_ok=True)
    api.upload_folder(folder_path=args.folder, repo_id=args.repo_id, revision=args.revision,
                      commit_message=args.commit_message, ignore_patterns=IGNORE_PATTERNS)
    print(f"Uploaded {len(files)} files to https://huggingface.co/{args.repo_id}/tree/{args.revision}")
    return files


def main(argv: list[str] | None = None) -> int:
    """The command: exit status 0, 2 for bad usage, 1 for a failed upload, 130 interrupted."""
    (args,) = HfArgumentParser(PushArguments, prog=PROG).parse_args_into_dataclasses(args=argv)
    return run_reporting_errors(PROG, lambda: push(args) and 0, usage_errors=(FileNotFoundError, ValueError))

