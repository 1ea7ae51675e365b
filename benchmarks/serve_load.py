#!/usr/bin/env python
"""Load test of `llm-srt serve`: requests/s and latency for 1, 4 and 16 concurrent clients, per decoding engine.

    python benchmarks/serve_load.py                       # a tiny random model (speed.py's tiny shapes), CPU
    python benchmarks/serve_load.py --engines transformers,vllm --concurrency 1,4,16,64   # both engines, side by side
    python benchmarks/serve_load.py --preset small --engines transformers,vllm   # Whisper-base-like, Qwen2.5-0.5B-like
    python benchmarks/serve_load.py --model runs/demo/srt --manifest runs/demo/data/test.jsonl   # the demo model
    python benchmarks/serve_load.py --model path/to/model --device cuda --requests 64

Starts `llm-srt serve` in its own process on 127.0.0.1 (a free port; the clients' threads stay out of its
interpreter, for either engine), then sends the same set of requests (transcriptions
and translations of synthetic speech, through OpenAI's Python client) with 1 client at a time - the requests sent
one after another, the baseline - and with N concurrent clients. For each level it prints requests/s, p50/p95
latency, the speed-up over one at a time and how many `generate` calls served the requests (batching). Every answer
is checked against the one-at-a-time answer of the same request. Results go to a JSON file.

`--engines transformers,vllm` measures both engines on the same model and requests, one after the other, and
prints them side by side with the vLLM/transformers ratio of requests/s per level. The vLLM server runs in vLLM's
environment (`--vllm_python`, default $LLM_SRT_VLLM_PYTHON; README "Serving with vLLM") as `llm-srt serve --engine
vllm`, the transformers server in this Python; every server is measured over HTTP the same way (batch counts from
its /health).
"""

import io
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
import soundfile
import torch
from transformers import HfArgumentParser


ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from llm_srt.testing import ServerProcess, save_tiny_model, synthetic_speech, vllm_cpu_env


# speed.py's tiny preset (but 2 heads: head size 32 everywhere, as vLLM's CPU attention needs): the real 30 s window
# and 80 audio queries, toy widths
TINY_SHAPES = {"num_queries": 80, "window_seconds": 30, "encoder_width": 64, "qformer_width": 64, "llm_width": 128,
               "num_heads": 2, "llm_layers": 4, "ffn_multiplier": 4}  # head size 32: vLLM's CPU kernels
TARGETS = ["deu", "fra", "jpn", "spa"]
RANDOM_MODELS = {
    "tiny": "tiny random model (speed.py's tiny shapes with 2 heads: 30 s window, 80 queries)",
    "small": "small random model (speed.py's small preset, 6 LLM layers: Whisper-base-like encoder, Qwen2.5-0.5B-like "
             "LLM; 30 s window, 80 queries)",
}


@dataclass
class LoadArguments:
    model: str | None = field(default=None, metadata={"help": "Model folder; default: a random model of --preset."})
    preset: str = field(default="tiny", metadata={"choices": list(RANDOM_MODELS),
        "help": "Random model without --model: tiny (TINY_SHAPES: toy widths, the real 30 s window and 80 queries) "
                "or small (speed.py's Whisper-base-like encoder and Qwen2.5-0.5B-like LLM, 6 layers)."})
    concurrency: str = field(default="1,4,16", metadata={"help": "Concurrent clients per level (1 = baseline)."})
    requests: int = field(default=32, metadata={"help": "Requests per level (the same set at every level)."})
    seconds: float = field(default=4.0, metadata={"help": "Length of each request's synthetic audio."})
    manifest: str | None = field(default=None, metadata={
        "help": "JSON lines with audio (relative to the file), src_lang, tgt_lang (e.g. the demo's test.jsonl): "
                "requests from its rows instead of synthetic speech."})
    max_new_tokens: int = field(default=16, metadata={"help": "Tokens generated per window."})
    max_batch_size: int = field(default=16, metadata={"help": "The server's --max-batch-size."})
    max_wait_ms: float = field(default=10.0, metadata={"help": "The server's --max-wait-ms."})
    max_queue: int = field(default=4096, metadata={
        "help": "The server's --max-queue (windows waiting): high, so that a load level measures speed, not refusals."})
    engines: str = field(default="transformers", metadata={
        "help": "Comma-separated decoding engines to measure side by side: transformers, vllm."})
    vllm_python: str | None = field(default=None, metadata={
        "help": "Python of vLLM's environment (default: $LLM_SRT_VLLM_PYTHON)."})
    device: str | None = field(default=None, metadata={"help": "cpu (default) or cuda."})
    dtype: str | None = field(default=None, metadata={"help": "float32 (default), bfloat16 or float16."})
    encoder_ceiling: bool = field(default=True, metadata={
        "help": "Also time the model's encoder + Q-Former alone (in this process, before any server starts) and "
                "report the requests/s no engine can pass on this machine: every window's padded-window encoder "
                "pass is work any engine must do."})
    output: str = field(default=os.path.join("outputs", "benchmarks", "serve_load.json"), metadata={
        "help": "JSON results file ('' for none; default under the untracked outputs/; the recorded results: "
                "--output benchmarks/results/serve_load.json)."})


