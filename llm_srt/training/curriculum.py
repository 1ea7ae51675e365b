"""The offline demo: train a tiny LLM-SRT through the curriculum ASR -> SMT -> SRT on CPU and report each stage.

    python trainer_scripts/run_curriculum.py --recipe demo --output_dir runs/demo [--ablation]

What it does, as the paper does at full scale:
1. speaks the demo corpus with espeak-ng (`make_demo_corpus.py`) and computes log-mel features once;
2. gives the tiny components what the real ones bring: the Whisper-style encoder is pre-trained with CTC on the
   transcripts, then frozen ("it already hears"), and a one-layer Whisper decoder is taught language detection on
   the encoder's output, as Whisper's decoder knows it (`src_lang="auto"`); the tiny Qwen2 LLM is pre-trained on the corpus's text in the
   three task formats, with the source text standing where the audio embeddings will go, then frozen ("it already
   translates");
3. assembles the model with a new Q-Former projector and trains only the projector, one stage at a time, each
   stage starting from the previous one's output (`trainer_scripts/train.py`, recipes `demo_*` in `llm_srt/training/recipes/`);
4. evaluates every stage on held-out sentences (never seen in training): ASR WER, SMT BLEU, SRT BLEU and WER, and
   the language detection accuracy on the held-out clips.
`--ablation` also runs the curriculum without the ASR, without the SMT and without the SRT stage (paper Table 8).
Results go to `<output_dir>/results.json` and a Markdown table `<output_dir>/results.md`. The final model
(`<output_dir>/srt`) loads with `pipeline("speech-translation", model=..., trust_remote_code=True)`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from transformers import HfArgumentParser, set_seed



from ..modeling_llm_srt import LlmSrtForConditionalGeneration
from ..decoding_llm_srt import TransformersEngine
from ..evaluation.decoding import decode_rows, evaluate_rows
from ..evaluation.metrics import score_directions
from ..evaluation.quality import quality_directions, speed
from .runs import finished_run
from ..testing import build_tiny_processor, build_tiny_tokenizer, tiny_config, usable_cpus
from . import demo_corpus as make_demo_corpus
from .train import recipe_file
from .train import main as train_stage


logger = logging.getLogger("llm_srt.curriculum")

# name -> sizes and step counts. `demo` is the README's main job; `smoke` only checks that everything runs.
RECIPES = {
    "demo": {
        "languages": "eng,deu,fra", "window_seconds": 3, "num_queries": 16, "width": 128, "num_heads": 4, "llm_layers": 3,
        "llm_heads": 4,  # LLM head size 32: one vLLM's CPU attention supports, so the demo model runs on vLLM
        "ctc_steps": 3000, "lm_steps": 2000, "stage_steps": {"asr": 800, "smt": 400, "srt": 800},
        "batch_size": 16, "lm_batch_size": 32, "eval_rows": None, "lid_steps": 300,
        # each clip as spoken plus 2 versions placed elsewhere in the window (`place_in_window`), heard by the
        # encoder's CTC pre-training (which needs 3000 steps for them: after 1200 its held-out CTC WER was 0.12, after
        # 3000 0.007), the language detector's and every stage (each row in all 3 versions)
        "variants": 3, "placed_versions": ("encoder", "detector", "stages"), "multi_sentence_recordings": 30,
    },
    # quick: the demo with fewer steps and a subset of the test set, for CI's check that the curriculum learns.
    "quick": {
        "languages": "eng,deu,fra", "window_seconds": 3, "num_queries": 16, "width": 128, "num_heads": 4,
        "llm_layers": 3, "ctc_steps": 600, "lm_steps": 1000, "stage_steps": {"asr": 400, "smt": 200, "srt": 400},
        "batch_size": 16, "lm_batch_size": 32, "eval_rows": 120, "lid_steps": 300,
        # the placed versions teach only the language detector: its few CTC and stage steps do not learn them
        "variants": 3, "placed_versions": ("detector",), "multi_sentence_recordings": 0,
    },
    "smoke": {
        "languages": "eng,deu", "window_seconds": 3, "num_queries": 8, "width": 32, "num_heads": 2, "llm_layers": 2,
        "ctc_steps": 5, "lm_steps": 5, "stage_steps": {"asr": 3, "smt": 3, "srt": 3},
        "batch_size": 4, "lm_batch_size": 4, "eval_rows": 8, "lid_steps": 3, "variants": 2,
        "placed_versions": ("encoder", "detector", "stages"),
        "multi_sentence_recordings": 2,
    },
}
CURRICULA = {
    "full": ("asr", "smt", "srt"),
    "w/o ASR": ("smt", "srt"),
    "w/o SMT": ("asr", "srt"),
    "w/o SRT": ("asr", "smt"),
}
UNTRAINED = "untrained (initial)"


def stage_label(stage: str) -> str:
    """The table's label of the full curriculum's model after `stage`: "after SMT"."""
    return f"after {stage.upper()}"


def ablation_label(curriculum: str) -> str:
    """The table's label of an ablation's final model: "w/o ASR (SMT -> SRT)"."""
    return f"{curriculum} ({' -> '.join(stage.upper() for stage in CURRICULA[curriculum])})"


def result_names(ablation: bool = False) -> list[str]:
    """The models of the printed table (and results.json), in order; the ablations only with `--ablation`."""
    names = [UNTRAINED] + [stage_label(stage) for stage in CURRICULA["full"]]
    return names + ([ablation_label(name) for name in CURRICULA if name != "full"] if ablation else [])


@dataclass
class CurriculumArguments:
    recipe: str = field(default="demo", metadata={"help": "demo (10 minutes on 2 CPU cores), quick (about 4) "
                                                               "or smoke (seconds: checks that everything runs)."})
    output_dir: str = field(default="runs/demo", metadata={"help": "Where corpus, stages and results go."})
    data_dir: str | None = field(default=None, metadata={"help": "Corpus folder (default: <output_dir>/data)."})
    ablation: bool = field(default=False, metadata={"help": "Also run the curriculum without each stage."})
    seed: int = field(default=0)


# ------------------------------------------------------------------------------------------------------------ data
def load_split(data_dir: str, split: str) -> list[dict]:
    with open(os.path.join(data_dir, f"{split}.jsonl"), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def place_in_window(audio: np.ndarray, rng: np.random.Generator, rate: int, window_seconds: float,
                    max_lead_seconds: float = 1.2, noise_share: float = 0.5) -> np.ndarray:
    """A training version of a clip: random leading and trailing silence (speech anywhere in the window), a random
    loudness (-10 to +4 dB) and, on `noise_share` of the versions, light noise (-65 to -40 dBFS), so the encoder,
    the language detector and the adapter learn speech, not where it starts. Some versions stay noiseless because
    digital silence (a recording padded with zeros) sits at the log-mel floor, far below any noise. The clip still
    fits the window."""
    room = max(0, int(window_seconds * rate) - len(audio) - int(0.05 * rate))
    lead = int(rng.integers(0, min(room, int(max_lead_seconds * rate)) + 1))
    trail = int(rng.integers(0, room - lead + 1))
    placed = np.concatenate([np.zeros(lead, np.float32), audio, np.zeros(trail, np.float32)])
    placed = placed * 10 ** (rng.uniform(-10, 4) / 20)
    if rng.random() < noise_share:
        placed = placed + rng.normal(0.0, 10 ** (rng.uniform(-65, -40) / 20), len(placed))
    return np.clip(placed, -1.0, 1.0).astype(np.float32)


def with_leading_silence(audio: np.ndarray, rate: int, seconds: float) -> np.ndarray:
    return np.concatenate([np.zeros(int(seconds * rate), np.float32), audio])


def attach_features(rows: list[dict], processor, data_dir: str, variants: int = 1, seed: int = 0,
                    lead_seconds: float = 0.0) -> list[dict]:
    """Compute log-mel features once per clip (rows of several directions share a clip). With `variants` > 1 each
    clip also gets `variants - 1` augmented versions (`place_in_window`) and each row comes once per version (its
    `key` then ends in `#<version>`; the clip as spoken is version 0), so every sentence is heard in several places;
    `clip` names the version (what CTC and language-detection pre-training sample). `lead_seconds` puts that much
    silence before every clip (the robustness test sets)."""
    from tqdm.auto import tqdm

    from ..audio_llm_srt import load_audio

    rate = processor.feature_extractor.sampling_rate
    window = float(processor.feature_extractor.chunk_length)
    rng = np.random.default_rng(seed + 17)
    cache: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    paths = sorted({r["audio"] for r in rows})
    for start in tqdm(range(0, len(paths), 64), desc="log-mel features", unit="batch"):
        chunk = paths[start:start + 64]
        audio = [load_audio(os.path.join(data_dir, p), target_rate=rate) for p in chunk]
        if lead_seconds:  # as much as fits: the demo's window is 3 s and a few clips are longer than 2 s
            audio = [with_leading_silence(a, rate, min(lead_seconds, window - len(a) / rate)) for a in audio]
        for path, clip in zip(chunk, audio):
            seconds[path] = len(clip) / rate
        for variant in range(variants):
            placed = audio if variant == 0 else [place_in_window(a, rng, rate, window) for a in audio]
            for path, feats in zip(chunk, processor.extract_features(placed, rate).numpy()):
                cache[f"{path}#{variant}"] = feats
    return [{**r, "clip": f"{r['audio']}#{v}", "input_features": cache[f"{r['audio']}#{v}"],
             "audio_seconds": seconds[r["audio"]], **({"key": f"{r['key']}#{v}"} if variants > 1 else {})}
            for r in rows for v in range(variants)]


def rows_for(rows: list[dict], part: str, recipe: dict) -> list[dict]:
    """The training rows `part` ("encoder", "detector" or "stages") learns from: every version of each clip when the
    recipe's `placed_versions` names it, else the clips as spoken."""
    return rows if part in recipe["placed_versions"] else [r for r in rows if r["clip"].endswith("#0")]


