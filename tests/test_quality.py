"""Quality metrics with forced outputs: off-target language, loops, chrF++ and speed."""

import pytest
from sacrebleu.metrics import CHRF

from llm_srt.evaluation.quality import chrf_pp, identify_language, is_loop, is_off_target, quality_directions, speed

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
    assert not is_loop("10000") and not is_loop("1000000 people") and not is_loop("Wait....")  # no letters repeated


@pytest.mark.parametrize("text, target", [("Hallo.", "deu"), ("Merci.", "fra"), ("2024", "eng"), ("Hola amigo.", "spa"),
                                          ("你好", "zho"), ("...", "deu")])
def test_a_text_with_too_few_letters_is_not_judged(text, target):
    """One-word answers were judged off-target (py3langid reads "Hallo." as Italian, "Merci." as Spanish), and so
    was "2024", in no language at all."""
    assert identify_language(text) is None and is_off_target(text, target) is None


def test_answers_too_short_to_judge_are_reported_apart():
    rows = [{"src_lang": "eng", "tgt_lang": "deu", "hypothesis": text, "reference": GERMAN}
            for text in (GERMAN, FRENCH, "Hallo.", "2024", "")]
    overall = quality_directions(rows, "smt")["overall"]
    assert overall["off_target_rate"] == 0.5  # of the two that can be judged
    assert overall["unjudged_rate"] == pytest.approx(2 / 5) and overall["empty_rate"] == pytest.approx(1 / 5)
    assert is_off_target("Zwei blaue Hunde.", "deu") is False and is_off_target("ありがとう", "jpn") is False


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


@pytest.mark.parametrize("audio_seconds, decode_seconds, utterances, named", [
    (float("nan"), 1.0, 1, "audio_seconds"), (-3.0, 1.0, 1, "audio_seconds"), (float("inf"), 1.0, 1, "audio_seconds"),
    (1.0, float("nan"), 1, "decode_seconds"), (1.0, -1.0, 1, "decode_seconds"), (1.0, float("inf"), 1, "decode_seconds"),
    (1.0, 1.0, -2, "utterances"),
])
def test_speed_refuses_durations_that_cannot_be_measured(audio_seconds, decode_seconds, utterances, named):
    """They gave a NaN or negative RTFx."""
    with pytest.raises(ValueError, match=named):
        speed(audio_seconds, decode_seconds, utterances)


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


class _Talkative:
    """An engine forced to speak: wraps the tiny model's engine and writes text for every window."""

    def __init__(self, engine):
        self.engine = engine
        self.decoded = 0

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def decode_rows(self, audio, rows, settings=None):
        answers = self.engine.decode_rows(audio, rows, settings)
        self.decoded += len(rows)
        for answer in answers:
            answer.update(raw="<|eng|>thank you for watching<|eng|><|deu|>danke fürs Zuschauen",
                          transcript="thank you for watching", translation="danke fürs Zuschauen",
                          text="danke fürs Zuschauen", complete=True)
        return answers


def test_non_speech_clips_with_a_model_forced_to_speak_are_counted(tiny):
    """A model that writes text for any window it is given (as a speech LLM does for noise) writes it for every
    generated non-speech sound when nothing decides what is speech, and for none with the detector: no window
    reaches the model."""
    import numpy as np

    from llm_srt.decoding_llm_srt import TransformersEngine
    from llm_srt.evaluation.quality import non_speech_check, non_speech_clips

    model, processor = tiny
    clips = non_speech_clips()
    assert len(clips) >= 16 and {"white noise -20 dBFS", "DC offset -40 dBFS", "8 clicks in 3 s of silence",
                                 "music (chords and a beat)", "typing", "50 Hz hum with harmonics"} <= set(clips)
    assert all(c.dtype == np.float32 and 3 <= len(c) / 16000 <= 8 for c in clips.values())
    engine = _Talkative(TransformersEngine(model, processor))
    result = non_speech_check(engine, "srt", "eng", "deu", clips=clips,
                              generate_kwargs={"num_beams": 1, "max_new_tokens": 3})
    assert result["no_vad"]["hallucination_rate"] == 1.0 and result["no_vad"]["windows_decoded"] >= len(clips)
    assert "danke" in result["no_vad"]["text"]["music (chords and a beat)"]
    assert result["vad"]["hallucination_rate"] <= 1 / 16 and result["vad"]["windows_decoded"] <= 1
    assert engine.decoded == result["no_vad"]["windows_decoded"] + result["vad"]["windows_decoded"]


def test_evaluate_non_speech_flag(tiny_folder, tmp_path, capsys):
    import json

    from llm_srt.evaluation.run import main

    out = tmp_path / "ns"
    args = ["--model", tiny_folder, "--output_dir", str(out), "--non_speech", "true", "--task", "asr",
            "--num_beams", "1", "--max_new_tokens", "3"]
    result = main(args)
    saved = json.load(open(out / "non_speech.json"))
    assert saved["vad"] == result["vad"] and set(saved["no_vad"]["text"]) >= {"typing", "melody"}
    assert saved["vad"]["hallucination_rate"] <= 1 / 16
    assert "Text written where nothing was spoken" in open(out / "non_speech.md").read()
    with pytest.raises(SystemExit) as raised:  # results are not replaced silently
        main(args)
    assert raised.value.code == 2 and "non_speech.json exists already" in capsys.readouterr().err
    with pytest.raises(SystemExit) as raised:
        main(["--model", tiny_folder, "--output_dir", str(out)])
    assert raised.value.code == 2 and "--test_file is required" in capsys.readouterr().err


def test_model_card_carries_the_new_metrics_in_model_index(tmp_path):
    from huggingface_hub import ModelCard

    from llm_srt.hub.cards import render_card

    results = {"task": "srt", "test_file": "fleurs_test.jsonl", "averages": {"bleu": 21.37, "wer": 0.1234},
               "quality": {"overall": {"chrf": 45.678, "off_target_rate": 0.0312, "loop_rate": 0.005}},
               "speed": {"rtfx": 12.345, "device": "cuda:0", "engine": "transformers"}}
    card = render_card("llm-srt-test", "me/llm-srt-test", "/local/qwen", "openai/whisper-large-v3", results=results)
    path = tmp_path / "README.md"
    path.write_text(card)
    parsed = ModelCard.load(str(path)).data.eval_results  # rendered, then parsed back as the Hub parses it
    values = {r.metric_type: r.metric_value for r in parsed}
    assert values == {"bleu": 21.37, "wer": 0.1234, "chrf": 45.68, "off_target_rate": 0.0312, "loop_rate": 0.005,
                      "rtfx": 12.35}
    assert all(r.dataset_name == "fleurs_test.jsonl (srt)" for r in parsed)
    assert "RTFx, cuda:0 transformers (measured)" in card
    old = render_card("x", "me/x", "/local/qwen", "openai/whisper-large-v3",  # an older results.json: BLEU only
                      results={"task": "srt", "averages": {"bleu": 10.0}})
    (tmp_path / "old.md").write_text(old)
    assert [r.metric_type for r in ModelCard.load(str(tmp_path / "old.md")).data.eval_results] == ["bleu"]
