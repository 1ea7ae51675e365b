import json
import os

import pytest
import soundfile

from llm_srt.testing import synthetic_speech
from trainer_scripts.prepare_data import main as prepare


SR = 16000


def wav(path, seconds=0.5, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    soundfile.write(path, synthetic_speech(seconds, seed=seed), SR)


def make_fleurs(root):
    """Two languages of a FLEURS copy; sentence 1 has two English speakers, 2 is English-only, 3 is broken."""
    rows = {
        "en_us": [("1", "a.wav", "I see cats.", 0.5), ("1", "b.wav", "I see cats.", 0.6), ("2", "c.wav", "Only here.", 0.5),
                  ("3", "long.wav", "Too long.", 31.0), ("4", "bad.wav", "Broken file.", 0.5), ("5", "e.wav", "", 0.5)],
        "de_de": [("1", "x.wav", "Ich sehe Katzen.", 0.5), ("3", "y.wav", "Zu lang.", 0.5)],
    }
    for config, items in rows.items():
        folder = os.path.join(root, "data", config)
        lines = []
        for sid, name, text, seconds in items:
            path = os.path.join(folder, "audio", "train", name)
            if name == "bad.wav":
                os.makedirs(os.path.dirname(path), exist_ok=True)
                open(path, "wb").write(b"not audio at all")
            else:
                wav(path, seconds)
            lines.append(f"{sid}\t{name}\t{text}\t{text.lower()}\tp h\t{int(seconds * SR)}\tMALE")
        open(os.path.join(folder, "train.tsv"), "w").write("\n".join(lines) + "\n")


def read(path):
    return [json.loads(line) for line in open(path)]


def test_fleurs_many_to_many_pairs_and_counted_drops(tmp_path, capsys):
    make_fleurs(tmp_path / "fleurs")
    out = tmp_path / "out" / "fleurs.jsonl"
    summary = prepare(["--corpus", "fleurs", "--source", str(tmp_path / "fleurs"), "--languages", "eng,deu",
                       "--tasks", "srt,asr", "--output", str(out)])
    rows = read(out)
    pairs = sorted((r["src_lang"], r["tgt_lang"], r["transcript"], r["translation"]) for r in rows if r["tgt_lang"])
    assert pairs == [("deu", "eng", "Ich sehe Katzen.", "I see cats."),
                     ("eng", "deu", "I see cats.", "Ich sehe Katzen."),
                     ("eng", "deu", "I see cats.", "Ich sehe Katzen.")]  # both English speakers of sentence 1
    asr = sorted(r["transcript"] for r in rows if r["tgt_lang"] is None)
    assert asr == ["I see cats.", "I see cats.", "Ich sehe Katzen.", "Only here.", "Zu lang."]
    assert summary["dropped"] == {"longer than 30 s": 1, "undecodable audio": 1, "empty text": 1}
    assert summary["kept"] == len(rows) == 8
    assert all(os.path.isfile(r["audio"]) and r["duration"] > 0 for r in rows)
    assert json.load(open(str(out) + ".stats.json"))["dropped"]["undecodable audio"] == 1
    assert '"kept": 8' in capsys.readouterr().out


def test_fleurs_missing_language_folder_is_an_error(tmp_path):
    make_fleurs(tmp_path / "fleurs")
    with pytest.raises(FileNotFoundError, match="FLEURS fra: .*fr_fr/train.tsv"):
        prepare(["--corpus", "fleurs", "--source", str(tmp_path / "fleurs"), "--languages", "eng,fra",
                 "--output", str(tmp_path / "o.jsonl")])
    assert not os.path.exists(tmp_path / "o.jsonl")


def test_covost_and_commonvoice(tmp_path):
    cv = tmp_path / "cv"
    for name in ("1.wav", "2.wav"):
        wav(str(cv / "en" / "clips" / name))
    header = "client_id\tpath\tsentence\tup_votes\n"
    (cv / "en" / "train.tsv").write_text(header + "c\t1.wav\tHello there\t2\nc\t2.wav\t\t2\nc\tgone.wav\tMissing\t1\n")
    os.makedirs(cv / "xx")
    summary = prepare(["--corpus", "commonvoice", "--source", str(cv), "--output", str(tmp_path / "cv.jsonl")])
    assert [(r["src_lang"], r["transcript"], r["tgt_lang"]) for r in read(tmp_path / "cv.jsonl")] == [("eng", "Hello there", None)]
    assert summary["dropped"] == {"empty text": 1, "missing audio file": 1, "language outside the selection": 1}

    covost = tmp_path / "covost"
    os.makedirs(covost)
    tsv = "path\tsentence\ttranslation\tclient_id\tsplit\n1.wav\tHello there\tHallo\tc\ttrain\n2.wav\tBye\tTschüss\tc\tdev\n"
    (covost / "covost_v2.en_de.tsv").write_text(tsv)
    (covost / "covost_v2.en_ar.tsv").write_text(tsv)  # Arabic is not one of the 15
    summary = prepare(["--corpus", "covost2", "--source", str(covost), "--clips", str(cv / "en" / "clips"),
                       "--output", str(tmp_path / "covost.jsonl")])
    rows = read(tmp_path / "covost.jsonl")
    assert [(r["src_lang"], r["tgt_lang"], r["transcript"], r["translation"]) for r in rows] == [
        ("eng", "deu", "Hello there", "Hallo")]
    assert summary["dropped"] == {"language outside the selection": 1}


def test_output_loads_for_training(tmp_path):
    from llm_srt.training import load_rows, select_stage_rows

    make_fleurs(tmp_path / "fleurs")
    out = tmp_path / "f.jsonl"
    prepare(["--corpus", "fleurs", "--source", str(tmp_path / "fleurs"), "--languages", "eng,deu", "--tasks", "srt,asr",
             "--output", str(out)])
    data = load_rows(str(out))
    assert len(select_stage_rows(data, "srt")) == 3 and len(select_stage_rows(data, "asr")) == 8