def save_rows(rows: list[dict], path: str) -> str:
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(path)
    return path


# ---------------------------------------------------------------------------------------------- component training
def pretrain_encoder_ctc(model, train_rows: list[dict], steps: int, batch_size: int, seed: int) -> float:
    """CTC on characters through the Whisper encoder, so the encoder hears before the adapter is trained."""
    from tqdm.auto import tqdm

    encoder = model.audio_tower
    clips = {r["clip"]: r for r in train_rows}  # one row per clip version
    items = list(clips.values())
    chars = sorted({c for r in items for c in r["transcript"].lower()})
    index = {c: i + 1 for i, c in enumerate(chars)}  # 0 = blank
    head = torch.nn.Linear(encoder.config.d_model, len(chars) + 1)
    params = [*encoder.parameters(), *head.parameters()]
    encoder.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    generator = np.random.default_rng(seed)
    encoder.train()
    loss_value = float("nan")
    for _ in tqdm(range(steps), desc="encoder CTC pre-training", unit="step"):
        batch = [items[i] for i in generator.choice(len(items), batch_size, replace=False)]
        features = torch.stack([torch.as_tensor(r["input_features"]) for r in batch])
        log_probs = head(encoder(features).last_hidden_state).log_softmax(-1).transpose(0, 1)
        targets = [torch.tensor([index[c] for c in r["transcript"].lower()]) for r in batch]
        loss = torch.nn.functional.ctc_loss(
            log_probs, torch.cat(targets), torch.full((len(batch),), log_probs.shape[0], dtype=torch.long),
            torch.tensor([len(t) for t in targets]), zero_infinity=True,
        )
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        loss_value = loss.item()
    encoder.eval()
    return loss_value


