#!/usr/bin/env python
"""Speed of LLM-SRT against Transformers' own `Qwen2AudioForConditionalGeneration`, and one audio into many targets.

    python benchmarks/speed.py --preset small       # Whisper-base-like encoder, Qwen2.5-0.5B-like LLM: CPU, minutes
    python benchmarks/speed.py --preset tiny        # toy widths, real 30 s window and token counts (CI)
    python benchmarks/speed.py --preset 3b          # Whisper-large-v3 + Qwen2.5-3B shapes, random weights, GPU

One run builds ONE LLM (random weights, fixed seed) and two models around it:
- ours: a Whisper encoder, the Q-Former with learned queries -> `num_queries` audio embeddings per 30 s window;
- Qwen2-Audio: `Qwen2AudioForConditionalGeneration` built with the same encoder shapes (and our encoder's weights)
  and the very same LLM modules, so the same LLM weights. As the real model, its encoder reads the padded 30 s
  window, average-pools 2x and projects, and the LLM gets one token per 40 ms of *real* audio (about 250 for 10 s).
Clips are drawn like FLEURS utterances (5-20 s) and at 30 s; greedy and beam 5 over batch sizes, with a fixed
number of new tokens. Reported per setting: utterances/s of both, the ratio ours / Qwen2-Audio, the KV-cache size
computed from the shapes (and on GPU the measured peak memory), and for ours the time per stage (features,
encoder, Q-Former, prefill, decode). `--change bf16` re-measures ours with one change aimed at the largest stage.
The one-to-many part times one audio into 1, 4 and 14 targets with independent decoding and with the shared
transcript (`generate_many_targets`). Results go to a JSON file and, as Markdown tables, to benchmarks/README.md.
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
from transformers import HfArgumentParser, LogitsProcessor, LogitsProcessorList



from llm_srt import LlmSrtConfig, LlmSrtForConditionalGeneration
from llm_srt.generation_llm_srt import generate_many_targets
from llm_srt.testing import build_tiny_processor, build_tiny_tokenizer, synthetic_speech, tiny_config


QWEN25_05B = {"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
              "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936, "rms_norm_eps": 1e-6,
              "rope_theta": 1000000.0, "max_position_embeddings": 32768, "tie_word_embeddings": True,
              "bos_token_id": 151643, "eos_token_id": 151643}
WHISPER_BASE_ENCODER = {"model_type": "whisper", "d_model": 512, "encoder_layers": 6, "encoder_attention_heads": 8,
                        "encoder_ffn_dim": 2048, "decoder_layers": 1, "decoder_attention_heads": 8,
                        "decoder_ffn_dim": 2048, "num_mel_bins": 80, "max_source_positions": 1500,
                        "vocab_size": 51866}
PRESETS = {
    # tiny: toy widths, the real 30 s window and 80 queries (so token counts are the real ones); CI-sized.
    "tiny": {"batch_sizes": "1,4", "new_tokens": 8, "repeats": 1},
    # small: Whisper-base-like encoder, Qwen2.5-0.5B-like LLM (its widths, heads and vocabulary; 6 of its 24
    # layers so the grid fits 2 CPU cores in minutes: --llm_layers 24 for all of them), CPU.
    "small": {"batch_sizes": "1,4", "new_tokens": 16, "repeats": 1, "llm_layers": 6},
    "3b": {"batch_sizes": "1,4,8,16,32", "new_tokens": 32, "repeats": 3},
    "7b": {"batch_sizes": "1,4,8,16,32", "new_tokens": 32, "repeats": 3},
}
TARGETS_14 = ["deu", "fra", "ind", "ita", "jpn", "kor", "nld", "por", "rus", "spa", "tha", "vie", "yue", "zho"]
QWEN2_AUDIO_TOKEN_ID = 151646  # Qwen2-Audio's <|AUDIO|>; any id inside the LLM vocabulary works for the benchmark
TRANSCRIPT = "I see three red cats and two blue dogs, and the dogs see the cats too."


@dataclass
class SpeedArguments:
    preset: str = field(default="small", metadata={"help": "tiny (CI), small (CPU, minutes), 3b or 7b (GPU)."})
    batch_sizes: str | None = field(default=None, metadata={"help": "Comma-separated; default per preset."})
    beams: str = field(default="1,5", metadata={"help": "Beam sizes: greedy and beam 5."})
    clips: str = field(default="fleurs,30", metadata={"help": "Clip lengths: 'fleurs' (5-20 s, drawn) and/or seconds."})
    new_tokens: int | None = field(default=None, metadata={"help": "Tokens generated per utterance (fixed)."})
    repeats: int | None = field(default=None, metadata={"help": "Timed runs per setting (median reported)."})
    llm_layers: int | None = field(default=None, metadata={"help": "Override the LLM's layer count (small: 6 of 24)."})
    device: str | None = field(default=None, metadata={"help": "Default: cuda when available, else cpu."})
    dtype: str | None = field(default=None, metadata={"help": "Default: bfloat16 on GPU, float32 on CPU."})
    change: str = field(default="bf16", metadata={"help": "Change re-measured on ours: 'bf16' or '' to skip."})
    one_to_many: str = field(default="1,4,14", metadata={"help": "Target counts ('' to skip)."})
    one_to_many_beams: int = field(default=1, metadata={"help": "One-to-many: beam size (greedy by default)."})
    transcript_tokens: int = field(default=0, metadata={"help": "One-to-many: forced transcript length (0: preset)."})
    output: str = field(default="outputs/benchmarks/speed.json", metadata={
        "help": "JSON results file (default under the untracked outputs/; the recorded results were written with "
                "--output benchmarks/results/speed.json)."})
    readme: str | None = field(default="", metadata={
        "help": "Append the tables to this file (default: none; the recorded ones: --readme benchmarks/README.md)."})


# ------------------------------------------------------------------------------------------------------- models
def build_ours(preset: str, device: str, dtype: torch.dtype, llm_layers: int | None):
    """(ours, processor) for a preset, random weights from a fixed seed."""
    if preset == "tiny":
        tokenizer = build_tiny_tokenizer()
        config = tiny_config(len(tokenizer), num_queries=80, window_seconds=30, encoder_width=64, qformer_width=64,
                             llm_width=128, num_heads=4, llm_layers=llm_layers or 4, ffn_multiplier=4)
        config.text_config.eos_token_id = config.text_config.bos_token_id = tokenizer.eos_token_id
    else:
        from llm_srt.testing import build_qwen2_5_tokenizer

        tokenizer = build_qwen2_5_tokenizer()
        if preset == "small":
            config = LlmSrtConfig(audio_config=copy.deepcopy(WHISPER_BASE_ENCODER), text_config=copy.deepcopy(QWEN25_05B))
        else:
            config = LlmSrtConfig.from_preset(preset)
        if llm_layers:  # rebuilt rather than edited: the LLM config checks its per-layer attention types
            text = {k: v for k, v in config.text_config.to_dict().items() if k != "layer_types"}
            config = LlmSrtConfig(audio_config=config.audio_config.to_dict(),
                                  text_config={**text, "num_hidden_layers": llm_layers})
    torch.manual_seed(0)
    with torch.device(device):
        ours = LlmSrtForConditionalGeneration(config).to(dtype).eval()
    ours.generation_config.min_length = None  # lengths are fixed with min_new_tokens
    return ours, build_tiny_processor(config, tokenizer)


def build_qwen2_audio(ours: LlmSrtForConditionalGeneration, device: str, dtype: torch.dtype):
    """Transformers' Qwen2-Audio with our encoder's shapes and weights and our LLM modules (the same weights)."""
    from transformers import Qwen2AudioConfig, Qwen2AudioEncoderConfig, Qwen2AudioForConditionalGeneration
    from transformers.models.qwen2_audio.modeling_qwen2_audio import Qwen2AudioEncoder, Qwen2AudioMultiModalProjector

    a = ours.config.audio_config
    audio_config = Qwen2AudioEncoderConfig(
        num_mel_bins=a.num_mel_bins, encoder_layers=a.encoder_layers, encoder_attention_heads=a.encoder_attention_heads,
        encoder_ffn_dim=a.encoder_ffn_dim, d_model=a.d_model, max_source_positions=a.max_source_positions,
    )
    vocab = ours.config.text_config.vocab_size
    config = Qwen2AudioConfig(audio_config=audio_config, text_config=ours.config.text_config.to_dict(),
                              audio_token_index=QWEN2_AUDIO_TOKEN_ID if QWEN2_AUDIO_TOKEN_ID < vocab else vocab - 1)
    config._attn_implementation = ours.config.text_config._attn_implementation
    with torch.device("meta"):  # the LLM is replaced by ours below: no need to allocate a second one
        peer = Qwen2AudioForConditionalGeneration(config)
    with torch.device(device):
        tower = Qwen2AudioEncoder(config.audio_config)
        projector = Qwen2AudioMultiModalProjector(config)
    missing, unexpected = tower.load_state_dict(ours.audio_tower.state_dict(), strict=False)
    if missing:  # Whisper's and Qwen2-Audio's encoder layers have the same parameter names
        raise RuntimeError(f"Qwen2-Audio encoder parameters not filled from ours: {missing}")
    peer.model.audio_tower = tower
    peer.model.multi_modal_projector = projector
    peer.model.language_model = ours.language_model.model
    peer.lm_head = ours.language_model.lm_head
    peer.to(dtype).eval()
    peer.generation_config = copy.deepcopy(ours.generation_config)
    still_meta = [n for n, p in peer.named_parameters() if p.device.type == "meta"]
    if still_meta:
        raise RuntimeError(f"Qwen2-Audio parameters left unbuilt: {still_meta[:5]}")
    return peer


# ------------------------------------------------------------------------------------------------------- timing
def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int, warmup: bool = False):
    """(median seconds over `repeats` runs, last result), after one untimed run when `warmup`."""
    if warmup:
        fn()
    times, result = [], None
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        result = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result


def draw_clips(kind: str, count: int, rate: int = 16000) -> list[np.ndarray]:
    """`fleurs`: lengths drawn like FLEURS utterances (about 11 s, 5-20 s; fixed seed); else that many seconds."""
    if kind == "fleurs":
        lengths = np.clip(np.random.default_rng(0).normal(11.0, 3.5, size=count), 5.0, 20.0)
    else:
        lengths = [float(kind)] * count
    return [synthetic_speech(float(s), sampling_rate=rate, seed=i) for i, s in enumerate(lengths)]


def kv_cache_mib(text_config, sequence_length: int, rows: int, dtype: torch.dtype) -> float:
    """KV-cache size from the shapes: keys and values of every layer for `rows` sequences of that length."""
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads
    elements = 2 * text_config.num_hidden_layers * text_config.num_key_value_heads * head_dim * sequence_length * rows
    return elements * torch.finfo(dtype).bits / 8 / 2**20


def fixed_length(beams: int, new_tokens: int) -> dict:
    return {"num_beams": beams, "max_new_tokens": new_tokens, "min_new_tokens": new_tokens,
            "no_repeat_ngram_size": 0, "do_sample": False}


def measure_ours(model, processor, clips, beams, new_tokens, device, dtype, repeats) -> dict:
    """Ours end to end, and by stage (features, encoder, Q-Former, prefill, decode = generate - prefill)."""
    rate = processor.feature_extractor.sampling_rate
    n = len(clips)
    text = processor.prepare_text("srt", ["eng"] * n, ["deu"] * n, [None] * n, [None] * n)
    ids = torch.tensor(text["input_ids"], device=device)
    mask = torch.tensor(text["attention_mask"], device=device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        t_features, features = timed(lambda: processor.extract_features(clips, rate, device=device), device, repeats)
        features = features.to(device=device, dtype=dtype)
        t_encoder, frames = timed(lambda: model.audio_tower(features).last_hidden_state, device, repeats)
        t_qformer, audio = timed(lambda: model.projector(frames), device, repeats)
        embeds, _ = model.embed_inputs(ids, audio_embeds=audio)
        t_prefill, _ = timed(lambda: model.language_model(
            inputs_embeds=embeds.repeat_interleave(beams, 0), attention_mask=mask.repeat_interleave(beams, 0),
            use_cache=True, logits_to_keep=1), device, repeats)
        t_generate, out = timed(lambda: model.generate(input_ids=ids, attention_mask=mask, audio_embeds=audio,
                                                       **fixed_length(beams, new_tokens)), device, repeats)
    if out.shape[1] != new_tokens:
        raise RuntimeError(f"ours generated {out.shape[1]} tokens, expected {new_tokens}")
    total = t_features + t_encoder + t_qformer + t_generate
    return {"seconds": total, "utterances_per_s": n / total, "llm_input_tokens": int(ids.shape[1]),
            "kv_cache_mib": kv_cache_mib(model.config.text_config, ids.shape[1] + new_tokens, n * beams, dtype),
            "peak_memory_mib": torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None,
            "split_s": {"features": t_features, "encoder": t_encoder, "qformer": t_qformer, "prefill": t_prefill,
                        "decode": max(t_generate - t_prefill, 0.0)}}


def measure_qwen2_audio(peer, processor, clips, beams, new_tokens, device, dtype, repeats) -> dict:
    """Qwen2-Audio end to end as its processor feeds it: one audio token per 40 ms of real audio."""
    fe = processor.feature_extractor
    tokenizer = processor.tokenizer
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    def features():
        out = fe(clips, sampling_rate=fe.sampling_rate, padding="max_length", return_attention_mask=True,
                 return_tensors="pt", device=device)
        return out["input_features"], out["attention_mask"]

    with torch.inference_mode():
        t_features, (feats, feature_mask) = timed(features, device, repeats)
        _, audio_tokens = peer.model.audio_tower._get_feat_extract_output_lengths(feature_mask.sum(-1))
        prompt = tokenizer.encode(processor.build_prompt("srt", "eng", "deu"))
        rows = [[peer.config.audio_token_id] * int(k) + prompt for k in audio_tokens]
        width = max(len(r) for r in rows)
        ids = torch.tensor([[processor.pad_token_id] * (width - len(r)) + r for r in rows], device=device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        feats, feature_mask = feats.to(device=device, dtype=dtype), feature_mask.to(device)
        t_generate, out = timed(lambda: peer.generate(input_ids=ids, attention_mask=mask, input_features=feats,
                                                      feature_attention_mask=feature_mask,
                                                      **fixed_length(beams, new_tokens)), device, repeats)
    if out.shape[1] - width != new_tokens:
        raise RuntimeError(f"Qwen2-Audio generated {out.shape[1] - width} tokens, expected {new_tokens}")
    total = t_features + t_generate
    return {"seconds": total, "utterances_per_s": len(clips) / total, "llm_input_tokens": width,
            "audio_tokens_mean": float(audio_tokens.float().mean()),
            "kv_cache_mib": kv_cache_mib(peer.config.text_config, width + new_tokens, len(clips) * beams, dtype),
            "peak_memory_mib": torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None}


# ------------------------------------------------------------------------------------------------- one to many
class ScriptedLengths(LogitsProcessor):
    """Random weights never write a transcript and its tag pair, so lengths are scripted: the first `generate` call
    of a decode writes `prefix` (transcript + tag pair, token by token), and every answer ends after `new_tokens`
    further tokens (eos forced there, blocked before). Calls start where nothing has been generated yet."""

    def __init__(self, prefixes: list[list[int]], new_tokens: int, eos: int, beams: int):
        self.prefixes, self.new_tokens, self.eos, self.beams, self.calls = prefixes, new_tokens, eos, beams, 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1]
        if step == 0:
            self.calls += 1
        forced = scores.clone()
        for row in range(scores.shape[0]):
            prefix = self.prefixes[row // self.beams] if self.calls == 1 else []
            if step < len(prefix):
                token = prefix[step]
            elif step >= len(prefix) + self.new_tokens:
                token = self.eos
            else:
                forced[row, self.eos] = float("-inf")
                continue
            forced[row] = float("-inf")
            forced[row, token] = 0.0
        return forced


def one_to_many(model, processor, counts, beams, new_tokens, transcript_tokens, device, dtype, repeats) -> dict:
    """One FLEURS-like clip into N targets: independent decoding vs the shared transcript, as ratios to one target.

    Every answer is `transcript<|eng|><|tgt|>` (`transcript_tokens` tokens plus the tag pair) and `new_tokens` of
    translation, in both modes."""
    rate = processor.feature_extractor.sampling_rate
    clip = draw_clips("fleurs", 1, rate)
    words = (TRANSCRIPT + " ") * 8
    ids = processor.tokenizer.encode(words)[:transcript_tokens]
    transcript = processor.tokenizer.decode(ids).strip()
    result = {"transcript_tokens": len(processor.tokenizer.encode(transcript)), "translation_tokens": new_tokens,
              "beams": beams, "targets": counts, "independent_s": [], "shared_s": []}
    for n in counts:
        targets = TARGETS_14[:n]
        prefixes = [processor.tokenizer.encode(transcript + processor.tag("eng") + processor.tag(t)) for t in targets]
        longest = max(len(p) for p in prefixes)
        for shared, key in ((False, "independent_s"), (True, "shared_s")):
            def decode():
                features = processor.extract_features(clip, rate, device=device).to(device=device, dtype=dtype)
                # Independent rows each write their own answer; the shared first step writes target 1's.
                script = ScriptedLengths(prefixes[:1] if shared else prefixes, new_tokens, processor.eos_token_id,
                                         beams)
                out = generate_many_targets(
                    model, processor, "eng", targets, input_features=features, shared_transcript=shared,
                    logits_processor=LogitsProcessorList([script]), num_beams=beams, no_repeat_ngram_size=0,
                    max_new_tokens=longest + new_tokens + 1, do_sample=False)
                decoded = processor.post_process(out, "srt", "eng", targets)
                if not all(d["well_formed"] and d["transcript"] == transcript for d in decoded):
                    raise RuntimeError(f"scripted answers came out wrong: {decoded[0]['raw']!r}")
                return out
            with torch.inference_mode():
                seconds, _ = timed(decode, device, repeats)
            result[key].append(seconds)
    one = result["independent_s"][0]
    result["independent_ratio"] = [s / one for s in result["independent_s"]]
    result["shared_ratio"] = [s / one for s in result["shared_s"]]
    return result


# ------------------------------------------------------------------------------------------------------ report
def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()} CPU x{os.cpu_count()}, torch {torch.__version__}"


def speed_table(rows: list[dict]) -> str:
    lines = ["| clips | beams | batch | LLM input tokens ours / Qwen2-Audio | ours utt/s | Qwen2-Audio utt/s | ratio | "
             "KV cache MiB ours / Qwen2-Audio | ours split features/encoder/Q-Former/prefill/decode s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        o, q = r["ours"], r["qwen2_audio"]
        split = "/".join(f"{o['split_s'][k]:.3f}" for k in ("features", "encoder", "qformer", "prefill", "decode"))
        lines.append(f"| {r['clips']} | {r['beams']} | {r['batch_size']} | {o['llm_input_tokens']} / "
                     f"{q['llm_input_tokens']} | {o['utterances_per_s']:.2f} | {q['utterances_per_s']:.2f} | "
                     f"{r['ratio']:.2f}x | {o['kv_cache_mib']:.1f} / {q['kv_cache_mib']:.1f} | {split} |")
    return "\n".join(lines)


def change_table(change: dict) -> str:
    lines = [f"| setting | ours utt/s before | after ({change['change']}) | largest stage before -> after s |",
             "|---|---|---|---|"]
    for r in change["rows"]:
        stage = r["largest_stage"]
        lines.append(f"| {r['clips']} beams {r['beams']} batch {r['batch_size']} | {r['before']['utterances_per_s']:.2f} | "
                     f"{r['after']['utterances_per_s']:.2f} | {stage}: {r['before']['split_s'][stage]:.3f} -> "
                     f"{r['after']['split_s'][stage]:.3f} |")
    return "\n".join(lines)


def one_to_many_table(otm: dict) -> str:
    lines = ["| targets | independent s | ratio to one | shared transcript s | ratio to one |", "|---|---|---|---|---|"]
    for n, i, ir, s, sr in zip(otm["targets"], otm["independent_s"], otm["independent_ratio"], otm["shared_s"],
                               otm["shared_ratio"]):
        lines.append(f"| {n} | {i:.2f} | {ir:.2f}x | {s:.2f} | {sr:.2f}x |")
    return "\n".join(lines)


def report(result: dict) -> str:
    parts = [f"### {time.strftime('%Y-%m-%d')} `{result['preset']}` on {result['machine']} ({result['dtype']}, "
             f"{result['new_tokens']} new tokens, LLM {result['llm']})", "", speed_table(result["rows"])]
    if result.get("change"):
        parts += ["", "One change aimed at ours' largest stage, measured before and after in the same run:", "",
                  change_table(result["change"])]
    if result.get("one_to_many"):
        otm = result["one_to_many"]
        parts += ["", f"One audio into N targets (beams {otm['beams']}; every answer: {otm['transcript_tokens']} "
                      f"transcript tokens + tag pair + {otm['translation_tokens']} translation tokens):", "",
                  one_to_many_table(otm)]
    return "\n".join(parts) + "\n"


def run(args: SpeedArguments) -> dict:
    if args.preset not in PRESETS:
        raise ValueError(f"Unknown preset {args.preset!r}; choose from {sorted(PRESETS)}.")
    defaults = PRESETS[args.preset]
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.preset in ("3b", "7b") and not device.startswith("cuda"):
        raise ValueError(f"The {args.preset} preset has the real model sizes: it needs a GPU (--device cuda).")
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    batch_sizes = [int(b) for b in (args.batch_sizes or defaults["batch_sizes"]).split(",")]
    new_tokens = args.new_tokens or defaults["new_tokens"]
    repeats = args.repeats or defaults["repeats"]
    ours, processor = build_ours(args.preset, device, dtype, args.llm_layers or defaults.get("llm_layers"))
    peer = build_qwen2_audio(ours, device, dtype)
    rate = processor.feature_extractor.sampling_rate
    text = ours.config.text_config
    with torch.inference_mode():  # one warm-up of each model (allocator, kernels), then every setting runs cold
        measure_ours(ours, processor, draw_clips("fleurs", 1, rate), 1, 2, device, dtype, 1)
        measure_qwen2_audio(peer, processor, draw_clips("fleurs", 1, rate), 1, 2, device, dtype, 1)
    rows = []
    for kind in args.clips.split(","):
        for beams in [int(b) for b in args.beams.split(",")]:
            for batch_size in batch_sizes:
                clips = draw_clips(kind, batch_size, rate)
                row = {"clips": "FLEURS-like 5-20 s" if kind == "fleurs" else f"{kind} s", "beams": beams,
                       "batch_size": batch_size, "audio_seconds": [round(len(c) / rate, 2) for c in clips]}
                try:
                    row["ours"] = measure_ours(ours, processor, clips, beams, new_tokens, device, dtype, repeats)
                    row["qwen2_audio"] = measure_qwen2_audio(peer, processor, clips, beams, new_tokens, device,
                                                             dtype, repeats)
                except torch.OutOfMemoryError:
                    print(f"{kind} beams {beams} batch {batch_size}: out of memory; skipping larger batches",
                          file=sys.stderr)
                    torch.cuda.empty_cache()
                    break
                row["ratio"] = row["ours"]["utterances_per_s"] / row["qwen2_audio"]["utterances_per_s"]
                rows.append(row)
                print(f"{row['clips']} beams {beams} batch {batch_size}: ours {row['ours']['utterances_per_s']:.2f} "
                      f"utt/s, Qwen2-Audio {row['qwen2_audio']['utterances_per_s']:.2f} utt/s ({row['ratio']:.2f}x)",
                      flush=True)
    result = {"preset": args.preset, "machine": machine(), "device": device, "dtype": str(dtype).replace("torch.", ""),
              "new_tokens": new_tokens, "repeats": repeats,
              "llm": f"{text.hidden_size}x{text.num_hidden_layers}, vocab {text.vocab_size}",
              "encoder": f"{ours.config.audio_config.d_model}x{ours.config.audio_config.encoder_layers}",
              "num_queries": ours.config.num_queries, "rows": rows}
    if args.change:
        result["change"] = measure_change(args.change, ours, processor, rows, new_tokens, device, dtype, repeats)
    if args.one_to_many:
        counts = [int(n) for n in args.one_to_many.split(",")]
        transcript_tokens = args.transcript_tokens or (6 if args.preset == "tiny" else 24)
        result["one_to_many"] = one_to_many(ours, processor, counts, args.one_to_many_beams, new_tokens,
                                            transcript_tokens, device, dtype, repeats)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    text_report = report(result)
    print("\n" + text_report)
    if args.readme:
        with open(args.readme, "a", encoding="utf-8") as handle:
            handle.write("\n" + text_report)
    return result


def measure_change(change: str, ours, processor, rows, new_tokens, device, dtype, repeats) -> dict:
    """Re-measure ours with one change on two FLEURS-like settings: greedy at the smallest batch, the largest beam
    at the largest batch."""
    if change != "bf16":
        raise ValueError(f"Unknown change {change!r}; the benchmark knows 'bf16'.")
    if dtype == torch.bfloat16:
        raise ValueError("The run is already bfloat16: pass --change '' (or --dtype float32).")
    changed = copy.deepcopy(ours).to(torch.bfloat16)
    rate = processor.feature_extractor.sampling_rate
    fleurs = [r for r in rows if r["clips"].startswith("FLEURS")]
    greedy = min(fleurs, key=lambda r: (r["beams"], r["batch_size"]))
    widest = max(fleurs, key=lambda r: (r["beams"], r["batch_size"]))
    picked = [greedy] if widest is greedy else [greedy, widest]
    out = {"change": "bfloat16 weights and activations (ours)", "rows": []}
    with torch.inference_mode():
        measure_ours(changed, processor, draw_clips("fleurs", 1, rate), 1, 2, device, torch.bfloat16, 1)
    for r in picked:
        clips = draw_clips("fleurs", r["batch_size"], rate)
        after = measure_ours(changed, processor, clips, r["beams"], new_tokens, device, torch.bfloat16, repeats)
        largest = max(r["ours"]["split_s"], key=r["ours"]["split_s"].get)
        out["rows"].append({"clips": r["clips"], "beams": r["beams"], "batch_size": r["batch_size"],
                            "largest_stage": largest, "before": r["ours"], "after": after})
        print(f"change {change}: {r['clips']} beams {r['beams']} batch {r['batch_size']}: "
              f"{r['ours']['utterances_per_s']:.2f} -> {after['utterances_per_s']:.2f} utt/s", flush=True)
    del changed
    return out


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(SpeedArguments).parse_args_into_dataclasses(args=argv)
    return run(args)


if __name__ == "__main__":
    main()
