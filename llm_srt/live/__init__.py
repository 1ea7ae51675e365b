"""Live speech translation: `LiveTranslator` (translator.py) decodes a stream of audio chunks into confirmed words
(LocalAgreement-2) and each segment's final text."""

from .translator import LiveTranslator


__all__ = ["LiveTranslator"]
