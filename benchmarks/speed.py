#!/usr/bin/env python
"""Speed and memory of LLM-SRT's 80-query adapter against a Qwen2-Audio-style adapter (750 tokens per 30 s).

    python benchmarks/speed.py                      # tiny preset: a few minutes on 2 CPU cores
    python benchmarks/speed.py --preset 3b          # real shapes (random weights), on a GPU
    python benchmarks/speed.py --preset 7b --batch_sizes 4,8,16,32,64 --output benchmarks/results/7b.json

One run builds ONE encoder and ONE LLM (random weights, same seed) and two adapters on top of them:
- ours: the Q-Former with learned queries -> `num_queries` audio embeddings (80 for the real presets);
- baseline: encoder frames average-pooled 2x and projected by one linear layer, as Qwen2-Audio feeds its LLM
  (750 embeddings per 30 s window).
For greedy and beam-5 decoding over batch sizes, with a fixed number of new tokens, it prints utterances/s, peak
memory and the ratio ours / baseline, and how time splits between feature extraction, encoder, projector, prefill
and decode. It also measures one audio translated into 1, 4 and 14 targets through the pipeline (as a ratio to one
target) and the feature extractor's numpy vs torch throughput on 64 clips. Results go to a JSON file; a summary
line is appended to benchmarks/README.md with the machine they came from.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from transformers import HfArgumentParser


ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from llm_srt import LlmSrtConfig, LlmSrtForConditionalGeneration, SpeechTranslationPipeline  # noqa: E402
from llm_srt.testing import build_tiny_processor, build_tiny_tokenizer, synthetic_speech, tiny_config  # noqa: E402


PRESETS = {
    # tiny: the real 30 s window and 80 queries (so the token counts are the real ones), toy widths.
    "tiny": {"batch_sizes": "1,4,8,16", "new_tokens": 16, "repeats": 2},
    "3b": {"batch_sizes": "1,4,8,16,32,64", "new_tokens": 32, "repeats": 3},
    "7b": {"batch_sizes": "1,4,8,16,32,64", "new_tokens": 32, "repeats": 3},
}
TARGETS_14 = ["deu", "fra", "ind", "ita", "jpn", "kor", "nld", "por", "rus", "spa", "tha", "vie", "yue", "zho"]


@dataclass
class SpeedArguments:
    preset: str = field(default="tiny", metadata={"help": "tiny (CPU, minutes), 3b or 7b (real shapes, GPU)."})
    batch_sizes: str | None = field(default=None, metadata={"help": "Comma-separated; default per preset."})
    new_tokens: int | None = field(default=None, metadata={"help": "Tokens generated per utterance (fixed)."})
    repeats: int | None = field(default=None, metadata={"help": "Timed runs per setting (median reported)."})
    beams: str = field(default="1,5", metadata={"help": "Beam sizes to time: greedy and beam 5."})
    device: str | None = field(default=None, metadata={"help": "Default: cuda when available, else cpu."})
    dtype: str | None = field(default=None, metadata={"help": "Default: bfloat16 on GPU, float32 on CPU."})
    one_to_many: str = field(default="1,4,14", metadata={"help": "Target counts for the one-to-many measure ('' to skip)."})
    feature_clips: int = field(default=64, metadata={"help": "Clips for the feature-extraction measure (0 to skip)."})
    output: str = field(default="benchmarks/results/speed.json")
    readme: str | None = field(default="benchmarks/README.md", metadata={"help": "Append a summary line here ('' to skip)."})


class PooledProjector(nn.Module):
    """The baseline adapter: Qwen2-Audio's 2x average pooling of encoder frames, then a linear layer."""

    def __init__(self, encoder_width: int, llm_width: int):
        super().__init__()
        self.pool = nn.AvgPool1d(2, stride=2)
        self.linear = nn.Linear(encoder_width, llm_width)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.linear(self.pool(frames.transpose(1, 2)).transpose(1, 2))


def build_models(preset: str, device: str, dtype: torch.dtype):
    """(ours, baseline, processor_ours, processor_baseline) sharing one encoder and one LLM."""
    tokenizer = build_tiny_tokenizer()
    if preset == "tiny":
        config = tiny_config(len(tokenizer), num_queries=80, window_seconds=30, encoder_width=64, qformer_width=64,
                             llm_width=128, num_heads=4, llm_layers=4, ffn_multiplier=4)
        config.text_config.eos_token_id = config.text_config.bos_token_id = tokenizer.eos_token_id
    else:
        config = LlmSrtConfig.from_preset(preset)
    torch.manual_seed(0)
    with torch.device(device):
        ours = LlmSrtForConditionalGeneration(config).to(dtype).eval()
    frames = config.audio_config.max_source_positions  # encoder frames per window (1500 for 30 s)
    baseline_config = copy.deepcopy(config)
    baseline_config.num_queries = frames // 2
    with torch.device(device):  # the same encoder and LLM objects, so the same weights
        baseline = LlmSrtForConditionalGeneration(
            baseline_config, audio_tower=ours.audio_tower, language_model=ours.language_model
        ).eval()
        baseline.projector = PooledProjector(config.audio_config.d_model, config.text_config.hidden_size)
    baseline.to(dtype)
    for model in (ours, baseline):  # lengths are fixed with min_new_tokens; the default min_length would only warn
        model.generation_config.min_length = None
    # For the real shapes too the tiny tokenizer stands in: prompts are a few tokens either way.
    return ours, baseline, build_tiny_processor(config, tokenizer), build_tiny_processor(baseline_config, tokenizer)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int):
    """(median seconds over `repeats` runs after one untimed warm-up run, last result)."""
    fn()
    times, result = [], None
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        result = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result


