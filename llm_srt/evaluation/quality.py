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


def _level(signal, dbfs: float, peak: bool = False):
    """`signal` scaled to `dbfs` (RMS, or peak), float32."""
    import numpy as np

    reference = np.abs(signal).max() if peak else np.sqrt(np.mean(signal ** 2))
    return (signal / (reference + 1e-12) * 10 ** (dbfs / 20)).astype(np.float32)


def non_speech_clips(sampling_rate: int = 16000, seed: int = 0) -> dict:
    """Sounds where nothing is spoken, generated (3-8 s each): white, pink and brown noise at -50, -30 and -20 dBFS, a
    440 Hz tone, 50 Hz mains hum with harmonics, a chirp, a constant DC offset at -40 dBFS, 8 isolated clicks in
    3 s of silence, knocks, typing, synthesized music (chords and a beat), a melody, a bell and faint dither: the
    sounds a speech LLM answers with invented sentences when nothing decides what is speech."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rate = sampling_rate

    def tones(freqs, seconds, amps=None, decay=None):
        t = np.arange(int(seconds * rate)) / rate
        out = sum(a * np.sin(2 * np.pi * f * t) for f, a in zip(freqs, amps or [1.0] * len(freqs)))
        return out * np.exp(-t / decay) if decay else out

    def coloured(exponent, seconds=6.0):  # 1/f^exponent: white 0, pink 1, brown 2
        n = int(seconds * rate)
        spectrum = np.fft.rfft(rng.standard_normal(n))
        freqs = np.fft.rfftfreq(n, 1 / rate)
        freqs[0] = freqs[1]
        return np.fft.irfft(spectrum / freqs ** (exponent / 2), n)

    clips = {}
    for name, exponent in (("white", 0), ("pink", 1), ("brown", 2)):
        noise = coloured(exponent)
        for dbfs in (-50, -30, -20):
            clips[f"{name} noise {dbfs} dBFS"] = _level(noise, dbfs)
    clips["440 Hz tone"] = _level(tones([440], 5), -20, peak=True)
    clips["50 Hz hum with harmonics"] = _level(tones([50, 100, 150, 250, 350], 5, [1, .5, .3, .2, .1]), -20, peak=True)
    t = np.arange(6 * rate) / rate
    clips["chirp 100-8000 Hz"] = _level(np.sin(2 * np.pi * (100 * t + 7900 / 12 * t ** 2)), -20, peak=True)
    clips["DC offset -40 dBFS"] = np.full(4 * rate, 10 ** (-40 / 20), np.float32)
    clicks = np.zeros(3 * rate, np.float32)
    for k in range(8):
        clicks[int((0.2 + 0.33 * k) * rate)] = 0.5
    clips["8 clicks in 3 s of silence"] = clicks
    knocks = np.zeros(5 * rate)
    for start in (0.3, 1.1, 1.5, 2.6, 3.9):
        burst = tones([80 + 40 * rng.random(), 180], 0.15, [1, .4], decay=0.03)
        knocks[int(start * rate):int(start * rate) + len(burst)] += burst
    clips["knocks"] = _level(knocks, -10, peak=True)
    typing, position = np.zeros(6 * rate), 0.2
    while position < 5.8:
        n = int(0.01 * rate)
        typing[int(position * rate):int(position * rate) + n] += (rng.standard_normal(n) * np.exp(-np.arange(n) / (
            0.002 * rate)) * rng.uniform(0.3, 1))
        position += rng.uniform(0.08, 0.35)
    clips["typing"] = _level(typing, -15, peak=True)
    chords = [[261.6, 329.6, 392.0], [196.0, 246.9, 293.7], [220.0, 261.6, 329.6], [174.6, 220.0, 261.6]]
    music = np.concatenate([sum(tones([f * h for h in (1, 2, 3, 4)], 2.0, [1, .5, .25, .12]) for f in chord)
                            * np.minimum(1, np.linspace(0, 40, 2 * rate)) for chord in chords])
    for beat in np.arange(0, 8, 0.5):
        start = int(beat * rate)
        kick = 3 * tones([60], 0.12, decay=0.04)
        music[start:start + len(kick)] += kick
        hat = 0.8 * rng.standard_normal(int(0.03 * rate)) * np.exp(-np.arange(int(0.03 * rate)) / 80)
        music[start + rate // 4:start + rate // 4 + len(hat)] += hat
    clips["music (chords and a beat)"] = _level(music, -6, peak=True)
    notes = [392, 440, 494, 523, 587, 523, 494, 440, 392, 330, 349, 392]
    clips["melody"] = _level(np.concatenate([tones([f, 2 * f, 3 * f], 0.4, [1, .3, .1], decay=0.25) for f in notes]),
                             -6, peak=True)
    partials = [500 * r for r in (0.56, 0.92, 1.19, 1.71, 2.0, 2.74, 3.0, 3.76)]
    clips["bell"] = _level(np.tile(tones(partials, 3.0, [1, .8, .6, .5, .4, .3, .2, .15], decay=0.9), 2), -6,
                           peak=True)
    clips["dither (1 LSB)"] = (rng.integers(-1, 2, 4 * rate) / 32768).astype(np.float32)
    return clips


def non_speech_check(engine, task: str = "srt", src_lang: str = "eng", tgt_lang: str | None = "deu",
                     clips: dict[str, Any] | None = None, generate_kwargs: dict | None = None,
                     vad: Any = None) -> dict[str, Any]:
    """Run sounds where nothing is spoken (`non_speech_clips`) through the one path every caller takes (windows
    planned, decoded, joined: `transcription_llm_srt`), with the speech detector on (`vad`: its options, default
    `VadOptions()`) and off. Returns per setting the share of clips the model wrote text for
    (`hallucination_rate`), what it wrote per clip, and the windows that reached the model."""
    from ..decoding_llm_srt import decode_windows, join_window_texts
    from ..speech_llm_srt import VadOptions
    from ..transcription_llm_srt import plan_windows

    clips = non_speech_clips() if clips is None else clips
    rate, targets = engine.sampling_rate, ["asr"] if task == "asr" else [tgt_lang]
    out: dict[str, Any] = {"task": task, "src_lang": src_lang, "tgt_lang": None if task == "asr" else tgt_lang}
    for setting, options in (("no_vad", None), ("vad", vad or VadOptions())):
        written, decoded = {}, 0
        for name, audio in clips.items():
            spans = [(w.start, w.end) for w in plan_windows(audio, rate, engine.window_seconds, options) if w.speech]
            decoded += len(spans)
            if not spans:
                written[name] = ""
                continue
            handles, _ = engine.encode([audio[start:end] for start, end in spans])
            answers = decode_windows(engine, handles, [src_lang] * len(spans), task, targets, generate_kwargs)
            parts = [answer[targets[0]] for answer in answers]
            written[name] = " ".join(text for text in (
                join_window_texts([p.get("transcript") or "" for p in parts], src_lang),
                "" if task == "asr" else join_window_texts([p.get("translation") or "" for p in parts], tgt_lang))
                if text)
        out[setting] = {"hallucination_rate": sum(bool(t) for t in written.values()) / len(written),
                        "text": written, "windows_decoded": decoded}
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
