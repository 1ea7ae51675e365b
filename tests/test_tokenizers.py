"""The offline Qwen2.5 tokenizer equals the real one: published ids, special tokens, save/load."""

import pytest


# Ids published for Qwen2/Qwen2.5's tokenizer: the Qwen2.5-7B card's example, and cases from llama.cpp's
# tokenizer tests (models/ggml-vocab-qwen2.gguf.inp/.out).
PUBLISHED = [
    (" hello sir. How are you Edward?", [23811, 27048, 13, 2585, 525, 498, 21891, 30]),
    ("<|im_start|>hello<|im_end|>", [151644, 14990, 151645]),
    ("杭州是个好地方", [104130, 104104, 52801, 100371]),
    ("ied 4 ½ months", [1122, 220, 19, 220, 26062, 3951]),
    ("Führer", [37, 50753, 261]),
    (" ", [220]),
    ("   ", [262]),
    ("\t", [197]),
    ("\n", [198]),
    ("\n\n", [271]),
    ("Hello world", [9707, 1879]),
    (" Hello world", [21927, 1879]),
    ("Hello, world!", [9707, 11, 1879, 0]),
    (" this is 🦙.cpp", [419, 374, 11162, 99, 247, 13, 10821]),
    ("нещо на Български", [78762, 14144, 1456, 13073, 63471, 33594, 3038, 133178, 79012]),
    ("    Hello\n    Hello", [262, 21927, 198, 262, 21927]),
    ("' era", [6, 11385]),
    ("333333333", [18] * 9),  # Qwen2 splits digits one by one
    (
        "Hello, y'all! How are you 😁 ?我想在apple工作1314151天～",
        [9707, 11, 379, 64848, 0, 2585, 525, 498, 26525, 223, 937, 104100, 18493, 22377, 99257,
         16, 18, 16, 19, 16, 20, 16, 35727, 21216],
    ),
]


@pytest.mark.parametrize("text,ids", PUBLISHED)
def test_published_ids(tokenizer, text, ids):
    assert tokenizer.encode(text) == ids
    assert tokenizer.decode(ids) == text


def test_special_token_layout(tokenizer):
    assert len(tokenizer) == 151665
    assert tokenizer.bos_token is None
    assert tokenizer.eos_token == tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.eos_token_id == tokenizer.pad_token_id == 151643
    assert tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>", "<tool_call>", "<|file_sep|>"]) == [
        151644, 151645, 151657, 151664]
    # No BOS is added, and special tokens are skipped on decode.
    assert tokenizer("hello")["input_ids"] == [14990]
    assert tokenizer.decode([14990, 151643], skip_special_tokens=True) == "hello"


def test_language_tags_are_plain_bpe_pieces(tokenizer):
    # SPEC: the tags are not added tokens; the pair splits into ordinary pieces.
    ids = tokenizer.encode("<|eng|><|deu|>")
    assert tokenizer.convert_ids_to_tokens(ids) == ["<", "|", "eng", "|", "><", "|", "de", "u", "|", ">"]
    assert all(i < 151643 for i in ids)


def test_nfc_normalization(tokenizer):
    # "é" written as e + combining acute is normalized to the precomposed character before BPE.
    assert tokenizer.encode("caf\u0065\u0301") == tokenizer.encode("caf\u00e9")


def test_save_and_reload_give_the_same_ids(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    for text, ids in PUBLISHED:
        assert reloaded.encode(text) == ids
    assert len(reloaded) == 151665 and reloaded.eos_token_id == 151643