@torch.no_grad()
def encode_clips(encoder, rows: list[dict], batch_size: int = 64) -> torch.Tensor:
    """The (frozen) encoder's output for each row's clip, `(rows, frames, d_model)`."""
    states = []
    for start in range(0, len(rows), batch_size):
        features = torch.stack([torch.as_tensor(r["input_features"]) for r in rows[start:start + batch_size]])
        states.append(encoder(features).last_hidden_state)
    return torch.cat(states)


def pretrain_language_detector(model, train_rows: list[dict], steps: int, batch_size: int, seed: int) -> float:
    """Teach a one-layer Whisper decoder language detection on the pre-trained, frozen encoder's output, as
    Whisper's decoder predicts the language token after <|startoftranscript|>; it is saved with the model.

    Its own random streams (torch and numpy) leave every other part of the demo exactly as without it."""
    from tqdm.auto import tqdm

    from ..language_detection_llm_srt import WHISPER_CODES, LlmSrtLanguageDetector

    clips = list({r["clip"]: r for r in train_rows}.values())
    languages = sorted({r["src_lang"] for r in clips})
    states = encode_clips(model.audio_tower.eval(), clips)
    labels = torch.tensor([languages.index(r["src_lang"]) for r in clips])
    generator = np.random.default_rng(seed + 1)
    loss_value = float("nan")
    with torch.random.fork_rng():
        torch.manual_seed(seed + 1)
        detector = LlmSrtLanguageDetector(model.config.audio_config, [WHISPER_CODES[code] for code in languages])
        detector.train().requires_grad_(True)
        optimizer = torch.optim.AdamW(detector.parameters(), lr=1e-3)
        for _ in tqdm(range(steps), desc="language detection pre-training", unit="step"):
            picks = torch.as_tensor(generator.choice(len(clips), min(batch_size, len(clips)), replace=False))
            loss = torch.nn.functional.cross_entropy(detector(states[picks]), labels[picks])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_value = loss.item()
    model.set_language_detector(detector.eval(), save_with_model=True)
    return loss_value


