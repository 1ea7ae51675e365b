"""Bad input and faults in training and evaluation: nothing a user has is lost, nothing is silently wrong, bad rows
are named before the first step, a partial checkpoint is skipped, a cache is never reused for another model."""

import json
import logging
import os
import shutil
import subprocess
import sys

import pytest
import soundfile

from llm_srt.testing import save_tiny_model, synthetic_speech
from llm_srt.training.data import DataError, load_rows, select_stage_rows


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SR = 16000


def write_rows(path, rows, raw_lines=None):
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    for at, text in (raw_lines or {}).items():
        lines[at] = text
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def corpus_rows(folder, n=3, seconds=0.6):
    rows = []
    for i in range(n):
        soundfile.write(folder / f"u{i}.wav", synthetic_speech(seconds, seed=i), SR)
        rows.append({"audio": f"u{i}.wav", "src_lang": "eng", "tgt_lang": "deu", "transcript": f"I see {i} cats",
                     "translation": f"Ich sehe {i} Katzen", "key": f"u{i}"})
    return rows


def train_args(init, train_file, out, *extra, steps=1):
    return ["--recipe", "asr", "--init_from", init,
            "--train_file", train_file, "--output_dir", out, "--max_steps", str(steps), "--bf16", "false",
            "--per_device_train_batch_size", "2", "--eval_strategy", "no", "--save_strategy", "no",
            "--warmup_steps", "0", "--dataloader_num_workers", "0", "--report_to", "none", "--seed", "0", *extra]


@pytest.fixture(scope="module")
def init_model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("init"))


def exit_of(main, argv, capsys):
    """Run a script's main; return (exit status, stderr)."""
    with pytest.raises(SystemExit) as raised:
        main(argv)
    return raised.value.code, capsys.readouterr().err


# ---------------------------------------------------------------------------------------- late failure: bad rows
@pytest.mark.parametrize(
    "line, change, raw, message",
    [
        (2, {"audio": None}, None, "line 2 \\(key u1\\), field 'audio': expected an audio file path .*got null"),
        (3, {"audio": 7}, None, "line 3 \\(key u2\\), field 'audio': expected an audio file path .*got 7"),
        (1, {"transcript": 5}, None, "line 1 \\(key u0\\), field 'transcript': expected a string, got 5"),
        (2, {"translation": ["a"]}, None, "line 2 \\(key u1\\), field 'translation': expected a string, got a list"),
        (3, {"tgt_lang": "klingon"}, None, "line 3 \\(key u2\\), field 'tgt_lang': Unsupported language 'klingon'"),
        (2, {"key": "u0"}, None, "line 2 \\(key u0\\), field 'key': duplicate key 'u0', also on line 1"),
        (2, {"audio": "long.wav"}, None, "line 2 \\(key u1\\), field 'audio': .*long.wav lasts 3.0 s, longer than"
                                         " the model's 2 s window"),
        (3, {"audio": "junk.wav"}, None, "line 3 \\(key u2\\), field 'audio': cannot read .*junk.wav"),
        (2, None, '{"audio": "u1.wav", "src_lang": ', "line 2: not valid JSON"),
    ],
)
@pytest.mark.integration
def test_bad_rows_are_named_before_the_first_step(init_model, tmp_path, monkeypatch, capsys, line, change, raw,
                                                  message):
    import transformers

    from llm_srt.training.train import main

    rows = corpus_rows(tmp_path)
    soundfile.write(tmp_path / "long.wav", synthetic_speech(3.0, seed=9), SR)  # the tiny model's window is 2 s
    (tmp_path / "junk.wav").write_bytes(b"RIFF not really a wave file")
    if change:
        rows[line - 1].update(change)
    path = write_rows(tmp_path / "train.jsonl", rows, {line - 1: raw} if raw else None)

    def no_training(*args, **kwargs):
        raise AssertionError("training started on bad data")

    monkeypatch.setattr(transformers.Seq2SeqTrainer, "train", no_training)
    status, err = exit_of(main, train_args(init_model, path, str(tmp_path / "out"), "--stage", "srt"), capsys)
    assert status == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("train.py: error: ") and "Traceback" not in err
    assert f"{path} " in last or f"{path}:" in last
    import re

    assert re.search(message, last), last


