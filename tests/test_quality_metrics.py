"""Quality metrics with forced outputs: off-target language, loops, chrF++ and speed."""

import pytest
from sacrebleu.metrics import CHRF

from llm_srt.quality_metrics import chrf_pp, identify_language, is_loop, is_off_target, quality_directions, speed

GERMAN = "Der Zug nach Berlin fährt heute wegen eines Streiks nicht, und die Fahrgäste warten am Bahnhof."
FRENCH = "Le train pour Berlin ne circule pas aujourd'hui à cause d'une grève, et les voyageurs attendent à la gare."
ENGLISH = "The train to Berlin is not running today because of a strike, and the passengers wait at the station."


def test_german_hypothesis_for_french_target_is_off_target():
    assert identify_language(GERMAN) == "deu"
    assert is_off_target(GERMAN, "fra") is True
    assert is_off_target(FRENCH, "fra") is False
    assert is_off_target("", "fra") is None  # empty: counted apart


def test_mandarin_and_cantonese_are_one_group():
    assert is_off_target("我今天去商店买东西，然后回家吃饭。", "yue") is False
    assert is_off_target("我今天去商店买东西，然后回家吃饭。", "cmn") is False
    assert is_off_target(GERMAN, "yue") is True


def test_loops():
    assert is_loop("I think that I think that I think that I think that is it")
    assert is_loop("哈哈哈哈哈哈")
    assert is_loop("a complete and ordinary sentence", complete=False)  # cut by max_new_tokens
    assert not is_loop(ENGLISH)
    assert not is_loop("very very good")


def test_chrf_pp_equals_sacrebleu():
    hyps, refs = [FRENCH, "le chat dort"], [FRENCH.replace("gare", "station"), "le chat dort sur le lit"]
    expected = CHRF(word_order=2).corpus_score(hyps, [refs]).score
    assert chrf_pp(hyps, refs)["score"] == pytest.approx(expected)
    assert 0 < expected < 100


def test_rtfx_from_known_durations():
    result = speed(audio_seconds=120.0, decode_seconds=8.0, utterances=16, device="cpu", engine="transformers")
    assert result["rtfx"] == pytest.approx(15.0)
    assert result["utterances_per_second"] == pytest.approx(2.0)
    assert speed(None, 2.0, 4)["rtfx"] is None  # precomputed features: no audio duration
    with pytest.raises(ValueError, match="decode_seconds"):
        speed(1.0, 0.0, 1)


def test_quality_directions_counts_forced_outputs():
    rows = [
        {"src_lang": "eng", "tgt_lang": "fra", "hypothesis": GERMAN, "reference": FRENCH, "transcript": ENGLISH,
         "raw": ENGLISH + " " + GERMAN, "complete": True},
        {"src_lang": "eng", "tgt_lang": "fra", "hypothesis": FRENCH, "reference": FRENCH, "transcript": GERMAN,
         "raw": GERMAN + " " + FRENCH, "complete": True},
        {"src_lang": "eng", "tgt_lang": "deu", "hypothesis": "", "reference": GERMAN, "transcript": ENGLISH,
         "raw": "ja ja ja ja ja ja", "complete": False},
    ]
    result = quality_directions(rows, "srt")
    fra, deu = result["directions"]["eng-fra"], result["directions"]["eng-deu"]
    assert fra["off_target_rate"] == 0.5 and fra["transcript_off_target_rate"] == 0.5 and fra["loop_rate"] == 0
    assert deu["off_target_rate"] is None and deu["empty_rate"] == 1.0 and deu["loop_rate"] == 1.0
    overall = result["overall"]
    assert overall["count"] == 3 and overall["off_target_rate"] == 0.5 and overall["loop_rate"] == pytest.approx(1 / 3)
    assert overall["chrf"] == pytest.approx((fra["chrf"]["score"] + deu["chrf"]["score"]) / 2)
    asr = quality_directions([{"src_lang": "fra", "hypothesis": GERMAN, "reference": FRENCH}], "asr")
    assert asr["directions"]["fra"]["off_target_rate"] == 1.0 and "chrf" not in asr["directions"]["fra"]
