"""Evaluate LLM-SRT as the paper does: BLEU/WER per direction, the paper's averages, a table and a heatmap.

    python trainer_scripts/evaluate_model.py --model runs/demo/srt --test_file data/fleurs_test.jsonl --task srt \
        --output_dir eval/fleurs [--directions eng-deu,deu-eng | --src_langs eng --tgt_langs deu,fra] \
        [--compare reference/paper_fleurs_bleu_3b.json --compare_system llm_srt_3b_v2]
    torchrun --nproc_per_node 4 trainer_scripts/evaluate_model.py ...   # each process decodes its shard, rank 0 merges

Outputs in `--output_dir`: `hypotheses.<task>.rank<N>.jsonl` (written as it goes: a killed run started again
resumes where it stopped), `hypotheses.<task>.jsonl` (merged, in test-set order), `results.json` (per direction:
BLEU with its sacreBLEU signature, WER/CER, counts; averages over all directions, per source and per target),
`results.md` and `bleu_heatmap.png` (source x target).

`--shared_transcript true` (SRT): the rows of one clip (same audio and source language, other targets, as in FLEURS'
many-to-many sets) are decoded together, the audio encoded and the transcript decoded once, then all the clip's
translations in one batch (`llm_srt.generation_llm_srt.generate_many_targets`); results per row as usual. Off by
default: paper-comparable numbers decode every row on its own.

Every test row is checked before decoding (kinds, languages, audio headers against the model's window, duplicate
keys); errors name the file, the line and the field. A cache's first line is the fingerprint of what produced it
(the model's files, the task, the generation settings, the dtype, `--shared_transcript`): a cache of another model
or other settings is refused, or with `--overwrite true` discarded for a fresh one, never reused. Existing results
are replaced only with `--overwrite true`; reports are written atomically. User errors end as one line
`evaluate.py: error: ...`, exit 2 for bad usage, 1 for failed work.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta

import torch
from transformers import HfArgumentParser

from ..audio_llm_srt import resolve_path
from ..languages_llm_srt import normalize_language
from .cache import cache_files, cache_fingerprint, check_output_dir, read_cache, row_input
from .decoding import decode_batch, group_clips, make_batches
from .report import compare, heatmap, load_comparison, markdown, non_speech_markdown
from ..engines import ENGINES, QUANTIZATIONS
from ..engines.loading import open_engine
from .metrics import score_directions
from .quality import COMET_SKIPPED, comet_directions, non_speech_check, quality_directions, speed
from ..processing_llm_srt import normalize_task
from ..speech_llm_srt import VadOptions
from ..cli.safe_io import OutputExistsError, UsageError, atomic_write, drop_cut_last_line, exit_with_error
from ..training.data import DataError, RowChecker, audio_seconds, default_base_dir, load_rows, row_labels


PROG = "evaluate_model.py"
DTYPES = ("bfloat16", "float16", "float32")


REQUIRED = {"asr": ("src_lang", "transcript"), "smt": ("src_lang", "tgt_lang", "transcript", "translation"),
            "srt": ("src_lang", "tgt_lang", "translation")}


@dataclass
class EvaluateArguments:
    model: str = field(metadata={"help": "Model folder or Hub id."})
    output_dir: str = field(metadata={"help": "Where hypotheses, results.json, results.md and the heatmap go."})
    test_file: str | None = field(
        default=None, metadata={"help": "Test rows: a .jsonl manifest (prepare_data.py) or a datasets folder."})
    task: str = field(default="srt", metadata={"help": "asr, smt or srt."})
    directions: str | None = field(default=None, metadata={"help": "Comma-separated src-tgt pairs, e.g. eng-deu,deu-eng."})
    src_langs: str | None = field(default=None, metadata={"help": "Keep only these source languages."})
    tgt_langs: str | None = field(default=None, metadata={"help": "Keep only these target languages."})
    batch_size: int = field(default=16)
    num_beams: int | None = field(default=None, metadata={"help": "Default: the model's generation config (5)."})
    max_new_tokens: int | None = field(default=None)
    dtype: str | None = field(default=None, metadata={
        "help": "bfloat16, float16 or float32 (default on the CPU: bfloat16 where it computes bf16 natively, else "
                "float32; on a GPU as saved)."})
    quantization: str | None = field(default=None, metadata={
        "help": "int8 or int4: the LLM's weights on the CPU's int kernels (--engine transformers on the CPU)."})
    device: str | None = field(default=None, metadata={"help": "Default: cuda:<local rank> when available, else cpu."})
    audio_base_dir: str | None = field(default=None, metadata={"help": "Folder relative audio paths are under."})
    max_rows: int | None = field(default=None)
    english_normalizer: bool = field(default=False, metadata={"help": "Whisper's English normalizer for English WER."})
    shared_transcript: bool = field(
        default=False,
        metadata={"help": "SRT: decode each clip's transcript once for all its targets (rows with the same audio and "
                          "source), then only the translations, in one batch (`generate_many_targets`). Faster; "
                          "off by default so numbers stay comparable with the paper's independent decoding."},
    )
    vad_filter: bool = field(
        default=True,
        metadata={"help": "Hear only speech (Silero VAD, as the pipeline): a clip the detector hears no speech in is "
                          "not decoded (an empty hypothesis). false decodes every clip."},
    )
    compare: str | None = field(default=None, metadata={"help": "Another results.json, or the paper's table."})
    compare_system: str = field(default="llm_srt_3b_v2", metadata={"help": "System column of a paper table."})
    non_speech: bool = field(
        default=False,
        metadata={"help": "Instead of a test set: generated silence, noise and music-like clips through the model "
                          "(--task asr or srt, the first of --src_langs (eng) and --tgt_langs (deu)); reports in "
                          "non_speech.json/.md how often it writes text where nothing was spoken, with the "
                          "pipeline's silence skipping on and off."},
    )
    comet_model: str | None = field(
        default=None,
        metadata={"help": "A local COMET checkpoint (needs `pip install unbabel-comet`): COMET per direction beside "
                          "BLEU for smt/srt. Optional; without it results.md says COMET was skipped."},
    )
    engine: str = field(
        default="transformers",
        metadata={"help": "What decodes: transformers (default) or vllm (vLLM's offline engine, greedy or sampled; "
                          "needs vLLM, see docs/vllm.md)."},
    )
    tensor_parallel_size: int = field(
        default=1, metadata={"help": "With --engine vllm: devices (or CPU processes) the LLM is split over."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run the model folder's own Python code where it differs from the installed "
                                         "llm-srt (or the folder is another architecture); off by default."})
    overwrite: bool = field(
        default=False,
        metadata={"help": "Replace existing results in --output_dir, and discard caches of another model or other "
                          "settings (a fresh cache). Without it both are refused."},
    )

    def __post_init__(self):
        try:
            self.task = normalize_task(self.task)
        except ValueError:
            raise ValueError(f"--task must be asr, smt or srt, got {self.task!r}") from None
        for name in ("batch_size", "num_beams", "max_new_tokens", "max_rows"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be >= 1, got {value}")
        if self.engine not in ENGINES:
            raise ValueError(f"--engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.tensor_parallel_size < 1:
            raise ValueError(f"--tensor_parallel_size must be >= 1, got {self.tensor_parallel_size}")
        if self.engine == "vllm":
            if self.num_beams not in (None, 1):
                raise ValueError(f"--num_beams {self.num_beams}: the vLLM engine decodes greedily; beam search needs "
                                 "--engine transformers.")
            if self.device is not None:
                raise ValueError("--device applies to --engine transformers; vLLM places the model itself "
                                 "(--tensor_parallel_size to split it).")
            if self.non_speech:
                raise ValueError("--non_speech runs on --engine transformers.")
        elif self.tensor_parallel_size != 1:
            raise ValueError("--tensor_parallel_size applies to --engine vllm.")
        if self.shared_transcript and self.task != "srt":
            raise ValueError(f"--shared_transcript applies to --task srt only, not {self.task}.")
        if self.test_file is None and not self.non_speech:
            raise ValueError("--test_file is required (or --non_speech true).")
        if self.non_speech and self.task == "smt":
            raise ValueError("--non_speech checks audio: --task asr or srt, not smt.")
        if self.comet_model is not None:
            import importlib.util

            if self.task == "asr":
                raise ValueError("--comet_model scores translations: --task smt or srt, not asr.")
            if not os.path.isfile(self.comet_model):
                raise ValueError(f"--comet_model {self.comet_model}: no such file (a local COMET checkpoint, e.g. "
                                 ".../checkpoints/model.ckpt; nothing is downloaded).")
            if importlib.util.find_spec("comet") is None:
                raise ValueError("--comet_model needs Unbabel's COMET: pip install unbabel-comet")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.quantization is not None:
            if self.quantization not in QUANTIZATIONS:
                raise ValueError(f"--quantization must be one of {', '.join(QUANTIZATIONS)}, got {self.quantization!r}")
            if self.engine != "transformers":
                raise ValueError("--quantization runs on --engine transformers (vLLM serves folders saved in the "
                                 "formats it runs).")


# ------------------------------------------------------------------------------------------------------ selection
def _codes(text: str | None, what: str) -> set[str] | None:
    if not text:
        return None
    try:
        return {normalize_language(code) for code in text.split(",") if code.strip()}
    except ValueError as error:
        raise UsageError(f"--{what}: {error}") from None


def audio_window(model: str) -> float | None:
    """The model's audio window in seconds (its feature extractor's `chunk_length`), read without the weights."""
    from transformers import WhisperFeatureExtractor

    try:
        return WhisperFeatureExtractor.from_pretrained(model).chunk_length
    except (OSError, ValueError) as error:
        raise OSError(f"--model {model}: cannot read its feature extractor ({' '.join(str(error).split())})") from None


def select_rows(args: EvaluateArguments, max_seconds: float | None = None) -> list[dict]:
    """The test rows of the requested task and directions, each checked (see `RowChecker`; duplicate keys are
    refused naming both rows); each with a stable `key`."""
    task = normalize_task(args.task)
    data = load_rows(args.test_file)
    if "audio" in data.column_names and "input_features" not in data.column_names:
        import datasets

        if isinstance(data.features.get("audio"), datasets.Audio):
            data = data.cast_column("audio", datasets.Audio(decode=False))  # decoded when batched, not here
    rows = [dict(r) for r in data]
    if not rows:
        raise DataError(f"The test set {args.test_file} is empty.")
    labels = row_labels(args.test_file, len(rows))
    keys = RowChecker(args.test_file, check_audio=False)
    for row, label in zip(rows, labels):  # every row's kinds, languages and key, selected or not
        keys(row, label)
    audio_check = RowChecker(args.test_file, base_dir=default_base_dir(args.test_file, args.audio_base_dir),
                             max_seconds=max_seconds, check_audio="input_features" not in data.column_names)
    wanted_pairs = None
    if args.directions:
        wanted_pairs = set()
        for pair in args.directions.split(","):
            src, sep, tgt = pair.strip().replace("_", "-").partition("-")
            if not sep:
                raise UsageError(f"--directions: {pair!r} is not of the form src-tgt (e.g. eng-deu).")
            try:
                wanted_pairs.add((normalize_language(src), normalize_language(tgt)))
            except ValueError as error:
                raise UsageError(f"--directions {pair!r}: {error}") from None
    src_keep, tgt_keep = _codes(args.src_langs, "src_langs"), _codes(args.tgt_langs, "tgt_langs")
    has_translations = any(r.get("tgt_lang") for r in rows)
    selected, seen_asr, used = [], set(), set(keys.keys)
    for index, (row, label) in enumerate(zip(rows, labels)):
        where = keys.where(row, label)
        for name in REQUIRED[task]:
            if row.get(name) in (None, ""):
                if name in ("tgt_lang", "translation") and task != "asr" and not has_translations:
                    raise DataError(f"{where}: no {name}; this test set has no translations (use --task asr).")
                if name in ("tgt_lang", "translation") and row.get("tgt_lang") in (None, ""):
                    if row.get("translation") not in (None, ""):  # a translation of no language: not skipped silently
                        raise DataError(f"{where}, field 'tgt_lang': missing, but the row has a translation; give "
                                        "its language (or drop the translation: an ASR-only row).")
                    break  # an ASR-only row in a mixed set: not part of a translation evaluation
                raise DataError(f"{where}, field {name!r}: missing reference, needed for --task {task}.")
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
            if "audio" not in row and "input_features" not in row:
                raise DataError(f"{where}, field 'audio': missing.")
            audio_check(row, label, needed=("tgt_lang",) if task != "asr" else ())  # counts src == tgt rows
            key = row.get("key")
            if key in (None, ""):  # a row without a key gets its position, unless another row's key took it
                key = str(index)
                if key in used:
                    raise DataError(f"{where}, field 'key': missing, and {key!r} (its position) is another row's "
                                    "key; give every row a key.")
                used.add(key)
            row.update(src_lang=src, tgt_lang=tgt, key=str(key))
            selected.append(row)
    audio_check.report()
    if args.max_rows:
        selected = selected[: args.max_rows]
    if not selected:
        raise UsageError("No test row matches the requested task and directions.")
    return selected


# -------------------------------------------------------------------------------------------------- distribution
def distributed() -> tuple[int, int]:
    """(rank, world size); initializes torch.distributed under torchrun / accelerate launch."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend=backend, timeout=timedelta(hours=6))
    return int(os.environ.get("RANK", "0")), world