def make_requests(count: int, seconds: float, manifest: str | None = None) -> list[dict]:
    """Half transcriptions, half translations, each of its own audio (synthetic speech or a manifest's rows)."""
    rows = []
    if manifest:
        with open(manifest, encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
        if not rows:
            raise ValueError(f"{manifest} has no rows.")
    requests = []
    for i in range(count):
        if rows:
            row = rows[i % len(rows)]
            with open(os.path.join(os.path.dirname(os.path.abspath(manifest)), row["audio"]), "rb") as handle:
                wav, src, tgt = handle.read(), row["src_lang"], row["tgt_lang"]
        else:
            buffer = io.BytesIO()
            soundfile.write(buffer, synthetic_speech(seconds, seed=i, pause_every=0.9), 16000, format="WAV",
                            subtype="PCM_16")
            wav, src, tgt = buffer.getvalue(), "eng", TARGETS[(i // 2) % len(TARGETS)]
        request = {"endpoint": "translations" if i % 2 else "transcriptions", "wav": wav, "extra": {"language": src}}
        if i % 2:
            request["extra"]["target_language"] = tgt
        requests.append(request)
    return requests


def encoder_seconds_per_window(model: str, batch_sizes: list[int], device: str | None = None,
                               dtype: str | None = None) -> dict:
    """Seconds per window of the encoder + Q-Former alone (`get_audio_features` on padded windows), at each batch
    size and the least of them: the audio work every engine does for every window, whatever schedules it."""
    import time

    from llm_srt.modeling_llm_srt import LlmSrtForConditionalGeneration

    device, torch_dtype = device or "cpu", getattr(torch, dtype) if dtype else torch.float32
    encoder_model = LlmSrtForConditionalGeneration.from_pretrained(model, dtype=torch_dtype).to(device).eval()
    audio = encoder_model.config.audio_config
    per_batch = {}
    with torch.inference_mode():
        shape = (audio.num_mel_bins, audio.max_source_positions * 2)
        encoder_model.get_audio_features(torch.zeros(1, *shape, device=device))  # warm-up
        for batch in batch_sizes:
            features = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(batch)).to(device)
            start = time.perf_counter()
            encoder_model.get_audio_features(features)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            per_batch[batch] = round((time.perf_counter() - start) / batch, 4)
    del encoder_model
    return {"per_batch": per_batch, "seconds_per_window": min(per_batch.values())}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def load_levels(url: str, requests: list[dict], levels: list[int]) -> list[dict]:
    """Send every level's requests to the server at `url` and measure them (batching read from its /health)."""
    import urllib.request
    import warnings

    import openai

    warnings.filterwarnings("ignore", message="deprecated", category=DeprecationWarning)  # audio.translations
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)

    def health() -> dict:
        return json.loads(urllib.request.urlopen(url + "/health", timeout=30).read())

    def send(index: int) -> tuple[str, float]:
        request = requests[index]
        api = client.audio.translations if request["endpoint"] == "translations" else client.audio.transcriptions
        start = time.perf_counter()
        result = api.create(model="bench", file=("clip.wav", request["wav"]), extra_body=request["extra"])
        return result.text, time.perf_counter() - start

    for index in range(min(2, len(requests))):  # warm-up: first-call allocations and caches
        send(index)
    rows, baseline = [], None
    for clients in levels:
        before = health()
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(send, range(len(requests))))
        wall = time.perf_counter() - start
        after = health()
        texts, latencies = [r[0] for r in results], [r[1] for r in results]
        baseline = baseline or texts
        batches = after["batches"] - before["batches"]
        rows.append({
            "clients": clients, "requests": len(requests), "seconds": round(wall, 3),
            "requests_per_s": round(len(requests) / wall, 3),
            "p50_latency_s": round(percentile(latencies, 50), 3),
            "p95_latency_s": round(percentile(latencies, 95), 3),
            "generate_calls": batches,
            "rows_per_call": round((after["rows"] - before["rows"]) / max(batches, 1), 2),
            "windows": after["windows"] - before["windows"],
            "same_answers_as_one_at_a_time": texts == baseline,
            "answers": texts,
        })
    base = rows[0]["requests_per_s"]
    for row in rows:
        row["speedup"] = round(row["requests_per_s"] / base, 2)
    return rows


