"""Tiny random LLM-SRT models and processors, built offline in seconds (tests, the offline demo, downstream CI).

The shapes are toy-sized but the structure is the real one: a Whisper encoder, a BLIP-2 Q-Former with learned
queries and the MLP, and a Qwen2 causal LM with Qwen2.5's 151,936-row embedding, tokenized by Qwen2.5's real
tokenizer. Weights are random: outputs are gibberish until trained, except the parrot model's, trained in seconds to
say two lines spoken by espeak-ng.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from transformers import WhisperFeatureExtractor
from transformers.utils import logging

from ..configuration_llm_srt import LlmSrtConfig
from ..modeling_llm_srt import LlmSrtForConditionalGeneration
from ..processing_llm_srt import LlmSrtProcessor
from .audio import SAMPLING_RATE, speak
from .tokenizers import QWEN2_5_EMBEDDING_ROWS, QWEN2_5_TOKENIZER_SIZE, build_qwen2_5_tokenizer, build_tiny_tokenizer


logger = logging.get_logger(__name__)


def tiny_config(
    tokenizer_size: int,
    num_queries: int = 8,
    window_seconds: int = 2,
    num_mel_bins: int = 80,
    encoder_width: int = 32,
    qformer_width: int = 32,
    llm_width: int = 64,
    projector_intermediate_size: int | None = None,
    tie_word_embeddings: bool = True,
    projector_dropout: float = 0.1,
    num_heads: int = 2,
    llm_layers: int = 2,
    ffn_multiplier: int = 2,
    vocab_size: int | None = None,
    llm_heads: int | None = None,
    **config_kwargs,
) -> LlmSrtConfig:
    """Config of a toy LLM-SRT; the LLM vocabulary has spare rows beyond the tokenizer, like Qwen2.5's.

    `vocab_size` is the LLM's embedding rows (default: the tokenizer size + 8 spare rows).
    `num_heads` is the encoder's and Q-Former's head count; the LLM has `llm_heads` (default twice as many), half
    of them for keys and values (vLLM's CPU attention takes head sizes 32, 64, 80, ... only: `llm_width /
    llm_heads`); `ffn_multiplier` sizes the feed-forward layers of the encoder and the LLM.
    """
    audio_config = {
        "model_type": "whisper",
        "d_model": encoder_width,
        "encoder_layers": 2,
        "encoder_attention_heads": num_heads,
        "encoder_ffn_dim": ffn_multiplier * encoder_width,
        "decoder_layers": 1,
        "decoder_attention_heads": 2,
        "decoder_ffn_dim": 2 * encoder_width,
        "num_mel_bins": num_mel_bins,
        "max_source_positions": window_seconds * 50,
        # Only the encoder is built; the decoder vocabulary just keeps Whisper's special ids valid.
        "vocab_size": 51866,
    }
    projector_config = {
        "model_type": "blip_2_qformer",
        "hidden_size": qformer_width,
        "num_hidden_layers": 2,
        "num_attention_heads": num_heads,
        "intermediate_size": 2 * qformer_width,
        "hidden_dropout_prob": projector_dropout,
        "attention_probs_dropout_prob": projector_dropout,
    }
    text_config = {
        "model_type": "qwen2",
        "hidden_size": llm_width,
        "intermediate_size": ffn_multiplier * llm_width,
        "num_hidden_layers": llm_layers,
        "num_attention_heads": llm_heads or 2 * num_heads,
        "num_key_value_heads": (llm_heads or 2 * num_heads) // 2,
        "vocab_size": vocab_size if vocab_size is not None else tokenizer_size + 8,
        "max_position_embeddings": 1024,
        "tie_word_embeddings": tie_word_embeddings,
        "eos_token_id": 0,
        "bos_token_id": 0,
    }
    return LlmSrtConfig(
        audio_config=audio_config,
        projector_config=projector_config,
        text_config=text_config,
        num_queries=num_queries,
        projector_intermediate_size=projector_intermediate_size,
        **config_kwargs,
    )


def build_tiny_processor(config: LlmSrtConfig, tokenizer=None) -> LlmSrtProcessor:
    """The processor matching a (tiny) config: mel bins and window taken from its audio config."""
    tokenizer = tokenizer if tokenizer is not None else build_qwen2_5_tokenizer()
    window_seconds = int(config.chunk_length_s)
    feature_extractor = WhisperFeatureExtractor(
        feature_size=config.audio_config.num_mel_bins, chunk_length=window_seconds, sampling_rate=SAMPLING_RATE
    )
    return LlmSrtProcessor(
        feature_extractor=feature_extractor,
        tokenizer=tokenizer,
        num_audio_tokens=config.num_queries,
        audio_token_id=config.audio_token_id,
        mandarin_tag=config.mandarin_tag,
    )


def build_tiny_model_and_processor(
    seed: int = 0, tokenizer=None, **config_kwargs
) -> tuple[LlmSrtForConditionalGeneration, LlmSrtProcessor]:
    """A random tiny model and its processor (eval mode, float32), with Qwen2.5's tokenizer unless `tokenizer` is
    given. `config_kwargs` go to [`tiny_config`]."""
    tokenizer = tokenizer if tokenizer is not None else build_qwen2_5_tokenizer()
    if len(tokenizer) == QWEN2_5_TOKENIZER_SIZE:  # Qwen2.5's embedding: 151,936 rows, the last 271 spare
        config_kwargs.setdefault("vocab_size", QWEN2_5_EMBEDDING_ROWS)
    config = tiny_config(len(tokenizer), **config_kwargs)
    config.text_config.eos_token_id = tokenizer.eos_token_id
    config.text_config.bos_token_id = tokenizer.eos_token_id
    torch.manual_seed(seed)
    model = LlmSrtForConditionalGeneration(config).eval()
    return model, build_tiny_processor(config, tokenizer)


def save_tiny_model(folder: str | os.PathLike, seed: int = 0, **config_kwargs) -> str:
    """Build a tiny model + processor and save both to `folder` (loadable with trust_remote_code=True)."""
    model, processor = build_tiny_model_and_processor(seed=seed, **config_kwargs)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


PARROT_LINES = (
    ("I see three red cats.", {"deu": "Ich sehe drei rote Katzen.", "fra": "Je vois trois chats rouges."}),
    ("Two blue dogs.", {"deu": "Zwei blaue Hunde.", "fra": "Deux chiens bleus."}),
)


def build_parrot_model(
    lines=PARROT_LINES, src_lang: str = "eng", voice: str = "en-us", max_steps: int = 200, target_loss: float = 0.05,
    seed: int = 0, window_seconds: int = 4, **shapes,
) -> tuple[LlmSrtForConditionalGeneration, LlmSrtProcessor, list[np.ndarray]]:
    """A tiny model trained in seconds (all of it, toy tokenizer) to answer a few spoken lines: each `(transcript,
    {target: translation})` of `lines` is spoken by espeak-ng and learned as SRT into every target and as ASR, until
    the training loss is below `target_loss`. It hears which line was spoken, so tests can check real words.
    `shapes` go to `tiny_config` (e.g. head sizes vLLM's CPU attention supports). Returns the model (eval mode), its
    processor and the clips."""
    tokenizer = build_tiny_tokenizer()
    model, processor = build_tiny_model_and_processor(seed=seed, tokenizer=tokenizer, window_seconds=window_seconds,
                                                      projector_dropout=0.0, **shapes)
    clips = [speak(text, voice) for text, _ in lines]
    srt = [(clip, text, target, translation) for clip, (text, translations) in zip(clips, lines)
           for target, translation in translations.items()]
    batches = [
        processor([row[0] for row in srt], task="srt", src_lang=src_lang, tgt_lang=[row[2] for row in srt],
                  transcript=[row[1] for row in srt], translation=[row[3] for row in srt], sampling_rate=SAMPLING_RATE),
        processor(clips, task="asr", src_lang=src_lang, transcript=[text for text, _ in lines],
                  sampling_rate=SAMPLING_RATE),
    ]
    model.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(max_steps):
        losses = []
        for batch in batches:
            loss = model(**batch).loss
            loss.backward()
            losses.append(float(loss.detach()))
        optimizer.step()
        optimizer.zero_grad()
        if max(losses) < target_loss:
            break
    logger.info(f"The parrot model learned its {len(lines)} lines in {step + 1} steps (loss {max(losses):.3f}).")
    model.eval().requires_grad_(False)
    return model, processor, clips


def whisper_hearing(audio_config, whisper_code: str = "de", seed: int = 1):
    """A tiny random Whisper (`WhisperForConditionalGeneration`) with `audio_config`'s encoder shape whose decoder
    hears `whisper_code` in any audio: a language detector with a known answer, for tests."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration
    from transformers.models.whisper.tokenization_whisper import LANGUAGES as WHISPER_LANGUAGES

    from ..language_detection_llm_srt import WHISPER_FIRST_LANGUAGE_ID

    torch.manual_seed(seed)
    whisper = WhisperForConditionalGeneration(WhisperConfig(**audio_config.to_dict())).eval()
    with torch.no_grad():
        decoder = whisper.model.decoder
        decoder.layer_norm.weight.zero_()
        decoder.layer_norm.bias.zero_()
        decoder.layer_norm.bias[0] = 1.0
        token = WHISPER_FIRST_LANGUAGE_ID + list(WHISPER_LANGUAGES).index(whisper_code)  # Whisper's order
        decoder.embed_tokens.weight[token] = 0.0
        decoder.embed_tokens.weight[token, 0] = 12.0  # proj_out is tied to the token embeddings
    return whisper


def save_model(model, processor, folder: str | os.PathLike) -> str:
    """Save a model and its processor into `folder` (a loadable model folder); returns the path."""
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


def attach_detector_hearing(model, whisper_code: str, folder: str | os.PathLike) -> None:
    """Save `whisper_hearing(..., whisper_code)` into `folder` and attach it to `model` as its saved language
    detector: a model whose detection always hears that language."""
    whisper_hearing(model.config.audio_config, whisper_code).save_pretrained(folder)
    model.load_language_detector(str(folder), save_with_model=True)


__all__ = ["PARROT_LINES", "attach_detector_hearing", "build_parrot_model", "build_tiny_model_and_processor",
           "build_tiny_processor", "save_model", "save_tiny_model", "tiny_config", "whisper_hearing"]
