"""LLM-SRT configuration: Whisper encoder + Q-Former adapter + Qwen2.5 LLM, and the 15 languages."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

from transformers import AutoConfig, PreTrainedConfig
from transformers.utils import logging


try:
    from transformers.configuration_utils import SubConfigSpec
except ImportError:  # transformers < 5.20 (vLLM's pin): LlmSrtConfig.__post_init__ builds the sub-configs itself
    SubConfigSpec = None


logger = logging.get_logger(__name__)

class LanguageInfo(NamedTuple):
    """One row of the language table: everything the project knows of a language."""

    name: str  # English name
    aliases: tuple[str, ...]  # other names and codes users may type
    whisper: str  # Whisper's language code (language detection)
    spaced: bool  # sentences joined with spaces (False: Japanese, Chinese, Cantonese, Thai)
    cer: bool  # ASR scored by character error rate instead of WER


# The paper's 15 languages, by ISO 639-3 code: THE language table (adding a language touches only this).
LANGUAGE_TABLE: dict[str, LanguageInfo] = {
    "deu": LanguageInfo("German", ("de", "ger", "german", "deutsch"), "de", True, False),
    "eng": LanguageInfo("English", ("en", "english"), "en", True, False),
    "fra": LanguageInfo("French", ("fr", "fre", "french", "francais", "français"), "fr", True, False),
    "ind": LanguageInfo("Indonesian", ("id", "indonesian", "bahasa indonesia"), "id", True, False),
    "ita": LanguageInfo("Italian", ("it", "italian", "italiano"), "it", True, False),
    "jpn": LanguageInfo("Japanese", ("ja", "japanese"), "ja", False, True),
    "kor": LanguageInfo("Korean", ("ko", "korean"), "ko", True, True),
    "nld": LanguageInfo("Dutch", ("nl", "dut", "dutch", "nederlands"), "nl", True, False),
    "por": LanguageInfo("Portuguese", ("pt", "portuguese", "português"), "pt", True, False),
    "rus": LanguageInfo("Russian", ("ru", "russian"), "ru", True, False),
    "spa": LanguageInfo("Spanish", ("es", "spanish", "español", "espanol"), "es", True, False),
    "tha": LanguageInfo("Thai", ("th", "thai"), "th", False, True),
    "vie": LanguageInfo("Vietnamese", ("vi", "vietnamese"), "vi", True, False),
    "yue": LanguageInfo("Cantonese", ("cantonese", "zh-hk", "yue_hant_hk"), "yue", False, True),
    # The paper writes Mandarin as `zho`, the newer original code and its FLEURS data as `cmn`: both are accepted.
    "zho": LanguageInfo("Chinese (Mandarin)", ("zh", "cmn", "chinese", "mandarin", "zh-cn", "cmn_hans_cn"), "zh",
                        False, True),
}
# Views of the table.
LANGUAGES: dict[str, tuple[str, tuple[str, ...]]] = {code: (row.name, row.aliases) for code, row in LANGUAGE_TABLE.items()}
WHISPER_CODES: dict[str, str] = {code: row.whisper for code, row in LANGUAGE_TABLE.items()}
UNSPACED_LANGUAGES = frozenset(code for code, row in LANGUAGE_TABLE.items() if not row.spaced)
CER_LANGUAGES = frozenset({code for code, row in LANGUAGE_TABLE.items() if row.cer} | {"cmn"})
MANDARIN_TAGS = ("zho", "cmn")
# The pipeline task a saved model folder declares (config.custom_pipelines) and the pipeline registers.
PIPELINE_TASK = "speech-translation"

_ALIASES: dict[str, str] = {}
for _code, (_name, _aliases) in LANGUAGES.items():
    for _alias in (_code, _name.lower(), *_aliases):
        _ALIASES[_alias.lower()] = _code


def supported_languages_text() -> str:
    """One line listing every supported code with its name, for error messages."""
    return ", ".join(f"{code} ({name})" for code, (name, _) in LANGUAGES.items())


def target_on_transcription_message(field: str) -> str:
    """The error for a target language sent to the transcription endpoint (ours and vLLM's server): answering with a
    transcript where a translation was asked for, without a word, would be worse."""
    return f"{field} is for /v1/audio/translations; /v1/audio/transcriptions answers in the spoken language."


def normalize_language(language: str) -> str:
    """Map an ISO 639-3/639-1 code, a name or a tag such as `<|eng|>` to the canonical 3-letter code.

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
    logged warning: the answer is the speech rewritten in its own language, not a translation.

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
        logger.warning(f"{name} {normalize_language(src_lang)} is the source language: the same language, so the "
                       "answer is a rewrite of what was said, not a translation.")
    return list(codes)


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


class UntrainedWarnings:
    """Logs a warning, once per (source, target), when a model is asked for a language or direction outside what
    its config records it was trained on (`LlmSrtConfig.untrained_reason`); with `refuse=True` raises
    [`UntrainedDirectionError`] instead. One per pipeline or server."""

    def __init__(self, config, log=None):
        self.config, self.log, self.seen = config, log or logger, set()

    def check(self, src_lang: str, tgt_lang: str | None = None, refuse: bool = False) -> None:
        key = (normalize_language(src_lang), None if tgt_lang is None else normalize_language(tgt_lang))
        if key in self.seen:
            return
        reason = getattr(self.config, "untrained_reason", lambda *args: None)(*key)
        asked = key[0] if key[1] is None else f"{key[0]} -> {key[1]}"
        if reason is not None and refuse:
            raise UntrainedDirectionError(
                f"This model was not trained on {asked}: {reason} (config.trained_languages / trained_directions); "
                "refused because untrained directions are set to 'error' (untrained_direction='warn', "
                "--untrained-direction warn, answers them with a warning).")
        self.seen.add(key)
        if reason is not None:
            self.log.warning(f"This model was not trained on {asked}: {reason}. Its answer may be in another "
                             "language, or wrong (config.trained_languages / trained_directions).")


# Shapes of the released backbones, so a config can be built without downloading them (benchmarks, meta-device
# loading). When a model is assembled from real checkpoints, their own configs are used instead.
WHISPER_LARGE_V3_ENCODER = {
    "model_type": "whisper",
    "d_model": 1280,
    "encoder_layers": 32,
    "encoder_attention_heads": 20,
    "encoder_ffn_dim": 5120,
    "decoder_layers": 32,
    "decoder_attention_heads": 20,
    "decoder_ffn_dim": 5120,
    "num_mel_bins": 128,
    "max_source_positions": 1500,
    "vocab_size": 51866,
}
_QWEN25_COMMON = {
    "model_type": "qwen2",
    "hidden_act": "silu",
    "max_window_layers": 70,
    "rope_theta": 1000000.0,
    "bos_token_id": 151643,
    "eos_token_id": 151643,
}
QWEN25_CONFIGS = {
    "3b": {**_QWEN25_COMMON, "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
           "num_attention_heads": 16, "num_key_value_heads": 2, "vocab_size": 151936, "rms_norm_eps": 1e-6,
           "max_position_embeddings": 32768, "tie_word_embeddings": True},
    "7b": {**_QWEN25_COMMON, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
           "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064, "rms_norm_eps": 1e-6,
           "max_position_embeddings": 131072, "tie_word_embeddings": False},
    "32b": {**_QWEN25_COMMON, "hidden_size": 5120, "intermediate_size": 27648, "num_hidden_layers": 64,
            "num_attention_heads": 40, "num_key_value_heads": 8, "vocab_size": 152064, "rms_norm_eps": 1e-5,
            "max_position_embeddings": 131072, "tie_word_embeddings": False},
}
PRESETS = {
    size: {
        "audio_model_name_or_path": "openai/whisper-large-v3",
        "text_model_name_or_path": f"Qwen/Qwen2.5-{size.upper()}",
    }
    for size in QWEN25_CONFIGS
}

# The paper's LoRA (Table: r=8, alpha=32, dropout 0.05 on q_proj, v_proj).
DEFAULT_LORA_CONFIG = {"r": 8, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}


def projector_intermediate_size_for(llm_dim: int) -> int:
    """The original's MLP rule: <=1536 one linear layer (returns 0), <=2560 hidden 1536, larger hidden 2560."""
    if llm_dim <= 1536:
        return 0
    if llm_dim <= 2560:
        return 1536
    return 2560


def generation_setting(generate_kwargs: dict, generation_config, name: str):
    """A decoding option as `generate` resolves it: the call's keyword, else the `generation_config` the call
    passes, else `generation_config` (the model's)."""
    if generate_kwargs.get(name) is not None:
        return generate_kwargs[name]
    return getattr(generate_kwargs.get("generation_config") or generation_config, name, None)


def reference_near(folder: str | os.PathLike, reference: str) -> str:
    """A component reference of a saved config (e.g. `audio_model_name_or_path`): the folder of that name next to the
    model's `folder` when there is one, else the reference as given (a Hub id or another path)."""
    local = os.path.join(os.fspath(folder), str(reference))
    return local if not os.path.isabs(str(reference)) and os.path.isdir(local) else str(reference)


def check_model_location(path: str | os.PathLike) -> None:
    """Refuse a local model path that does not exist with `model folder not found: <path>`.

    Without this, a mistyped folder reaches the Hub client, which answers "Repo id must be in the form ...". A
    `PathLike`, or a string that cannot be a Hub repo id (absolute, `./x`, `a/b/c`, ...), is a local path.

    Raises:
        FileNotFoundError: the folder does not exist.
        NotADirectoryError: the path is a file, not a model folder.
        OSError: its `config.json` is not JSON (`read_config_json`).
    """
    text = os.fspath(path)
    if os.path.isdir(text):
        read_config_json(text)
        return
    if os.path.isfile(text):
        raise NotADirectoryError(f"model folder expected, got a file: {text}")
    if not isinstance(path, os.PathLike):
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(text)
            return  # `name` or `namespace/name`: left to the Hub
        except HFValidationError:
            pass
    raise FileNotFoundError(f"model folder not found: {text}")


def read_config_json(folder: str | os.PathLike) -> dict | None:
    """A local model folder's `config.json` as a dict; None when `folder` is no local folder or has no config.json.

    Raises:
        OSError: the file is not JSON (one line naming the file, the JSON error and its line and column).
        ValueError: it is JSON but not an object.
    """
    path = os.path.join(os.fspath(folder), "config.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except UnicodeDecodeError as error:
        raise OSError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start}); undo the edit, or save or "
                      "download the model again.") from None
    except json.JSONDecodeError as error:
        raise OSError(f"{path}: not valid JSON ({error.msg}, line {error.lineno} column {error.colno}); undo the "
                      "edit, or save or download the model again.") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: not a valid LLM-SRT config (expected a JSON object, got "
                         f"{type(config).__name__}); save or download it again.")
    return config


