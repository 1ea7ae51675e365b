import json
import os

import pytest
import soundfile

from llm_srt.testing import synthetic_speech
from llm_srt.training.prepare import build as prepare


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
    from llm_srt.training.data import load_rows, select_stage_rows

    make_fleurs(tmp_path / "fleurs")
    out = tmp_path / "f.jsonl"
    prepare(["--corpus", "fleurs", "--source", str(tmp_path / "fleurs"), "--languages", "eng,deu", "--tasks", "srt,asr",
             "--output", str(out)])
    data = load_rows(str(out))
    assert len(select_stage_rows(data, "srt")) == 3 and len(select_stage_rows(data, "asr")) == 8


# ----------------------------------------------------------------------------------- bad input and faults
from llm_srt.training.prepare import main as prepare_command  # noqa: E402


def status_of(capsys, argv):
    """(exit status, stderr) of the command, argparse's own refusals included."""
    try:
        status = prepare_command([str(a) for a in argv])
    except SystemExit as stop:
        status = stop.code
    return status, capsys.readouterr().err


def one_error_line(err, *names):
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    for name in names:
        assert name in lines[0], (name, err)


def make_cv(root, tsv_text=None):
    wav(str(root / "en" / "clips" / "1.wav"))
    header = "client_id\tpath\tsentence\tup_votes\n"
    (root / "en" / "train.tsv").write_text(tsv_text or header + "c\t1.wav\tHello there\t2\n")


def test_bad_arguments_are_refused_by_the_parser(tmp_path, capsys):
    make_fleurs(tmp_path / "fleurs")
    base = ["--corpus", "fleurs", "--source", tmp_path / "fleurs", "--output", tmp_path / "o.jsonl"]
    for extra, names in ((["--tasks", "foo"], ["--tasks", "foo", "srt"]), (["--tasks", "srt,tts"], ["tts"]),
                         (["--languages", "eng,xx"], ["--languages", "'xx'"]), (["--languages", ","], ["--languages"]),
                         (["--max_seconds", "0"], ["--max_seconds"]), (["--max_rows", "0"], ["--max_rows"]),
                         (["--corpus", "librispeech"], ["--corpus"])):
        status, err = status_of(capsys, [*base, *extra])
        assert status == 2, extra
        one_error_line(err, *names)
    make_cv(tmp_path / "cv")
    status, err = status_of(capsys, ["--corpus", "commonvoice", "--source", tmp_path / "cv", "--tasks", "srt",
                                     "--output", tmp_path / "o.jsonl"])
    assert status == 2
    one_error_line(err, "--tasks", "commonvoice")
    assert not (tmp_path / "o.jsonl").exists()


def test_a_run_that_keeps_nothing_fails_saying_why(tmp_path, capsys):
    cv = tmp_path / "cv"
    make_cv(cv, "client_id\tpath\tsentence\tup_votes\nc\tgone.wav\tMissing\t1\nc\t1.wav\t\t1\n")
    out = tmp_path / "cv.jsonl"
    status, err = status_of(capsys, ["--corpus", "commonvoice", "--source", cv, "--output", out])
    assert status == 1
    one_error_line(err, "0 rows", "1 missing audio file", "gone.wav", "1 empty text")
    assert not out.exists() and not os.path.exists(str(out) + ".stats.json")


def test_tsv_faults_name_the_file_and_the_column_or_line(tmp_path, capsys):
    covost = tmp_path / "covost"
    os.makedirs(covost)
    wav(str(tmp_path / "clips" / "1.wav"))
    (covost / "covost_v2.en_de.tsv").write_text("file\tsentence\ttranslation\tsplit\n1.wav\tHi\tHallo\ttrain\n")
    status, err = status_of(capsys, ["--corpus", "covost2", "--source", covost, "--clips", tmp_path / "clips",
                                     "--output", tmp_path / "o.jsonl"])
    assert status == 1
    one_error_line(err, "covost_v2.en_de.tsv", "'path'")

    cv = tmp_path / "cv"
    make_cv(cv, "client_id\tpath\tsentence\nc\t1.wav\tHello there\nc\n")  # line 3 is cut short
    summary = prepare(["--corpus", "commonvoice", "--source", str(cv), "--output", str(tmp_path / "cv.jsonl")])
    assert summary["kept"] == 1 and summary["dropped"] == {"malformed TSV line": 1}
    assert summary["first_dropped"]["malformed TSV line"].endswith("train.tsv:3")

    (cv / "en" / "train.tsv").write_bytes(b"client_id\tpath\tsentence\nc\t1.wav\t\xff\xfe bad\n")
    status, err = status_of(capsys, ["--corpus", "commonvoice", "--source", cv, "--output", tmp_path / "cv2.jsonl"])
    assert status == 1
    one_error_line(err, "train.tsv", "UTF-8")


def test_existing_outputs_and_inputs_are_never_replaced(tmp_path, capsys):
    cv = tmp_path / "cv"
    make_cv(cv)
    out = tmp_path / "cv.jsonl"
    out.write_text("my manifest\n")
    status, err = status_of(capsys, ["--corpus", "commonvoice", "--source", cv, "--output", out])
    assert status == 2
    one_error_line(err, str(out), "--overwrite")
    assert out.read_text() == "my manifest\n"

    tsv = cv / "en" / "train.tsv"
    before = tsv.read_text()
    status, err = status_of(capsys, ["--corpus", "commonvoice", "--source", cv, "--output", tsv, "--overwrite"])
    assert status == 2
    one_error_line(err, "input")
    assert tsv.read_text() == before

    assert status_of(capsys, ["--corpus", "commonvoice", "--source", cv, "--output", out, "--overwrite"])[0] == 0
    assert [r["transcript"] for r in read(out)] == ["Hello there"]
    assert sorted(os.listdir(tmp_path)) == ["cv", "cv.jsonl", "cv.jsonl.stats.json"]  # no temporary files


