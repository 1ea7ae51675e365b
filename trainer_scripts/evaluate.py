#!/usr/bin/env python
"""Evaluate LLM-SRT as the paper does: BLEU/WER per direction, the paper's averages, a table and a heatmap.

    python trainer_scripts/evaluate.py --model runs/demo/srt --test_file data/fleurs_test.jsonl --task srt \
        --output_dir eval/fleurs [--directions eng-deu,deu-eng | --src_langs eng --tgt_langs deu,fra] \
        [--compare reference/paper_fleurs_bleu_3b.json --compare_system llm_srt_3b_v2]
    torchrun --nproc_per_node 4 trainer_scripts/evaluate.py ...   # each process decodes its shard, rank 0 merges

Outputs in `--output_dir`: `hypotheses.<task>.rank<N>.jsonl` (written as it goes: a killed run started again
resumes where it stopped), `hypotheses.<task>.jsonl` (merged, in test-set order), `results.json` (per direction:
BLEU with its sacreBLEU signature, WER/CER, counts; averages over all directions, per source and per target),
`results.md` and `bleu_heatmap.png` (source x target).
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field
from datetime import timedelta

import torch
from transformers import HfArgumentParser


_HERE = os.path.dirname(os.path.abspath(__file__))
# This file is named like the `evaluate` library: keep its folder off the path so `import evaluate` finds the library.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

from llm_srt.configuration_llm_srt import normalize_language  # noqa: E402
from llm_srt.evaluation import decode_batch  # noqa: E402
from llm_srt.metrics import score_directions  # noqa: E402
from llm_srt.processing_llm_srt import normalize_task  # noqa: E402
from llm_srt.training import default_base_dir, load_rows  # noqa: E402


REQUIRED = {"asr": ("src_lang", "transcript"), "smt": ("src_lang", "tgt_lang", "transcript", "translation"),
            "srt": ("src_lang", "tgt_lang", "translation")}


@dataclass
class EvaluateArguments:
    model: str = field(metadata={"help": "Model folder or Hub id."})
    test_file: str = field(metadata={"help": "Test rows: a .jsonl manifest (prepare_data.py) or a datasets folder."})
    output_dir: str = field(metadata={"help": "Where hypotheses, results.json, results.md and the heatmap go."})
    task: str = field(default="srt", metadata={"help": "asr, smt or srt."})
    directions: str | None = field(default=None, metadata={"help": "Comma-separated src-tgt pairs, e.g. eng-deu,deu-eng."})
    src_langs: str | None = field(default=None, metadata={"help": "Keep only these source languages."})
    tgt_langs: str | None = field(default=None, metadata={"help": "Keep only these target languages."})
    batch_size: int = field(default=16)
    num_beams: int | None = field(default=None, metadata={"help": "Default: the model's generation config (5)."})
    max_new_tokens: int | None = field(default=None)
    dtype: str | None = field(default=None, metadata={"help": "bfloat16, float16 or float32 (default: as saved)."})
    device: str | None = field(default=None, metadata={"help": "Default: cuda:<local rank> when available, else cpu."})
    audio_base_dir: str | None = field(default=None, metadata={"help": "Folder relative audio paths are under."})
    max_rows: int | None = field(default=None)
    english_normalizer: bool = field(default=False, metadata={"help": "Whisper's English normalizer for English WER."})
    compare: str | None = field(default=None, metadata={"help": "Another results.json, or the paper's table."})
    compare_system: str = field(default="llm_srt_3b_v2", metadata={"help": "System column of a paper table."})


# ------------------------------------------------------------------------------------------------------ selection
def _codes(text: str | None, what: str) -> set[str] | None:
    if not text:
        return None
    try:
        return {normalize_language(code) for code in text.split(",") if code.strip()}
    except ValueError as error:
        raise ValueError(f"--{what}: {error}") from None


def select_rows(args: EvaluateArguments) -> list[dict]:
    """The test rows of the requested task and directions, checked; each with a stable `key`."""
    task = normalize_task(args.task)
    data = load_rows(args.test_file)
    rows = [dict(r) for r in data]
    if not rows:
        raise ValueError(f"The test set {args.test_file} is empty.")
    wanted_pairs = None
    if args.directions:
        wanted_pairs = set()
        for pair in args.directions.split(","):
            src, sep, tgt = pair.strip().replace("_", "-").partition("-")
            if not sep:
                raise ValueError(f"--directions: {pair!r} is not of the form src-tgt (e.g. eng-deu).")
            try:
                wanted_pairs.add((normalize_language(src), normalize_language(tgt)))
            except ValueError as error:
                raise ValueError(f"--directions {pair!r}: {error}") from None
    src_keep, tgt_keep = _codes(args.src_langs, "src_langs"), _codes(args.tgt_langs, "tgt_langs")
    has_translations = any(r.get("tgt_lang") for r in rows)
    selected, seen_asr = [], set()
    for index, row in enumerate(rows):
        where = f"{args.test_file} row {index}" + (f" (key {row['key']})" if row.get("key") else "")
        for name in REQUIRED[task]:
            if row.get(name) in (None, ""):
                if name in ("tgt_lang", "translation") and task != "asr" and not has_translations:
                    raise ValueError(f"{where}: no {name}; this test set has no translations (use --task asr).")
                if name in ("tgt_lang", "translation") and row.get("tgt_lang") in (None, ""):
                    break  # an ASR-only row in a mixed set: not part of a translation evaluation
                raise ValueError(f"{where}: missing reference field {name!r} needed for --task {task}.")
        else:
            src = normalize_language(row["src_lang"])
            tgt = normalize_language(row["tgt_lang"]) if task != "asr" else None
            if (src_keep and src not in src_keep) or (tgt_keep and tgt not in tgt_keep):
                continue
            if wanted_pairs is not None and task != "asr" and (src, tgt) not in wanted_pairs:
                continue
            if task == "asr":  # rows in SRT form repeat each clip per target: transcribe it once
                clip = (str(row.get("audio")), src)
                if clip in seen_asr:
                    continue
                seen_asr.add(clip)
            row.update(src_lang=src, tgt_lang=tgt, key=str(row.get("key") or index))
            if "audio" not in row and "input_features" not in row:
                raise ValueError(f"{where}: no audio.")
            selected.append(row)
    if args.max_rows:
        selected = selected[: args.max_rows]
    if not selected:
        raise ValueError("No test row matches the requested task and directions.")
    return selected


# -------------------------------------------------------------------------------------------------- distribution
def distributed() -> tuple[int, int]:
    """(rank, world size); initializes torch.distributed under torchrun / accelerate launch."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend=backend, timeout=timedelta(hours=6))
    return int(os.environ.get("RANK", "0")), world


