"""What a BLEU average hides: off-target output, loops, chrF++ and decoding speed, per direction and overall.

- Off-target rate: the share of non-empty hypotheses whose language, by `py3langid` (a naive Bayes identifier that
  ships its 4.6 MB model inside its PyPI package; `lingua-language-detector` was 96 MB), is not the target; for
  transcripts (ASR, SRT's first part) the same against the source. The identifier chooses among the model's 15
  languages (plus `wuu`), so a short answer is not sent to a language no prompt can ask for. Mandarin and Cantonese
  are one group: the identifier's `zh`/`yue`/`wuu` classes are told apart by Cantonese-only characters (佢, 嘅, 喺)
  that FLEURS' Cantonese, written mostly in standard Chinese, seldom uses, so a Mandarin answer for a Cantonese
  target (or the reverse) is not counted as off-target. Empty answers are counted apart (`empty_rate`), and so are
  answers with too few letters to judge (`unjudged_rate`: fewer than `MIN_JUDGED_LETTERS`, a character of Han,
  kana or Hangul counting as 3): a one-word answer ("Hallo.", "Merci.") is as much German as Italian to any
  identifier, and "2024" is in no language at all.
- chrF++: sacreBLEU's `CHRF(word_order=2)`, corpus level.
- Loop rate: the share of answers that repeat a run of n tokens (whitespace words, or characters for unspaced
  scripts) `LOOP_REPEATS` times in a row, or that `max_new_tokens` cut (no EOS: `complete` is False).
- Speed: audio seconds, decoding seconds, the real-time factor RTFx (audio seconds per decoding second) and
  utterances per second, with the device and engine.
"""

from __future__ import annotations

import numbers
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

from ..languages_llm_srt import LANGUAGE_TABLE
from .metrics import _code, _finite, scoring_pairs

# The identifier's labels that count as each of our languages (ISO 639-1 -> our code).
_CHINESE = ("zh", "yue", "wuu")
_LABELS: dict[str, str] = {row.whisper: code for code, row in LANGUAGE_TABLE.items() if row.whisper not in _CHINESE}
_LABELS.update({label: "zho" for label in _CHINESE})
_GROUP = {"yue": "zho", "cmn": "zho"}  # one Chinese group (see the module docstring)
# Fewer letters than this cannot be told apart: py3langid reads "Hallo." as Italian and "Hola amigo." as Italian.
MIN_JUDGED_LETTERS = 10
_SYLLABLE_SCRIPTS = ("CJK", "HIRAGANA", "KATAKANA", "HANGUL")  # one character is a syllable or a word: 3 letters
LOOP_NGRAM_SIZES = (1, 2, 3, 4, 5, 6, 8)
LOOP_REPEATS = 4


@lru_cache(maxsize=1)
def _identifier():
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError as error:  # pragma: no cover - installed with the train/dev extras
        raise ImportError("The off-target rate needs py3langid: pip install 'llm-srt[train]' (or py3langid).") from error
    identifier = LanguageIdentifier.from_model_file(MODEL_FILE)
    identifier.set_languages(sorted(_LABELS))
    return identifier


def letter_count(text: str) -> int:
    """How many letters `text` holds, a character of Han, kana or Hangul counting as 3 (it writes a syllable or a
    word); digits, punctuation and marks count nothing."""
    return sum(3 if unicodedata.name(char, "").startswith(_SYLLABLE_SCRIPTS) else 1 for char in text if char.isalpha())


def judgeable(text: str) -> bool:
    """Whether `text` holds enough letters (`MIN_JUDGED_LETTERS`) for its language to be told."""
    return letter_count(text) >= MIN_JUDGED_LETTERS


def identify_language(text: str) -> str | None:
    """The language of `text` as one of our codes (Mandarin and Cantonese both `zho`), or None for text with too
    few letters to judge (`judgeable`; empty text included)."""
    if not text or not judgeable(text):
        return None
    return _LABELS[_identifier().classify(text.strip())[0]]


def _group(language: str) -> str:
    code = _code(language)
    return _GROUP.get(code, code)


def is_off_target(text: str, expected: str) -> bool | None:
    """Whether `text` is in another language than `expected`; None (not judged) for empty text and text with too few
    letters to judge."""
    found = identify_language(text)
    return None if found is None else found != _group(expected)