def peak_memory(device: str) -> float | None:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB, process high-water mark
    except ImportError:
        return None


def measure(model, processor, clips, beams: int, new_tokens: int, device: str, dtype, repeats: int) -> dict:
    """Time one batch end to end and by stage."""
    rate = processor.feature_extractor.sampling_rate
    text = processor.prepare_text("srt", ["eng"] * len(clips), ["deu"] * len(clips), [None] * len(clips),
                                  [None] * len(clips))
    ids = torch.tensor(text["input_ids"], device=device)
    mask = torch.tensor(text["attention_mask"], device=device)
    generate = {"num_beams": beams, "max_new_tokens": new_tokens, "min_new_tokens": new_tokens,
                "no_repeat_ngram_size": 0, "do_sample": False}
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        t_features, features = timed(lambda: processor.extract_features(clips, rate, device=device), device, repeats)
        features = features.to(device=device, dtype=dtype)
        t_encoder, frames = timed(lambda: model.audio_tower(features).last_hidden_state, device, repeats)
        t_projector, audio = timed(lambda: model.projector(frames.to(dtype)), device, repeats)
        embeds, _ = model.embed_inputs(ids, audio_embeds=audio)
        prefill_embeds = embeds.repeat_interleave(beams, dim=0)
        prefill_mask = mask.repeat_interleave(beams, dim=0)
        t_prefill, _ = timed(lambda: model.language_model(inputs_embeds=prefill_embeds, attention_mask=prefill_mask,
                                                          use_cache=True, logits_to_keep=1), device, repeats)
        t_generate, out = timed(lambda: model.generate(input_ids=ids, attention_mask=mask, audio_embeds=audio,
                                                       **generate), device, repeats)
    assert out.shape[1] == new_tokens, f"generated {out.shape[1]} tokens, expected {new_tokens}"
    total = t_features + t_encoder + t_projector + t_generate
    return {
        "batch_size": len(clips), "beams": beams, "audio_tokens": int(audio.shape[1]),
        "sequence_length": int(ids.shape[1]), "seconds": total, "utterances_per_s": len(clips) / total,
        "peak_memory_mib": peak_memory(device),
        "split_s": {"features": t_features, "encoder": t_encoder, "projector": t_projector, "prefill": t_prefill,
                    "decode": max(t_generate - t_prefill, 0.0)},
    }


def one_to_many(model, processor, counts: list[int], new_tokens: int, device: str, repeats: int) -> dict:
    """Seconds to translate one 30 s audio into N targets through the pipeline, and the ratio to one target."""
    pipe = SpeechTranslationPipeline(model=model, processor=processor, device=torch.device(device))
    audio = synthetic_speech(processor.feature_extractor.chunk_length - 1, seed=1)
    generate = {"num_beams": 1, "max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "no_repeat_ngram_size": 0}
    seconds = {}
    for n in counts:
        targets = TARGETS_14[:n]
        seconds[n], _ = timed(lambda: pipe(audio, sampling_rate=16000, src_lang="eng", tgt_lang=targets,
                                           generate_kwargs=generate), device, repeats)
    return {"targets": counts, "seconds": [seconds[n] for n in counts],
            "ratio_to_one": [seconds[n] / seconds[counts[0]] for n in counts]}


def feature_throughput(processor, clips: int, repeats: int) -> dict:
    """Clips/s of the Whisper feature extractor's numpy and torch paths on one padded batch."""
    fe = processor.feature_extractor
    batch = np.stack([np.pad(synthetic_speech(min(8.0, fe.chunk_length), seed=i), (0, 0))[: fe.n_samples] for i in range(clips)])
    batch = np.stack([np.pad(b, (0, fe.n_samples - len(b))) for b in batch])
    t_numpy, _ = timed(lambda: fe._np_extract_fbank_features(batch, "cpu"), "cpu", repeats)
    t_torch, _ = timed(lambda: fe._torch_extract_fbank_features(batch, "cpu"), "cpu", repeats)
    out = {"clips": clips, "numpy_clips_per_s": clips / t_numpy, "torch_clips_per_s": clips / t_torch}
    if torch.cuda.is_available():
        t_gpu, _ = timed(lambda: fe._torch_extract_fbank_features(batch, "cuda"), "cuda", repeats)
        out["torch_cuda_clips_per_s"] = clips / t_gpu
    return out


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()} CPU x{os.cpu_count()}, torch {torch.__version__}"