@pytest.mark.integration
def test_rows_beyond_the_llms_context_are_named_before_the_first_step(init_model, tmp_path, monkeypatch, capsys):
    """Prompt + target + eos + the audio slots must fit the LLM's context (`max_position_embeddings`, 1024 in the
    tiny model with its 8 slots): a longer row is refused by line and field, like a clip longer than the window."""
    import transformers

    from llm_srt.training.train import main

    monkeypatch.setattr(transformers.Seq2SeqTrainer, "train", lambda *a, **k: pytest.fail("trained on a long row"))
    rows = corpus_rows(tmp_path)
    rows[1]["translation"] = " ".join(["Katzen"] * 1100)
    path = write_rows(tmp_path / "train.jsonl", rows)
    status, err = exit_of(main, train_args(init_model, path, str(tmp_path / "out"), "--stage", "srt"), capsys)
    last = err.strip().splitlines()[-1]
    assert status == 1 and "Traceback" not in err
    assert f"{path} line 2 (key u1), fields 'transcript', 'translation': " in last
    assert "more than the LLM's context of 1024 positions" in last and "8 audio slots" in last
    # the ASR stage reads the transcript only: a long one is named alone
    rows[1]["transcript"] = " ".join(["cats"] * 1100)
    path = write_rows(tmp_path / "train.jsonl", rows)
    status, err = exit_of(main, train_args(init_model, path, str(tmp_path / "out"), "--stage", "asr"), capsys)
    assert status == 1 and f"{path} line 2 (key u1), field 'transcript': " in err.strip().splitlines()[-1]


def test_blank_lines_are_skipped_and_line_numbers_stay_true(tmp_path):
    rows = corpus_rows(tmp_path)
    rows[2]["src_lang"] = "xx"
    path = tmp_path / "gaps.jsonl"
    path.write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n" + json.dumps(rows[2]) + "\n")
    with pytest.raises(DataError, match="gaps.jsonl line 4 \\(key u2\\), field 'src_lang': Unsupported language"):
        select_stage_rows(load_rows(str(path)), "asr", base_dir=str(tmp_path), source=str(path))


def test_mixed_asr_rows_still_drop_from_translation_stages(tmp_path):
    rows = corpus_rows(tmp_path)
    rows[1].update(tgt_lang=None, translation=None)
    path = write_rows(tmp_path / "mixed.jsonl", rows)
    assert len(select_stage_rows(load_rows(path), "srt", base_dir=str(tmp_path), source=path)) == 2
    assert len(select_stage_rows(load_rows(path), "asr", base_dir=str(tmp_path), source=path)) == 3


# ------------------------------------------------------------------------------ data loss: a finished model folder
def test_a_finished_model_in_output_dir_is_not_replaced(init_model, tmp_path, capsys):
    from llm_srt.training.train import main

    path = write_rows(tmp_path / "train.jsonl", corpus_rows(tmp_path))
    out = tmp_path / "finished"
    shutil.copytree(init_model, out)
    before = {name: (out / name).read_bytes() for name in os.listdir(out) if (out / name).is_file()}
    status, err = exit_of(main, train_args(init_model, path, str(out)), capsys)
    assert status == 2 and "Traceback" not in err
    assert str(out) in err and "holds a model" in err and "--overwrite_output_dir" in err
    assert {name: (out / name).read_bytes() for name in before} == before and sorted(os.listdir(out)) == sorted(before)
    # the input model folder is never an output, whatever the flags
    status, err = exit_of(main, train_args(init_model, path, init_model, "--overwrite_output_dir", "true"), capsys)
    assert status == 2 and "--init_from" in err


