"""Tiny random LLM-SRT models and processors, built offline in seconds (tests, the offline demo, downstream CI).

The shapes are toy-sized but the structure is the real one: a Whisper encoder, a BLIP-2 Q-Former with learned
queries and the MLP, a Qwen2 causal LM, and a byte-level BPE tokenizer trained on the spot with Qwen2.5's special
token layout (`<|endoftext|>` as eos and pad, no BOS). Weights are random: outputs are gibberish until trained.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import torch
from transformers import WhisperFeatureExtractor

from .configuration_llm_srt import LANGUAGES, LlmSrtConfig, language_tag
from .modeling_llm_srt import LlmSrtForConditionalGeneration
from .processing_llm_srt import LlmSrtProcessor


SAMPLING_RATE = 16000
EOS_TOKEN = "<|endoftext|>"
DEFAULT_CORPUS = (
    "I see three red cats and two blue dogs.",
    "Ich sehe drei rote Katzen und zwei blaue Hunde.",
    "Je vois trois chats rouges et deux chiens bleus.",
    "Veo tres gatos rojos y dos perros azules.",
    "Vedo tre gatti rossi e due cani blu.",
    "Eu vejo três gatos vermelhos.",
    "Ik zie drie rode katten.",
    "Я вижу трёх красных котов.",
    "Saya melihat tiga kucing merah.",
    "Tôi thấy ba con mèo đỏ.",
    "我看到三只红色的猫。",
    "我見到三隻紅色嘅貓。",
    "赤い猫が三匹見えます。",
    "빨간 고양이 세 마리가 보여요.",
    "ฉันเห็นแมวสีแดงสามตัว",
)


def build_tiny_tokenizer(corpus: Iterable[str] = DEFAULT_CORPUS, vocab_size: int = 400):
    """A byte-level BPE tokenizer trained on `corpus` plus the 15 language tags (plain text, as in Qwen2.5)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tags = [language_tag(code) for code in LANGUAGES] + ["<|cmn|>"]
    texts = list(corpus) + ["".join(tags)] * 20 + [t1 + t2 for t1 in tags for t2 in tags]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS_TOKEN], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN)


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
    **config_kwargs,
) -> LlmSrtConfig:
    """Config of a toy LLM-SRT; the LLM vocabulary has spare rows beyond the tokenizer, like Qwen2.5's.

    `num_heads` is the encoder's and Q-Former's head count (the LLM has twice as many, half of them for keys and
    values); `ffn_multiplier` sizes the feed-forward layers of the encoder and the LLM.
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
        "num_attention_heads": 2 * num_heads,
        "num_key_value_heads": num_heads,
        "vocab_size": tokenizer_size + 8,
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
    tokenizer = tokenizer if tokenizer is not None else build_tiny_tokenizer()
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
    """A random tiny model and its processor (eval mode, float32). `config_kwargs` go to [`tiny_config`]."""
    tokenizer = tokenizer if tokenizer is not None else build_tiny_tokenizer()
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


def synthetic_speech(
    seconds: float = 1.0, sampling_rate: int = SAMPLING_RATE, seed: int = 0, pause_every: float | None = None
) -> np.ndarray:
    """A speech-like float32 signal: harmonic tones under a syllable-rate envelope, with optional silent pauses."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    pitch = 110 + 40 * rng.random()
    signal = sum(np.sin(2 * np.pi * pitch * k * t + rng.random() * 6.28) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t) ** 2
    audio = 0.1 * signal * envelope + 0.005 * rng.standard_normal(t.size)
    if pause_every:
        # 0.3 s of silence every `pause_every` seconds: word boundaries for the long-audio splitter.
        in_pause = (t % pause_every) > (pause_every - 0.3)
        audio[in_pause] = 0.0
    return audio.astype(np.float32)


__all__ = [
    "build_tiny_tokenizer",
    "tiny_config",
    "build_tiny_processor",
    "build_tiny_model_and_processor",
    "save_tiny_model",
    "synthetic_speech",
]
