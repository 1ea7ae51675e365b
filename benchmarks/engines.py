#!/usr/bin/env python
"""Utterances/s side by side, batch 1 to 64: LLM-SRT on the transformers engine, LLM-SRT on vLLM, and Qwen2-Audio
on vLLM (vLLM's own `qwen2_audio.py`) with the same encoder and LLM.

    python benchmarks/engines.py                        # tiny random model (serve_load.py's tiny shapes), CPU
    python benchmarks/engines.py --model path/to/folder --batch_sizes 1,8,64 --dtype bfloat16
    python benchmarks/engines.py --qwen2_audio false    # only the two LLM-SRT engines

Both LLM-SRT engines decode the same rows (SRT eng->deu of synthetic speech, greedy, a fixed number of new tokens:
`min_new_tokens` = `max_new_tokens`, so every answer has the same length) through the decoding seam
(`DecodingEngine.decode_rows`). The transformers engine runs in this process; vLLM's in its own environment
(`--vllm_python`, default $LLM_SRT_VLLM_PYTHON), this script again with `--side vllm`.

The third column is Qwen2-Audio as vLLM serves it (`vllm.LLM`, its registered `Qwen2AudioForConditionalGeneration`):
a Qwen2-Audio folder built from the LLM-SRT model (`save_qwen2_audio_like`: the very same Whisper encoder weights and
LLM weights, a random linear projector instead of the Q-Former, Qwen2-Audio's `<|AUDIO|>` tokens added to the
tokenizer), decoding the same clips after the same prompt text with the same number of new tokens (`ignore_eos`,
`min_tokens`), also in vLLM's environment (`--side qwen2_audio`). Both models run the encoder over the padded 30 s
window; the difference is what the LLM gets: LLM-SRT's Q-Former gives `num_queries` audio tokens per window (80),
Qwen2-Audio one token per 40 ms of real audio (200 for an 8 s clip, 750 for a full 30 s window).

Each batch size is timed after a warm-up batch, on its own clips (no clip is decoded twice, so vLLM's prefix and
encoder caches never answer from an earlier batch); the table gives utt/s per engine, the ratios and whether the two
LLM-SRT engines' answers were equal.
"""

import json
import os
import platform
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field

from transformers import HfArgumentParser


ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

# one set of random models and one results writer for both benchmarks (run as a script: this folder is on the path)
from serve_load import RANDOM_MODELS, save_random_model, write_results


@dataclass
class EngineArguments:
    model: str | None = field(default=None, metadata={"help": "Model folder; default: a random model of --preset."})
    preset: str = field(default="tiny", metadata={"choices": list(RANDOM_MODELS),
        "help": "Random model without --model: tiny (serve_load.py's TINY_SHAPES: toy widths, the real 30 s window "
                "and 80 queries) or small (speed.py's: Whisper-base-like encoder, Qwen2.5-0.5B-like LLM with 6 of "
                "its 24 layers)."})
    batch_sizes: str = field(default="1,4,16,64", metadata={"help": "Comma-separated batch sizes."})
    new_tokens: int = field(default=16, metadata={"help": "Tokens generated per utterance."})
    seconds: float = field(default=8.0, metadata={"help": "Length of each synthetic utterance."})
    dtype: str = field(default="float32", metadata={"help": "float32 or bfloat16 (both engines)."})
    vllm_python: str | None = field(default=None, metadata={"help": "vLLM's Python (default $LLM_SRT_VLLM_PYTHON)."})
    qwen2_audio: bool = field(default=True, metadata={
        "help": "Also measure Qwen2-Audio on vLLM with the model's encoder and LLM (vLLM's qwen2_audio.py)."})
    side: str = field(default="both", metadata={
        "help": "both (the report), or one engine: transformers, vllm, qwen2_audio."})
    side_output: str | None = field(default=None, metadata={"help": "With --side: where that side writes JSON."})
    output: str = field(default=os.path.join("outputs", "benchmarks", "engines.json"), metadata={
        "help": "JSON results ('' for none; the recorded ones: benchmarks/results/engines_*.json)."})


def build_engine(side: str, model: str, dtype: str):
    from llm_srt.engines.loading import open_engine

    if side == "vllm":
        return open_engine(model, "vllm", dtype=dtype, enforce_eager=True)
    return open_engine(model, dtype=dtype)


def clip_sets(args: EngineArguments) -> tuple[list, list[list]]:
    """The warm-up clip and each batch size's own clips (distinct seeds: no clip is decoded twice, so no engine's
    prefix or encoder cache answers a batch from an earlier one)."""
    from llm_srt.testing import synthetic_speech

    sizes = [int(b) for b in args.batch_sizes.split(",")]
    warm_up = [synthetic_speech(args.seconds, seed=0, pause_every=1.3)]
    batches, seed = [], 1
    for size in sizes:
        batches.append([synthetic_speech(args.seconds, seed=seed + i, pause_every=1.3) for i in range(size)])
        seed += size
    return warm_up, batches