def chrf_pp(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """Corpus chrF++ (sacreBLEU `CHRF(word_order=2)`, text in NFC): `{"score", "signature"}`."""
    from sacrebleu.metrics import CHRF

    hypotheses, references = scoring_pairs(hypotheses, references)
    metric = CHRF(word_order=2)
    return {"score": metric.corpus_score(hypotheses, [references]).score,
            "signature": str(metric.get_signature())}


def is_loop(text: str, complete: bool | None = True, repeats: int = LOOP_REPEATS,
            sizes: Sequence[int] = LOOP_NGRAM_SIZES) -> bool:
    """True when `text` repeats a run of n tokens `repeats` times in a row (n in `sizes`; tokens are words, or
    characters when the text has no spaces) and the run holds a letter (`10000` and `...` are no loop), or when the
    token budget cut it (`complete` False)."""
    if complete is False:
        return True
    words = text.split()
    tokens = words if len(words) > 1 else list(text.replace(" ", ""))
    for n in sizes:
        for start in range(0, len(tokens) - n * repeats + 1):
            run = tokens[start:start + n]
            if not any(char.isalpha() for token in run for char in token):
                continue  # digits or punctuation repeated: a number, an ellipsis
            if all(tokens[start + k * n:start + (k + 1) * n] == run for k in range(1, repeats)):
                return True
    return False


def _rates(texts: Sequence[str], expected: Sequence[str]) -> dict[str, Any]:
    """The off-target rate of the texts that can be judged; the shares of empty texts and of texts too short to
    judge (neither counts as on- or off-target)."""
    verdicts = [is_off_target(t, e) for t, e in zip(texts, expected)]
    judged = [v for v in verdicts if v is not None]
    empty = sum(not t.strip() for t in texts)
    share = (lambda count: count / len(verdicts)) if verdicts else (lambda count: None)
    return {"off_target_rate": sum(judged) / len(judged) if judged else None, "empty_rate": share(empty),
            "unjudged_rate": share(len(verdicts) - len(judged) - empty)}


def quality_directions(rows: Iterable[dict[str, Any]], task: str) -> dict[str, Any]:
    """Per direction (keys as `metrics.score_directions`) and overall: off-target, empty and unjudged (too few
    letters) rates of hypotheses (against the target; ASR: the source) and of SRT transcripts (against the source), chrF++ of translations,
    loop rate. Rows: `src_lang`, `tgt_lang`, `hypothesis`, `reference`, optional `transcript`, `raw`, `complete`."""
    task = task.lower()
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        src = _code(row["src_lang"])
        tgt = _code(row["tgt_lang"]) if row.get("tgt_lang") and task != "asr" else None
        groups[src if tgt is None else f"{src}-{tgt}"].append(row)
    if not groups:
        raise ValueError("Nothing to score: no rows.")

    def measure(items: list[dict], by_direction: bool) -> dict[str, Any]:
        expected = [r["src_lang"] if task == "asr" else r["tgt_lang"] for r in items]
        out = {"count": len(items), **_rates([r.get("hypothesis") or "" for r in items], expected)}
        if task == "srt":
            transcript = _rates([r.get("transcript") or "" for r in items], [r["src_lang"] for r in items])
            out["transcript_off_target_rate"] = transcript["off_target_rate"]
            out["transcript_empty_rate"] = transcript["empty_rate"]
            out["transcript_unjudged_rate"] = transcript["unjudged_rate"]
        if task != "asr" and by_direction:
            out["chrf"] = chrf_pp([r.get("hypothesis") or "" for r in items], [r["reference"] for r in items])
        out["loop_rate"] = sum(is_loop(r.get("raw", r.get("hypothesis") or ""), r.get("complete")) for r in items) \
            / len(items)
        return out

    directions = {key: measure(items, True) for key, items in sorted(groups.items())}
    overall = measure([r for items in groups.values() for r in items], False)
    if task != "asr":  # chrF++ averaged over directions, as the paper averages BLEU
        overall["chrf"] = sum(d["chrf"]["score"] for d in directions.values()) / len(directions)
    return {"directions": directions, "overall": overall}


def speed(audio_seconds: float | None, decode_seconds: float, utterances: int, device: str | None = None,
          engine: str | None = None) -> dict[str, Any]:
    """Decoding speed: RTFx (audio seconds per decoding second) and utterances per second. Durations that cannot
    be measured (NaN, infinite, negative; no decoding time) are refused by name: they gave a NaN or negative RTFx."""
    if not _finite(decode_seconds) or decode_seconds <= 0:
        raise ValueError(f"decode_seconds must be a positive finite number of seconds, got {decode_seconds!r}.")
    if audio_seconds is not None and (not _finite(audio_seconds) or audio_seconds < 0):
        raise ValueError(f"audio_seconds must be a finite number of seconds >= 0 (or None: not known), got "
                         f"{audio_seconds!r}.")
    if isinstance(utterances, bool) or not isinstance(utterances, numbers.Integral) or utterances < 0:
        raise ValueError(f"utterances must be a whole number >= 0, got {utterances!r}.")
    return {"audio_seconds": audio_seconds, "decode_seconds": decode_seconds, "utterances": utterances,
            "rtfx": audio_seconds / decode_seconds if audio_seconds is not None else None,
            "utterances_per_second": utterances / decode_seconds, "device": device, "engine": engine}


def non_speech_clips(seconds: float = 5.0, sampling_rate: int = 16000, seed: int = 0) -> dict:
    """Clips where nothing is spoken, generated: digital silence, near-silence (-70 dBFS hiss), white and pink-ish
    (low-passed) noise at -20 dBFS, and music-like tones (a chord progression of harmonic tones with a beat)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = int(seconds * sampling_rate)
    t = np.arange(n) / sampling_rate
    white = rng.standard_normal(n)
    brown = np.cumsum(white)
    brown -= np.convolve(brown, np.ones(400) / 400, mode="same")  # drift removed: a low-passed rumble

    def at(signal, dbfs):
        return (signal / np.sqrt(np.mean(signal ** 2)) * 10 ** (dbfs / 20)).astype(np.float32)

    chords = [(220.0, 277.2, 329.6), (196.0, 246.9, 293.7), (174.6, 220.0, 261.6), (164.8, 207.7, 246.9)]
    music = np.zeros(n)
    bar = sampling_rate  # one chord a second, a note onset every quarter second
    for start in range(0, n, bar):
        chord = chords[(start // bar) % len(chords)]
        seg = slice(start, min(start + bar, n))
        local = t[seg] - t[start]
        envelope = np.exp(-3.0 * (local % 0.25))
        for freq in chord:
            for harmonic, weight in ((1, 1.0), (2, 0.4), (3, 0.2)):
                music[seg] += weight * envelope * np.sin(2 * np.pi * freq * harmonic * t[seg])
    return {"silence": np.zeros(n, dtype=np.float32), "near_silence": at(white, -70.0),
            "white_noise": at(white, -20.0), "rumble_noise": at(brown, -20.0), "music": at(music, -14.0)}


def non_speech_check(engine, task: str = "srt", src_lang: str = "eng", tgt_lang: str | None = "deu",
                     clips: dict[str, Any] | None = None, generate_kwargs: dict | None = None) -> dict[str, Any]:
    """Run clips where nothing is spoken (`non_speech_clips`) through the model, with the pipeline's silence
    skipping (`speech_llm_srt.is_silent`: a window under -60 dBFS is not decoded) on and off. Returns per setting the
    share of clips the model wrote text for (`hallucination_rate`) and per clip what it wrote."""
    from ..speech_llm_srt import is_silent
    from .decoding import decode_batch

    if clips is None:  # within the model's window
        clips = non_speech_clips(seconds=min(5.0, engine.window_seconds))
    rows = [{"key": name, "src_lang": src_lang, "tgt_lang": None if task == "asr" else tgt_lang, "transcript": "",
             "translation": "", "audio": {"array": audio, "sampling_rate": 16000}} for name, audio in clips.items()]
    decoded = decode_batch(engine, rows, task, generate_kwargs=generate_kwargs)
    out: dict[str, Any] = {"task": task, "src_lang": src_lang, "tgt_lang": rows[0]["tgt_lang"], "clips": {}}
    for skip in (False, True):
        written = {}
        for row, result in zip(rows, decoded):
            text = "" if skip and is_silent(row["audio"]["array"], sampling_rate=row["audio"]["sampling_rate"]) else \
                " ".join(t for t in (result.get("transcript"), result["hypothesis"]) if t and t.strip())
            written[row["key"]] = text
        out["skip_silence" if skip else "no_skip"] = {
            "hallucination_rate": sum(bool(t) for t in written.values()) / len(written), "text": written}
    return out


__all__ = ["LOOP_NGRAM_SIZES", "LOOP_REPEATS", "MIN_JUDGED_LETTERS", "chrf_pp", "identify_language", "is_loop",
           "is_off_target", "judgeable", "letter_count", "non_speech_check", "non_speech_clips", "quality_directions",
           "speed"]


COMET_SKIPPED = ("COMET: not computed (optional: pass --comet_model with a local COMET checkpoint, e.g. "
                 "wmt22-comet-da's checkpoints/model.ckpt, and `pip install unbabel-comet`).")


def comet_directions(rows: Sequence[dict[str, Any]], checkpoint: str, batch_size: int = 16) -> dict[str, Any]:
    """COMET (Unbabel's `comet` package, a local checkpoint: nothing is downloaded) per direction and overall, from
    each row's source `transcript` reference, `hypothesis` and `reference`.

    Raises:
        ValueError: naming the checkpoint when the package is missing or the file does not exist.
    """
    import os

    if not os.path.isfile(checkpoint):
        raise ValueError(f"--comet_model {checkpoint}: no such file (a COMET checkpoint, e.g. .../checkpoints/model.ckpt).")
    try:
        from comet import load_from_checkpoint
    except ImportError:
        raise ValueError("--comet_model needs Unbabel's COMET: pip install unbabel-comet") from None
    model = load_from_checkpoint(checkpoint)
    data = [{"src": r.get("transcript_reference") or r.get("source") or "", "mt": r["hypothesis"] or "",
             "ref": r["reference"]} for r in rows]
    scores = model.predict(data, batch_size=batch_size, gpus=0, progress_bar=False).scores
    by_direction: dict[str, list[float]] = {}
    for row, score in zip(rows, scores):
        by_direction.setdefault(f"{row['src_lang']}-{row.get('tgt_lang')}", []).append(float(score))
    return {"directions": {k: sum(v) / len(v) for k, v in by_direction.items()},
            "overall": sum(scores) / len(scores) if len(scores) else None, "checkpoint": checkpoint}