def table(rows: list[dict]) -> str:
    lines = ["| beams | batch | ours utt/s | baseline utt/s | ratio | ours MiB | baseline MiB | ours split f/e/p/pre/dec s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        o, b = r["ours"], r["baseline"]
        split = "/".join(f"{o['split_s'][k]:.3f}" for k in ("features", "encoder", "projector", "prefill", "decode"))
        mem = lambda v: "-" if v is None else f"{v:.0f}"  # noqa: E731
        lines.append(f"| {r['beams']} | {r['batch_size']} | {o['utterances_per_s']:.2f} | {b['utterances_per_s']:.2f} | "
                     f"{r['speedup']:.2f}x | {mem(o['peak_memory_mib'])} | {mem(b['peak_memory_mib'])} | {split} |")
    return "\n".join(lines)


def run(args: SpeedArguments) -> dict:
    if args.preset not in PRESETS:
        raise ValueError(f"Unknown preset {args.preset!r}; choose from {sorted(PRESETS)}.")
    defaults = PRESETS[args.preset]
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.preset != "tiny" and not device.startswith("cuda"):
        raise ValueError(f"The {args.preset} preset has the real model sizes: it needs a GPU (--device cuda).")
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    batch_sizes = [int(b) for b in (args.batch_sizes or defaults["batch_sizes"]).split(",")]
    new_tokens = args.new_tokens or defaults["new_tokens"]
    repeats = args.repeats or defaults["repeats"]
    ours, baseline, processor, processor_baseline = build_models(args.preset, device, dtype)
    window = processor.feature_extractor.chunk_length
    rows = []
    for beams in [int(b) for b in args.beams.split(",")]:
        for batch_size in batch_sizes:
            clips = [synthetic_speech(window - 2, seed=i) for i in range(batch_size)]
            row = {"beams": beams, "batch_size": batch_size}
            try:
                row["ours"] = measure(ours, processor, clips, beams, new_tokens, device, dtype, repeats)
                row["baseline"] = measure(baseline, processor_baseline, clips, beams, new_tokens, device, dtype, repeats)
            except torch.OutOfMemoryError:
                print(f"beams {beams}, batch {batch_size}: out of memory; stopping this beam size", file=sys.stderr)
                torch.cuda.empty_cache()
                break
            row["speedup"] = row["ours"]["utterances_per_s"] / row["baseline"]["utterances_per_s"]
            rows.append(row)
            print(f"beams {beams} batch {batch_size}: ours {row['ours']['utterances_per_s']:.2f} utt/s, "
                  f"baseline {row['baseline']['utterances_per_s']:.2f} utt/s ({row['speedup']:.2f}x)", flush=True)
    result = {"preset": args.preset, "machine": machine(), "device": device, "dtype": str(dtype).replace("torch.", ""),
              "new_tokens": new_tokens, "repeats": repeats,
              "audio_tokens": {"ours": ours.config.num_queries, "baseline": baseline.config.num_queries},
              "rows": rows}
    if args.one_to_many:
        counts = [int(n) for n in args.one_to_many.split(",")]
        result["one_to_many"] = one_to_many(ours, processor, counts, new_tokens, device, repeats)
    if args.feature_clips:
        result["feature_extraction"] = feature_throughput(processor, args.feature_clips, repeats)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    print(f"\n{args.preset} preset on {result['machine']} ({result['dtype']}), {new_tokens} new tokens, "
          f"audio tokens per window: ours {result['audio_tokens']['ours']}, baseline {result['audio_tokens']['baseline']}")
    print(table(rows))
    if "one_to_many" in result:
        otm = result["one_to_many"]
        print("one audio -> N targets (pipeline): " + ", ".join(
            f"{n}: {s:.2f} s ({r:.2f}x of one)" for n, s, r in zip(otm["targets"], otm["seconds"], otm["ratio_to_one"])))
    if "feature_extraction" in result:
        fx = result["feature_extraction"]
        print(f"feature extraction, {fx['clips']} clips: numpy {fx['numpy_clips_per_s']:.1f} clips/s, "
              f"torch {fx['torch_clips_per_s']:.1f} clips/s"
              + (f", torch cuda {fx['torch_cuda_clips_per_s']:.1f} clips/s" if "torch_cuda_clips_per_s" in fx else ""))
    if args.readme and rows:
        speedups = ", ".join(f"b{r['beams']}x{r['batch_size']}: {r['speedup']:.2f}x" for r in rows)
        line = (f"- {time.strftime('%Y-%m-%d')} `{args.preset}` on {result['machine']} ({result['dtype']}, "
                f"{new_tokens} new tokens): ours/baseline utterances/s {speedups}"
                + (f"; 4 targets cost {result['one_to_many']['ratio_to_one'][1]:.2f}x one"
                   if len(result.get("one_to_many", {}).get("targets", [])) > 1 else "") + "\n")
        with open(args.readme, "a", encoding="utf-8") as handle:
            handle.write(line)
    return result


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(SpeedArguments).parse_args_into_dataclasses(args=argv)
    return run(args)


if __name__ == "__main__":
    main()