def save_random_model(preset: str, folder: str) -> str:
    """A random LLM-SRT folder of a preset (see --preset), for this benchmark and engines.py."""
    if preset == "tiny":
        return save_tiny_model(folder, seed=0, **TINY_SHAPES)
    if preset != "small":
        raise ValueError(f"--preset: tiny or small, not {preset!r}.")
        from speed import build_ours

    model, processor = build_ours("small", "cpu", torch.float32, llm_layers=6)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def serve_engine(engine: str, model: str, args: LoadArguments, scratch: str) -> ServerProcess:
    """`llm-srt serve` for `engine` on `model` in its own process (a context manager; its `url` once started)."""
    common = ["--served-model-name", "bench", "--max-batch-size", str(args.max_batch_size), "--max-wait-ms",
              str(args.max_wait_ms), "--max-new-tokens", str(args.max_new_tokens), "--max-queue", str(args.max_queue),
              *(["--dtype", args.dtype] if args.dtype else [])]
    env = {**os.environ, "PYTHONPATH": ROOT}
    log_path = os.path.join(scratch, f"{engine}_serve.log")
    if engine == "vllm":
        python = args.vllm_python or os.environ.get("LLM_SRT_VLLM_PYTHON")
        if not python:
            raise ValueError("--engines vllm needs vLLM's environment: --vllm_python or $LLM_SRT_VLLM_PYTHON.")
        env = vllm_cpu_env(environ=env)  # vLLM computes on the same cores as the transformers engine
        return ServerProcess.llm_srt_serve(python, model, *common, "--engine", "vllm", env=env, log_path=log_path)
    return ServerProcess.llm_srt_serve(sys.executable, model, *common,
                                       *(["--device", args.device] if args.device else []), env=env,
                                       log_path=log_path)


