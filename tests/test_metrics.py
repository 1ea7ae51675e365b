"""SRT outputs are scored by the original scorer's split rule (eval/test_metric_n.py)."""

import pytest
from transformers import LogitsProcessor, LogitsProcessorList

from llm_srt.decoding_llm_srt import TransformersEngine
from llm_srt.evaluation.decoding import decode_batch
from llm_srt.evaluation.metrics import split_srt_response


PAIR = "<|eng|><|deu|>"


@pytest.mark.parametrize(
    "response,expected",
    [
        # one tag pair: transcript before it, translation after it
        (f" I see cats. {PAIR} Ich sehe Katzen. ", ("I see cats.", "Ich sehe Katzen.")),
        # none: the whole response is the transcript, and the text after the last `|>` the translation
        ("I see cats<|eng|> Ich sehe", ("I see cats<|eng|> Ich sehe", "Ich sehe")),
        ("no tags at all", ("no tags at all", "no tags at all")),
        # two: not split either; the translation is what follows the last `|>`
        (f"I see{PAIR}Ich sehe{PAIR}Katzen", (f"I see{PAIR}Ich sehe{PAIR}Katzen", "Katzen")),
    ],
)
def test_original_split_rule(response, expected):
    assert split_srt_response(response, PAIR) == expected


class ForceSequence(LogitsProcessor):
    """Makes greedy decoding emit `sequence` token by token (then eos)."""

    def __init__(self, sequence, eos):
        self.sequence = list(sequence) + [eos]

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1]
        scores = scores.clone()
        scores[:, self.sequence[min(step, len(self.sequence) - 1)]] += 1e4
        return scores


@pytest.mark.parametrize(
    "response,hypothesis,transcript",
    [
        (f"I see cats{PAIR}Ich sehe Katzen", "Ich sehe Katzen", "I see cats"),
        ("I see cats|> Katzen", "Katzen", "I see cats|> Katzen"),
        (f"I see{PAIR}Ich{PAIR}Katzen", "Katzen", f"I see{PAIR}Ich{PAIR}Katzen"),
    ],
)
def test_evaluation_scores_srt_with_the_original_rule(tiny, clips, response, hypothesis, transcript):
    model, processor = tiny
    tokens = processor.tokenizer.encode(response)
    force = ForceSequence(tokens, processor.eos_token_id)
    rows = [{"key": "k0", "src_lang": "eng", "tgt_lang": "deu", "transcript": "ref", "translation": "Ref",
             "audio": {"array": clips[0], "sampling_rate": 16000}}]
    out = decode_batch(TransformersEngine(model, processor), rows, "srt", generate_kwargs={
        "num_beams": 1, "max_new_tokens": len(tokens) + 1, "no_repeat_ngram_size": 0,
        "logits_processor": LogitsProcessorList([force])})
    assert out[0]["raw"] == response
    assert (out[0]["hypothesis"], out[0]["transcript"]) == (hypothesis, transcript)
    # The pipeline's richer view of the same text keeps `well_formed` / `raw`.
    richer = processor.split_srt_output(response, "eng", "deu")
    assert richer["raw"] == response and richer["well_formed"] == (response.count(PAIR) >= 1)


def test_trainer_metrics_score_srt_with_the_original_rule(tokenizer):
    """The trainer's compute_metrics splits as evaluate.py does: with two tag pairs the translation is the text
    after the last `|>` (BLEU 100 against that reference); the pipeline's split would take the middle part."""
    from types import SimpleNamespace

    from llm_srt.testing import build_tiny_processor, tiny_config
    from llm_srt.training.stages import build_compute_metrics

    processor = build_tiny_processor(tiny_config(len(tokenizer)), tokenizer)
    translation = "Ich sehe drei rote Katzen und zwei blaue Hunde"
    rows = [{"src_lang": "eng", "tgt_lang": "deu", "transcript": "I see", "translation": translation}]
    response = f"I see{PAIR}Sie sind{PAIR}{translation}"
    predictions = [tokenizer.encode(response) + [tokenizer.eos_token_id]]
    metrics = build_compute_metrics(processor, "srt", rows)(SimpleNamespace(predictions=predictions))
    bleu = [v for k, v in metrics.items() if "bleu" in k.lower()]
    assert bleu and all(v == pytest.approx(100.0) for v in bleu), metrics