def test_numeric_arguments_are_refused_by_the_parser(init_model, tmp_path, capsys):
    from llm_srt.training.train import main

    path = write_rows(tmp_path / "train.jsonl", corpus_rows(tmp_path))
    for flag, value in (("--max_train_samples", "0"), ("--lora_r", "0"), ("--lora_dropout", "1.5")):
        status, err = exit_of(main, train_args(init_model, path, str(tmp_path / "o"), flag, value), capsys)
        assert status == 2 and flag in err and "Traceback" not in err, err


# ------------------------------------------------------------------------------ resume past a partial checkpoint
@pytest.mark.integration
def test_rerun_resumes_from_the_newest_complete_checkpoint(init_model, tmp_path, caplog, capsys):
    from llm_srt.training.train import main

    path = write_rows(tmp_path / "train.jsonl", corpus_rows(tmp_path, n=2))
    out = tmp_path / "run"
    main(train_args(init_model, path, str(out), "--save_strategy", "steps", "--save_steps", "1", steps=2))
    # A kill while checkpoint-2 was being written: its weights and state are missing, and no final model exists.
    for name in os.listdir(out / "checkpoint-2"):
        if name != "config.json":
            os.remove(out / "checkpoint-2" / name)
    for name in os.listdir(out):
        if os.path.isfile(out / name):
            os.remove(out / name)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        main(train_args(init_model, path, str(out), "--save_strategy", "steps", "--save_steps", "1", steps=2))
    assert f"Skipping the partial checkpoint {out / 'checkpoint-2'}" in caplog.text
    assert f"Resuming from {out / 'checkpoint-1'}" in caplog.text
    state = json.load(open(out / "checkpoint-2" / "trainer_state.json"))
    assert state["global_step"] == 2 and os.path.isfile(out / "model.safetensors")


def test_last_complete_checkpoint_reads_the_files_written_last(tmp_path, caplog):
    from llm_srt.training.runs import last_complete_checkpoint

    for step in (1, 2, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"x")
    for step in (1, 2):
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text('{"global_step": %d}' % step)
    (tmp_path / "checkpoint-10" / "trainer_state.json").write_text('{"global_st')  # cut short
    with caplog.at_level(logging.WARNING):
        assert last_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-2")
    assert "checkpoint-10" in caplog.text
    assert last_complete_checkpoint(str(tmp_path / "missing")) is None


def _checkpoint(folder, step):
    (folder / f"checkpoint-{step}").mkdir()
    (folder / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"x")
    (folder / f"checkpoint-{step}" / "trainer_state.json").write_text('{"global_step": %d}' % step)


def test_overwriting_keeps_the_replaced_runs_checkpoints_out_of_reach(tmp_path, caplog):
    """`--overwrite_output_dir` starts afresh and removes the final model only: the old run's checkpoints are moved
    into `replaced-1/` (kept, never resumed: a kill of the new run before it passes the old step count must not
    resume the old run from its checkpoint-10)."""
    from llm_srt.training.runs import FINAL_MARKER, last_complete_checkpoint, plan_output_dir

    for step in (4, 10):
        _checkpoint(tmp_path, step)
    (tmp_path / "notes.txt").write_text("mine")
    assert plan_output_dir(str(tmp_path)) == str(tmp_path / "checkpoint-10")  # without the flag: resumed, kept
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-10", "checkpoint-4", "notes.txt"]
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (tmp_path / name).write_text("{}")
    (tmp_path / FINAL_MARKER).write_text(json.dumps({"files": ["config.json", "model.safetensors", "tokenizer.json"]}))
    with caplog.at_level(logging.WARNING):
        assert plan_output_dir(str(tmp_path), overwrite=True) is None
    # the final model goes; the checkpoints are kept, out of the resume's reach; other files stay
    assert sorted(os.listdir(tmp_path)) == ["notes.txt", "replaced-1"]
    assert sorted(os.listdir(tmp_path / "replaced-1")) == ["checkpoint-10", "checkpoint-4"]
    assert (tmp_path / "replaced-1" / "checkpoint-10" / "model.safetensors").read_bytes() == b"x"
    assert "replaced-1" in caplog.text and "checkpoint-10" in caplog.text
    _checkpoint(tmp_path, 2)  # the new run, killed after its second step
    assert last_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-2")
    assert plan_output_dir(str(tmp_path)) == str(tmp_path / "checkpoint-2")
    # a second overwrite keeps its own set apart
    assert plan_output_dir(str(tmp_path), overwrite=True) is None
    assert sorted(os.listdir(tmp_path / "replaced-2")) == ["checkpoint-2"]


