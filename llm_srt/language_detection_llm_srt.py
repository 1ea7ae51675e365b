"""Spoken-language detection for LLM-SRT with Whisper's own method, on the encoder output the model already has.

Whisper detects the language with one step of its decoder: given `<|startoftranscript|>` and the encoder output, the
logits of the language tokens (`<|en|>`, `<|de|>`, ...) are its language probabilities. LLM-SRT holds Whisper's
encoder, so only the decoder is needed, and only the parts this one step uses: the decoder layers, the
`<|startoftranscript|>` embedding and the output rows of the language tokens (Whisper ties its output projection to
the token embeddings). [`LlmSrtLanguageDetector`] is that slice; the model's [`LanguageDetectionMixin`] loads it from
the Whisper checkpoint of the encoder (`config.audio_model_name_or_path`) on first use, or keeps it in the model's own
saves (`load_language_detector(save_with_model=True)`).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence

import torch
from torch import nn
from transformers import GenerationConfig, WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperDecoder
from transformers.models.whisper.tokenization_whisper import LANGUAGES as WHISPER_LANGUAGE_NAMES
from transformers.utils import cached_file, logging

from .languages_llm_srt import LANGUAGES, WHISPER_CODES, normalize_language
from .configuration_llm_srt import reference_near


logger = logging.get_logger(__name__)

FROM_WHISPER = {whisper: ours for ours, whisper in WHISPER_CODES.items()}
# Whisper's multilingual layout: <|startoftranscript|> then the language tokens in tokenizer order (large-v3 adds yue).
WHISPER_SOT_ID = 50258
WHISPER_FIRST_LANGUAGE_ID = 50259
HOW_TO_ENABLE = (
    "Enable it with model.load_language_detector('openai/whisper-large-v3') (the Whisper checkpoint of the "
    "encoder; save_with_model=True keeps it in the next save_pretrained), or pass src_lang= (e.g. 'eng')."
)


class LanguageDetectionUnavailable(ValueError):
    """The model cannot detect languages (no Whisper decoder); the message says how to enable it."""


def whisper_language_token_ids(
    vocab_size: int, generation_config: GenerationConfig | None = None
) -> tuple[int, dict[str, int]]:
    """`(<|startoftranscript|> id, {Whisper language code: token id})` of a Whisper checkpoint.

    Read from its generation config (`decoder_start_token_id`, `lang_to_id`) when it has them, otherwise derived from
    the multilingual vocabulary layout (51865 tokens: 99 languages; 51866, large-v3: 100 with Cantonese).

    Raises:
        LanguageDetectionUnavailable: for an English-only checkpoint, which has no language tokens.
    """
    lang_to_id = getattr(generation_config, "lang_to_id", None) if generation_config is not None else None
    if lang_to_id:
        sot = getattr(generation_config, "decoder_start_token_id", None) or WHISPER_SOT_ID
        return int(sot), {token.strip("<|>"): int(index) for token, index in lang_to_id.items()}
    if vocab_size < 51865:
        raise LanguageDetectionUnavailable(
            f"This Whisper checkpoint (vocabulary {vocab_size}) is English-only: it has no language tokens to detect "
            "languages with. Pass src_lang= instead."
        )
    count = 100 if vocab_size >= 51866 else 99
    codes = list(WHISPER_LANGUAGE_NAMES)[:count]
    return WHISPER_SOT_ID, {code: WHISPER_FIRST_LANGUAGE_ID + i for i, code in enumerate(codes)}


class LlmSrtLanguageDetector(nn.Module):
    """One step of Whisper's decoder from `<|startoftranscript|>`, scored on the language tokens only.

    Args:
        audio_config (`WhisperConfig`): the Whisper config (decoder layers, heads, widths are taken from it).
        languages (`list[str]`): Whisper language codes, one row of `proj_out` each (e.g. Whisper's 100, or the
            few a small model was taught).

    The decoder's vocabulary has a single row, the `<|startoftranscript|>` embedding: it is the only token this
    step reads. `proj_out` holds the output rows of the language tokens.
    """

    def __init__(self, audio_config: WhisperConfig, languages: Sequence[str]):
        super().__init__()
        if not languages:
            raise ValueError("A language detector needs at least one language.")
        decoder_config = copy.deepcopy(audio_config)
        decoder_config.vocab_size = 1
        decoder_config.pad_token_id = None  # the one row is a real token, not padding
        self.languages = list(languages)
        self.decoder = WhisperDecoder(decoder_config)
        self.proj_out = nn.Linear(audio_config.d_model, len(self.languages), bias=False)

    def forward(self, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        """Encoder output `(batch, frames, d_model)` -> language logits `(batch, len(languages))` in float32."""
        start = torch.zeros(encoder_hidden_states.shape[0], 1, dtype=torch.long, device=encoder_hidden_states.device)
        hidden = self.decoder(
            input_ids=start, encoder_hidden_states=encoder_hidden_states.to(self.proj_out.weight.dtype), use_cache=False
        ).last_hidden_state[:, -1]
        return self.proj_out(hidden).float()

    @classmethod
    def from_whisper(cls, name_or_path: str, audio_config: WhisperConfig | None = None, **hub_kwargs):
        """The detector of a Whisper checkpoint (Hub id or folder of `WhisperForConditionalGeneration` weights).

        Only the decoder's tensors are read from its safetensors files. `audio_config` (the model's) is checked
        against the checkpoint's, so the decoder fits the encoder it will listen to.
        """
        from safetensors import safe_open

        whisper_config = WhisperConfig.from_pretrained(name_or_path, **hub_kwargs)
        if audio_config is not None:
            for name in ("d_model", "max_source_positions"):
                if getattr(audio_config, name) != getattr(whisper_config, name):
                    raise ValueError(
                        f"{name_or_path} does not match this model's encoder: {name} is "
                        f"{getattr(whisper_config, name)} there and {getattr(audio_config, name)} here."
                    )
        try:
            generation_config = GenerationConfig.from_pretrained(name_or_path, **hub_kwargs)
        except OSError:
            generation_config = None
        sot, language_ids = whisper_language_token_ids(whisper_config.vocab_size, generation_config)
        tensors = {}
        for path in safetensors_files(name_or_path, hub_kwargs):
            with safe_open(path, framework="pt") as handle:
                for key in handle.keys():
                    if key.startswith("model.decoder.") or key == "proj_out.weight":
                        tensors[key] = handle.get_tensor(key)
        if "model.decoder.embed_tokens.weight" not in tensors:
            raise ValueError(f"{name_or_path} holds no Whisper decoder (no model.decoder.* weights).")
        embeddings = tensors.pop("model.decoder.embed_tokens.weight")
        output = tensors.pop("proj_out.weight", embeddings)  # Whisper ties proj_out to the token embeddings
        detector = cls(whisper_config, list(language_ids))
        state = {key.removeprefix("model."): value for key, value in tensors.items()}
        state["decoder.embed_tokens.weight"] = embeddings[sot:sot + 1]
        state["proj_out.weight"] = output[list(language_ids.values())]
        detector.load_state_dict(state, strict=True)
        return detector.to(embeddings.dtype).eval().requires_grad_(False)

    @classmethod
    def from_whisper_model(cls, whisper) -> "LlmSrtLanguageDetector":
        """The detector of a loaded `WhisperForConditionalGeneration`."""
        sot, language_ids = whisper_language_token_ids(whisper.config.vocab_size, whisper.generation_config)
        detector = cls(whisper.config, list(language_ids))
        state = {f"decoder.{k}": v for k, v in whisper.model.decoder.state_dict().items()}
        state["decoder.embed_tokens.weight"] = state["decoder.embed_tokens.weight"][sot:sot + 1]
        state["proj_out.weight"] = whisper.proj_out.weight[list(language_ids.values())]
        detector.load_state_dict(state, strict=True)
        return detector.to(whisper.dtype).eval().requires_grad_(False)


def safetensors_files(name_or_path: str, hub_kwargs: dict) -> list[str]:
    single = cached_file(name_or_path, "model.safetensors", _raise_exceptions_for_missing_entries=False, **hub_kwargs)
    if single is not None:
        return [single]
    index = cached_file(
        name_or_path, "model.safetensors.index.json", _raise_exceptions_for_missing_entries=False, **hub_kwargs
    )
    if index is None:
        raise ValueError(f"{name_or_path} has no safetensors weights (model.safetensors or its index).")
    with open(index, encoding="utf-8") as handle:
        shards = sorted(set(json.load(handle)["weight_map"].values()))
    return [cached_file(name_or_path, shard, **hub_kwargs) for shard in shards]


class LanguageDetectionMixin:
    """Language detection methods of [`LlmSrtForConditionalGeneration`]."""

    _LAZY_DETECTOR = "_lazy_language_detector"

    def _detector_or_none(self) -> LlmSrtLanguageDetector | None:
        saved = self.__dict__.get("_modules", {}).get("language_detector")
        return saved if saved is not None else self.__dict__.get(self._LAZY_DETECTOR)

    @property
    def has_language_detector(self) -> bool:
        """Whether a detector is attached (loaded or saved with the model); `auto` may still load one on first use."""
        return self._detector_or_none() is not None

    def set_language_detector(self, detector: LlmSrtLanguageDetector, save_with_model: bool = False) -> None:
        """Attach a detector. With `save_with_model` it becomes part of the model (`language_detector.*` weights
        in `save_pretrained`, `config.language_detector_languages` set); otherwise it is used but not saved."""
        reference = self.audio_tower.conv1.weight
        detector = detector.to(device=reference.device, dtype=reference.dtype).eval().requires_grad_(False)
        self.__dict__.pop(self._LAZY_DETECTOR, None)
        if save_with_model:
            self.language_detector = detector
            self.config.language_detector_languages = list(detector.languages)
        else:
            if "language_detector" in self._modules:
                del self._modules["language_detector"]
                self.config.language_detector_languages = None
            object.__setattr__(self, self._LAZY_DETECTOR, detector)  # a plain attribute: not in state_dict / saves

    def load_language_detector(
        self, name_or_path: str | os.PathLike | None = None, save_with_model: bool = False, **hub_kwargs
    ) -> LlmSrtLanguageDetector:
        """Load Whisper's decoder (the language-detection part) from a Whisper checkpoint and attach it.

        `name_or_path` defaults to `config.audio_model_name_or_path`, the checkpoint the encoder came from (a relative
        folder is looked up next to the model's folder first). See [`set_language_detector`] for `save_with_model`.

        Raises:
            LanguageDetectionUnavailable: no checkpoint is named, or it cannot be loaded (the message says why).
        """
        source = name_or_path if name_or_path is not None else self.config.audio_model_name_or_path
        if not source:
            raise LanguageDetectionUnavailable(
                "Language detection needs Whisper's decoder, and this model has none: it was not saved with the "
                "model and config.audio_model_name_or_path names no Whisper checkpoint to load it from. " + HOW_TO_ENABLE
            )
        source = reference_near(getattr(self.config, "_name_or_path", "") or "", str(source))
        try:
            detector = LlmSrtLanguageDetector.from_whisper(source, audio_config=self.config.audio_config, **hub_kwargs)
        except LanguageDetectionUnavailable:
            raise
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            raise LanguageDetectionUnavailable(
                f"Cannot load Whisper's decoder for language detection from {source!r}: {error} " + HOW_TO_ENABLE
            ) from None
        logger.info(f"Loaded Whisper's decoder for language detection from {source}.")
        self.set_language_detector(detector, save_with_model=save_with_model)
        return detector

    def get_language_detector(self) -> LlmSrtLanguageDetector:
        """The attached detector, loaded from `config.audio_model_name_or_path` on first use."""
        detector = self._detector_or_none()
        return detector if detector is not None else self.load_language_detector()

    @torch.no_grad()
    def detect_language(
        self,
        input_features: torch.FloatTensor | None = None,
        encoder_hidden_states: torch.FloatTensor | None = None,
        languages: Sequence[str] | None = None,
    ) -> list[dict]:
        """Detect the spoken language of each row, with Whisper's method, among the model's 15 languages.

        Args:
            input_features: log-mel features `(batch, mel_bins, frames)` (the processor's); encoded here.
            encoder_hidden_states: or the encoder output `(batch, frames, d_model)` already computed (e.g. the one
                the LLM's audio embeddings come from), so the encoder does not run twice.
            languages: candidate languages (any accepted spelling); default: the languages the model was trained on
                (`config.trained_languages`), or all 15 the detector knows when the model records none.

        Returns:
            One dict per row: `language` (our ISO 639-3 code; Mandarin is `zho`, written in prompts with
            `config.mandarin_tag`), `probability` (among the candidates), `probabilities` (every candidate, most
            likely first), and `whisper_language` / `whisper_probability`: Whisper's own top language among all the
            languages it knows; `supported` is False when that one is not among the candidates (e.g. Hindi).

        Raises:
            LanguageDetectionUnavailable: the model has no Whisper decoder and none can be loaded.
            ValueError: unknown candidate languages, or candidates the detector has no token for.
        """
        if (input_features is None) == (encoder_hidden_states is None):
            raise ValueError("Pass exactly one of input_features and encoder_hidden_states.")
        detector = self.get_language_detector()
        if encoder_hidden_states is None:
            input_features = input_features.to(device=self.audio_tower.conv1.weight.device,
                                               dtype=self.audio_tower.conv1.weight.dtype)
            encoder_hidden_states = self.audio_tower(input_features).last_hidden_state
        detector.to(encoder_hidden_states.device)
        # A model is never 'detected' as speaking a language it never heard: by default the candidates are its own.
        default = getattr(self.config, "trained_languages", None) or LANGUAGES
        wanted = list(dict.fromkeys(normalize_language(lang) for lang in (languages or default)))
        rows = {code: i for i, code in enumerate(detector.languages)}
        candidates = [code for code in wanted if WHISPER_CODES[code] in rows]
        missing = [code for code in wanted if WHISPER_CODES[code] not in rows]
        if languages is not None and missing:
            raise ValueError(
                f"The language detector has no token for {', '.join(missing)}; it knows "
                f"{', '.join(FROM_WHISPER.get(c, c) for c in detector.languages)}."
            )
        if not candidates:
            raise LanguageDetectionUnavailable(
                "The language detector knows none of LLM-SRT's languages (it has: "
                f"{', '.join(detector.languages)}). " + HOW_TO_ENABLE
            )
        if set(detector.languages) <= {WHISPER_CODES[code] for code in candidates}:
            warn_closed_detector(detector, candidates)
        probs = detector(encoder_hidden_states).softmax(-1).cpu()
        candidate_rows = [rows[WHISPER_CODES[code]] for code in candidates]
        results = []
        for row in probs:
            top = int(row.argmax())
            within = row[candidate_rows] / row[candidate_rows].sum().clamp_min(1e-30)
            order = within.argsort(descending=True).tolist()
            whisper_code = detector.languages[top]
            results.append({
                "language": candidates[order[0]],
                "probability": float(within[order[0]]),
                "probabilities": {candidates[i]: float(within[i]) for i in order},
                "whisper_language": whisper_code,
                "whisper_probability": float(row[top]),
                "supported": whisper_code in FROM_WHISPER and FROM_WHISPER[whisper_code] in candidates,
            })
        return results


def warn_closed_detector(detector: LlmSrtLanguageDetector, candidates: Sequence[str]) -> None:
    """Warn once per detector that knows no language beyond the candidates (a detector trained with a small model
    on its own languages, as the demo's): it cannot tell that a recording is in another language, so `supported`
    is never False for it and another language comes back as one of the candidates, however confident."""
    if getattr(detector, "_warned_closed", False):
        return
    detector._warned_closed = True
    logger.warning(
        f"This model's language detector knows only {', '.join(FROM_WHISPER.get(c, c) for c in detector.languages)}, "
        f"the languages it chooses among ({', '.join(candidates)}): a recording in any other language is detected "
        "as one of them, never reported as unsupported. Pass src_lang= where a recording may be in another language "
        "(a detector that knows more languages, as Whisper's own decoder with its 100, reports them).")


def whisper_language_name(code: str) -> str:
    """`"hi"` -> `"Hindi"` (Whisper's names), for messages."""
    return str(WHISPER_LANGUAGE_NAMES.get(code, code)).title()


__all__ = [
    "FROM_WHISPER",
    "LanguageDetectionMixin",
    "LanguageDetectionUnavailable",
    "LlmSrtLanguageDetector",
    "WHISPER_CODES",
    "warn_closed_detector",
    "whisper_language_token_ids",
]