def measure(side: str, args: EngineArguments, model: str) -> dict:
    """utt/s of one engine at every batch size (and its answers, to compare)."""
    from llm_srt.decoding_llm_srt import DecodeRow

    engine = build_engine(side, model, args.dtype)
    settings = {"max_new_tokens": args.new_tokens, "num_beams": 1, "min_new_tokens": args.new_tokens}
    warm_up, batches = clip_sets(args)
    rows = []
    try:
        handles, _ = engine.encode(warm_up)
        engine.decode_rows(handles, [DecodeRow(0, "srt", "eng", "deu")], settings)  # warm-up
        for clips in batches:
            size = len(clips)
            start = time.perf_counter()
            handles, _ = engine.encode(clips)
            answers = engine.decode_rows(handles, [DecodeRow(i, "srt", "eng", "deu") for i in range(size)], settings)
            seconds = time.perf_counter() - start
            rows.append({"batch": size, "seconds": round(seconds, 3), "utt_per_s": round(size / seconds, 3),
                         "answers": [a["token_ids"] for a in answers]})
    finally:
        if hasattr(engine, "shutdown"):
            engine.shutdown()
    return {"engine": side, "rows": rows}


QWEN2_AUDIO_TOKENS = ("<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>")


def qwen2_audio_config_like(config, audio_token_id: int):
    """A `Qwen2AudioConfig` with an `LlmSrtConfig`'s encoder shapes (Whisper's: widths, layers, heads, mel bins,
    window) and its LLM config as the text config (same widths, layers, heads, vocabulary, tying)."""
    from transformers import Qwen2AudioConfig, Qwen2AudioEncoderConfig

    a = config.audio_config
    audio_config = Qwen2AudioEncoderConfig(
        num_mel_bins=a.num_mel_bins, encoder_layers=a.encoder_layers, encoder_attention_heads=a.encoder_attention_heads,
        encoder_ffn_dim=a.encoder_ffn_dim, d_model=a.d_model, max_source_positions=a.max_source_positions,
        activation_function=a.activation_function, scale_embedding=a.scale_embedding,
    )
    tied = bool(config.text_config.tie_word_embeddings)
    # vLLM copies the top-level tie_word_embeddings onto the text config: both say the same
    return Qwen2AudioConfig(audio_config=audio_config, text_config=config.text_config.to_dict(),
                            audio_token_index=audio_token_id, tie_word_embeddings=tied,
                            architectures=["Qwen2AudioForConditionalGeneration"])


