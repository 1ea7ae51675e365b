#!/usr/bin/env python
"""Upload an LLM-SRT model folder (or a stage's training output) to the Hugging Face Hub, with its model card.

    python trainer_scripts/push_to_hub.py --folder runs/srt --repo_id me/llm-srt-3b [--private] [--revision main] \
        [--commit_message "..."] [--results eval/results.json] [--dry_run]

The folder must load as an LLM-SRT model (config with `model_type: llm_srt`, weights, processor, remote code).
Trainer checkpoints, optimizer states and logs are left out. When the folder has no README.md, the card is rendered
from `model_cards/template.md` (a `results.json` from `evaluate.py` fills the results table). A folder that has a
README.md keeps it: `--results` is then refused unless `--overwrite_card` (re-render the card with the results,
replacing README.md). `--dry_run` prints what would be uploaded and the card, and writes nothing, neither to the Hub
nor to the folder. Errors are one line `push_to_hub: error: ...` (exit 2 for bad usage, 1 for a failed upload).
"""

from __future__ import annotations

import fnmatch
import json
import os
import string
import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser


ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from llm_srt.safe_io import UsageError, atomic_write, run_reporting_errors  # noqa: E402


PROG = "push_to_hub"
TEMPLATE = os.path.join(ROOT, "model_cards", "template.md")
IGNORE_PATTERNS = ["checkpoint-*", "checkpoint-*/**", "runs/**", "optimizer.pt", "scheduler.pt", "rng_state*.pth",
                   "training_args.bin", "*.partial", ".git/**", "__pycache__/**"]
REQUIRED_FILES = ("config.json", "modeling_llm_srt.py", "configuration_llm_srt.py", "processing_llm_srt.py",
                  "processor_config.json")

# The paper's results (Tables 3-6, 18) by released size, for the model-index and the card's table.
PAPER_RESULTS = {
    "3b": {"base_llm": "Qwen/Qwen2.5-3B", "rows": [
        ("FLEURS, 15 languages, 210 directions", "google/fleurs", "bleu", 20.6, "avg BLEU X->14 (paper, no LoRA)"),
        ("FLEURS, 15 languages, 210 directions", "google/fleurs", "bleu", 21.4, "avg BLEU X->14 (paper, with LoRA)"),
        ("CoVoST-2 En->X", "facebook/covost2", "bleu", 34.3, "avg BLEU En->X (paper, FLEURS-trained)"),
    ]},
    "7b": {"base_llm": "Qwen/Qwen2.5-7B", "rows": [
        ("FLEURS, 12 languages", "google/fleurs", "bleu", 21.4, "avg BLEU X->11 (paper)"),
        ("CoVoST-2 En->X", "facebook/covost2", "bleu", 36.0, "avg BLEU En->X (paper, FLEURS-trained)"),
    ]},
    "32b": {"base_llm": "Qwen/Qwen2.5-32B", "rows": [
        ("FLEURS, 12 languages", "google/fleurs", "bleu", 24.6, "avg BLEU X->11 (paper)"),
        ("CoVoST-2 En->X", "facebook/covost2", "bleu", 38.9, "avg BLEU En->X (paper, FLEURS-trained)"),
    ]},
}


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


def size_of(base_llm: str) -> str | None:
    for size in PAPER_RESULTS:
        if base_llm.lower().endswith(f"-{size}"):
            return size
    return None


