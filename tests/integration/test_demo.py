import json
import os
import shutil

import pytest
import soundfile

from llm_srt.training.demo_corpus import CorpusArguments, make_corpus, sentence


pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng (Debian package) not installed")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("demo_corpus"))
    counts = make_corpus(CorpusArguments(output_dir=folder, languages="eng,deu,fra", held_out=60))
    return folder, counts


def test_lexicon_agreement():
    assert sentence("eng", 1, 0, 0) == "I see three red cats."
    assert sentence("deu", 1, 5, 5) == "Ich sehe drei weiße Kühe."
    assert sentence("fra", 0, 5, 5) == "Je vois deux vaches blanches."  # feminine plural after the noun
    assert sentence("fra", 0, 5, 0) == "Je vois deux chats blancs."
    assert sentence("spa", 8, 0, 5) == "Veo diez vacas rojas."
    with pytest.raises(ValueError, match="no 'jpn'"):
        sentence("jpn", 0, 0, 0)


def test_corpus_has_held_out_sentences_and_16k_audio(corpus):
    folder, counts = corpus
    assert counts == {"clips": 972, "synthesized": 972, "train_rows": 264 * 6, "test_rows": 60 * 6}
    rows = {split: [json.loads(line) for line in open(os.path.join(folder, f"{split}.jsonl"))] for split in ("train", "test")}
    train_ids = {r["sentence_id"] for r in rows["train"]}
    test_ids = {r["sentence_id"] for r in rows["test"]}
    assert len(test_ids) == 60 and not train_ids & test_ids
    for row in rows["test"][:12]:
        info = soundfile.info(os.path.join(folder, row["audio"]))
        assert info.samplerate == 16000 and 0.5 < info.duration < 3.0
        assert row["audio"].startswith(f"audio/{row['src_lang']}/")
    assert {(r["src_lang"], r["tgt_lang"]) for r in rows["test"]} == {
        ("eng", "deu"), ("eng", "fra"), ("deu", "eng"), ("deu", "fra"), ("fra", "eng"), ("fra", "deu")}
    again = make_corpus(CorpusArguments(output_dir=folder, languages="eng,deu,fra", held_out=60))
    assert again["synthesized"] == 0  # existing audio is kept


def test_bad_corpus_languages():
    with pytest.raises(ValueError, match="at least two of"):
        make_corpus(CorpusArguments(output_dir="/tmp/unused", languages="eng,jpn"))


def test_curriculum_runs_every_stage_and_ablation(corpus, tmp_path):
    """The smoke recipe: every stage and every ablation trains, is evaluated and reported (figures are the
    README's, from the demo recipe)."""
    from transformers import pipeline

    from llm_srt.training.curriculum import main

    folder, _ = corpus
    report = main(["--recipe", "smoke", "--output_dir", str(tmp_path / "run"), "--data_dir", folder, "--ablation", "true"])
    assert list(report["results"]) == ["untrained (initial)", "after ASR", "after SMT", "after SRT",
                                       "w/o ASR (SMT -> SRT)", "w/o SMT (ASR -> SRT)", "w/o SRT (ASR -> SMT)"]
    for scores in report["results"].values():
        assert {"asr_wer", "smt_bleu", "srt_bleu", "srt_wer", "srt_bleu_by_direction"} <= set(scores)
    main_table, _, robustness = open(tmp_path / "run" / "results.md").read().partition("\n\nSpeech anywhere")
    assert main_table.count("\n") == 8 and "| after SRT |" in main_table  # header, rule, 7 models
    assert robustness.count("| after SRT |") == 1  # the final model's robustness row
    assert {"srt_bleu_lead_0.3s", "language_id_accuracy_lead_1.0s", "srt_bleu_multi_sentence",
            "language_id_accuracy_multi_sentence"} <= set(report["results"]["after SRT"])
    assert json.load(open(tmp_path / "run" / "results.json"))["recipe"] == "smoke"
    pipe = pipeline("speech-translation", model=str(tmp_path / "run" / "srt"), trust_remote_code=True)
    out = pipe(os.path.join(folder, "audio", "eng", "000.wav"), src_lang="eng", tgt_lang="deu",
               generate_kwargs={"num_beams": 1, "max_new_tokens": 4})
    assert out["src_lang"] == "eng" and out["tgt_lang"] == "deu" and isinstance(out["text"], str)