# ------------------------------------------------------------------------------------------ Unicode normalization
VIETNAMESE = ["Tôi thấy ba con mèo ở nhà.", "Chúng tôi đã học tiếng Việt trong nhiều năm."]
KOREAN = ["고양이 세 마리를 봅니다.", "우리는 한국어를 배웠습니다."]


def test_nfd_references_score_like_nfc():
    """Text is NFC-normalized before scoring (as sacreBLEU users expect): references in NFD (decomposed accents,
    Hangul as jamo) are the same text as NFC hypotheses: BLEU and chrF++ 100, WER and CER 0."""
    import unicodedata

    from llm_srt.evaluation.metrics import corpus_bleu, error_rate, score_directions
    from llm_srt.evaluation.quality import chrf_pp

    for texts, language in ((VIETNAMESE, "vie"), (KOREAN, "kor")):
        nfd = [unicodedata.normalize("NFD", t) for t in texts]
        assert nfd != texts  # the test means something
        assert corpus_bleu(texts, nfd, language)["score"] == pytest.approx(100)
        assert corpus_bleu(nfd, texts, language)["score"] == pytest.approx(100)
        assert chrf_pp(texts, nfd)["score"] == pytest.approx(100)
        assert error_rate(texts, nfd, language)["score"] == 0
        rows = [{"src_lang": "eng", "tgt_lang": language, "hypothesis": h, "reference": r, "transcript": "I see",
                 "transcript_reference": "I see"} for h, r in zip(texts, nfd)]
        scores = score_directions(rows, "srt")["directions"][f"eng-{language}"]
        assert scores["bleu"]["score"] == pytest.approx(100) and scores["wer"]["score"] == 0
    # a real difference still counts
    assert corpus_bleu(["Tôi thấy hai con chó ở nhà."], [VIETNAMESE[0]], "vie")["score"] < 60


JAPANESE = (["私は赤い猫を三匹見ました。", "今日はいい天気です。"], ["私は赤い猫を三匹見た。", "今日はいい天気ですね。"])


@pytest.mark.parametrize("name", ["ja_jp", "ja", "Japanese", "JPN", "<|jpn|>"])
def test_fleurs_config_names_are_languages_of_the_one_table(name):
    """corpus_bleu(..., "ja_jp") used 13a silently (BLEU 0.0) where "jpn" gives the char tokenizer."""
    from llm_srt.evaluation.metrics import bleu_tokenizer, corpus_bleu
    from llm_srt.languages_llm_srt import FLEURS_CONFIGS, normalize_language

    assert corpus_bleu(*JAPANESE, name) == corpus_bleu(*JAPANESE, "jpn") and bleu_tokenizer(name) == "char"
    assert corpus_bleu(*JAPANESE, name)["score"] > 30
    for code, config in FLEURS_CONFIGS.items():  # every FLEURS config name, e.g. cmn_hans_cn, yue_hant_hk, en_us
        assert normalize_language(config) == code


@pytest.mark.parametrize("name", ["xx_yy", "japanese_jp", "j", ""])
def test_an_unknown_language_is_refused_by_name_not_scored_as_13a(name):
    from llm_srt.evaluation.metrics import bleu_tokenizer, corpus_bleu, error_rate

    for score in (lambda: corpus_bleu(*JAPANESE, name), lambda: error_rate(*JAPANESE, name),
                  lambda: bleu_tokenizer(name)):
        with pytest.raises(ValueError, match=f"Unknown language {name!r}"):
            score()
    assert bleu_tokenizer("lao") == "char" and bleu_tokenizer("fin") == "13a"  # other ISO 639-3 codes pass
