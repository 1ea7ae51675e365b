"""BLEU and WER as the original scorer computes them (`eval/test_metric_n.py`); sacrebleu and jiwer do the scoring.

- BLEU: sacreBLEU corpus BLEU, `tokenize="char"` for targets written without spaces (tha jpn kor zho/cmn yue, also
  lao mya), otherwise `13a`.
- WER: Whisper's `BasicTextNormalizer` on hypotheses and references, then jiwer WER, or CER for jpn kor tha zho/cmn
  yue. Whisper's English normalizer is available as an option.

Every score (BLEU, chrF++, WER, CER) first puts hypotheses and references in Unicode NFC (`scoring_pairs`): the same
text in decomposed form (NFD accents, Hangul as jamo) is the same text, not a different one.
"""

from __future__ import annotations

import math
import numbers
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from ..languages_llm_srt import CER_LANGUAGES, LANGUAGES, normalize_language, text_after_last_tag


# Scored on characters: the table's CER languages and other unspaced scripts a data set may hold.
CHAR_LEVEL_LANGUAGES = CER_LANGUAGES | {"lao", "mya"}


def _code(language: str) -> str:
    """Canonical code for our 15 languages under any of the language table's names (FLEURS' config names such as
    `ja_jp` included); other ISO 639-3 codes (lao, mya, ...) pass through lower-cased. Anything else is refused by
    name: scored as an unknown language, a Japanese target would get BLEU's 13a tokenizer (BLEU 0 instead of 73)."""
    try:
        return normalize_language(language)
    except ValueError:
        code = language.strip().lower() if isinstance(language, str) else ""
        if len(code) == 3 and code.isascii() and code.isalpha():
            return code
        raise ValueError(f"Unknown language {language!r}: neither one of the 15 (codes, names or FLEURS config "
                         f"names, e.g. jpn, ja, Japanese, ja_jp) nor an ISO 639-3 code; it decides how the text "
                         "is scored (BLEU's tokenizer, WER or CER).") from None


def bleu_tokenizer(tgt_lang: str) -> str:
    """sacreBLEU tokenizer for a target language: `char` for unspaced scripts, `13a` otherwise."""
    return "char" if _code(tgt_lang) in CHAR_LEVEL_LANGUAGES else "13a"


def _check_pairs(hypotheses: Sequence[str], references: Sequence[Any]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references.")
    if not references:
        raise ValueError("Nothing to score: no references.")


def scoring_pairs(hypotheses: Sequence[str], references: Sequence[Any]) -> tuple[list[str], list[Any]]:
    """Hypotheses and references checked (same count, not empty) and in Unicode NFC, as every score reads them; a
    row's references may be one string or a list of them (several references)."""
    _check_pairs(hypotheses, references)

    def nfc(value):
        if isinstance(value, str):
            return unicodedata.normalize("NFC", value)
        return [unicodedata.normalize("NFC", text) if isinstance(text, str) else text for text in value]

    return [nfc(text) for text in hypotheses], [nfc(reference) for reference in references]


def reference_streams(references: Sequence[str | Sequence[str]]) -> list[list[str | None]]:
    """sacreBLEU's reference streams from one reference per row (a string) or several (a list per row, as the Hub's
    sacrebleu metric takes them; rows may have different numbers, the missing ones are None for sacreBLEU).

    Raises:
        ValueError: a row with no reference, naming the row.
    """
    rows = [[ref] if isinstance(ref, str) else list(ref) for ref in references]
    for index, refs in enumerate(rows):
        if not refs:
            raise ValueError(f"row {index} has no reference.")
        if not all(isinstance(ref, str) for ref in refs):
            raise ValueError(f"row {index}: references must be strings, got {refs!r}.")
    width = max(len(refs) for refs in rows)
    return [[refs[i] if i < len(refs) else None for refs in rows] for i in range(width)]


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str | Sequence[str]], tgt_lang: str) -> dict[str, Any]:
    """Corpus BLEU of one direction: `{"score", "signature", "tokenize", "count"}`. `references` holds one string
    per row, or a list of references per row (several references, as sacreBLEU scores them)."""
    from sacrebleu.metrics import BLEU

    hypotheses, references = scoring_pairs(hypotheses, references)
    metric = BLEU(tokenize=bleu_tokenizer(tgt_lang))
    result = metric.corpus_score(hypotheses, reference_streams(references))
    return {"score": result.score, "signature": str(metric.get_signature()), "tokenize": metric.tokenizer.signature(),
            "count": len(references)}