def read_cache(path: str) -> dict[str, dict]:
    done = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                line = line.strip()
                if line:
                    try:
                        item = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut by a kill: that row is decoded again
                    done[item["key"]] = item
    return done


def decode_shard(args: EvaluateArguments, rows: list[dict], rank: int, world: int) -> None:
    """Decode this process's rows that no cache holds yet, appending each batch to this rank's cache file."""
    from tqdm.auto import tqdm

    from llm_srt import LlmSrtForConditionalGeneration, LlmSrtProcessor

    task = normalize_task(args.task)
    cache_path = os.path.join(args.output_dir, f"hypotheses.{task}.rank{rank}.jsonl")
    done = set()
    for name in os.listdir(args.output_dir):  # any rank's earlier work counts (the world size may have changed)
        if name.startswith(f"hypotheses.{task}.rank"):
            done |= set(read_cache(os.path.join(args.output_dir, name)))
    todo = [r for i, r in enumerate(rows) if i % world == rank and r["key"] not in done]
    if not todo:
        return
    device = args.device or (f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype) if args.dtype else None
    model = LlmSrtForConditionalGeneration.from_pretrained(args.model, dtype=dtype).to(device).eval()
    processor = LlmSrtProcessor.from_pretrained(args.model)
    generate = {k: v for k, v in (("num_beams", args.num_beams), ("max_new_tokens", args.max_new_tokens)) if v}
    base_dir = default_base_dir(args.test_file, args.audio_base_dir)
    with open(cache_path, "a", encoding="utf-8") as cache, torch.inference_mode():
        bar = tqdm(total=len(todo), desc=f"decoding {task} (rank {rank})", unit="utt", disable=rank != 0)
        for start in range(0, len(todo), args.batch_size):
            batch = todo[start:start + args.batch_size]
            for result in decode_batch(model, processor, batch, task, base_dir=base_dir, generate_kwargs=generate):
                cache.write(json.dumps(result, ensure_ascii=False) + "\n")
            cache.flush()
            bar.update(len(batch))
        bar.close()


# ------------------------------------------------------------------------------------------------------- reports
def markdown(results: dict) -> str:
    lines = [f"# {results['task'].upper()} results: {results['model']}", "",
             "| direction | count | BLEU | WER/CER |", "|---|---|---|---|"]
    for key, d in results["directions"].items():
        bleu = f"{d['bleu']['score']:.1f}" if "bleu" in d else "-"
        wer = f"{d['wer']['score']:.3f} ({d['wer']['metric']})" if "wer" in d else "-"
        lines.append(f"| {key} | {d['count']} | {bleu} | {wer} |")
    avg = results["averages"]
    lines += ["", "| average | value |", "|---|---|"]
    if "bleu" in avg:
        lines.append(f"| BLEU, all directions | {avg['bleu']:.2f} |")
        lines += [f"| BLEU, {src} -> X | {v:.2f} |" for src, v in avg["bleu_by_source"].items()]
        lines += [f"| BLEU, X -> {tgt} | {v:.2f} |" for tgt, v in avg["bleu_by_target"].items()]
    if "wer" in avg:
        lines.append(f"| WER/CER, mean over sources | {avg['wer']:.3f} |")
    signatures = sorted({d["bleu"]["signature"] for d in results["directions"].values() if "bleu" in d})
    if signatures:
        lines += ["", "sacreBLEU signatures: " + "; ".join(f"`{s}`" for s in signatures)]
    return "\n".join(lines) + "\n"


