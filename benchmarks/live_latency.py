#!/usr/bin/env python
"""Latency and quality of live decoding (`llm_srt.live.translator.LiveTranslator`) on a test set.

    python benchmarks/live_latency.py --model runs/demo/srt --data_dir runs/demo/data --output runs/live.json
    python benchmarks/live_latency.py --parrot --output runs/live_parrot.json   # no model at hand: CI's check

Each clip of the set (a `test.jsonl` of rows `audio, src_lang, tgt_lang, transcript, translation`, the demo
corpus' format) is played into a live translator at real-time pace (`--pace 1`; `--pace 0` feeds as fast as the
model decodes, with the same delays: they are counted in audio, not on the wall clock) in `--chunk_ms` chunks, into
all of the clip's targets at once. Every confirmed word gets its delay: the seconds of audio received when it was
confirmed, and for the computation-aware variant that plus the decoding time spent so far (SimulEval's "elapsed").
Reported per target: AL and LAAL (SimulEval's definitions, `llm_srt.evaluation.metrics.average_lagging`, reference lengths in
words, characters for unspaced scripts), computation-aware and not, averaged over the clips; BLEU of the live
output and of offline decoding of the same audio (the pipeline's windows) against the references, and live against
offline; WER of the live and offline transcripts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict




from llm_srt.transcription_llm_srt import plan_windows
from llm_srt.audio_llm_srt import load_audio
from llm_srt.decoding_llm_srt import TransformersEngine, decode_windows, join_window_texts
from llm_srt.evaluation.metrics import average_lagging, corpus_bleu, error_rate
from llm_srt.live.translator import TRANSCRIPT, LiveTranslator, words_of


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model folder")
    parser.add_argument("--data_dir", help="folder with test.jsonl and the audio it names")
    parser.add_argument("--parrot", action="store_true",
                        help="train llm_srt.testing's parrot model and use its two spoken lines (no model needed)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many clips")
    parser.add_argument("--pace", type=float, default=1.0, help="1: real time (default); 2: twice as fast; 0: no wait")
    parser.add_argument("--chunk_ms", type=float, default=100.0)
    parser.add_argument("--min_chunk", type=float, default=0.5, help="new audio (s) before each re-decode")
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", default=None, help="JSON results file")
    args = parser.parse_args(argv)
    if not args.parrot and not (args.model and args.data_dir):
        parser.error("pass --model and --data_dir, or --parrot")
    return args


def load_set(args) -> tuple[object, object, list[dict]]:
    """(model, processor, clips): each clip `{audio, src_lang, transcript, references: {tgt: translation}}`."""
    if args.parrot:
        from llm_srt.testing import PARROT_LINES, build_parrot_model

        model, processor, audio = build_parrot_model()
        clips = [{"name": f"parrot_{i}", "audio": a, "src_lang": "eng", "transcript": text, "references": refs}
                 for i, (a, (text, refs)) in enumerate(zip(audio, PARROT_LINES))]
        return model, processor, clips
    from llm_srt.engines.loading import load_model_and_processor

    model, processor = load_model_and_processor(args.model, False, None)
    by_audio: dict[str, dict] = {}
    with open(os.path.join(args.data_dir, "test.jsonl"), encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            clip = by_audio.setdefault(row["audio"], {"name": row["audio"], "src_lang": row["src_lang"],
                                                      "transcript": row["transcript"], "references": {}})
            clip["references"][row["tgt_lang"]] = row["translation"]
    clips = list(by_audio.values())[: args.limit]
    for clip in clips:
        clip["audio"] = load_audio(os.path.join(args.data_dir, clip["name"]), target_rate=16000)
    return model, processor, clips


def play(engine, clip: dict, args, settings: dict) -> dict:
    """Play one clip into a live translator; its final texts and per-target word delays."""
    targets = list(clip["references"])
    translator = LiveTranslator(engine, clip["src_lang"], targets, settings=settings, min_chunk_seconds=args.min_chunk)
    audio, rate = clip["audio"], translator.sampling_rate
    chunk = max(1, int(args.chunk_ms / 1000 * rate))
    started = time.monotonic()
    for position in range(0, len(audio), chunk):
        if args.pace > 0:  # real-time pace: wait until this chunk has been "spoken"
            wait = started + position / rate / args.pace - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        translator.feed(audio[position:position + chunk])
    translator.finish()
    return {"texts": {key: translator.text(key) for key in [TRANSCRIPT, *targets]},
            "delays": {key: translator.delays[key] for key in [TRANSCRIPT, *targets]},
            "duration": len(audio) / rate, "decodes": translator.decodes,
            "decode_seconds": translator.decode_seconds}


def offline(engine, clip: dict, settings: dict) -> dict:
    """Offline decoding of the whole clip, as the pipeline does (one window per stretch of speech)."""
    rate, window = engine.sampling_rate, engine.window_seconds
    spans = [(w.start, w.end) for w in plan_windows(clip["audio"], rate, window) if w.speech]
    targets = list(clip["references"])
    handles, _ = engine.encode([clip["audio"][a:b] for a, b in spans])
    answers = decode_windows(engine, handles, [clip["src_lang"]] * len(spans), "srt", targets, settings)
    texts = {t: join_window_texts([a[t]["text"] for a in answers], t) for t in targets}
    texts[TRANSCRIPT] = join_window_texts([a[targets[0]]["transcript"] or "" for a in answers], clip["src_lang"])
    return texts


def main(argv=None) -> dict:
    import torch

    args = parse_args(argv)
    model, processor, clips = load_set(args)
    model = model.to(args.device).eval()
    engine = TransformersEngine(model, processor)
    settings = {"num_beams": 1, "max_new_tokens": args.max_new_tokens}
    per_target: dict[str, dict] = defaultdict(lambda: defaultdict(list))
    realtime_factor = []
    with torch.inference_mode():
        for n, clip in enumerate(clips):
            live = play(engine, clip, args, settings)
            done = offline(engine, clip, settings)
            realtime_factor.append(live["decode_seconds"] / live["duration"])
            for key in [TRANSCRIPT, *clip["references"]]:
                language = clip["src_lang"] if key == TRANSCRIPT else key
                reference = clip["transcript"] if key == TRANSCRIPT else clip["references"][key]
                scores = per_target[key if key == TRANSCRIPT else f"{clip['src_lang']}-{key}"]
                scores["language"].append(language)
                scores["live"].append(live["texts"][key])
                scores["offline"].append(done[key])
                scores["reference"].append(reference)
                length = len(words_of(reference, language))
                delays = live["delays"][key]
                for name, index in (("", 0), ("_ca", 1)):
                    stamps = [d[0] + (d[1] if index else 0.0) for d in delays]
                    scores["al" + name].append(average_lagging(stamps, live["duration"], length))
                    scores["laal" + name].append(average_lagging(stamps, live["duration"], length, True))
            print(f"[{n + 1}/{len(clips)}] {clip['name']}: {live['texts']}", file=sys.stderr)
    results = {}
    for key, scores in sorted(per_target.items()):
        language = scores["language"][0]
        row = {name: round(statistics.mean(scores[name]), 3) for name in ("al", "laal", "al_ca", "laal_ca")}
        row["clips"] = len(scores["live"])
        row["live_equals_offline"] = sum(a == b for a, b in zip(scores["live"], scores["offline"]))
        if key == TRANSCRIPT:
            row["wer_live"] = round(error_rate(scores["live"], scores["reference"], language)["score"], 4)
            row["wer_offline"] = round(error_rate(scores["offline"], scores["reference"], language)["score"], 4)
            row["wer_live_vs_offline"] = round(error_rate(scores["live"], scores["offline"], language)["score"], 4)
        else:
            row["bleu_live"] = round(corpus_bleu(scores["live"], scores["reference"], language)["score"], 2)
            row["bleu_offline"] = round(corpus_bleu(scores["offline"], scores["reference"], language)["score"], 2)
            row["bleu_live_vs_offline"] = round(corpus_bleu(scores["live"], scores["offline"], language)["score"], 2)
        results[key] = row
    report = {"model": "parrot (llm_srt.testing)" if args.parrot else args.model, "clips": len(clips),
              "pace": args.pace, "chunk_ms": args.chunk_ms, "min_chunk": args.min_chunk,
              "decode_seconds_per_audio_second": round(statistics.mean(realtime_factor), 3), "results": results}
    print(markdown(report))
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2, ensure_ascii=False)
    return report


def markdown(report: dict) -> str:
    lines = ["| direction | clips | AL (s) | LAAL (s) | AL CA (s) | LAAL CA (s) | live BLEU / WER | offline BLEU / WER "
             "| live vs offline | live = offline |", "|---" * 10 + "|"]
    for key, row in report["results"].items():
        if key == TRANSCRIPT:
            quality = (f"WER {row['wer_live']:.3f}", f"WER {row['wer_offline']:.3f}",
                       f"WER {row['wer_live_vs_offline']:.3f}")
        else:
            quality = (f"{row['bleu_live']:.1f}", f"{row['bleu_offline']:.1f}",
                       f"BLEU {row['bleu_live_vs_offline']:.1f}")
        lines.append(f"| {key} | {row['clips']} | {row['al']:.2f} | {row['laal']:.2f} | {row['al_ca']:.2f} | "
                     f"{row['laal_ca']:.2f} | {' | '.join(quality)} | {row['live_equals_offline']}/{row['clips']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