def split_srt_response(response: str, tag_pair: str) -> tuple[str, str]:
    """(transcript, translation) of an SRT response by the original scorer's rule (`eval/test_metric_n.py`).

    Split on the prompt's tag pair `<|src|><|tgt|>` only when that gives exactly two parts; otherwise the whole
    response counts as the transcript and the text after the last `|>` as the translation. Both are stripped.
    """
    parts = response.split(tag_pair)
    if len(parts) == 2:
        return parts[0].strip(), parts[1].strip()
    return response.strip(), text_after_last_tag(response)


def text_normalizer(english: bool = False):
    """Whisper's `BasicTextNormalizer` (the original's choice for every language), or its English normalizer."""
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer, EnglishTextNormalizer

    # The English normalizer's spelling map ships with Whisper's tokenizer files; without it, it still applies
    # its number, contraction and symbol rules.
    return EnglishTextNormalizer({}) if english else BasicTextNormalizer()


def error_rate(
    hypotheses: Sequence[str], references: Sequence[str], language: str, english_normalizer: bool = False
) -> dict[str, Any]:
    """WER (or CER for unspaced scripts) after NFC and Whisper's normalizer: `{"score", "metric", "count",
    "skipped_empty"}`.

    Pairs whose reference is empty after normalization cannot be scored and are counted in `skipped_empty`.
    """
    import jiwer

    hypotheses, references = scoring_pairs(hypotheses, references)
    normalize = text_normalizer(english_normalizer and _code(language) == "eng")
    pairs = [(normalize(h).strip(), normalize(r).strip()) for h, r in zip(hypotheses, references)]
    kept = [(h, r) for h, r in pairs if r]
    if not kept:
        raise ValueError("Every reference is empty after normalization: nothing to score.")
    use_cer = _code(language) in CER_LANGUAGES
    hyps, refs = [h for h, _ in kept], [r for _, r in kept]
    score = jiwer.cer(refs, hyps) if use_cer else jiwer.wer(refs, hyps)
    return {"score": float(score), "metric": "cer" if use_cer else "wer", "count": len(kept),
            "skipped_empty": len(pairs) - len(kept)}