def _check_positive_int(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}.")


# Sizes of each sub-model that must be whole numbers >= 1 (a bad value fails deep in torch otherwise).
_SUB_CONFIG_SIZES = {
    "audio_config": ("d_model", "encoder_layers", "encoder_attention_heads", "num_mel_bins", "max_source_positions"),
    "projector_config": ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"),
    "text_config": ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "intermediate_size"),
}


class LlmSrtConfig(PreTrainedConfig):
    r"""Configuration of [`LlmSrtForConditionalGeneration`].

    Args:
        audio_config (`dict` or `WhisperConfig`): the Whisper model whose encoder hears the audio (128 mel bins for
            Whisper-large-v3).
        projector_config (`dict` or `Blip2QFormerConfig`): the Q-Former; hidden 768, 8 layers, its
            `encoder_hidden_size` is set to the encoder width.
        text_config (`dict` or `Qwen2Config`): the LLM.
        num_queries (`int`, defaults to 80): learned queries, i.e. audio embeddings given to the LLM per 30 s.
        projector_intermediate_size (`int`, *optional*): hidden width of the MLP after the Q-Former; 0 means a single
            linear layer. Derived from the LLM width as the original does when not given.
        projector_layer_norm_eps (`float`, defaults to 1e-5): epsilon of the LayerNorm closing the projector.
        audio_token_id (`int`, *optional*): id of the placeholder the processor writes in the 80 audio slots. Its
            embedding is replaced by the audio embeddings, so it must be an id the tokenizer never emits; defaults
            to the last row of the LLM's embedding matrix (Qwen2.5 pads its matrix beyond the tokenizer).
        mandarin_tag (`str`, defaults to `"zho"`): how Mandarin is tagged in prompts (`zho` or `cmn`), as trained.
        lora_config (`dict`, *optional*): when set, LoRA (peft) is applied to the LLM with these arguments.
        audio_model_name_or_path / text_model_name_or_path (`str`, *optional*): where the encoder and LLM weights come
            from; required for an adapter-only checkpoint.
        adapter_only (`bool`, defaults to False): the saved weights hold only the trained parts (projector, LoRA);
            the encoder and LLM are loaded from the two references above.
        trained_languages (`list[str]`, *optional*): the languages of the model's training data (sources of every
            stage, targets of the translation stages), as ISO 639-3 codes; recorded by `trainer_scripts/train.py`
            (the converter records the paper's 15). None: not recorded, all 15 assumed.
        trained_directions (`list[str]`, *optional*): the translation directions of its training data (`"eng-deu"`);
            empty after recognition (ASR) training only. None: not recorded, all 210 assumed.
        language_detector_languages (`list[str]`, *optional*): set when Whisper's decoder (language detection for
            `src_lang="auto"`) is part of the model: the Whisper language codes of its output rows. When None, the
            decoder is loaded from `audio_model_name_or_path` on first use.
    """

    model_type = "llm_srt"
    # sub-config -> (default model type, default arguments)
    _sub_config_defaults = {
        "audio_config": ("whisper", WHISPER_LARGE_V3_ENCODER),
        "projector_config": ("blip_2_qformer", {"num_hidden_layers": 8, "encoder_hidden_size": 1280}),
        "text_config": ("qwen2", QWEN25_CONFIGS["3b"]),
    }
    if SubConfigSpec is not None:
        sub_configs_defaults = {
            key: SubConfigSpec(config_class=AutoConfig, model_type=model_type_, init_kwargs=kwargs)
            for key, (model_type_, kwargs) in _sub_config_defaults.items()
        }
    else:
        sub_configs = {key: AutoConfig for key in _sub_config_defaults}

    audio_config: dict | PreTrainedConfig | None = None
    projector_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    num_queries: int = 80
    projector_intermediate_size: int | None = None
    projector_layer_norm_eps: float = 1e-5
    audio_token_id: int | None = None
    mandarin_tag: str = "zho"
    lora_config: dict | None = None
    audio_model_name_or_path: str | None = None
    text_model_name_or_path: str | None = None
    adapter_only: bool = False
    language_detector_languages: list[str] | None = None
    trained_languages: list[str] | None = None
    trained_directions: list[str] | None = None
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        if SubConfigSpec is None:  # what transformers >= 5.20 does with sub_configs_defaults
            from transformers.models.auto.configuration_auto import CONFIG_MAPPING

            for key, (default_type, defaults) in self._sub_config_defaults.items():
                value = getattr(self, key)
                if not isinstance(value, PreTrainedConfig):
                    value = dict(defaults if value is None else value)
                    setattr(self, key, CONFIG_MAPPING[value.pop("model_type", default_type)](**value))
        super().__post_init__(**kwargs)
        for key, names in _SUB_CONFIG_SIZES.items():
            for name in names:
                if getattr(getattr(self, key), name, None) is not None:
                    _check_positive_int(getattr(getattr(self, key), name), f"{key}: {name}")
        for key, width, heads in (("audio_config", "d_model", "encoder_attention_heads"),
                                  ("projector_config", "hidden_size", "num_attention_heads"),
                                  ("text_config", "hidden_size", "num_attention_heads")):
            sub = getattr(self, key)
            if getattr(sub, width) % getattr(sub, heads):
                raise ValueError(f"{key}: {heads} {getattr(sub, heads)} does not divide its {width} "
                                 f"{getattr(sub, width)} (each head takes an equal share of the width).")
        _check_positive_int(self.num_queries, "num_queries")
        encoder_width = self.audio_config.d_model
        if self.projector_config.encoder_hidden_size != encoder_width:
            self.projector_config.encoder_hidden_size = encoder_width
        if self.projector_intermediate_size is None:
            self.projector_intermediate_size = projector_intermediate_size_for(self.text_config.hidden_size)
        if self.audio_token_id is None:
            self.audio_token_id = self.text_config.vocab_size - 1
        if not 0 <= self.audio_token_id < self.text_config.vocab_size:
            raise ValueError(
                f"audio_token_id={self.audio_token_id} is outside the LLM vocabulary (size {self.text_config.vocab_size})."
            )
        if self.mandarin_tag not in MANDARIN_TAGS:
            raise ValueError(f"mandarin_tag must be one of {MANDARIN_TAGS}, got {self.mandarin_tag!r}.")
        if self.lora_config is not None:
            self.lora_config = {**DEFAULT_LORA_CONFIG, **self.lora_config}
        if self.trained_languages is not None:
            self.trained_languages = recorded_languages(self.trained_languages, "trained_languages")
        if self.trained_directions is not None:
            self.trained_directions = recorded_directions(self.trained_directions)

    def untrained_reason(self, src_lang: str, tgt_lang: str | None = None) -> str | None:
        """Why recognizing `src_lang` (or translating it into `tgt_lang`) is outside this model's recorded training
        data, or None when it is inside it or nothing was recorded."""
        src = normalize_language(src_lang)
        tgt = None if tgt_lang is None else normalize_language(tgt_lang)
        reasons = []
        if self.trained_languages is not None:
            unknown = [code for code in dict.fromkeys((src, tgt)) if code is not None
                       and code not in self.trained_languages]
            if unknown:
                reasons.append(f"{' and '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not among its "
                               f"languages ({_listed(self.trained_languages)})")
        if tgt is not None and self.trained_directions is not None and f"{src}-{tgt}" not in self.trained_directions:
            reasons.append(f"{src}-{tgt} is not among its directions ({_listed(self.trained_directions)})")
        return "; ".join(reasons) or None

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "LlmSrtConfig":
        """Load a saved config; a missing folder and a config.json that parses but is not an LLM-SRT config (wrong
        types, bad values) are errors naming the folder or the file."""
        check_model_location(pretrained_model_name_or_path)
        read_config_json(pretrained_model_name_or_path)  # not JSON: named with its error, line and column
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except OSError:
            raise  # missing or unparsable files: transformers names them
        except (TypeError, ValueError, AttributeError, KeyError) as error:
            path = os.fspath(pretrained_model_name_or_path)
            where = os.path.join(path, "config.json") if os.path.isdir(path) else f"config.json of {path}"
            raise ValueError(
                f"{where}: not a valid LLM-SRT config ({type(error).__name__}: {error}); save or download it again."
            ) from error

    @property
    def chunk_length_s(self) -> float:
        """Longest audio one window holds, in seconds (30 for Whisper-large-v3)."""
        # Whisper: 2 mel frames per encoder position, 100 mel frames per second.
        return self.audio_config.max_source_positions * 2 / 100

    @classmethod
    def from_preset(cls, size: str, **kwargs) -> "LlmSrtConfig":
        """Config of the released shapes: `size` is "3b", "7b" or "32b" (Whisper-large-v3 + Qwen2.5-<size>)."""
        key = size.lower().removeprefix("llm-srt-")
        if key not in QWEN25_CONFIGS:
            raise ValueError(f"Unknown preset {size!r}; choose one of {sorted(QWEN25_CONFIGS)}.")
        return cls(
            audio_config=copy.deepcopy(WHISPER_LARGE_V3_ENCODER),
            text_config=copy.deepcopy(QWEN25_CONFIGS[key]),
            **{**PRESETS[key], **kwargs},
        )


LlmSrtConfig.register_for_auto_class()

__all__ = ["CER_LANGUAGES", "LANGUAGES", "LANGUAGE_TABLE", "LanguageInfo", "LlmSrtConfig", "PIPELINE_TASK",
           "UNSPACED_LANGUAGES", "UntrainedWarnings", "WHISPER_CODES", "check_model_location", "reference_near", "direction_key",
           "generation_setting", "language_tag", "normalize_language", "normalize_targets", "read_config_json"]