def language_detection_accuracy(model, rows: list[dict]) -> float:
    """Share of the held-out clips whose detected language (`model.detect_language`) is the spoken one."""
    clips = list({r["audio"]: r for r in rows}.values())
    features = torch.stack([torch.as_tensor(r["input_features"]) for r in clips])
    detected = []
    for start in range(0, len(clips), 64):
        detected += [d["language"] for d in model.detect_language(features[start:start + 64])]
    return sum(d == r["src_lang"] for d, r in zip(detected, clips)) / len(clips)


def text_task_batch(processor, rows: list[dict], tasks: list[str]) -> dict[str, torch.Tensor]:
    """Text-only training sequences in the three formats: the source text, right-aligned, fills the audio slots."""
    q = processor.num_audio_tokens
    ids, masks, labels = [], [], []
    for row, task in zip(rows, tasks):
        data = processor.prepare_text(task, [row["src_lang"]], [row["tgt_lang"] if task != "asr" else None],
                                      [row["transcript"]], [row["translation"] if task != "asr" else None])
        seq = data["input_ids"][0]
        source = processor.tokenizer.encode(row["transcript"])[-q:]
        seq[q - len(source):q] = source
        ids.append(seq)
        masks.append(data["attention_mask"][0])
        labels.append(data["labels"][0])
    width = max(len(s) for s in ids)
    pad = processor.tokenizer.pad_token_id
    return {
        "input_ids": torch.tensor([s + [pad] * (width - len(s)) for s in ids]),
        "attention_mask": torch.tensor([m + [0] * (width - len(m)) for m in masks]),
        "labels": torch.tensor([lab + [-100] * (width - len(lab)) for lab in labels]),
    }