def score_directions(rows: Iterable[dict[str, Any]], task: str) -> dict[str, Any]:
    """Score rows `{"src_lang", "tgt_lang", "hypothesis", "reference", ["transcript", "transcript_reference"]}`.

    Returns per-direction results (`"eng-deu": {...}`) and the averages the paper reports: BLEU over all directions,
    per source language (X->others) and per target; WER per source language and its mean.
    """
    task = task.lower()
    groups: dict[tuple[str, str | None], list[dict]] = defaultdict(list)
    for row in rows:
        src = _code(row["src_lang"])
        tgt = _code(row["tgt_lang"]) if row.get("tgt_lang") else None
        groups[(src, tgt if task != "asr" else None)].append(row)
    if not groups:
        raise ValueError("Nothing to score: no rows.")
    directions: dict[str, dict[str, Any]] = {}
    for (src, tgt), items in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        result: dict[str, Any] = {"src_lang": src, "tgt_lang": tgt, "count": len(items)}
        if task == "asr":
            result["wer"] = error_rate([r["hypothesis"] for r in items], [r["reference"] for r in items], src)
        else:
            result["bleu"] = corpus_bleu([r["hypothesis"] for r in items], [r["reference"] for r in items], tgt)
            if task == "srt" and all(r.get("transcript_reference") is not None for r in items):
                result["wer"] = error_rate(
                    [r.get("transcript") or "" for r in items], [r["transcript_reference"] for r in items], src
                )
        directions[src if tgt is None else f"{src}-{tgt}"] = result
    return {"directions": directions, "averages": averages(directions)}


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def averages(directions: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """BLEU averaged over all directions, per source (X->others) and per target; WER per source and overall."""
    bleu = {k: d["bleu"]["score"] for k, d in directions.items() if "bleu" in d}
    wer_by_src: dict[str, list[float]] = defaultdict(list)
    for d in directions.values():
        if "wer" in d:
            wer_by_src[d["src_lang"]].append(d["wer"]["score"])
    out: dict[str, Any] = {}
    if bleu:
        by_src, by_tgt = defaultdict(list), defaultdict(list)
        for key, score in bleu.items():
            src, tgt = key.split("-")
            by_src[src].append(score)
            by_tgt[tgt].append(score)
        out["bleu"] = _mean(list(bleu.values()))
        out["bleu_by_source"] = {k: _mean(v) for k, v in sorted(by_src.items())}
        out["bleu_by_target"] = {k: _mean(v) for k, v in sorted(by_tgt.items())}
    if wer_by_src:
        per_src = {k: _mean(v) for k, v in sorted(wer_by_src.items())}
        out["wer_by_source"] = per_src
        out["wer"] = _mean(list(per_src.values()))
    return out


# ------------------------------------------------------------------------------------------ simultaneous latency
def _finite(value) -> bool:
    """Whether `value` is a real number (not a bool) other than NaN or infinity: a measure can be made of it."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def average_lagging(delays: Sequence[float], source_length: float, reference_length: int | None = None,
                    length_adaptive: bool = False) -> float:
    """Average Lagging (Ma et al. 2019) as SimulEval computes it, or with `length_adaptive` LAAL (Papi et al. 2022).

    `delays[i]` is how much source (seconds of audio read, plus the time spent computing for the
    computation-aware variant) had been consumed when target word `i` was emitted; `source_length` is the source's
    duration. With `r = target_length / source_length`, AL = 1/tau * sum_{i=1..tau} (d_i - (i-1)/r), tau the
    first word emitted after the whole source was read (all words if none). AL's target length is the reference's
    (`reference_length`, the hypothesis' own when not given); LAAL's is the longer of reference and hypothesis, so
    an over-long hypothesis cannot make its lag look smaller.
    """
    if not _finite(source_length) or source_length <= 0:
        raise ValueError(f"source_length must be a positive finite number of seconds, got {source_length!r}.")
    bad = [(i, d) for i, d in enumerate(delays) if not _finite(d) or d < 0]
    if bad:
        raise ValueError(f"delays must be finite numbers of seconds >= 0; delay {bad[0][0]} is {bad[0][1]!r}"
                         f"{f' ({len(bad)} such delays)' if len(bad) > 1 else ''}.")
    if not delays:
        return 0.0
    target_length = len(delays) if reference_length is None else reference_length
    if length_adaptive:
        target_length = max(target_length, len(delays))
    if target_length <= 0:
        raise ValueError(f"The target length must be positive, got {target_length}.")
    if delays[0] > source_length:
        return float(delays[0])
    rate = target_length / source_length
    total, tau = 0.0, 0
    for i, delay in enumerate(delays):
        total += delay - i / rate
        tau = i + 1
        if delay >= source_length:
            break
    return total / tau


def length_adaptive_average_lagging(delays: Sequence[float], source_length: float,
                                    reference_length: int | None = None) -> float:
    """LAAL: [`average_lagging`] with the longer of the reference and hypothesis lengths."""
    return average_lagging(delays, source_length, reference_length, length_adaptive=True)


def evaluate_module_path(name: str) -> str:
    """Path of the local `evaluate` module `bleu` or `wer`, for `evaluate.load(path)` without the Hub."""
    import os

    if name not in ("bleu", "wer"):
        raise ValueError(f"No LLM-SRT evaluate module {name!r}; choose 'bleu' or 'wer'.")
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "evaluate_metrics", f"llm_srt_{name}")


__all__ = ["average_lagging", "length_adaptive_average_lagging", "evaluate_module_path", "corpus_bleu", "reference_streams", "error_rate", "bleu_tokenizer", "score_directions", "scoring_pairs", "averages", "CHAR_LEVEL_LANGUAGES",
           "LANGUAGES"]