def measured_rows(results: dict | None) -> list[tuple[str, str, str, float, str]]:
    """(dataset name, dataset type, metric type, value, metric name) of an `evaluate.py` results.json: BLEU and WER
    averages, and beside them chrF++, the off-target and loop rates and the decoding speed when it holds them."""
    if not results:
        return []
    dataset = f"{results.get('test_file', 'test set')} ({results['task']})"
    avg, overall = results.get("averages", {}), (results.get("quality") or {}).get("overall", {})
    speed = results.get("speed") or {}
    candidates = [
        ("bleu", avg.get("bleu"), 2, "avg BLEU over directions (measured)"),
        ("wer", avg.get("wer"), 4, "avg WER/CER (measured)"),
        ("chrf", overall.get("chrf"), 2, "avg chrF++ over directions (measured)"),
        ("off_target_rate", overall.get("off_target_rate"), 4, "off-target rate, py3langid (measured)"),
        ("loop_rate", overall.get("loop_rate"), 4, "loop rate (measured)"),
        ("rtfx", speed.get("rtfx"), 2, f"RTFx, {speed.get('device')} {speed.get('engine')} (measured)"),
    ]
    return [(dataset, "custom", metric, round(float(value), digits), name)
            for metric, value, digits, name in candidates if isinstance(value, (int, float))]


def model_index_yaml(name: str, rows: list[tuple[str, str, str, float, str]]) -> str:
    """The card's `model-index` metadata, by huggingface_hub's `ModelCardData`/`EvalResult` (empty without rows)."""
    from huggingface_hub import EvalResult, ModelCardData

    if not rows:
        return ""
    results = [EvalResult(task_type="automatic-speech-recognition", task_name="Speech Translation",
                          dataset_type=dataset_type, dataset_name=dataset_name, metric_type=metric,
                          metric_value=value, metric_name=metric_name)
               for dataset_name, dataset_type, metric, value, metric_name in rows]
    return ModelCardData(model_name=name, eval_results=results).to_yaml() + "\n"


def render_card(name: str, repo_id: str, base_llm: str, encoder: str, lora: bool = False,
                results: dict | None = None) -> str:
    """The model card (YAML metadata + text) for a model built on `base_llm`."""
    size = size_of(base_llm)
    paper_rows = PAPER_RESULTS[size]["rows"] if size else []
    rows = measured_rows(results) + paper_rows
    # No results yet: no model-index at all (a placeholder score would read as a real one on the Hub).
    model_index = model_index_yaml(name, rows)
    table = ["| evaluation | metric | value |", "|---|---|---|"]
    table += [f"| {d} | {n} | {v} |" for d, _, _, v, n in rows] or ["| not evaluated yet | | |"]
    template = string.Template(open(TEMPLATE, encoding="utf-8").read())
    return template.substitute(
        name=name, title=name, repo_id=repo_id, base_llm=base_llm, encoder=encoder,
        model_index=model_index, results_table="\n".join(table),
        lora_note=" with LoRA (r=8, alpha=32, dropout 0.05 on q_proj, v_proj)" if lora else "",
        lora_training=", plus LoRA in the SRT stage" if lora else "",
    )


def model_card_for(folder: str, base_llm: str | None = None, encoder: str | None = None, lora: bool | None = None,
                   repo_id: str | None = None, results: dict | None = None, name: str | None = None) -> str:
    """The card of a model folder; unspecified facts are read from the folder's config."""
    config = read_json(os.path.join(folder, "config.json"))
    base_llm = base_llm or config.get("text_model_name_or_path") or "Qwen/Qwen2.5-3B"
    encoder = encoder or config.get("audio_model_name_or_path") or "openai/whisper-large-v3"
    lora = bool(config.get("lora_config")) if lora is None else lora
    name = (repo_id or name or os.path.basename(os.path.abspath(folder))).split("/")[-1]
    return render_card(name, repo_id or f"<user>/{name}", base_llm, encoder, lora, results)


def write_model_card(folder: str, base_llm: str | None = None, encoder: str | None = None, lora: bool | None = None,
                     repo_id: str | None = None, results: dict | None = None, name: str | None = None) -> str:
    """Write `<folder>/README.md` (atomically) from the template; `name` defaults to the folder's."""
    card = model_card_for(folder, base_llm, encoder, lora, repo_id, results, name)
    path = os.path.join(folder, "README.md")
    with atomic_write(path) as handle:
        handle.write(card)
    return path


def read_json(path: str) -> dict:
    """A JSON object from `path`; the error names the file (and the line of a syntax error)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}, not an object.")
    return data


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


if __name__ == "__main__":
    sys.exit(main())