def pretrain_llm(model, processor, train_rows: list[dict], steps: int, batch_size: int, seed: int) -> float:
    """Teach the tiny LLM the corpus's languages and the three task formats from text (the audio slots hold text)."""
    from tqdm.auto import tqdm

    llm = model.language_model
    llm.requires_grad_(True)
    optimizer = torch.optim.AdamW(llm.parameters(), lr=1e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 100))
    generator = np.random.default_rng(seed)
    llm.train()
    loss_value = float("nan")
    for _ in tqdm(range(steps), desc="LLM text pre-training", unit="step"):
        picks = generator.choice(len(train_rows), batch_size, replace=False)
        tasks = list(generator.choice(["asr", "smt", "srt"], batch_size))
        batch = text_task_batch(processor, [train_rows[i] for i in picks], tasks)
        loss = llm(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(llm.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        loss_value = loss.item()
    llm.eval()
    return loss_value


def build_initial_model(recipe: dict, tokenizer, train_rows, work_dir: str, seed: int):
    """Tiny components, each pre-trained on its own, then frozen; a new projector: what stage I starts from."""
    width = recipe["width"]
    config = tiny_config(
        len(tokenizer), num_queries=recipe["num_queries"], window_seconds=recipe["window_seconds"],
        encoder_width=width, qformer_width=width, llm_width=width, tie_word_embeddings=True,
        num_heads=recipe["num_heads"], llm_layers=recipe["llm_layers"], ffn_multiplier=4,
        llm_heads=recipe.get("llm_heads"),
    )
    config.text_config.eos_token_id = config.text_config.bos_token_id = tokenizer.eos_token_id
    torch.manual_seed(seed)
    model = LlmSrtForConditionalGeneration(config)
    processor = build_tiny_processor(config, tokenizer)
    ctc = pretrain_encoder_ctc(model, rows_for(train_rows, "encoder", recipe), recipe["ctc_steps"], recipe["batch_size"],
                               seed)
    lid = pretrain_language_detector(model, rows_for(train_rows, "detector", recipe), recipe["lid_steps"], 32, seed)
    lm = pretrain_llm(model, processor, train_rows, recipe["lm_steps"], recipe["lm_batch_size"], seed)
    model.set_trainable()  # freeze encoder and LLM again; projector trainable
    folder = os.path.join(work_dir, "initial")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder, {"encoder_ctc_loss": ctc, "language_detection_loss": lid, "llm_text_loss": lm}


# --------------------------------------------------------------------------------------------------- curriculum
def run_stages(stages, initial: str, train_data: str, recipe: dict, out_dir: str, seed: int) -> list[str]:
    """Train each stage from the previous stage's output; returns the stage folders."""
    folders, previous = [], initial
    for stage in stages:
        folder = os.path.join(out_dir, stage)
        if finished_run(folder) is None:  # a stage whose final save a kill cut (no marker) is trained again
            train_stage([
                "--recipe", recipe_file(f"demo_{stage}"), "--init_from", previous, "--train_file", train_data,
                "--output_dir", folder, "--max_steps", str(recipe["stage_steps"][stage]),
                "--per_device_train_batch_size", str(recipe["batch_size"]), "--seed", str(seed),
                *(["--overwrite_output_dir", "true"] if os.path.exists(folder) else []),
            ])
        folders.append(folder)
        previous = folder
    return folders


def multi_sentence_recordings(test_rows: list[dict], data_dir: str, rate: int, count: int, seed: int) -> list[dict]:
    """Held-out recordings of two or three sentences with pauses of 0.3-0.8 s, in one language or two (so a
    recording's windows differ in language), and a target language none of its sentences is in."""
    from ..audio_llm_srt import load_audio

    clips: dict[tuple, dict] = {}
    for row in test_rows:
        clips.setdefault((row["sentence_id"], row["src_lang"]), {"audio": row["audio"], "src": row["src_lang"],
                                                               "texts": {row["src_lang"]: row["transcript"]}})
        clips[(row["sentence_id"], row["src_lang"])]["texts"][row["tgt_lang"]] = row["translation"]
    languages = sorted({row["src_lang"] for row in test_rows})
    by_language = {lang: [c for c in clips.values() if c["src"] == lang] for lang in languages}
    rng = np.random.default_rng(seed + 23)
    recordings = []
    for index in range(count):
        # two languages in every other recording, where a third is left for the target
        mixed = index % 2 and len(languages) > 2
        spoken = list(rng.choice(languages, 2, replace=False)) if mixed else [languages[index % len(languages)]]
        target = [lang for lang in languages if lang not in spoken][0]
        sentences = [by_language[spoken[i % len(spoken)]][int(rng.integers(len(by_language[spoken[i % len(spoken)]])))]
                     for i in range(int(rng.integers(2, 4)))]
        pieces, spans, cursor = [], [], 0
        for sentence in sentences:
            audio = load_audio(os.path.join(data_dir, sentence["audio"]), target_rate=rate)
            pause = np.zeros(int(rng.uniform(0.3, 0.8) * rate), np.float32)
            pieces += [audio, pause]
            spans.append((cursor / rate, (cursor + len(audio)) / rate, sentence["src"]))
            cursor += len(audio) + len(pause)
        recordings.append({"audio": np.concatenate(pieces), "spans": spans, "target": target,
                           "reference": " ".join(s["texts"][target] for s in sentences)})
    return recordings


def evaluate_multi_sentence(model, processor, recordings: list[dict], generate: dict) -> dict:
    """SRT BLEU and per-window language-ID accuracy of multi-sentence recordings through the pipeline's long-audio
    path (cut at pauses, each window's language detected, `language_per_window=True`)."""
    from ..evaluation.metrics import corpus_bleu
    from ..pipeline_llm_srt import SpeechTranslationPipeline

    pipe = SpeechTranslationPipeline(model=model, processor=processor)
    rate = processor.feature_extractor.sampling_rate
    hypotheses, right, windows = {}, 0, []
    for recording in recordings:
        out = pipe({"array": recording["audio"], "sampling_rate": rate}, src_lang="auto", tgt_lang=recording["target"],
                   language_per_window=True, return_timestamps=True, generate_kwargs=generate)
        hypotheses.setdefault(recording["target"], []).append((out["text"], recording["reference"]))
        for chunk in out["chunks"]:
            if "detected_language" not in chunk:
                continue  # a silent window
            start, end = chunk["timestamp"]
            spoken = max(recording["spans"], key=lambda s: min(end, s[1]) - max(start, s[0]))[2]
            right += chunk["detected_language"] == spoken
            windows.append(chunk["detected_language"])
    bleu = [corpus_bleu([h for h, _ in pairs], [r for _, r in pairs], tgt)["score"]
            for tgt, pairs in hypotheses.items()]
    return {"srt_bleu": float(np.mean(bleu)), "language_id_accuracy": right / max(len(windows), 1),
            "recordings": len(recordings), "windows": len(windows)}


def evaluate_model(folder: str, test_rows: list[dict], robustness: dict[str, list[dict]] | None = None,
                   recordings: list[dict] | None = None) -> dict:
    """Held-out scores of one model on the three tasks (greedy decoding); with `robustness` (name -> test rows
    whose clips start with silence) its SRT BLEU and language ID on each, and with `recordings` the
    multi-sentence scores (`evaluate_multi_sentence`)."""
    from ..processing_llm_srt import LlmSrtProcessor

    model = LlmSrtForConditionalGeneration.from_pretrained(folder).eval()
    processor = LlmSrtProcessor.from_pretrained(folder)
    engine = TransformersEngine(model, processor)
    generate = {"num_beams": 1, "max_new_tokens": 48, "no_repeat_ngram_size": 0}
    asr_rows = list({r["audio"]: r for r in test_rows}.values())
    scores = {}
    with torch.inference_mode():
        scores["asr_wer"] = evaluate_rows(engine, asr_rows, "asr", batch_size=64,
                                          generate_kwargs=generate)["averages"]["wer"]
        scores["smt_bleu"] = evaluate_rows(engine, test_rows, "smt", batch_size=64,
                                           generate_kwargs=generate)["averages"]["bleu"]
        tick = time.perf_counter()
        decoded = decode_rows(engine, test_rows, "srt", batch_size=64, generate_kwargs=generate)
        wall = time.perf_counter() - tick
        for name, rows in (robustness or {}).items():
            shifted = evaluate_rows(engine, rows, "srt", batch_size=64, generate_kwargs=generate)
            scores[f"srt_bleu_{name}"] = shifted["averages"]["bleu"]
            scores[f"language_id_accuracy_{name}"] = language_detection_accuracy(model, rows)
        if recordings:
            multi = evaluate_multi_sentence(model, processor, recordings, generate)
            scores["srt_bleu_multi_sentence"] = multi["srt_bleu"]
            scores["language_id_accuracy_multi_sentence"] = multi["language_id_accuracy"]
            scores["language_id_windows_multi_sentence"] = multi["windows"]
    srt, quality = score_directions(decoded, "srt"), quality_directions(decoded, "srt")["overall"]
    scores["srt_bleu"] = srt["averages"]["bleu"]
    scores.update(srt_chrf=quality["chrf"], srt_off_target_rate=quality["off_target_rate"],
                  srt_empty_rate=quality["empty_rate"], srt_loop_rate=quality["loop_rate"],
                  srt_speed=speed(sum(r["audio_seconds"] for r in test_rows), wall, len(test_rows), "cpu",
                                  "transformers"))
    scores["srt_wer"] = srt["averages"].get("wer")
    scores["srt_bleu_by_direction"] = {k: round(v["bleu"]["score"], 1) for k, v in srt["directions"].items()}
    scores["language_id_accuracy"] = language_detection_accuracy(model, test_rows)
    return scores


ROBUSTNESS_COLUMNS = (  # (results key, column, as README's "Demo results" shows it): leading silence, multi-sentence
    ("srt_bleu_lead_0.3s", "0.3 s silence first"), ("language_id_accuracy_lead_0.3s", "language ID"),
    ("srt_bleu_lead_1.0s", "1.0 s silence first"), ("language_id_accuracy_lead_1.0s", "language ID"),
    ("srt_bleu_multi_sentence", "multi-sentence recordings"),
    ("language_id_accuracy_multi_sentence", "language ID per window"),
)


def robustness_table(results: dict) -> str:
    """Scores with speech elsewhere than at the window's start (SRT BLEU, language ID), for the models that have
    them (the final model)."""
    rows = {name: s for name, s in results.items() if any(key in s for key, _ in ROBUSTNESS_COLUMNS)}
    if not rows:
        return ""
    lines = ["| final model | SRT BLEU (clean) | " + " | ".join(label for _, label in ROBUSTNESS_COLUMNS) + " |",
             "|---" * (len(ROBUSTNESS_COLUMNS) + 2) + "|"]
    for name, s in rows.items():
        cells = ["-" if key not in s else f"{s[key]:.1f}" if key.startswith("srt") else f"{s[key]:.3f}"
                 for key, _ in ROBUSTNESS_COLUMNS]
        windows = s.get("language_id_windows_multi_sentence")
        if windows is not None and "language_id_accuracy_multi_sentence" in s:
            cells[-1] += f" ({windows} windows)"
        lines.append(f"| {name} | {s['srt_bleu']:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_table(results: dict) -> str:
    lines = ["| model | ASR WER | SMT BLEU | SRT BLEU | SRT chrF++ | SRT WER | SRT off-target | SRT empty | SRT loops "
             "| SRT RTFx | language ID |", "|---|---|---|---|---|---|---|---|---|---|---|"]

    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    for name, s in results.items():
        rtfx = (s.get("srt_speed") or {}).get("rtfx")
        lines.append(f"| {name} | {s['asr_wer']:.3f} | {s['smt_bleu']:.1f} | {s['srt_bleu']:.1f} | "
                     f"{fmt(s.get('srt_chrf'), '.1f')} | {fmt(s.get('srt_wer'), '.3f')} | "
                     f"{fmt(s.get('srt_off_target_rate'), '.1%')} | {fmt(s.get('srt_empty_rate'), '.1%')} | "
                     f"{fmt(s.get('srt_loop_rate'), '.1%')} | {fmt(rtfx, '.1f')} | "
                     f"{fmt(s.get('language_id_accuracy'), '.3f')} |")
    return "\n".join(lines)


def run(args: CurriculumArguments) -> dict:
    if args.recipe not in RECIPES:
        raise ValueError(f"Unknown recipe {args.recipe!r}; choose from {sorted(RECIPES)}.")
    recipe = RECIPES[args.recipe]
    set_seed(args.seed)
    torch.set_num_threads(max(1, usable_cpus()))
    started = time.time()
    data_dir = args.data_dir or os.path.join(args.output_dir, "data")
    if not os.path.exists(os.path.join(data_dir, "test.jsonl")):
        make_demo_corpus.make_corpus(make_demo_corpus.CorpusArguments(
            output_dir=data_dir, languages=recipe["languages"], seed=args.seed))
    train_rows, test_rows = load_split(data_dir, "train"), load_split(data_dir, "test")
    if recipe["eval_rows"]:
        test_rows = test_rows[: recipe["eval_rows"]]
    texts = {t for r in train_rows for t in (r["transcript"], r["translation"])}
    tokenizer = build_tiny_tokenizer(sorted(texts), vocab_size=600)
    feature_processor = build_tiny_processor(
        tiny_config(len(tokenizer), num_queries=recipe["num_queries"], window_seconds=recipe["window_seconds"]),
        tokenizer,
    )
    # Training clips: as spoken plus augmented versions placed anywhere in the window (see place_in_window), for the
    # parts the recipe names; the others train on the clips as spoken (version 0).
    train_rows = attach_features(train_rows, feature_processor, data_dir, variants=recipe["variants"], seed=args.seed)
    stage_rows = rows_for(train_rows, "stages", recipe)
    robustness = {f"lead_{seconds}s": attach_features(test_rows, feature_processor, data_dir, lead_seconds=seconds)
                  for seconds in (0.3, 1.0)}
    test_rows = attach_features(test_rows, feature_processor, data_dir)
    recordings = multi_sentence_recordings(test_rows, data_dir, feature_processor.feature_extractor.sampling_rate,
                                           recipe["multi_sentence_recordings"], args.seed)
    train_data = save_rows(stage_rows, os.path.join(args.output_dir, "train_features"))

    initial, pretraining = build_initial_model(recipe, tokenizer, train_rows, args.output_dir, args.seed)
    results = {UNTRAINED: evaluate_model(initial, test_rows)}
    timings = {"setup_s": round(time.time() - started, 1)}
    curricula = CURRICULA if args.ablation else {"full": CURRICULA["full"]}
    for name, stages in curricula.items():
        out_dir = args.output_dir if name == "full" else os.path.join(args.output_dir, "ablation", name.replace("w/o ", "without_"))
        tick = time.time()
        folders = run_stages(stages, initial, train_data, recipe, out_dir, args.seed)
        timings[f"{name}_train_s"] = round(time.time() - tick, 1)
        if name == "full":
            for stage, folder in zip(stages, folders):
                results[stage_label(stage)] = evaluate_model(
                    folder, test_rows, robustness if stage == stages[-1] else None,
                    recordings if stage == stages[-1] else None)
        else:
            results[ablation_label(name)] = evaluate_model(folders[-1], test_rows)
    timings["total_s"] = round(time.time() - started, 1)
    report = {"recipe": args.recipe, "settings": recipe, "pretraining": pretraining, "results": results,
              "timings": timings, "held_out_rows": len(test_rows), "arguments": asdict(args)}
    with open(os.path.join(args.output_dir, "results.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2, ensure_ascii=False)
    table = markdown_table(results)
    robust = robustness_table(results)
    if robust:
        table += "\n\nSpeech anywhere in the window (held-out clips after leading silence; held-out recordings of " \
                 "2-3 sentences, one or two languages, through the pipeline's long-audio path):\n\n" + robust
    with open(os.path.join(args.output_dir, "results.md"), "w", encoding="utf-8") as handle:
        handle.write(table + "\n")
    print("\nHeld-out results (sentences never seen in training; greedy decoding):\n" + table)
    print(f"\nTotal time {timings['total_s']:.0f} s. Final model: {os.path.join(args.output_dir, 'srt')}")
    return report


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    (args,) = HfArgumentParser(CurriculumArguments).parse_args_into_dataclasses(args=argv)
    return run(args)

