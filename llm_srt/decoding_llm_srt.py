"""The decoding seam: the one way every caller (pipeline, evaluation, the server, live decoding) turns audio windows and
prompts into answers.

A [`DecodingEngine`] turns audio windows into engine-private audio handles (`encode`, with Whisper-style language
detection on the way) and decodes rows (`decode_rows`: each (window, task, languages) row on its own, the original's
decoding; `decode_shared_transcript`: every target of a window after one transcript). [`decode_window_rows`] applies
the rules every caller shares (several SRT targets share the transcript by default) and [`vote_language`] /
[`join_window_texts`] combine the windows of one input. [`TransformersEngine`] is the engine of a transformers model;
another engine (vLLM's, `llm_srt.vllm.engine`) implements the same three methods.

Engine-neutral data: windows are 16 kHz mono float32 numpy arrays (or log-mel features an engine accepts), settings
are plain generate keywords (`num_beams`, `max_new_tokens`, `no_repeat_ngram_size`, `do_sample`, `temperature`,
...), and every answer is a plain dict:

    {"text": str,             # what the reader of this task wants: the transcript (asr) or the translation
     "transcript": str | None, "translation": str | None,
     "raw": str,              # the decoded answer, special tags kept
     "well_formed": bool,     # an SRT answer holding its tag pair (always True for asr/smt)
     "complete": bool,        # ended by EOS; False when the token budget (max_new_tokens) cut it (a cut SRT
                              # answer without its tag pair has an empty translation: its text is a transcript)
     "token_ids": list[int]}  # the answer's ids, without EOS and padding
"""

from __future__ import annotations

import abc
import collections
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .generation_llm_srt import generate_many_targets
from .languages_llm_srt import UNSPACED_LANGUAGES, normalize_language



@dataclass(frozen=True)
class DecodeRow:
    """One answer to decode: audio window `window` (an index into the handles given with it) for `task` (asr, smt,
    srt) from `src_lang` into `tgt_lang` (None for asr); `transcript` is the SMT prompt's source text."""

    window: int
    task: str
    src_lang: str
    tgt_lang: str | None = None
    transcript: str | None = None


def as_decoded(row: DecodeRow) -> DecodeRow:
    """The row actually decoded for `row`: a translation into the spoken language is its transcript, decoded as ASR
    (the task the models learned). The models never learned SRT into the source's own language (`<|eng|><|eng|>`),
    and its answer's transcript came back wrong ("three white birds" for "two white birds"). The one rule of the
    pipeline, the server, live decoding and evaluation."""
    if row.task == "srt" and normalize_language(row.tgt_lang) == normalize_language(row.src_lang):
        return DecodeRow(row.window, "asr", row.src_lang)
    return row


def answer_record(processor, token_ids: Sequence[int], row: DecodeRow) -> dict[str, Any]:
    """The engine-neutral answer dict (module docstring) of one row's generated ids (EOS and padding included or
    not): `complete` is whether EOS ended it."""
    ids = [int(i) for i in token_ids]
    eos, pad = processor.eos_token_id, processor.pad_token_id
    complete = eos in ids
    if complete:
        ids = ids[: ids.index(eos)]
    while ids and ids[-1] == pad:  # right padding of a batch (pad may differ from eos)
        ids.pop()
        complete = True
    decoded = processor.post_process(torch.tensor([ids], dtype=torch.long), task=row.task, src_lang=row.src_lang,
                                     tgt_lang=row.tgt_lang if row.task == "srt" else None)[0]
    transcript, translation = decoded.get("transcript"), decoded.get("translation")
    if row.task == "srt" and not complete and not decoded.get("well_formed", True):
        # cut by the token budget before the tag pair: what was decoded is (part of) the transcript, never a
        # translation (split_srt_output's fallback would label it one)
        transcript, translation = decoded["raw"].split("<|")[0].strip(), ""
    return {
        "text": (transcript if row.task == "asr" else translation) or "",
        "transcript": transcript,
        "translation": translation,
        "raw": decoded["raw"],
        "well_formed": bool(decoded.get("well_formed", True)),
        "complete": complete,
        "token_ids": ids,
    }


