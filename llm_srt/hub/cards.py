"""Model cards of LLM-SRT folders: rendered from `card_template.md` with the paper's results for the released size and
the measured ones of an evaluation's `results.json` (the Hub's `model-index` metadata too)."""

from __future__ import annotations

import json
import os
import string

from ..cli.safe_io import atomic_write


TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "card_template.md")

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


def release_cards() -> dict[str, str]:
    """{file name: card} for the released 3B, 7B and 32B models (LoRA for 3B, the paper's V2), as
    `model_cards/render_cards.py` writes them."""
    return {
        f"llm-srt-{size}.md": render_card(f"llm-srt-{size}", f"llm-srt/llm-srt-{size}", facts["base_llm"],
                                          "openai/whisper-large-v3", lora=size == "3b")
        for size, facts in PAPER_RESULTS.items()
    }


__all__ = ["PAPER_RESULTS", "model_card_for", "release_cards", "render_card", "write_model_card"]
