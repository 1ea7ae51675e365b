"""The 15 languages of LLM-SRT: THE language table, how users may name a language, the prompt tags, and what a model
may be asked outside the languages and directions it was trained on (the untrained-direction policy)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple


# The standard library's logging (not transformers'), so the `llm-srt` command reads its languages without importing
# transformers.
logger = logging.getLogger(__name__)


class LanguageInfo(NamedTuple):
    """One row of the language table: everything the project knows of a language."""

    name: str  # English name
    aliases: tuple[str, ...]  # other names and codes users may type
    whisper: str  # Whisper's language code (language detection)
    spaced: bool  # sentences joined with spaces (False: Japanese, Chinese, Cantonese, Thai)
    cer: bool  # ASR scored by character error rate instead of WER
    fleurs: str  # FLEURS' config name (`google/fleurs`), also accepted as a name of the language


# The paper's 15 languages, by ISO 639-3 code: THE language table (adding a language touches only this). Common
# Voice / CoVoST-2 locales (`de`, `zh-CN`, `zh-HK`) are among the aliases.
LANGUAGE_TABLE: dict[str, LanguageInfo] = {
    "deu": LanguageInfo("German", ("de", "ger", "german", "deutsch"), "de", True, False, "de_de"),
    "eng": LanguageInfo("English", ("en", "english"), "en", True, False, "en_us"),
    "fra": LanguageInfo("French", ("fr", "fre", "french", "francais", "français"), "fr", True, False, "fr_fr"),
    "ind": LanguageInfo("Indonesian", ("id", "indonesian", "bahasa indonesia"), "id", True, False, "id_id"),
    "ita": LanguageInfo("Italian", ("it", "italian", "italiano"), "it", True, False, "it_it"),
    "jpn": LanguageInfo("Japanese", ("ja", "japanese"), "ja", False, True, "ja_jp"),
    "kor": LanguageInfo("Korean", ("ko", "korean"), "ko", True, True, "ko_kr"),
    "nld": LanguageInfo("Dutch", ("nl", "dut", "dutch", "nederlands"), "nl", True, False, "nl_nl"),
    "por": LanguageInfo("Portuguese", ("pt", "portuguese", "português"), "pt", True, False, "pt_br"),
    "rus": LanguageInfo("Russian", ("ru", "russian"), "ru", True, False, "ru_ru"),
    "spa": LanguageInfo("Spanish", ("es", "spanish", "español", "espanol"), "es", True, False, "es_419"),
    "tha": LanguageInfo("Thai", ("th", "thai"), "th", False, True, "th_th"),
    "vie": LanguageInfo("Vietnamese", ("vi", "vietnamese"), "vi", True, False, "vi_vn"),
    "yue": LanguageInfo("Cantonese", ("cantonese", "zh-hk"), "yue", False, True, "yue_hant_hk"),
    # The paper writes Mandarin as `zho`, the newer original code and its FLEURS data as `cmn`: both are accepted.
    "zho": LanguageInfo("Chinese (Mandarin)", ("zh", "cmn", "chinese", "mandarin", "zh-cn"), "zh", False, True,
                        "cmn_hans_cn"),
}
# Views of the table.
LANGUAGES: dict[str, tuple[str, tuple[str, ...]]] = {code: (row.name, row.aliases) for code, row in LANGUAGE_TABLE.items()}
WHISPER_CODES: dict[str, str] = {code: row.whisper for code, row in LANGUAGE_TABLE.items()}
FLEURS_CONFIGS: dict[str, str] = {code: row.fleurs for code, row in LANGUAGE_TABLE.items()}
UNSPACED_LANGUAGES = frozenset(code for code, row in LANGUAGE_TABLE.items() if not row.spaced)
CER_LANGUAGES = frozenset({code for code, row in LANGUAGE_TABLE.items() if row.cer} | {"cmn"})
MANDARIN_TAGS = ("zho", "cmn")

_ALIASES: dict[str, str] = {}
for _code, _row in LANGUAGE_TABLE.items():
    for _alias in (_code, _row.name.lower(), *_row.aliases, _row.fleurs):
        _ALIASES[_alias.lower()] = _code


def supported_languages_text() -> str:
    """One line listing every supported code with its name, for error messages."""
    return ", ".join(f"{code} ({name})" for code, (name, _) in LANGUAGES.items())


def normalize_language(language: str) -> str:
    """Map an ISO 639-3/639-1 code, a name, a FLEURS config name (`ja_jp`) or a tag such as `<|eng|>` to the
    canonical 3-letter code.

    Raises:
        ValueError: naming the language and listing the supported ones.
    """
    if not isinstance(language, str):
        raise ValueError(f"Language must be a string, got {type(language).__name__}: {language!r}.")
    key = language.strip().lower()
    if key.startswith("<|") and key.endswith("|>"):
        key = key[2:-2]
    if key.replace("-", "_") in _ALIASES:
        key = key.replace("-", "_")
    if key not in _ALIASES:
        raise ValueError(f"Unsupported language {language!r}. Supported languages: {supported_languages_text()}.")
    return _ALIASES[key]


def normalize_targets(targets: Sequence[str], src_lang: str | None = None, name: str = "tgt_lang") -> list[str]:
    """Target languages as our codes, in the order given: the one rule of the processor, the pipeline, the CLI, the
    server and the training checks.

    A language named twice (under any of its names: `de`, `deu`, `German`) is refused, naming it: the caller would
    get fewer results than it asked for. A target equal to the source (`src_lang`, when known) is kept, with a
    logged note: its answer is the transcript (decoded as ASR, `decoding_llm_srt.as_decoded`).

    Raises:
        ValueError: an unsupported language, an empty list, or a language named twice (`name` says which argument).
    """
    codes: dict[str, str] = {}
    for target in targets:
        code = normalize_language(target)
        if code in codes:
            raise ValueError(f"{name} names {code} twice ({codes[code]!r} and {target!r}); give each target once.")
        codes[code] = target
    if not codes:
        raise ValueError(f"{name} is empty: pass at least one target language.")
    if src_lang is not None and normalize_language(src_lang) in codes:
        logger.warning(same_language_note(normalize_language(src_lang), name))
    return list(codes)


def same_language_note(language: str, name: str = "tgt_lang") -> str:
    """The note logged when a target is the spoken language itself."""
    return f"{name} {language} is the spoken language: its answer is the transcript (recognition), not a translation."


def language_tag(language: str, mandarin_tag: str = "zho") -> str:
    """The prompt tag of a language, e.g. `<|eng|>`; Mandarin is written with `mandarin_tag` (`zho` or `cmn`)."""
    code = normalize_language(language)
    if code == "zho":
        code = mandarin_tag
    return f"<|{code}|>"


TAG_END = "|>"


def text_after_last_tag(text: str) -> str:
    """The text after an answer's last language tag, stripped: the translation of `transcript<|src|><|tgt|>translation`,
    the whole of an answer without tags (the original scorer's rule, `eval/test_metric_n.py`)."""
    return text.split(TAG_END)[-1].strip()


def direction_key(src_lang: str, tgt_lang: str) -> str:
    """A translation direction as recorded in a config, `"eng-deu"` (canonical codes)."""
    return f"{normalize_language(src_lang)}-{normalize_language(tgt_lang)}"


def recorded_languages(values, name: str) -> list[str]:
    """Canonical codes, once each, in the table's order (ValueError naming `name` and the language)."""
    try:
        codes = {normalize_language(value) for value in values}
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None
    return [code for code in LANGUAGE_TABLE if code in codes]


def recorded_directions(values) -> list[str]:
    """`"src-tgt"` keys of canonical codes, once each, sorted (ValueError naming the bad entry)."""
    keys = set()
    for value in values:
        parts = value.split("-") if isinstance(value, str) else value
        if len(parts) != 2:
            raise ValueError(f"trained_directions: {value!r} is not a direction 'src-tgt' (e.g. 'eng-deu').")
        try:
            keys.add(direction_key(*parts))
        except ValueError as error:
            raise ValueError(f"trained_directions: {error}") from None
    order = list(LANGUAGE_TABLE)
    return sorted(keys, key=lambda key: [order.index(code) for code in key.split("-")])


def _listed(items: list[str], most: int = 12) -> str:
    """`a, b, c`, or the first `most` and how many in all (a released model records 210 directions)."""
    if not items:
        return "none"
    return ", ".join(items) if len(items) <= most else f"{', '.join(items[:most])}, ... ({len(items)} in all)"


UNTRAINED_DIRECTION_ACTIONS = ("warn", "error")  # what a request outside the model's training data gets


class UntrainedDirectionError(ValueError):
    """A language or direction the model was not trained on, refused (`untrained_direction="error"`)."""


def untrained_reason(config, src_lang: str, tgt_lang: str | None = None) -> str | None:
    """Why recognizing `src_lang` (or translating it into `tgt_lang`) is outside what `config` records its model was
    trained on (`trained_languages`, `trained_directions`), or None when it is inside it or nothing was recorded."""
    src = normalize_language(src_lang)
    tgt = None if tgt_lang is None else normalize_language(tgt_lang)
    languages = getattr(config, "trained_languages", None)
    directions = getattr(config, "trained_directions", None)
    reasons = []
    if languages is not None:
        unknown = [code for code in dict.fromkeys((src, tgt)) if code is not None and code not in languages]
        if unknown:
            reasons.append(f"{' and '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not among its "
                           f"languages ({_listed(languages)})")
    if tgt is not None and directions is not None and f"{src}-{tgt}" not in directions:
        reasons.append(f"{src}-{tgt} is not among its directions ({_listed(directions)})")
    return "; ".join(reasons) or None


class UntrainedWarnings:
    """Logs a warning, once per (source, target), when a model is asked for a language or direction outside what
    its config records it was trained on ([`untrained_reason`]); with `refuse=True` raises
    [`UntrainedDirectionError`] instead, every time: the warn-once memory only silences repeated warnings, never a
    refusal (a pipeline called once with "warn" and then with "error" for the same direction still refuses). One per
    pipeline or server."""

    def __init__(self, config, log=None):
        self.config, self.log, self.seen = config, log or logger, set()

    def check(self, src_lang: str, tgt_lang: str | None = None, refuse: bool = False) -> None:
        key = (normalize_language(src_lang), None if tgt_lang is None else normalize_language(tgt_lang))
        reason = untrained_reason(self.config, *key)
        asked = key[0] if key[1] is None else f"{key[0]} -> {key[1]}"
        if reason is not None and refuse:
            raise UntrainedDirectionError(
                f"This model was not trained on {asked}: {reason} (config.trained_languages / trained_directions); "
                "refused because untrained directions are set to 'error' (untrained_direction='warn', "
                "--untrained-direction warn, answers them with a warning).")
        if key in self.seen:
            return
        self.seen.add(key)
        if reason is not None:
            self.log.warning(f"This model was not trained on {asked}: {reason}. Its answer may be in another "
                             "language, or wrong (config.trained_languages / trained_directions).")




__all__ = ["CER_LANGUAGES", "FLEURS_CONFIGS", "LANGUAGES", "LANGUAGE_TABLE", "LanguageInfo", "MANDARIN_TAGS", "TAG_END", "UNSPACED_LANGUAGES",
           "UNTRAINED_DIRECTION_ACTIONS", "UntrainedDirectionError", "UntrainedWarnings", "WHISPER_CODES", "direction_key",
           "language_tag", "normalize_language", "normalize_targets", "recorded_directions", "recorded_languages", "same_language_note",
           "supported_languages_text", "text_after_last_tag", "untrained_reason"]