def test_quick_curriculum_learns_on_held_out_sentences(corpus, tmp_path):
    """The demo with fewer steps (about 4 minutes on 2 cores): every stage is reported, and after the curriculum the
    held-out scores are far above the untrained model's (a real run gave SRT BLEU 1.9 -> 66.8)."""
    from llm_srt.training.curriculum import main

    folder, _ = corpus
    results = main(["--recipe", "quick", "--output_dir", str(tmp_path / "run"), "--data_dir", folder])["results"]
    untrained, asr, final = results["untrained (initial)"], results["after ASR"], results["after SRT"]
    assert list(results) == ["untrained (initial)", "after ASR", "after SMT", "after SRT"]
    assert asr["asr_wer"] < untrained["asr_wer"] - 0.2  # the ASR stage teaches the adapter to hear
    assert final["srt_bleu"] > untrained["srt_bleu"] + 30 and final["srt_bleu"] > 40
    assert final["srt_wer"] < 0.5  # the SRT answer starts with a usable transcript
    assert all(score > untrained["srt_bleu_by_direction"][d] for d, score in final["srt_bleu_by_direction"].items())
    # Speech anywhere in the window: the encoder and the language detector pre-train on clips placed anywhere, so
    # the language is detected as well after leading silence as without it (a model pre-trained on the clips as
    # spoken only, every one starting at once, detected 0.333 after 0.3 s of silence: one language for all)
    # (a real run: 1.000 clean, 0.983 after 0.3 s and after 1.0 s)
    assert final["language_id_accuracy"] >= 0.95
    assert final["language_id_accuracy_lead_0.3s"] >= 0.9 and final["language_id_accuracy_lead_1.0s"] >= 0.9


def readme_tables(heading: str, page: str = "README.md") -> list[list[list[str]]]:
    """The Markdown tables of `page`'s section `heading` (up to the next heading of its level or above), each as
    rows of cells (the rule row left out)."""
    lines = open(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), page),
                 encoding="utf-8").read().splitlines()
    start = lines.index(heading)
    level = heading.split()[0]
    tables, current = [], []
    for line in lines[start + 1:]:
        if line.startswith("#") and len(line.split()[0]) <= len(level):
            break
        if line.startswith("|"):
            if not set(line) <= set("|-: "):
                current.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif current:
            tables.append(current)
            current = []
    return tables + ([current] if current else [])


def test_readme_demo_tables_have_the_printed_tables_shape_and_labels():
    """README's demo tables are the ones run_curriculum.py prints: the same columns, the same model labels (footnote
    marks aside), and the multi-sentence language ID cell with its window count."""
    from llm_srt.training.curriculum import markdown_table, result_names, robustness_table

    main, robust = readme_tables("## Demo results")
    printed_main = [cell.strip() for cell in markdown_table({}).splitlines()[0].strip("|").split("|")]
    assert main[0] == printed_main
    assert [row[0] for row in main[1:]] == result_names(ablation=False)
    results = json.load(open(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "benchmarks",
                                          "results", "demo_curriculum_augmented.json")))["results"]
    # the README's rows are exactly what the committed run printed
    assert main[1:] == [[cell.strip() for cell in line.strip("|").split("|")]
                        for line in markdown_table(results).splitlines()[2:]]
    scores = results["after SRT"]
    printed = [[cell.strip() for cell in line.strip("|").split("|")]
               for line in robustness_table({"after SRT": scores}).splitlines() if not set(line) <= set("|-: ")]
    assert [cell.rstrip("*") for cell in robust[0]] == printed[0]
    assert robust[1:] == printed[1:]  # the README's row is exactly what the run's scores print
    previous = readme_tables("### Ablation: every stage counts", "docs/training.md")[0]
    assert previous[0][0] == "model" and [row[0] for row in previous[1:]] == result_names(ablation=True)