class DecodingEngine(abc.ABC):
    """Audio windows + prompts -> answers: what the pipeline, evaluation, the server and live streaming call.

    An engine owns a model, its processor and its `config` (the model's `LlmSrtConfig`). `encode` turns windows into per-window handles (engine-private: the
    transformers engine keeps audio embeddings, another engine may keep the audio itself), detecting the spoken
    language on the way when asked; the decode methods take those handles and return answer dicts.
    """

    name: str = "abstract"

    def __init__(self, processor):
        self.processor = processor

    @property
    def sampling_rate(self) -> int:
        return self.processor.feature_extractor.sampling_rate

    @property
    def window_seconds(self) -> float:
        """The model's window: longer audio is cut at pauses into windows at most this long."""
        return float(self.processor.feature_extractor.chunk_length)

    @abc.abstractmethod
    def encode(
        self, windows: Sequence[np.ndarray] | None = None, input_features: torch.Tensor | None = None,
        detect_language: bool = False,
    ) -> tuple[list[Any], list[dict] | None]:
        """Per-window handles of `windows` (16 kHz float32 arrays) or of their log-mel `input_features`, and with
        `detect_language` one detection per window (`{"language", "probability", "probabilities",
        "whisper_language", "supported"}`), else None."""

    @abc.abstractmethod
    def decode_rows(self, audio: Sequence[Any], rows: Sequence[DecodeRow], settings: dict | None = None
                    ) -> list[dict[str, Any]]:
        """Each row decoded on its own (the original's decoding), all in one batch where the engine can; one answer
        per row, in order."""

    @abc.abstractmethod
    def decode_shared_transcript(self, audio: Sequence[Any], src_lang: str, targets: Sequence[str],
                                 settings: dict | None = None, transcripts: Sequence[str | None] | None = None
                                 ) -> list[list[dict[str, Any]]]:
        """SRT of every audio into every target with each audio's transcript decoded once; per audio, one answer
        per target (in `targets`' order). `transcripts` (one per audio; None where unknown) skip that decode: only
        the translations after them are decoded."""

    def detect_languages(self, windows: Sequence[np.ndarray]) -> list[dict]:
        """One language detection per window."""
        return self.encode(windows, detect_language=True)[1]


class TransformersEngine(DecodingEngine):
    """The engine of an `LlmSrtForConditionalGeneration`: `generate` and [`generate_many_targets`]; handles are the
    windows' audio embeddings `(num_queries, hidden)`."""

    name = "transformers"

    def __init__(self, model, processor):
        super().__init__(processor)
        self.model = model

    @property
    def config(self):
        """The model's `LlmSrtConfig` (what it was trained on, its shapes)."""
        return self.model.config

    @property
    def device(self) -> torch.device:
        return next(self.model.audio_tower.parameters()).device

    @torch.inference_mode()
    def encode(self, windows=None, input_features=None, detect_language=False):
        if (windows is None) == (input_features is None):
            raise ValueError("Pass exactly one of windows and input_features.")
        if input_features is None:
            input_features = self.processor.extract_features(list(windows), self.sampling_rate)
        tower = next(self.model.audio_tower.parameters())
        features = input_features.to(device=tower.device, dtype=tower.dtype)
        if not detect_language:
            return list(self.model.get_audio_features(features)), None
        embeds, states = self.model.get_audio_features(features, return_encoder_states=True)
        return list(embeds), self.model.detect_language(encoder_hidden_states=states)

    @torch.inference_mode()
    def decode_rows(self, audio, rows, settings=None):
        if not rows:
            return []
        processor = self.processor
        blocks = [processor.prompt_blocks(row.task, row.src_lang, [row.tgt_lang], [row.transcript])[0] for row in rows]
        padded = processor.pad_prompt_blocks(blocks)
        device = self.device
        embeds = torch.stack([audio[row.window] for row in rows]).to(device)
        generated = self.model.generate(
            input_ids=torch.tensor(padded["input_ids"], device=device),
            attention_mask=torch.tensor(padded["attention_mask"], device=device),
            audio_embeds=embeds, **dict(settings or {}),
        )
        return [answer_record(processor, ids.tolist(), row) for ids, row in zip(generated, rows)]

    @torch.inference_mode()
    def decode_shared_transcript(self, audio, src_lang, targets, settings=None, transcripts=None):
        targets = list(targets)
        if transcripts is not None and any(t is None for t in transcripts):
            # generate_many_targets takes all transcripts or none: decode the unknown ones first
            known = [a for a, t in enumerate(transcripts) if t is not None]
            unknown = [a for a, t in enumerate(transcripts) if t is None]
            answers: list = [None] * len(audio)
            for group, given in ((known, [transcripts[a] for a in known]), (unknown, None)):
                if group:
                    for a, per_target in zip(group, self.decode_shared_transcript(
                            [audio[a] for a in group], src_lang, targets, settings, given)):
                        answers[a] = per_target
            return answers
        ids = generate_many_targets(self.model, self.processor, src_lang, targets,
                                    audio_embeds=torch.stack(list(audio)).to(self.device), shared_transcript=True,
                                    transcripts=None if transcripts is None else list(transcripts),
                                    **dict(settings or {}))
        answers = [answer_record(self.processor, row_ids.tolist(), DecodeRow(0, "srt", src_lang, targets[r % len(targets)]))
                   for r, row_ids in enumerate(ids)]
        return [answers[a * len(targets):(a + 1) * len(targets)] for a in range(len(audio))]