def run(args: LoadArguments) -> dict:
    """Serve with each engine, send every level's requests, and return the measurements (also printed)."""
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ("transformers", "vllm")]
    if unknown or not engines:
        raise ValueError(f"--engines: transformers and/or vllm, got {args.engines!r}")
    requests = make_requests(args.requests, args.seconds, args.manifest)
    levels = [int(n) for n in args.concurrency.split(",")]
    per_engine, ceiling = {}, None
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model or save_random_model(args.preset, os.path.join(scratch, args.preset))
        if args.encoder_ceiling:  # before any server: measured on otherwise idle cores
            ceiling = encoder_seconds_per_window(model, sorted({1, 4, args.max_batch_size}), args.device, args.dtype)
        for engine in engines:
            with serve_engine(engine, model, args, scratch) as server:
                per_engine[engine] = load_levels(server.url, requests, levels)
    report = {
        "model": args.model or RANDOM_MODELS[args.preset],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}",
        "device": args.device or "cpu", "engines": engines,
        "settings": {k: v for k, v in asdict(args).items() if k != "output"},
        "rows": per_engine[engines[0]], "per_engine": per_engine,
    }
    if "vllm" in engines:
        report["vllm_cpu_threads_bind"] = vllm_cpu_env()["VLLM_CPU_OMP_THREADS_BIND"]
    if ceiling:
        # requests/s if the encoder + Q-Former were all a request cost: the first engine's window count per level
        # (both engines cut the audio the same way), each window at the cheapest measured per-window time
        for row in per_engine[engines[0]]:
            row["encoder_ceiling_requests_per_s"] = round(
                row["requests"] / max(row["windows"] * ceiling["seconds_per_window"], 1e-9), 3)
        report["encoder_seconds_per_window"] = ceiling
    bind = f"; vLLM's threads on cores {report['vllm_cpu_threads_bind']}" if "vllm" in engines else ""
    print(f"model: {report['model']} on {report['device']} ({report['machine']}{bind})")
    audio = f"the rows of {args.manifest}" if args.manifest else f"{args.seconds:g} s synthetic speech"
    print(f"{args.requests} requests of {audio} (half transcriptions, half translations), "
          f"{args.max_new_tokens} new tokens max, --max-batch-size {args.max_batch_size} --max-wait-ms "
          f"{args.max_wait_ms:g}")
    for engine, rows in per_engine.items():
        print(f"\nengine: {engine}")
        print("| clients | requests/s | p50 latency (s) | p95 latency (s) | speed-up | batches | rows/batch | same answers |")
        print("|---|---|---|---|---|---|---|---|")
        for row in rows:
            print(f"| {row['clients']}{' (one at a time)' if row['clients'] == 1 else ''} | {row['requests_per_s']:.2f} | "
                  f"{row['p50_latency_s']:.2f} | {row['p95_latency_s']:.2f} | {row['speedup']:.2f}x | "
                  f"{row['generate_calls']} | {row['rows_per_call']:.1f} | "
                  f"{'yes' if row['same_answers_as_one_at_a_time'] else 'NO'} |")
    if ceiling:
        print(f"\nencoder + Q-Former alone: {ceiling['seconds_per_window']:.3f} s per window (least of batch sizes "
              f"{', '.join(f'{b}: {t:.3f} s' for b, t in ceiling['per_batch'].items())}); no engine can serve "
              "faster than this ceiling on this machine:")
        print("| clients | windows | ceiling requests/s | "
              + " | ".join(f"ceiling / {engine}" for engine in engines) + " |")
        print("|---|---|---|" + "---|" * len(engines))
        for index, row in enumerate(per_engine[engines[0]]):
            ratios = " | ".join(f"{row['encoder_ceiling_requests_per_s'] / per_engine[e][index]['requests_per_s']:.2f}x"
                                for e in engines)
            print(f"| {row['clients']} | {row['windows']} | {row['encoder_ceiling_requests_per_s']:.2f} | {ratios} |")
    if len(engines) == 2:
        first, second = engines
        report["ratios"] = [{"clients": a["clients"], "ratio": round(b["requests_per_s"] / a["requests_per_s"], 2),
                             "same_answers": a["answers"] == b["answers"]}
                            for a, b in zip(per_engine[first], per_engine[second])]
        print(f"\n| clients | {first} requests/s | {second} requests/s | {second} / {first} | "
              f"p95 {first} (s) | p95 {second} (s) | same answers |")
        print("|---|---|---|---|---|---|---|")
        for a, b, ratio in zip(per_engine[first], per_engine[second], report["ratios"]):
            print(f"| {a['clients']} | {a['requests_per_s']:.2f} | {b['requests_per_s']:.2f} | {ratio['ratio']:.2f}x | "
                  f"{a['p95_latency_s']:.2f} | {b['p95_latency_s']:.2f} | {'yes' if ratio['same_answers'] else 'NO'} |")
    return report


def write_results(path: str, report: dict) -> None:
    """A benchmark's JSON results at `path` (its folder made), and the path printed."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")
    print(f"results: {path}")


def main() -> None:
    (args,) = HfArgumentParser(LoadArguments).parse_args_into_dataclasses()
    report = run(args)
    if args.output:
        write_results(args.output, report)


if __name__ == "__main__":
    main()