def shard(rows: list[dict], rank: int, world: int, shared_transcript: bool, base_dir: str | None) -> list[dict]:
    """This process's rows, in order: every `world`-th row, or with `shared_transcript` every `world`-th clip's rows
    (a clip's targets are decoded together, so they stay on one process)."""
    if world == 1:
        return list(rows)
    if not shared_transcript:
        return [r for i, r in enumerate(rows) if i % world == rank]
    mine = sorted(i for c, group in enumerate(group_clips(rows, base_dir)) if c % world == rank for i in group)
    return [rows[i] for i in mine]


def open_evaluation_engine(args: EvaluateArguments):
    """(engine, device) for `--engine` (`engines.loading.open_engine`): the transformers engine on `--device`
    (default: this process's GPU under torchrun, else the first GPU, else cpu), or vLLM's."""
    if args.engine == "vllm":
        return open_engine(args.model, "vllm", dtype=args.dtype, tensor_parallel_size=args.tensor_parallel_size,
                           kv_cache_sequences=args.batch_size), "vllm"
    device = args.device or (f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    return open_engine(args.model, device=device, dtype=args.dtype, trust_remote_code=args.trust_remote_code,
                       quantization=args.quantization, log=lambda line: print(f"{PROG}: {line}", file=sys.stderr)), device


def decode_shard(args: EvaluateArguments, rows: list[dict], rank: int, world: int, fingerprint: dict) -> None:
    """Decode this process's rows that no cache holds yet, appending each batch to this rank's cache file (its first
    line is `fingerprint`)."""
    task = normalize_task(args.task)
    base_dir = default_base_dir(args.test_file, args.audio_base_dir)
    cache_path = os.path.join(args.output_dir, f"hypotheses.{task}.rank{rank}.jsonl")
    done = {}
    for path in cache_files(args.output_dir, task):  # any rank's earlier work counts (the world size may change)
        done.update(read_cache(path)[1])
    todo = [r for r in shard(rows, rank, world, args.shared_transcript, base_dir)
            if done.get(r["key"], {}).get("input") != row_input(r, base_dir, task)]
    if not todo:
        return
    engine, device = open_evaluation_engine(args)
    generate = {k: v for k, v in (("num_beams", args.num_beams), ("max_new_tokens", args.max_new_tokens)) if v}
    try:
        _decode_into_cache(args, todo, task, base_dir, cache_path, fingerprint, engine, device, generate, rank)
    finally:
        if hasattr(engine, "shutdown"):
            engine.shutdown()


def _decode_into_cache(args, todo, task, base_dir, cache_path, fingerprint, engine, device, generate, rank) -> None:
    """Decode `todo` batch by batch, appending each batch's results to this rank's cache."""
    from tqdm.auto import tqdm

    fresh = read_cache(cache_path)[0] != fingerprint  # none yet, or a header cut short: start the file again
    if not fresh:
        drop_cut_last_line(cache_path)  # a line a kill cut (its row is in `todo`): appending would glue onto it
    with open(cache_path, "w" if fresh else "a", encoding="utf-8") as cache, torch.inference_mode():
        if fresh:
            cache.write(json.dumps({"fingerprint": fingerprint}, ensure_ascii=False) + "\n")
            cache.flush()
        bar = tqdm(total=len(todo), desc=f"decoding {task} (rank {rank})", unit="utt", disable=rank != 0)
        for indices in make_batches(todo, args.batch_size, args.shared_transcript, base_dir):
            batch = [todo[i] for i in indices]
            started = time.perf_counter()
            results = decode_batch(engine, batch, task, base_dir=base_dir, generate_kwargs=generate,
                                   shared_transcript=args.shared_transcript, vad=VadOptions() if args.vad_filter else None)
            if device.startswith("cuda"):
                torch.cuda.synchronize(device)
            share = (time.perf_counter() - started) / len(batch)  # the batch's decoding time, shared by its rows
            for row, result in zip(batch, results):
                result["input"] = row_input(row, base_dir, task)
                result.update(decode_seconds=share, audio_seconds=row_audio_seconds(row, base_dir), device=device,
                              engine=args.engine)
                cache.write(json.dumps(result, ensure_ascii=False) + "\n")
            cache.flush()
            bar.update(len(batch))
        bar.close()


def row_audio_seconds(row: dict, base_dir: str | None) -> float | None:
    """A row's audio duration (from the file's header, the array or the bytes); None for precomputed features."""
    audio = row.get("audio")
    if row.get("input_features") is not None or audio is None:
        return None
    if isinstance(audio, dict) and audio.get("array") is not None:
        return len(audio["array"]) / float(audio.get("sampling_rate") or 16000)
    if isinstance(audio, dict) and audio.get("bytes") is not None:
        import io

        from ..audio_llm_srt import audio_file_info

        info = audio_file_info(io.BytesIO(bytes(audio["bytes"])))
        return info.frames / info.samplerate
    path = audio.get("path") if isinstance(audio, dict) else audio
    return audio_seconds(resolve_path(path, base_dir))


def speed_of(items: list[dict]) -> dict | None:
    """Decoding speed over the rows' cached timings (summed over ranks and resumed runs); None without timings."""
    timed = [item for item in items if item.get("decode_seconds")]
    if not timed:
        return None
    seconds = [item.get("audio_seconds") for item in timed]
    return speed(None if None in seconds else sum(seconds), sum(item["decode_seconds"] for item in timed),
                 len(timed), ",".join(sorted({str(i.get("device")) for i in timed})),
                 ",".join(sorted({str(i.get("engine")) for i in timed})))


# ------------------------------------------------------------------------------------------------------- reports
def check_usage(args: EvaluateArguments) -> None:
    """Paths that name nothing are bad usage, found before any work (`UsageError`, `FileNotFoundError`)."""
    if args.test_file is not None and not os.path.exists(args.test_file):
        raise FileNotFoundError(f"Data not found: {args.test_file}")
    if not os.path.isdir(args.model) and (os.path.exists(args.model) or args.model.count("/") != 1
                                          or args.model.startswith((".", "~"))):
        raise UsageError(f"--model: no model folder at {args.model}")
    if args.compare and not os.path.isfile(args.compare):
        raise UsageError(f"--compare: no file at {args.compare}")
    if args.audio_base_dir and not os.path.isdir(args.audio_base_dir):
        raise UsageError(f"--audio_base_dir: no folder at {args.audio_base_dir}")


def evaluate(args: EvaluateArguments) -> dict | None:
    """Check, decode (resuming from the caches) and, on rank 0, merge and report. Returns the results on rank 0."""
    task = normalize_task(args.task)
    check_usage(args)
    if args.non_speech:
        return evaluate_non_speech(args)
    fingerprint = cache_fingerprint(args)
    stale = check_output_dir(args, fingerprint)
    comparison = load_comparison(args.compare, args.compare_system) if args.compare else None
    rows = select_rows(args, max_seconds=audio_window(args.model))
    rank, world = distributed()
    if world > 1 and args.engine == "vllm":
        raise UsageError(f"--engine vllm runs in one process ({world} were started): vLLM splits the model itself "
                         "with --tensor_parallel_size.")
    if rank == 0:
        os.makedirs(args.output_dir, exist_ok=True)
        for path in stale:
            print(f"{PROG}: starting a fresh cache: removed {path} (another model or other settings).", file=sys.stderr)
            os.remove(path)
    if world > 1:
        torch.distributed.barrier()
    decode_shard(args, rows, rank, world, fingerprint)
    if world > 1:
        torch.distributed.barrier()
    if rank != 0:
        return None
    base_dir = default_base_dir(args.test_file, args.audio_base_dir)
    wanted = {r["key"]: row_input(r, base_dir, task) for r in rows}
    merged = {}
    for path in cache_files(args.output_dir, task):
        for key, item in read_cache(path)[1].items():
            if key in wanted and item.get("input") == wanted[key]:  # the same input, under this fingerprint
                merged[key] = item
    missing = [key for key in wanted if key not in merged]
    if missing:
        raise RuntimeError(f"{len(missing)} rows were not decoded (first: {missing[0]}); run again to resume.")
    ordered = [refresh_references({k: v for k, v in merged[r["key"]].items() if k != "input"}, r, task) for r in rows]
    with atomic_write(os.path.join(args.output_dir, f"hypotheses.{task}.jsonl")) as handle:
        handle.writelines(json.dumps(item, ensure_ascii=False) + "\n" for item in ordered)
    scores = score_directions(ordered, task)
    results = {"task": task, "model": args.model, "test_file": args.test_file, "rows": len(ordered),
               "fingerprint": fingerprint, **scores, "quality": quality_directions(ordered, task),
               "speed": speed_of(ordered)}
    if task != "asr":
        if args.comet_model:
            results["comet"] = comet_directions(ordered, args.comet_model)
        else:
            results["comet"] = {"skipped": COMET_SKIPPED}
    report = markdown(results)
    if task != "asr":
        report += "\n" + (f"COMET ({os.path.basename(args.comet_model)}): {results['comet']['overall']:.4f} overall; "
                          + ", ".join(f"{k} {v:.4f}" for k, v in results["comet"]["directions"].items())
                          if args.comet_model else COMET_SKIPPED) + "\n"
    with atomic_write(os.path.join(args.output_dir, "results.md")) as handle:
        handle.write(report)
    heatmap(results, os.path.join(args.output_dir, "bleu_heatmap.png"))
    with atomic_write(os.path.join(args.output_dir, "results.json")) as handle:  # last: marks the run finished
        json.dump(results, handle, indent=2, ensure_ascii=False)
    print(report)
    if comparison is not None:
        print(compare(results, comparison, os.path.basename(args.compare)))
    return results


def evaluate_non_speech(args: EvaluateArguments) -> dict:
    """`--non_speech`: the generated clips through the model; `non_speech.json` and `non_speech.md`."""
    path = os.path.join(args.output_dir, "non_speech.json")
    if os.path.exists(path) and not args.overwrite:
        raise UsageError(f"{path} exists already; pass --overwrite true to replace it.")
    src = sorted(_codes(args.src_langs, "src_langs") or {"eng"})[0]
    tgt = sorted(_codes(args.tgt_langs, "tgt_langs") or {"deu"})[0]
    engine, _ = open_evaluation_engine(args)
    generate = {k: v for k, v in (("num_beams", args.num_beams), ("max_new_tokens", args.max_new_tokens)) if v}
    try:
        results = {"model": args.model, **non_speech_check(engine, args.task, src, tgt, generate_kwargs=generate)}
    finally:
        if hasattr(engine, "shutdown"):
            engine.shutdown()
    report = non_speech_markdown(results)
    os.makedirs(args.output_dir, exist_ok=True)
    with atomic_write(os.path.join(args.output_dir, "non_speech.md")) as handle:
        handle.write(report)
    with atomic_write(path) as handle:
        json.dump(results, handle, indent=2, ensure_ascii=False)
    print(report)
    return results


def refresh_references(item: dict, row: dict, task: str) -> dict:
    """A cached hypothesis with the test set's current references (they are not inputs: fixing one needs no decode)."""
    if task == "asr":
        item["reference"] = row["transcript"]
    else:
        item["reference"] = row["translation"]
    if task == "srt":
        item["transcript_reference"] = row.get("transcript")
    return item


def main(argv: list[str] | None = None) -> dict | None:
    """Parse and evaluate. User errors end as one line `evaluate.py: error: ...`: exit 2 for bad usage (flags, paths
    that name nothing, outputs that would be replaced), 1 for failed work (bad rows, a model that does not load)."""
    parser = HfArgumentParser(EvaluateArguments)
    parser.prog = PROG
    try:
        (args,) = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as error:  # __post_init__ checks
        parser.error(str(error))
    try:
        return evaluate(args)
    except (UsageError, OutputExistsError, FileNotFoundError) as error:
        _fail(error, 2)
    except (ValueError, OSError, RuntimeError) as error:  # DataError, AudioInputError, unreadable model files
        _fail(error, 1)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _fail(error: BaseException, status: int):
    exit_with_error(PROG, error, status)