def decode_window_rows(
    engine: DecodingEngine,
    audio: Sequence[Any],
    rows: Sequence[Sequence[DecodeRow]],
    settings: dict | None = None,
    shared_transcript: bool = True,
) -> list[list[dict[str, Any]]]:
    """The general form of [`decode_windows`]: `rows[w]` are window `w`'s rows (their `window` field is ignored);
    returns their answers in the same shape.

    The rules every caller shares: a translation into the spoken language is its transcript ([`as_decoded`]: an
    ASR row); a window's several SRT rows share its transcript among them (`shared_transcript=True`, the default; 4
    targets cost 1.23x one instead of 1.78x, 14 1.45x instead of 2.28x, with the same demo BLEU, see benchmarks/),
    windows with the same source and targets decoded together; every other row is decoded on its own, all of them
    in one batch."""
    rows = [[as_decoded(row) for row in window_rows] for window_rows in rows]
    answers: list[list[dict | None]] = [[None] * len(window_rows) for window_rows in rows]
    groups: dict[tuple[str, tuple[str, ...]], list[int]] = {}
    shared: dict[int, list[int]] = {}  # per window, its rows in the shared decode
    alone: list[tuple[int, int]] = []
    for w, window_rows in enumerate(rows):
        srt = [r for r, row in enumerate(window_rows) if row.task == "srt"]
        if shared_transcript and len(srt) > 1 and len({window_rows[r].src_lang for r in srt}) == 1:
            groups.setdefault((window_rows[srt[0]].src_lang, tuple(window_rows[r].tgt_lang for r in srt)),
                              []).append(w)
            shared[w] = srt
        alone.extend((w, r) for r in range(len(window_rows)) if r not in shared.get(w, ()))
    for (src, targets), windows in groups.items():
        for w, per_target in zip(windows, engine.decode_shared_transcript([audio[w] for w in windows], src, targets,
                                                                          settings)):
            for r, answer in zip(shared[w], per_target):
                answers[w][r] = answer
    if alone:
        specs = [DecodeRow(w, rows[w][r].task, rows[w][r].src_lang, rows[w][r].tgt_lang, rows[w][r].transcript)
                 for w, r in alone]
        for (w, r), answer in zip(alone, engine.decode_rows(audio, specs, settings)):
            answers[w][r] = answer
    return answers


def decode_windows(
    engine: DecodingEngine,
    audio: Sequence[Any],
    src_langs: Sequence[str],
    task: str,
    targets: Sequence[str],
    settings: dict | None = None,
    shared_transcript: bool = True,
) -> list[dict[str, dict[str, Any]]]:
    """Every (window, target) pair of windows whose source languages are known: per window `{target: answer}`
    (the key is `"asr"` for transcription); several SRT targets share each window's transcript unless
    `shared_transcript=False` ([`decode_window_rows`])."""
    targets = ["asr"] if task == "asr" else list(targets)
    rows = [[DecodeRow(w, task, src_langs[w], None if task == "asr" else tgt) for tgt in targets]
            for w in range(len(audio))]
    answers = decode_window_rows(engine, audio, rows, settings, shared_transcript)
    return [dict(zip(targets, window_answers)) for window_answers in answers]


# ---------------------------------------------------------------------------------------------- windows of one input
def vote_language(detections: Sequence[dict]) -> dict | None:
    """One language for an input from its windows' detections: the most frequent per-window choice (ties: the
    larger summed probability); its probability is the mean over the windows of that language's probability.
    `unsupported` names the language Whisper heard outside the supported ones, when most windows heard one."""
    if not detections:
        return None
    counts = collections.Counter(d["language"] for d in detections)
    mass = collections.defaultdict(float)
    for detection in detections:
        for code, p in detection["probabilities"].items():
            mass[code] += p
    language = max(counts, key=lambda code: (counts[code], mass[code]))
    unsupported = [d for d in detections if not d["supported"]]
    return {
        "language": language,
        "probability": mass[language] / len(detections),
        "unsupported": collections.Counter(d["whisper_language"] for d in unsupported).most_common(1)[0][0]
        if 2 * len(unsupported) > len(detections) else None,
        "whisper_probability": max((d["whisper_probability"] for d in unsupported), default=None),
    }


def join_window_texts(parts: Sequence[str], language: str | None) -> str:
    """The texts of an input's windows joined in order (no spaces for Japanese, Chinese, Cantonese and Thai)."""
    return ("" if language in UNSPACED_LANGUAGES else " ").join(p.strip() for p in parts if p and p.strip())


__all__ = ["DecodeRow", "DecodingEngine", "TransformersEngine", "answer_record", "as_decoded", "decode_window_rows",
           "decode_windows", "join_window_texts", "vote_language"]
