#!/usr/bin/env python
"""What the speech detector (Silero VAD, `vad_filter`) keeps and what it removes, on a trained model and its test set.

    python benchmarks/speech_detection.py --model runs/demo/srt --data_dir runs/demo/data --output runs/vad.json

Speech kept: every SRT row of the set (`test.jsonl`: `audio, src_lang, tgt_lang, translation`, the demo corpus'
format) through the pipeline, greedy, with the detector on and off, as recorded (clean), quiet (-40 dBFS RMS), in
white noise at 10 dB SNR, and with 1 s of silence before and after; BLEU per direction averaged (the paper's
average). Non-speech: the generated sounds of `llm_srt.evaluation.quality.non_speech_clips` (noise, tones, hum,
clicks, typing, music, DC offset) through the path every caller takes: the share the model wrote text for. Time
saved: one recording of the set's clips separated by 3 s of silence or noise, its windows and decoding time with
the detector on and off.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict

import numpy as np
import torch
from transformers import pipeline

from llm_srt.audio_llm_srt import load_audio
from llm_srt.engines.loading import load_model_and_processor
from llm_srt.evaluation.metrics import corpus_bleu
from llm_srt.evaluation.quality import _level as rms_level  # the non-speech set's own level rule
from llm_srt.evaluation.quality import non_speech_check
from llm_srt.speech_llm_srt import VadOptions
from llm_srt.transcription_llm_srt import plan_windows

GENERATE = {"num_beams": 1, "max_new_tokens": 48, "no_repeat_ngram_size": 0}  # the demo's evaluation settings


def conditions(audio: np.ndarray, rate: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The clip as recorded, quiet, in noise at 10 dB SNR, and with 1 s of silence on both sides."""
    speech_power = np.mean(audio ** 2)
    noise = rng.standard_normal(len(audio)).astype(np.float32) * np.sqrt(speech_power / 10)
    silence = np.zeros(rate, np.float32)
    return {"clean": audio, "quiet (-40 dBFS)": rms_level(audio, -40), "noise 10 dB SNR": audio + noise,
            "1 s silence around": np.concatenate([silence, audio, silence])}


def speech_kept(pipe, rows: list[dict], data_dir: str, rate: int) -> dict:
    """BLEU (average over directions) per condition, detector on and off."""
    rng = np.random.default_rng(0)
    clips = {path: conditions(load_audio(os.path.join(data_dir, path), target_rate=rate), rate, rng)
             for path in dict.fromkeys(r["audio"] for r in rows)}
    by_direction = defaultdict(list)
    for row in rows:
        by_direction[(row["src_lang"], row["tgt_lang"])].append(row)
    out = {}
    for condition in next(iter(clips.values())):
        for vad_filter in (True, False):
            scores, empty = [], 0
            for (src, tgt), group in sorted(by_direction.items()):
                answers = pipe([{"raw": clips[r["audio"]][condition], "sampling_rate": rate} for r in group],
                               src_lang=src, tgt_lang=tgt, batch_size=64, vad_filter=vad_filter,
                               generate_kwargs=GENERATE)
                texts = [a["text"] for a in answers]
                empty += sum(not t for t in texts)
                scores.append(corpus_bleu(texts, [r["translation"] for r in group], tgt)["score"])
            key = f"{condition} | vad {'on' if vad_filter else 'off'}"
            out[key] = {"bleu": round(float(np.mean(scores)), 1), "empty": empty, "rows": len(rows)}
            print(f"{key:40s} BLEU {out[key]['bleu']:5.1f}  empty {empty}/{len(rows)}", flush=True)
    return out


def time_saved(pipe, rows: list[dict], data_dir: str, rate: int) -> dict:
    """A recording that is half speech, half silence or noise: windows and seconds with the detector on and off."""
    rng = np.random.default_rng(1)
    parts = []
    for row in list({r["audio"]: r for r in rows if r["src_lang"] == "eng"}.values())[:10]:
        speech = load_audio(os.path.join(data_dir, row["audio"]), target_rate=rate)
        gap = len(speech)  # as long as the speech: half the recording is not speech
        filler = np.zeros(gap, np.float32) if len(parts) % 4 == 0 else \
            rms_level(rng.standard_normal(gap), -35)
        parts += [speech, filler]
    recording = np.concatenate(parts)
    out = {"seconds_of_audio": round(len(recording) / rate, 1)}
    for vad in (VadOptions(), None):
        windows = plan_windows(recording, rate, float(pipe.processor.feature_extractor.chunk_length), vad)
        tick = time.perf_counter()
        pipe({"raw": recording, "sampling_rate": rate}, src_lang="eng", tgt_lang="deu", vad_filter=vad is not None,
             generate_kwargs=GENERATE)
        out[f"vad {'on' if vad else 'off'}"] = {
            "windows": sum(w.speech for w in windows), "seconds": round(time.perf_counter() - tick, 2),
            "audio_decoded_s": round(sum(w.end - w.start for w in windows if w.speech) / rate, 1)}
    print(f"half speech, half silence/noise ({out['seconds_of_audio']} s): {out}", flush=True)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model folder")
    parser.add_argument("--data_dir", required=True, help="folder of test.jsonl and its audio")
    parser.add_argument("--output", required=True, help="JSON file of the results")
    args = parser.parse_args(argv)
    model, processor = load_model_and_processor(args.model, False, torch.float32)
    pipe = pipeline("speech-translation", model=model.eval(), processor=processor)
    rate = processor.feature_extractor.sampling_rate
    with open(os.path.join(args.data_dir, "test.jsonl"), encoding="utf-8") as file:
        rows = [json.loads(line) for line in file if line.strip()]
    results = {"model": args.model, "rows": len(rows), "date": time.strftime("%Y-%m-%d"),
               "load_average_1min": round(os.getloadavg()[0], 2), "vad": VadOptions().__dict__}
    with torch.inference_mode():
        results["speech_kept"] = speech_kept(pipe, rows, args.data_dir, rate)
        check = non_speech_check(pipe.engine, "srt", "eng", "deu", generate_kwargs=GENERATE)
        results["non_speech"] = {setting: {"texts_written": sum(bool(t) for t in check[setting]["text"].values()),
                                           "clips": len(check[setting]["text"]),
                                           "windows_decoded": check[setting]["windows_decoded"],
                                           "text": check[setting]["text"]} for setting in ("vad", "no_vad")}
        for setting in ("vad", "no_vad"):
            print(f"non-speech, {setting}: text for {results['non_speech'][setting]['texts_written']} of "
                  f"{results['non_speech'][setting]['clips']} sounds", flush=True)
        results["half_speech"] = time_saved(pipe, rows, args.data_dir, rate)
    with open(args.output, "w", encoding="utf-8") as file:
        json.dump(results, file, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