def test_a_model_without_the_completion_marker_is_not_finished(tmp_path, caplog):
    """Final artefacts without `training_complete.json` (written last) are a final save a kill cut: the rerun
    resumes from the newest checkpoint instead of calling the folder finished. With the marker it is finished."""
    from llm_srt.cli.safe_io import OutputExistsError
    from llm_srt.training.runs import FINAL_MARKER, plan_output_dir

    _checkpoint(tmp_path, 3)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"cut")
    (tmp_path / ".final-save.partial").mkdir()  # the staging folder of the cut save
    with caplog.at_level(logging.WARNING):
        assert plan_output_dir(str(tmp_path)) == str(tmp_path / "checkpoint-3")
    assert "did not finish" in caplog.text and FINAL_MARKER in caplog.text
    assert not (tmp_path / ".final-save.partial").exists()
    (tmp_path / FINAL_MARKER).write_text(json.dumps({"files": ["config.json", "model.safetensors"]}))
    with pytest.raises(OutputExistsError, match="holds a finished model"):
        plan_output_dir(str(tmp_path))
    # a model and no checkpoint (copied in, or a cut save of a run without checkpoints) is not trained over
    os.remove(tmp_path / FINAL_MARKER)
    shutil.rmtree(tmp_path / "checkpoint-3")
    with pytest.raises(OutputExistsError, match=f"holds a model .*no {FINAL_MARKER}"):
        plan_output_dir(str(tmp_path))


@pytest.mark.integration
def test_a_kill_during_the_final_save_is_resumed_not_called_finished(init_model, tmp_path, monkeypatch, caplog):
    """train.py writes the final model to a staging folder, moves it in and writes the marker last: a kill while
    saving leaves no marker, and the same command resumes from the last checkpoint and finishes the save."""
    from llm_srt.training import train
    from llm_srt.training.runs import FINAL_MARKER

    path = write_rows(tmp_path / "train.jsonl", corpus_rows(tmp_path, n=2))
    out = tmp_path / "run"
    args = train_args(init_model, path, str(out), "--save_strategy", "steps", "--save_steps", "1", steps=1)
    real_save = train.LlmSrtTrainer.save_model

    def killed_while_saving(self, output_dir=None, _internal_call=False):
        real_save(self, output_dir, _internal_call)
        if not _internal_call:  # the final save (checkpoints pass _internal_call=True)
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(train.LlmSrtTrainer, "save_model", killed_while_saving)
    with pytest.raises(KeyboardInterrupt):
        train.main(args)
    assert not (out / FINAL_MARKER).exists() and (out / "checkpoint-1").is_dir()
    monkeypatch.undo()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        train.main(args)
    assert f"Resuming from {out / 'checkpoint-1'}" in caplog.text
    marker = json.loads((out / FINAL_MARKER).read_text())
    assert "model.safetensors" in marker["files"] and "config.json" in marker["files"]
    assert not (out / ".final-save.partial").exists()
    from llm_srt import LlmSrtForConditionalGeneration

    LlmSrtForConditionalGeneration.from_pretrained(str(out))  # a loadable model
    with pytest.raises(SystemExit) as refused:  # now finished: refused without the flag
        train.main(args)
    assert refused.value.code == 2


# ------------------------------------------------------------------------------------------------- evaluate.py
def eval_args(model, test_file, out, *extra):
    return ["--model", model, "--test_file", test_file, "--output_dir", out, "--task", "smt", "--batch_size", "4",
            "--num_beams", "1", "--max_new_tokens", "4", *extra]