def bleu_by_pair(results: dict) -> dict[tuple[str, str], float]:
    """BLEU per (source, target) of a results dict."""
    return {(d["src_lang"], d["tgt_lang"]): d["bleu"]["score"] for d in results["directions"].values() if "bleu" in d}


def heatmap(results: dict, path: str) -> str | None:
    """Source x target BLEU matrix as a PNG, language codes on both axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    bleu = bleu_by_pair(results)
    if not bleu:
        return None
    sources = sorted({s for s, _ in bleu})
    targets = sorted({t for _, t in bleu})
    matrix = np.full((len(sources), len(targets)), np.nan)
    for (s, t), score in bleu.items():
        matrix[sources.index(s), targets.index(t)] = score
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(targets), 1.0 + 0.5 * len(sources)))
    image = ax.imshow(matrix, cmap="viridis", vmin=0)
    ax.set_xticks(range(len(targets)), targets)
    ax.set_yticks(range(len(sources)), sources)
    ax.set_xlabel("target language")
    ax.set_ylabel("source language")
    for i in range(len(sources)):
        for j in range(len(targets)):
            if not math.isnan(matrix[i, j]):
                ax.text(j, i, f"{matrix[i, j]:.1f}", ha="center", va="center", color="w", fontsize=7)
    ax.set_title(f"{results['task'].upper()} BLEU")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def load_comparison(path: str, system: str) -> dict[tuple[str, str], float]:
    """BLEU per (src, tgt) from one of our results.json or from the paper's table (`{"bleu": {"deu_eng": {...}}}`)."""
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if "directions" in data:
        return bleu_by_pair(data)
    table = data.get("bleu")
    if not isinstance(table, dict):
        raise ValueError(f"{path}: neither a results.json nor a paper table with a 'bleu' mapping.")
    out = {}
    for pair, systems in table.items():
        src, _, tgt = pair.replace("-", "_").partition("_")
        if system not in systems:
            raise ValueError(f"{path}: no system {system!r} for {pair}; it has {sorted(systems)}.")
        out[(normalize_language(src), normalize_language(tgt))] = systems[system]
    return out


def compare(results: dict, other: dict[tuple[str, str], float], label: str) -> str:
    ours = bleu_by_pair(results)
    common = sorted(set(ours) & set(other))
    lines = [f"| direction | ours | {label} | difference |", "|---|---|---|---|"]
    lines += [f"| {s}-{t} | {ours[(s, t)]:.1f} | {other[(s, t)]:.1f} | {ours[(s, t)] - other[(s, t)]:+.1f} |"
              for s, t in common]
    if common:
        mean = sum(ours[p] - other[p] for p in common) / len(common)
        lines.append(f"| mean over {len(common)} directions | | | {mean:+.2f} |")
    else:
        lines.append("| (no direction in common) | | | |")
    return "\n".join(lines)


def evaluate(args: EvaluateArguments) -> dict | None:
    """Decode (resuming from the caches) and, on rank 0, merge and report. Returns the results on rank 0."""
    task = normalize_task(args.task)
    rows = select_rows(args)
    os.makedirs(args.output_dir, exist_ok=True)
    rank, world = distributed()
    decode_shard(args, rows, rank, world)
    if world > 1:
        torch.distributed.barrier()
    if rank != 0:
        return None
    merged = {}
    for name in sorted(os.listdir(args.output_dir)):
        if name.startswith(f"hypotheses.{task}.rank"):
            merged.update(read_cache(os.path.join(args.output_dir, name)))
    missing = [r["key"] for r in rows if r["key"] not in merged]
    if missing:
        raise RuntimeError(f"{len(missing)} rows were not decoded (first: {missing[0]}); run again to resume.")
    ordered = [merged[r["key"]] for r in rows]
    with open(os.path.join(args.output_dir, f"hypotheses.{task}.jsonl"), "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(item, ensure_ascii=False) + "\n" for item in ordered)
    scores = score_directions(ordered, task)
    results = {"task": task, "model": args.model, "test_file": args.test_file, "rows": len(ordered), **scores}
    with open(os.path.join(args.output_dir, "results.json"), "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2, ensure_ascii=False)
    report = markdown(results)
    with open(os.path.join(args.output_dir, "results.md"), "w", encoding="utf-8") as handle:
        handle.write(report)
    heatmap(results, os.path.join(args.output_dir, "bleu_heatmap.png"))
    print(report)
    if args.compare:
        print(compare(results, load_comparison(args.compare, args.compare_system), os.path.basename(args.compare)))
    return results


def main(argv: list[str] | None = None) -> dict | None:
    (args,) = HfArgumentParser(EvaluateArguments).parse_args_into_dataclasses(args=argv)
    try:
        return evaluate(args)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
