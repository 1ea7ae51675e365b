"""Spoken-language detection for engines that run the LLM elsewhere (vLLM): Whisper's encoder and its language
decoder slice of a saved LLM-SRT folder, without the projector and the LLM."""

from __future__ import annotations

import os

import torch
from torch import nn
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from ..configuration_llm_srt import LlmSrtConfig, reference_near
from ..language_detection_llm_srt import LanguageDetectionMixin, LlmSrtLanguageDetector, safetensors_files
from ..modeling_llm_srt import load_whisper_encoder


class AudioLanguageIdentifier(LanguageDetectionMixin, nn.Module):
    """The language-detection half of a saved LLM-SRT model: Whisper's encoder and its language decoder slice,
    without the projector and the LLM. For engines that run the LLM elsewhere (vLLM): `detect_language` as the
    model's, at the cost of the encoder alone."""

    def __init__(self, config):
        nn.Module.__init__(self)
        self.config = config
        self.audio_tower = WhisperEncoder(config.audio_config)
        if config.language_detector_languages:
            self.language_detector = LlmSrtLanguageDetector(config.audio_config, config.language_detector_languages)
        self.eval().requires_grad_(False)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, **hub_kwargs) -> "AudioLanguageIdentifier":
        """Read the encoder (and a saved detector) from a model folder's weights, or, for an adapter-only save, from
        the Whisper checkpoint its config names; a detector not saved with the model is loaded on first use."""
        from safetensors import safe_open

        folder = str(folder)
        config = LlmSrtConfig.from_pretrained(folder, **hub_kwargs)
        config._name_or_path = folder
        model = cls(config)
        state: dict[str, torch.Tensor] = {}
        for file in safetensors_files(folder, hub_kwargs):
            with safe_open(file, framework="pt") as weights:
                for key in weights.keys():
                    if key.startswith(("audio_tower.", "language_detector.")):
                        state[key] = weights.get_tensor(key)
        if not any(key.startswith("audio_tower.") for key in state):  # adapter-only: the encoder is referenced
            source = reference_near(folder, str(config.audio_model_name_or_path or ""))
            model.audio_tower = load_whisper_encoder(source, **hub_kwargs).eval().requires_grad_(False)
            if config.language_detector_languages and not any(k.startswith("language_detector.") for k in state):
                model.load_language_detector(source, save_with_model=True)
        missing, _ = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
        missing = [key for key in missing if key.split(".")[0] in {k.split(".")[0] for k in state}]
        if missing:
            raise ValueError(f"{folder}: its weights lack {len(missing)} encoder/detector tensors, e.g. {missing[0]}.")
        return model


__all__ = ["AudioLanguageIdentifier"]