@pytest.fixture(scope="module")
def eval_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("evalset")
    return write_rows(folder / "test.jsonl", corpus_rows(folder))


@pytest.mark.integration
def test_a_second_model_does_not_reuse_the_first_models_hypotheses(eval_set, tmp_path, capsys):
    from llm_srt.evaluation.run import main

    first, second = save_tiny_model(tmp_path / "m1", seed=1), save_tiny_model(tmp_path / "m2", seed=2)
    out = str(tmp_path / "eval")
    main(eval_args(first, eval_set, out))
    reference = main(eval_args(second, eval_set, str(tmp_path / "fresh")))
    hypotheses = [json.loads(line)["hypothesis"] for line in open(os.path.join(out, "hypotheses.smt.jsonl"))]
    status, err = exit_of(main, eval_args(second, eval_set, out), capsys)
    assert status == 2 and "Traceback" not in err and out in err and "--overwrite" in err
    # refused: the first model's results and hypotheses are kept as they were
    assert json.load(open(os.path.join(out, "results.json")))["model"] == first
    assert [json.loads(line)["hypothesis"] for line in open(os.path.join(out, "hypotheses.smt.jsonl"))] == hypotheses
    # the same model with other generation settings is another fingerprint as well
    os.remove(os.path.join(out, "results.json"))
    status, err = exit_of(main, eval_args(first, eval_set, out, "--max_new_tokens", "3"), capsys)
    assert status == 2 and "max_new_tokens" in err
    results = main(eval_args(second, eval_set, out, "--overwrite", "true"))
    assert results["model"] == second and results["directions"] == reference["directions"]
    assert [json.loads(line)["hypothesis"] for line in open(os.path.join(out, "hypotheses.smt.jsonl"))] == [
        json.loads(line)["hypothesis"] for line in open(tmp_path / "fresh" / "hypotheses.smt.jsonl")]


def test_evaluate_refuses_duplicate_keys_naming_both_rows(tiny_folder, tmp_path, capsys):
    from llm_srt.evaluation.run import main

    rows = corpus_rows(tmp_path)
    rows[2]["key"] = "u0"
    path = write_rows(tmp_path / "dup.jsonl", rows)
    status, err = exit_of(main, eval_args(tiny_folder, path, str(tmp_path / "o")), capsys)
    assert status == 1 and "Traceback" not in err
    assert f"{path} line 3 (key u0), field 'key': duplicate key 'u0', also on line 1" in err
    assert not os.path.exists(tmp_path / "o" / "results.json")


@pytest.mark.parametrize("task", ["srt", "smt"])
def test_evaluate_refuses_a_translation_without_its_language(tiny_folder, tmp_path, capsys, task):
    """Such a row was skipped without a word (3 of 4 rows scored, exit 0); an ASR-only row (neither) still is."""
    from llm_srt.evaluation.run import main

    rows = corpus_rows(tmp_path, n=4)
    rows[2]["tgt_lang"] = None
    rows[3].update(tgt_lang=None, translation=None)  # ASR-only: not part of a translation evaluation
    path = write_rows(tmp_path / "no_tgt.jsonl", rows)
    status, err = exit_of(main, eval_args(tiny_folder, path, str(tmp_path / "o"), "--task", task), capsys)
    assert status == 1 and "Traceback" not in err
    assert f"{path} line 3 (key u2), field 'tgt_lang': missing, but the row has a translation" in err
    assert not os.path.exists(tmp_path / "o" / "results.json")


@pytest.mark.parametrize("flag, value", [("--batch_size", "0"), ("--num_beams", "0"), ("--max_new_tokens", "-1"),
                                         ("--max_rows", "0"), ("--dtype", "float8"), ("--task", "xyz")])