def save_qwen2_audio_like(model: str, folder: str, seed: int = 0) -> str:
    """A Qwen2-Audio folder (the hub layout vLLM's `qwen2_audio.py` loads) made of an LLM-SRT folder's parts: its
    Whisper encoder weights (same parameter names), its LLM weights, a random linear projector (Qwen2-Audio's, in
    place of the Q-Former), its tokenizer with Qwen2-Audio's three audio tokens added (ids within the LLM's spare
    vocabulary rows) and its feature extractor."""
    import glob

    import torch
    from safetensors.torch import load_file, save_file
    from tokenizers import AddedToken
    from transformers import Qwen2AudioProcessor

    from llm_srt import LlmSrtConfig, LlmSrtProcessor

    config = LlmSrtConfig.from_pretrained(model)
    processor = LlmSrtProcessor.from_pretrained(model)
    tokenizer = processor.tokenizer
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN2_AUDIO_TOKENS],
                         special_tokens=True)
    ids = tokenizer.convert_tokens_to_ids(list(QWEN2_AUDIO_TOKENS))
    if max(ids) >= config.text_config.vocab_size:
        raise ValueError(f"Qwen2-Audio's audio tokens got ids {ids}, beyond the LLM's {config.text_config.vocab_size} "
                         "embedding rows.")
    qwen_config = qwen2_audio_config_like(config, audio_token_id=ids[1])
    weights = {}
    for path in sorted(glob.glob(os.path.join(model, "*.safetensors"))):
        for name, tensor in load_file(path).items():
            if name.startswith(("audio_tower.", "language_model.")):  # the Q-Former ("projector.") is not Qwen2-Audio's
                weights[name] = tensor
    if "language_model.model.embed_tokens.weight" not in weights or "audio_tower.conv1.weight" not in weights:
        raise ValueError(f"{model}: expected audio_tower.* and language_model.model.* weights, found "
                         f"{sorted({n.split('.')[0] for n in weights})}.")
    if "language_model.lm_head.weight" not in weights:  # tied: written out, as transformers' Qwen2-Audio never ties
        weights["language_model.lm_head.weight"] = weights["language_model.model.embed_tokens.weight"].clone()
    generator = torch.Generator().manual_seed(seed)
    width, hidden = qwen_config.audio_config.d_model, qwen_config.text_config.hidden_size
    dtype = weights["audio_tower.conv1.weight"].dtype
    weights["multi_modal_projector.linear.weight"] = (torch.randn(hidden, width, generator=generator) * 0.02).to(dtype)
    weights["multi_modal_projector.linear.bias"] = torch.zeros(hidden, dtype=dtype)
    os.makedirs(folder, exist_ok=True)
    save_file({k: v.contiguous() for k, v in weights.items()}, os.path.join(folder, "model.safetensors"),
              metadata={"format": "pt"})
    qwen_config.save_pretrained(folder)
    Qwen2AudioProcessor(feature_extractor=processor.feature_extractor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def audio_tokens_of(seconds: float) -> int:
    """Qwen2-Audio's LLM tokens for `seconds` of audio: one per 40 ms (two stride-2 steps over 10 ms mel frames)."""
    frames = int(round(seconds * 100))
    return ((frames - 1) // 2 + 1 - 2) // 2 + 1


def check_qwen2_audio_window(model: str):
    """`model`'s config, once it is known to have the 30 s window vLLM's Qwen2-Audio reads; else the script stops."""
    from llm_srt import LlmSrtConfig

    config = LlmSrtConfig.from_pretrained(model)
    if config.chunk_length_s != 30:
        raise SystemExit(f"engines.py: error: vLLM's Qwen2-Audio reads 30 s windows (3000 mel frames); {model} has "
                         f"{config.chunk_length_s:g} s windows (--qwen2_audio false to measure only LLM-SRT's "
                         "engines).")
    return config


def measure_qwen2_audio(args: EngineArguments, model: str) -> dict:
    """utt/s of Qwen2-Audio on vLLM's offline engine, built from `model`, on the same clips and prompt text."""
    from vllm import LLM, SamplingParams

    from llm_srt import LlmSrtProcessor

    config = check_qwen2_audio_window(model)
    processor = LlmSrtProcessor.from_pretrained(model)
    text_ids = processor.prompt_blocks("srt", "eng", ["deu"])[0][processor.num_audio_tokens:]
    with tempfile.TemporaryDirectory() as scratch:
        folder = save_qwen2_audio_like(model, os.path.join(scratch, "qwen2_audio"))
        from transformers import AutoTokenizer

        bos, audio, eos = AutoTokenizer.from_pretrained(folder).convert_tokens_to_ids(list(QWEN2_AUDIO_TOKENS))
        prompt_ids = [bos, audio, eos] + text_ids  # vLLM widens <|AUDIO|> to one token per 40 ms of audio
        max_model_len = audio_tokens_of(config.chunk_length_s) + len(prompt_ids) + args.new_tokens
        llm = LLM(model=folder, dtype=args.dtype, enforce_eager=True, max_model_len=max_model_len, seed=0,
                  limit_mm_per_prompt={"audio": 1})
        params = SamplingParams(temperature=0.0, max_tokens=args.new_tokens, min_tokens=args.new_tokens,
                                ignore_eos=True)

        def decode(clips):
            outputs = llm.generate([{"prompt_token_ids": prompt_ids, "multi_modal_data": {"audio": (c, 16000)}}
                                    for c in clips], params, use_tqdm=False)
            lengths = {len(o.outputs[0].token_ids) for o in outputs}
            if lengths != {args.new_tokens}:
                raise RuntimeError(f"Qwen2-Audio answers of {sorted(lengths)} tokens, expected {args.new_tokens}")
            return outputs

        warm_up, batches = clip_sets(args)
        decode(warm_up)
        rows = []
        for clips in batches:
            start = time.perf_counter()
            outputs = decode(clips)
            seconds = time.perf_counter() - start
            rows.append({"batch": len(clips), "seconds": round(seconds, 3),
                         "utt_per_s": round(len(clips) / seconds, 3),
                         "llm_input_tokens": max(len(o.prompt_token_ids) for o in outputs)})
    return {"engine": "qwen2_audio", "rows": rows}


def machine() -> str:
    from llm_srt.testing import usable_cpus, vllm_cpu_env

    return (f"{platform.machine()}, {os.cpu_count()} CPU cores ({usable_cpus()} given to this run; vLLM's threads on "
            f"cores {vllm_cpu_env()['VLLM_CPU_OMP_THREADS_BIND']})")


def run_side(python: str, side: str, args: EngineArguments, scratch: str) -> dict:
    """One side in vLLM's environment: this script again with `--side`."""
    side_file = os.path.join(scratch, f"{side}.json")
    command = [python, os.path.abspath(__file__), "--side", side, "--side_output", side_file, "--model", args.model,
               "--batch_sizes", args.batch_sizes, "--new_tokens", str(args.new_tokens), "--seconds", str(args.seconds),
               "--dtype", args.dtype]
    from llm_srt.testing import vllm_cpu_env

    # vLLM computes on the same cores as the transformers engine (not one fewer: see vllm_cpu_env)
    subprocess.run(command, env={**vllm_cpu_env(), "PYTHONPATH": ROOT}, check=True)
    with open(side_file, encoding="utf-8") as handle:
        return json.load(handle)


def main() -> None:
    (args,) = HfArgumentParser(EngineArguments).parse_args_into_dataclasses()
    if args.side != "both":
        if args.side == "qwen2_audio":
            result = measure_qwen2_audio(args, args.model)
        else:
            result = measure(args.side, args, args.model)
        with open(args.side_output, "w", encoding="utf-8") as handle:
            json.dump(result, handle)
        return
    python = args.vllm_python or os.environ.get("LLM_SRT_VLLM_PYTHON")
    if not python:
        raise SystemExit("engines.py: error: vLLM's environment is needed: --vllm_python or $LLM_SRT_VLLM_PYTHON.")
    with tempfile.TemporaryDirectory() as scratch:
        if args.model is None:
            args.model = save_random_model(args.preset, os.path.join(scratch, args.preset))
        from llm_srt import LlmSrtProcessor

        if args.qwen2_audio:  # before anything is measured
            check_qwen2_audio_window(args.model)
        processor = LlmSrtProcessor.from_pretrained(args.model)
        srt_tokens = len(processor.prompt_blocks("srt", "eng", ["deu"])[0])
        ours = measure("transformers", args, args.model)
        theirs = run_side(python, "vllm", args, scratch)
        peer = run_side(python, "qwen2_audio", args, scratch) if args.qwen2_audio else None
    print(f"engines on {machine()}; {args.dtype}; {args.seconds:g} s clips, SRT eng->deu, greedy, "
          f"{args.new_tokens} new tokens each")
    header = "| batch | transformers utt/s | vLLM utt/s | vLLM / transformers | same answers |"
    if peer:
        qwen_tokens = peer["rows"][0]["llm_input_tokens"]
        print(f"LLM input tokens per utterance: LLM-SRT {srt_tokens} ({processor.num_audio_tokens} audio queries + "
              f"prompt), Qwen2-Audio {qwen_tokens} (one audio token per 40 ms: {audio_tokens_of(args.seconds)} for "
              f"{args.seconds:g} s, {audio_tokens_of(30)} for a full 30 s window; + the same prompt); same encoder "
              "over the padded 30 s window and the same LLM")
        header = ("| batch | transformers utt/s | vLLM utt/s | Qwen2-Audio on vLLM utt/s | vLLM / transformers | "
                  "LLM-SRT / Qwen2-Audio (both vLLM) | same answers |")
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    table = []
    for k, (a, b) in enumerate(zip(ours["rows"], theirs["rows"])):
        ratio = b["utt_per_s"] / a["utt_per_s"]
        same = a["answers"] == b["answers"]
        row = {"batch": a["batch"], "transformers_utt_per_s": a["utt_per_s"], "vllm_utt_per_s": b["utt_per_s"],
               "ratio": round(ratio, 2), "same_answers": same}
        cells = [str(a["batch"]), f"{a['utt_per_s']:.2f}", f"{b['utt_per_s']:.2f}"]
        if peer:
            q = peer["rows"][k]
            assert q["batch"] == a["batch"]
            row.update(qwen2_audio_vllm_utt_per_s=q["utt_per_s"],
                       vllm_over_qwen2_audio=round(b["utt_per_s"] / q["utt_per_s"], 2))
            cells.append(f"{q['utt_per_s']:.2f}")
        cells.append(f"{ratio:.2f}x")
        if peer:
            cells.append(f"{row['vllm_over_qwen2_audio']:.2f}x")
        cells.append("yes" if same else "NO")
        table.append(row)
        print("| " + " | ".join(cells) + " |")
    if args.output:
        result = {"settings": {k: v for k, v in asdict(args).items() if k not in ("output", "side_output")},
                  "machine": machine(), "rows": table}
        if peer:
            result["llm_input_tokens"] = {"llm_srt": srt_tokens, "qwen2_audio": peer["rows"][0]["llm_input_tokens"]}
        write_results(args.output, result)


if __name__ == "__main__":
    main()
