#!/usr/bin/env python
"""The paper's real sizes on a CPU: every stage beside the machine's roofs, per dtype/quantization.

    python benchmarks/real_scale.py --preset 3b                                 # bf16, int8, int4; minutes
    python benchmarks/real_scale.py --preset 7b --quantizations bf16,int8 --stages load,decode
    python benchmarks/real_scale.py --preset 32b --quantizations int4 --stages load,decode

Models are the preset's shapes with random weights (`llm_srt.testing.real_size`), written shard by shard into
`--folders` (kept for the next run; delete them to free the disk: 3B 7.6 GB in bf16, 7B 17 GB, 32B int4 20 GB).
int8/int4 folders hold random codes in the stored quantized layout, and load as any quantized folder.

Each (preset, quantization) runs in its own process, so load time and peak RSS are its own. The process first
measures the roofs on the same threads (read bandwidth: a 1 GiB sum; bf16 GEMM FLOP/s: 4096^3 and the encoder's
feed-forward shape 1500x1280x5120), then:
- load: `from_pretrained` (memory-mapped; int8/int4 packed for this CPU), seconds, RSS after, peak RSS at the end;
- encoder: one 30 s window through Whisper's encoder, beside its compute roof (its FLOPs / GEMM FLOP/s), and the
  Q-Former projector;
- prefill: the 80 audio embeddings + the SRT prompt through the LLM, beside max(compute, memory) roofs;
- decode: ms per token at batch 1 (greedy; `generate` with a fixed token count, the prefill's share subtracted),
  beside the memory roof (the LLM's bytes read per token / read bandwidth);
- e2e: the pipeline translating 5/10/30 s clips (SRT eng->deu, greedy, `--tokens_per_second` answer tokens per
  second of audio: 200 per 30 s), as audio seconds per wall second (>= 1: faster than real time).
`--quality` adds the first-step logits of int8/int4 against bf16 (cosine) on the real widths with few layers.
The machine, the date and the load average (start and end) are in the output; wait for an idle machine with
`--wait_idle 600`. Results: JSON (`--output`) and Markdown tables (`--readme` to append them to a file).
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from transformers import HfArgumentParser


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ("load", "encoder", "prefill", "decode", "e2e")


@dataclass
class RealScaleArguments:
    preset: str = field(default="3b", metadata={"help": "3b, 7b or 32b."})
    quantizations: str = field(default="bf16,int8,int4", metadata={"help": "Comma-separated: bf16, int8, int4."})
    stages: str = field(default=",".join(STAGES), metadata={"help": f"Comma-separated, of {', '.join(STAGES)}."})
    folders: str = field(default="outputs/real_scale", metadata={"help": "Where the model folders are made (kept)."})
    clips: str = field(default="5,10,30", metadata={"help": "End-to-end clip lengths in seconds."})
    tokens_per_second: float = field(default=200 / 30, metadata={"help": "SRT answer tokens per second of audio."})
    decode_tokens: int = field(default=32, metadata={"help": "Tokens generated to time decoding."})
    repeats: int = field(default=3, metadata={"help": "Timed runs per stage (median), after one warm-up."})
    llm_layers: int | None = field(default=None, metadata={"help": "Fewer LLM layers (quick runs, CI)."})
    encoder_layers: int | None = field(default=None, metadata={"help": "Fewer encoder layers (quick runs, CI)."})
    quality: bool = field(default=False, metadata={"help": "First-step logits of int8/int4 vs bf16 (cosine)."})
    quality_layers: int = field(default=2, metadata={"help": "LLM layers of the --quality model (real widths)."})
    wait_idle: float = field(default=0.0, metadata={"help": "Seconds to wait for both cores to be idle first."})
    output: str = field(default="outputs/benchmarks/real_scale.json", metadata={"help": "JSON results file."})
    readme: str = field(default="", metadata={"help": "Append the Markdown tables to this file."})
    child: str = field(default="", metadata={"help": "(internal) measure one quantization in this process."})


# ---------------------------------------------------------------------------------------------------- measuring
def rss_gb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 2**20


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def median_seconds(fn, repeats: int, warmup: bool = True) -> float:
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def roofs() -> dict:
    """Read bandwidth (the faster of a float32 and a bf16 sum over 1 GiB) and bf16 GEMM FLOP/s, on this process's
    threads."""
    size = 1 << 30
    read = []
    for dtype in (torch.float32, torch.bfloat16):
        data = torch.ones(size // torch.finfo(dtype).bits * 8, dtype=dtype)
        read.append(size / median_seconds(data.sum, 5) / 1e9)
        del data
    gemm = {}
    for m, k, n in ((4096, 4096, 4096), (1500, 1280, 5120)):
        x, w = torch.randn(m, k, dtype=torch.bfloat16), torch.randn(n, k, dtype=torch.bfloat16)
        gemm[f"{m}x{k}x{n}"] = 2 * m * k * n / median_seconds(lambda: torch.nn.functional.linear(x, w), 5) / 1e9
    gc.collect()
    return {"read_GBps": max(read), "gemm_bf16_GFLOPps": gemm["4096x4096x4096"],
            "gemm_bf16_encoder_GFLOPps": gemm["1500x1280x5120"], "threads": torch.get_num_threads(),
            "load_average": os.getloadavg()[0]}


def flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def prefill_flops(model, tokens: int) -> float:
    """The LLM's FLOPs over a `tokens`-long prompt, the output layer on the last token only: counted from the shapes
    (torch's FLOP counter does not know the int8/int4 kernels)."""
    llm = model.language_model
    layers = [m for m in llm.modules() if hasattr(m, "in_features") and hasattr(m, "out_features")]
    output = llm.lm_head.in_features * llm.lm_head.out_features
    weights = sum(m.in_features * m.out_features for m in layers) - output
    text = model.config.text_config
    attention = 4 * tokens * tokens * text.hidden_size * text.num_hidden_layers
    return 2.0 * (tokens * weights + output) + attention


def machine() -> dict:
    capabilities = getattr(torch.cpu, "get_capabilities", lambda: {})()
    name = capabilities.get("cpu_name") or platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            name = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    flags = [flag for flag in ("avx2", "avx512_f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
             if capabilities.get(flag)]
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import transformers

    return {"cpu": name, "cores": os.cpu_count(), "flags": flags, "memory_GiB": round(memory, 1),
            "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()}


def wait_for_idle(seconds: float) -> float:
    """Wait until both cores are more than 85% idle over 3 s (at most `seconds`); returns the idle fraction seen."""
    def idle_fraction(interval=3.0):
        def read():
            values = list(map(int, open("/proc/stat").readline().split()[1:]))
            return values[3] + values[4], sum(values)
        idle0, total0 = read()
        time.sleep(interval)
        idle1, total1 = read()
        return (idle1 - idle0) / max(1, total1 - total0)
    deadline, fraction = time.time() + seconds, 0.0
    while time.time() < deadline:
        fraction = idle_fraction()
        if fraction > 0.85:
            break
    return fraction


# --------------------------------------------------------------------------------------------- one quantization
def model_folder(args: RealScaleArguments, quantization: str) -> str:
    layers = f"-{args.llm_layers}l" if args.llm_layers else ""
    layers += f"-{args.encoder_layers}e" if args.encoder_layers else ""
    return os.path.join(args.folders, f"{args.preset}{layers}-{quantization}")


def ensure_folder(args: RealScaleArguments, quantization: str) -> str:
    from llm_srt.testing.real_size import write_real_size_model

    folder = model_folder(args, quantization)
    if not os.path.isfile(os.path.join(folder, "model.safetensors.index.json")):
        print(f"writing {folder} ...", flush=True)
        write_real_size_model(folder + ".partial", args.preset, quantization=None if quantization == "bf16" else
                              quantization, llm_layers=args.llm_layers, encoder_layers=args.encoder_layers)
        os.replace(folder + ".partial", folder)
    return folder


def measure(args: RealScaleArguments, quantization: str) -> dict:
    """Every stage of one quantization, in this process (a fresh one: load time and peak RSS are its own)."""
    from transformers import DynamicCache, pipeline

    from llm_srt import LlmSrtForConditionalGeneration, LlmSrtProcessor
    from llm_srt.testing import synthetic_speech
    from llm_srt.testing.real_size import llm_bytes_per_token, weight_bytes

    stages = set(args.stages.split(","))
    folder = model_folder(args, quantization)
    row = {"quantization": quantization, "folder": folder, "weights_GB": weight_bytes(folder) / 1e9,
           "roofs": roofs(), "rss_start_GB": rss_gb()}
    roof = row["roofs"]
    start = time.perf_counter()
    model = LlmSrtForConditionalGeneration.from_pretrained(folder, dtype=torch.bfloat16).eval()
    row["load_s"], row["rss_after_load_GB"] = time.perf_counter() - start, rss_gb()
    processor = LlmSrtProcessor.from_pretrained(folder)
    row["llm_bytes_per_token_GB"] = llm_bytes_per_token(model) / 1e9
    row["decode_roof_ms"] = row["llm_bytes_per_token_GB"] / roof["read_GBps"] * 1e3
    rate = processor.feature_extractor.sampling_rate
    window = synthetic_speech(30.0, rate)
    with torch.inference_mode():
        features = processor.extract_features([window], rate).to(torch.bfloat16)
        frames = model.audio_tower(features).last_hidden_state
        audio_embeds = model.projector(frames)
        if "encoder" in stages:
            row["encoder_s"] = median_seconds(lambda: model.audio_tower(features), args.repeats)
            row["encoder_flops"] = flops(lambda: model.audio_tower(features))
            row["encoder_roof_s"] = row["encoder_flops"] / roof["gemm_bf16_encoder_GFLOPps"] / 1e9
            row["projector_s"] = median_seconds(lambda: model.projector(frames), args.repeats)
        text = processor.prepare_text("srt", ["eng"], ["deu"], [None], [None])
        ids, mask = torch.tensor(text["input_ids"]), torch.tensor(text["attention_mask"])
        row["prompt_tokens"] = ids.shape[1]

        def prefill():
            return model(input_ids=ids, attention_mask=mask, audio_embeds=audio_embeds,
                         cache=DynamicCache(config=model.config.text_config), use_cache=True, logits_to_keep=1)

        if "prefill" in stages:
            row["prefill_s"] = median_seconds(prefill, args.repeats)
            row["prefill_flops"] = prefill_flops(model, row["prompt_tokens"])
            row["prefill_roof_s"] = max(row["prefill_flops"] / roof["gemm_bf16_GFLOPps"] / 1e9,
                                        row["decode_roof_ms"] / 1e3)

        def generate(tokens: int):
            return model.generate(input_ids=ids, attention_mask=mask, audio_embeds=audio_embeds, num_beams=1,
                                  do_sample=False, max_new_tokens=tokens, min_new_tokens=tokens,
                                  no_repeat_ngram_size=0)

        if "decode" in stages:
            generate(4)  # warm-up
            whole = median_seconds(lambda: generate(args.decode_tokens), args.repeats, warmup=False)
            first = median_seconds(lambda: generate(1), args.repeats, warmup=False)
            row["decode_ms_per_token"] = (whole - first) / (args.decode_tokens - 1) * 1e3
            row["decode_x_roof"] = row["decode_ms_per_token"] / row["decode_roof_ms"]
    if "e2e" in stages:
        pipe = pipeline("speech-translation", model=model, processor=processor)
        row["e2e"] = []
        for seconds in [float(s) for s in args.clips.split(",") if s]:
            clip = synthetic_speech(seconds, rate, seed=1)
            tokens = max(1, round(seconds * args.tokens_per_second))
            settings = {"num_beams": 1, "max_new_tokens": tokens, "min_new_tokens": tokens, "no_repeat_ngram_size": 0}
            wall = median_seconds(lambda: pipe({"raw": clip, "sampling_rate": rate}, src_lang="eng", tgt_lang="deu",
                                               generate_kwargs=settings), max(1, args.repeats - 2), warmup=False)
            row["e2e"].append({"audio_s": seconds, "tokens": tokens, "wall_s": wall, "x_real_time": seconds / wall})
    row["peak_rss_GB"], row["rss_end_GB"] = peak_rss_gb(), rss_gb()
    row["load_average_end"] = os.getloadavg()[0]
    return row


def quality(args: RealScaleArguments) -> dict:
    """First-step logits (the 80 audio embeddings + an SRT prompt) of int8/int4 against bf16, same random weights,
    the preset's real widths with `--quality_layers` LLM layers."""
    import copy

    from llm_srt.quantization_llm_srt import LlmSrtQuantizationConfig, quantize_
    from llm_srt.testing import build_tiny_processor
    from llm_srt.testing.real_size import build_real_size_model

    model = build_real_size_model(args.preset, llm_layers=args.quality_layers, encoder_layers=1, projector_layers=1)
    processor = build_tiny_processor(model.config)
    text = processor.prepare_text("srt", ["eng"], ["deu"], [None], [None])
    ids = torch.tensor(text["input_ids"])
    audio = torch.randn(1, model.config.num_queries, model.config.text_config.hidden_size, dtype=torch.bfloat16)
    with torch.inference_mode():
        reference = model(input_ids=ids, audio_embeds=audio, logits_to_keep=1).logits.float().flatten()
    result = {"llm_layers": args.quality_layers}
    for weights in ("int8", "int4"):
        quantized = quantize_(copy.deepcopy(model), LlmSrtQuantizationConfig(weights))
        with torch.inference_mode():
            got = quantized(input_ids=ids, audio_embeds=audio, logits_to_keep=1).logits.float().flatten()
        result[weights] = {"cosine": torch.nn.functional.cosine_similarity(got, reference, 0).item(),
                           "same_top1": bool(got.argmax() == reference.argmax())}
        del quantized
        gc.collect()
    return result


# ------------------------------------------------------------------------------------------------------ report
def tables(data: dict) -> str:
    m, head = data["machine"], data["preset"]
    lines = [f"### `{head}` shapes on {m['cpu']} ({m['cores']} cores, {', '.join(m['flags'])}), {data['date']}",
             "", f"torch {m['torch']}, transformers {m['transformers']}, {data['rows'][0]['roofs']['threads']} threads; "
             f"load average {data['load_average_start']:.2f} at the start, {data['load_average_end']:.2f} at the end.",
             "", "| weights | folder GB | load s | peak RSS GB | encoder s / window (roof) | Q-Former s | prefill s "
             "(roof) | decode ms / token (roof, x roof) | read GB/s, GEMM GFLOP/s | load average |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def value(row, key, fmt):
        return fmt.format(row[key]) if key in row else "-"

    for r in data["rows"]:
        roof = r["roofs"]
        encoder = f"{r['encoder_s']:.2f} ({r['encoder_roof_s']:.2f})" if "encoder_s" in r else "-"
        prefill = f"{r['prefill_s']:.2f} ({r['prefill_roof_s']:.2f})" if "prefill_s" in r else "-"
        decode = (f"{r['decode_ms_per_token']:.0f} ({r['decode_roof_ms']:.0f}, x{r['decode_x_roof']:.2f})"
                  if "decode_ms_per_token" in r else "-")
        lines.append(f"| {r['quantization']} | {r['weights_GB']:.1f} | {r['load_s']:.1f} | {r['peak_rss_GB']:.1f} | "
                     f"{encoder} | {value(r, 'projector_s', '{:.2f}')} | {prefill} | {decode} | "
                     f"{roof['read_GBps']:.1f}, {roof['gemm_bf16_encoder_GFLOPps']:.0f} | "
                     f"{roof['load_average']:.1f} -> {r['load_average_end']:.1f} |")
    if any("e2e" in r for r in data["rows"]):
        clips = sorted({e["audio_s"] for r in data["rows"] for e in r.get("e2e", [])})
        lines += ["", "End to end (pipeline, SRT eng->deu, greedy, " + f"{data['args']['tokens_per_second']:.2f} "
                  "answer tokens per second of audio): wall seconds (audio seconds per wall second)", "",
                  "| weights | " + " | ".join(f"{c:g} s clip" for c in clips) + " |",
                  "|---|" + "---|" * len(clips)]
        for r in data["rows"]:
            if "e2e" in r:
                by_clip = {e["audio_s"]: e for e in r["e2e"]}
                lines.append(f"| {r['quantization']} | " + " | ".join(
                    f"{by_clip[c]['wall_s']:.1f} s ({by_clip[c]['x_real_time']:.3f}x)" if c in by_clip else "-"
                    for c in clips) + " |")
    if data.get("quality"):
        q = data["quality"]
        lines += ["", f"First-step logits against bf16 (same random weights, real widths, {q['llm_layers']} LLM "
                  "layers): " + ", ".join(f"{w} cosine {q[w]['cosine']:.4f} (same top-1: {q[w]['same_top1']})"
                                           for w in ("int8", "int4"))]
    return "\n".join(lines) + "\n"


def main() -> None:
    (args,) = HfArgumentParser(RealScaleArguments).parse_args_into_dataclasses()
    if args.child:
        print("RESULT " + json.dumps(measure(args, args.child)), flush=True)
        return
    unknown = set(args.stages.split(",")) - set(STAGES)
    if unknown:
        raise SystemExit(f"--stages: unknown {sorted(unknown)}; of {', '.join(STAGES)}")
    quantizations = [q for q in args.quantizations.split(",") if q]
    for q in quantizations:
        if q not in ("bf16", "int8", "int4"):
            raise SystemExit(f"--quantizations: {q!r} is not bf16, int8 or int4")
        ensure_folder(args, q)
    idle = wait_for_idle(args.wait_idle) if args.wait_idle else None
    data = {"preset": args.preset, "date": datetime.datetime.now().isoformat(timespec="minutes"),
            "machine": machine(), "idle_fraction_at_start": idle, "load_average_start": os.getloadavg()[0],
            "args": asdict(args), "rows": []}
    for q in quantizations:
        command = [sys.executable, os.path.abspath(__file__), "--child", q,
                   *[f"--{k}={v}" for k, v in asdict(args).items() if v not in (None, "") and k != "child"]]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
        results = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode or not results:
            raise SystemExit(f"measuring {q} failed:\n{done.stderr[-3000:]}")
        data["rows"].append(json.loads(results[-1][len("RESULT "):]))
        print(json.dumps(data["rows"][-1]), flush=True)
    if args.quality:
        data["quality"] = quality(args)
    data["load_average_end"] = os.getloadavg()[0]
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1)
    text = tables(data)
    print(text)
    if args.readme:
        with open(args.readme, "a", encoding="utf-8") as handle:
            handle.write("\n" + text)


if __name__ == "__main__":
    main()