def test_evaluate_refuses_invalid_arguments(tiny_folder, eval_set, tmp_path, capsys, flag, value):
    from llm_srt.evaluation.run import main

    status, err = exit_of(main, eval_args(tiny_folder, eval_set, str(tmp_path / "o"), flag, value), capsys)
    assert status == 2 and flag in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "o")


@pytest.mark.integration
def test_evaluate_user_errors_are_one_line_without_traceback(tiny_folder, tmp_path):
    cmd = [sys.executable, os.path.join(ROOT, "trainer_scripts", "evaluate_model.py"),
           *eval_args(tiny_folder, str(tmp_path / "missing.jsonl"), str(tmp_path / "o"))]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"evaluate_model.py: error: Data not found: {tmp_path / 'missing.jsonl'}"


@pytest.mark.integration
def test_a_cache_line_cut_by_a_kill_is_dropped_and_its_row_redone(tiny_folder, eval_set, tmp_path, caplog):
    """A kill mid-write leaves the cache's last line without its newline: the resume drops it (a warning names the
    file) and decodes that row again, instead of appending the next line onto the cut one and losing the row."""
    from llm_srt.evaluation.run import main

    out = tmp_path / "eval"
    first = main(eval_args(tiny_folder, eval_set, str(out)))
    cache = out / "hypotheses.smt.rank0.jsonl"
    lines = cache.read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(lines) == 4  # the fingerprint and three rows
    cache.write_text("".join(lines[:3]) + lines[3][: len(lines[3]) // 2], encoding="utf-8")
    for name in ("results.json", "results.md", "hypotheses.smt.jsonl"):
        os.remove(out / name)
    with caplog.at_level(logging.WARNING):
        again = main(eval_args(tiny_folder, eval_set, str(out)))
    assert str(cache) in caplog.text and "cut" in caplog.text
    assert again["directions"] == first["directions"]
    # every line of the cache is whole JSON again, the redone row once
    items = [json.loads(line) for line in cache.read_text(encoding="utf-8").splitlines()]
    assert [item.get("key") for item in items[1:]] == ["u0", "u1", "u2"]


def test_drop_cut_last_line(tmp_path, caplog):
    from llm_srt.cli.safe_io import drop_cut_last_line

    path = tmp_path / "c.jsonl"
    path.write_text('{"a": 1}\n{"b": 2}\n')
    assert drop_cut_last_line(str(path)) is None and path.read_text() == '{"a": 1}\n{"b": 2}\n'
    path.write_text('{"a": 1}\n{"b": ')
    with caplog.at_level(logging.WARNING):
        assert drop_cut_last_line(str(path)) == '{"b": '
    assert path.read_text() == '{"a": 1}\n' and "line 2" in caplog.text
    path.write_text('{"a"')
    assert drop_cut_last_line(str(path)) == '{"a"' and path.read_text() == ""
    assert drop_cut_last_line(str(tmp_path / "missing.jsonl")) is None


def test_a_manifest_starting_with_a_byte_order_mark_loads(tmp_path):
    path = write_rows(tmp_path / "bom.jsonl", corpus_rows(tmp_path))
    with open(path, "rb") as handle:
        data = handle.read()
    with open(path, "wb") as handle:
        handle.write(b"\xef\xbb\xbf" + data)
    assert len(select_stage_rows(load_rows(path), "srt", base_dir=str(tmp_path), source=path)) == 3


def test_rows_translating_into_their_own_language_are_kept_with_one_warning(tmp_path, caplog):
    rows = corpus_rows(tmp_path, n=4)
    rows[1]["tgt_lang"] = rows[3]["tgt_lang"] = "English"
    path = write_rows(tmp_path / "same.jsonl", rows)
    with caplog.at_level(logging.WARNING):
        kept = select_stage_rows(load_rows(path), "srt", base_dir=str(tmp_path), source=path)
    assert len(kept) == 4
    warnings = [r.getMessage() for r in caplog.records if "own language" in r.getMessage()]
    assert len(warnings) == 1 and "2 rows" in warnings[0] and "line 2" in warnings[0] and path in warnings[0]