def test_a_run_failing_midway_leaves_the_old_manifest(tmp_path, capsys):
    covost = tmp_path / "covost"
    os.makedirs(covost)
    wav(str(tmp_path / "clips" / "1.wav"))
    good = "path\tsentence\ttranslation\tclient_id\tsplit\n1.wav\tHello\tHallo\tc\ttrain\n"
    (covost / "covost_v2.en_de.tsv").write_text(good)
    (covost / "covost_v2.en_fr.tsv").write_text("sentence\ttranslation\n")  # read second, after rows were written
    out = tmp_path / "covost.jsonl"
    out.write_text("old\n")
    status, err = status_of(capsys, ["--corpus", "covost2", "--source", covost, "--clips", tmp_path / "clips",
                                     "--output", out, "--overwrite"])
    assert status == 1
    one_error_line(err, "covost_v2.en_fr.tsv")
    assert out.read_text() == "old\n"
    assert sorted(os.listdir(tmp_path)) == ["clips", "covost", "covost.jsonl"]


def test_hub_audio_goes_to_a_folder_of_the_manifest_own(tmp_path, monkeypatch, capsys):
    import datasets

    def fake_hub(source, config, split, streaming):
        return [{"id": 1, "raw_transcription": f"{config} one", "audio": {"array": synthetic_speech(0.3), "sampling_rate": SR}}]

    monkeypatch.setattr(datasets, "load_dataset", fake_hub)
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for out in (first, second):
        prepare(["--corpus", "fleurs", "--source", "google/fleurs", "--languages", "eng,deu", "--tasks", "asr",
                 "--output", str(out)])
    audio_a, audio_b = {r["audio"] for r in read(first)}, {r["audio"] for r in read(second)}
    assert not audio_a & audio_b and all(os.path.isfile(p) for p in audio_a | audio_b)
    os.remove(first)
    os.remove(str(first) + ".stats.json")
    status, err = status_of(capsys, ["--corpus", "fleurs", "--source", "google/fleurs", "--tasks", "asr",
                                     "--languages", "eng", "--output", first])
    assert status == 2  # its old clips are still there: refused without --overwrite
    one_error_line(err, "a.jsonl.audio", "--overwrite")


def test_an_output_in_the_corpus_never_replaces_its_clips(tmp_path, capsys):
    # `--save_to_disk --output fleurs/data/en_us/audio --overwrite true` replaced the folder of English clips.
    make_fleurs(tmp_path / "fleurs")
    audio = tmp_path / "fleurs" / "data" / "en_us" / "audio"
    clips = sorted(p.name for p in (audio / "train").iterdir())
    base = ["--corpus", "fleurs", "--source", tmp_path / "fleurs", "--languages", "eng,deu", "--overwrite", "true"]
    status, err = status_of(capsys, [*base, "--save_to_disk", "--output", audio])
    assert status == 2
    one_error_line(err, str(audio), "corpus")
    assert sorted(p.name for p in (audio / "train").iterdir()) == clips
    clip = tmp_path / "fleurs" / "data" / "de_de" / "audio" / "train" / "x.wav"
    before = clip.read_bytes()
    status, err = status_of(capsys, [*base, "--output", clip])
    assert status == 2
    one_error_line(err, str(clip), "audio clip")
    assert clip.read_bytes() == before
    # a new manifest or dataset folder inside the corpus folder is still fine
    assert status_of(capsys, [*base, "--output", tmp_path / "fleurs" / "train.jsonl"])[0] == 0


def test_a_byte_order_mark_before_the_tsv_header_is_not_part_of_its_first_column(tmp_path):
    """Spreadsheet exports start with a UTF-8 BOM: read as utf-8-sig, 'path' is found (it was "no 'path' column
    (its columns: path, ...)"), in CoVoST-2 / Common Voice TSVs and FLEURS' headerless ones alike."""
    cv = tmp_path / "cv"
    make_cv(cv, "path\tsentence\tclient_id\n1.wav\tHello there\tc\n")
    tsv = cv / "en" / "train.tsv"
    tsv.write_bytes(b"\xef\xbb\xbf" + tsv.read_bytes())
    summary = prepare(["--corpus", "commonvoice", "--source", str(cv), "--output", str(tmp_path / "cv.jsonl")])
    assert summary["kept"] == 1 and read(tmp_path / "cv.jsonl")[0]["transcript"] == "Hello there"

    fleurs = tmp_path / "fleurs"
    make_fleurs(fleurs)
    path = fleurs / "data" / "en_us" / "train.tsv"  # one language only: sentence ids must still pair up
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    summary = prepare(["--corpus", "fleurs", "--source", str(fleurs), "--languages", "eng,deu", "--tasks", "srt",
                       "--output", str(tmp_path / "f.jsonl")])
    rows = read(tmp_path / "f.jsonl")
    assert sorted((r["src_lang"], r["tgt_lang"]) for r in rows) == [("deu", "eng"), ("eng", "deu"), ("eng", "deu")]
