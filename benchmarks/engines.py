#!/usr/bin/env python
"""Utterances/s of the two decoding engines side by side: the transformers engine and vLLM's, batch 1 to 64.

    python benchmarks/engines.py                        # tiny random model (serve_load.py's tiny shapes), CPU
    python benchmarks/engines.py --model path/to/folder --batch_sizes 1,8,64 --dtype bfloat16

Both engines decode the same rows (SRT eng->deu of synthetic speech, greedy, a fixed number of new tokens: the
random model never ends early, so every answer has the same length) through the decoding seam
(`DecodingEngine.decode_rows`). The transformers engine runs in this process; vLLM's in its own environment
(`--vllm_python`, default $LLM_SRT_VLLM_PYTHON), this script again with `--side vllm`. Each batch size is timed after
a warm-up batch; the table gives utt/s per engine and the ratio, and whether the answers were equal.
"""

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

from transformers import HfArgumentParser


ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, ROOT)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_load import TINY_SHAPES  # noqa: E402 - one tiny shape set for both engines' benchmarks


@dataclass
class EngineArguments:
    model: str | None = field(default=None, metadata={"help": "Model folder; default: a tiny random model."})
    batch_sizes: str = field(default="1,4,16,64", metadata={"help": "Comma-separated batch sizes."})
    new_tokens: int = field(default=16, metadata={"help": "Tokens generated per utterance."})
    seconds: float = field(default=8.0, metadata={"help": "Length of each synthetic utterance."})
    dtype: str = field(default="float32", metadata={"help": "float32 or bfloat16 (both engines)."})
    vllm_python: str | None = field(default=None, metadata={"help": "vLLM's Python (default $LLM_SRT_VLLM_PYTHON)."})
    side: str = field(default="both", metadata={"help": "both (the report), or one engine: transformers, vllm."})
    side_output: str | None = field(default=None, metadata={"help": "With --side: where that side writes JSON."})
    output: str = field(default=os.path.join("outputs", "benchmarks", "engines.json"), metadata={
        "help": "JSON results ('' for none; recorded: --output benchmarks/results/engines_cpu_tiny.json)."})


def build_engine(side: str, model: str, dtype: str):
    if side == "vllm":
        from llm_srt.vllm_engine import VllmEngine

        return VllmEngine(model, dtype=dtype, enforce_eager=True)
    import torch

    from llm_srt import LlmSrtForConditionalGeneration, LlmSrtProcessor
    from llm_srt.generation_llm_srt import TransformersEngine

    loaded = LlmSrtForConditionalGeneration.from_pretrained(model, dtype=getattr(torch, dtype)).eval()
    return TransformersEngine(loaded, LlmSrtProcessor.from_pretrained(model))


def measure(side: str, args: EngineArguments, model: str) -> dict:
    """utt/s of one engine at every batch size (and its answers, to compare)."""
    from llm_srt.generation_llm_srt import DecodeRow
    from llm_srt.testing import synthetic_speech

    engine = build_engine(side, model, args.dtype)
    settings = {"max_new_tokens": args.new_tokens, "num_beams": 1, "min_new_tokens": args.new_tokens}
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    clips = [synthetic_speech(args.seconds, seed=i, pause_every=1.3) for i in range(max(sizes))]
    rows = []
    try:
        handles, _ = engine.encode(clips[:1])
        engine.decode_rows(handles, [DecodeRow(0, "srt", "eng", "deu")], settings)  # warm-up
        for size in sizes:
            start = time.perf_counter()
            handles, _ = engine.encode(clips[:size])
            answers = engine.decode_rows(handles, [DecodeRow(i, "srt", "eng", "deu") for i in range(size)], settings)
            seconds = time.perf_counter() - start
            rows.append({"batch": size, "seconds": round(seconds, 3), "utt_per_s": round(size / seconds, 3),
                         "answers": [a["token_ids"] for a in answers]})
    finally:
        if hasattr(engine, "shutdown"):
            engine.shutdown()
    return {"engine": side, "rows": rows}


def main() -> None:
    (args,) = HfArgumentParser(EngineArguments).parse_args_into_dataclasses()
    if args.side != "both":
        result = measure(args.side, args, args.model)
        with open(args.side_output, "w", encoding="utf-8") as handle:
            json.dump(result, handle)
        return
    python = args.vllm_python or os.environ.get("LLM_SRT_VLLM_PYTHON")
    if not python:
        raise SystemExit("engines.py: error: vLLM's environment is needed: --vllm_python or $LLM_SRT_VLLM_PYTHON.")
    with tempfile.TemporaryDirectory() as scratch:
        if args.model is None:
            from llm_srt.testing import save_tiny_model

            args.model = save_tiny_model(os.path.join(scratch, "tiny"), seed=0, **TINY_SHAPES)
        ours = measure("transformers", args, args.model)
        side_file = os.path.join(scratch, "vllm.json")
        command = [python, os.path.abspath(__file__), "--side", "vllm", "--side_output", side_file, "--model",
                   args.model, "--batch_sizes", args.batch_sizes, "--new_tokens", str(args.new_tokens), "--seconds",
                   str(args.seconds), "--dtype", args.dtype]
        env = {**os.environ, "PYTHONPATH": ROOT, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")}
        subprocess.run(command, env=env, check=True)
        with open(side_file, encoding="utf-8") as handle:
            theirs = json.load(handle)
    print(f"engines on {platform.machine()}, {os.cpu_count()} CPU cores; {args.dtype}; {args.seconds:g} s clips, "
          f"SRT eng->deu, greedy, {args.new_tokens} new tokens each")
    print("| batch | transformers utt/s | vLLM utt/s | vLLM / transformers | same answers |")
    print("|---|---|---|---|---|")
    table = []
    for a, b in zip(ours["rows"], theirs["rows"]):
        ratio = b["utt_per_s"] / a["utt_per_s"]
        same = a["answers"] == b["answers"]
        table.append({"batch": a["batch"], "transformers_utt_per_s": a["utt_per_s"], "vllm_utt_per_s": b["utt_per_s"],
                      "ratio": round(ratio, 2), "same_answers": same})
        print(f"| {a['batch']} | {a['utt_per_s']:.2f} | {b['utt_per_s']:.2f} | {ratio:.2f}x | {'yes' if same else 'NO'} |")
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as handle:
            json.dump({"settings": {k: v for k, v in asdict(args).items() if k not in ("output", "side_output")},
                       "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores", "rows": table}, handle, indent=2)
            handle.write("\n")
        print(f"results: {args.output}")


if __name__ == "__main__":
    main()
