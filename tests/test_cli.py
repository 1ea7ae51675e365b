"""Bad input and faults at the `llm-srt` command line and in the shared `safe_io` helpers.

What a user can rely on (docs/bad_input.md): an existing output is never replaced without --overwrite, an output is
never written over an input, a failed or interrupted run leaves the old output as it was, and every user error is one
line `llm-srt...: error: ...` (exit 2 for bad usage, 1 for failed work) without a Python traceback.
"""

import json
import os
import subprocess
import sys

import pytest
import soundfile

from llm_srt.cli import main as cli
from llm_srt.cli import translate as cli_translate
from llm_srt.cli.safe_io import OutputExistsError, atomic_dir, atomic_write, check_output_dir, check_output_file
from llm_srt.testing import synthetic_speech


SR = 16000
FAST = ["--beams", "1", "--max-new-tokens", "3"]


@pytest.fixture
def wavs(tmp_path):
    paths = []
    for i in range(2):
        path = tmp_path / f"clip{i}.wav"
        soundfile.write(path, synthetic_speech(0.6, seed=i), SR)
        paths.append(str(path))
    return paths


def run_cli(capsys, *argv):
    """(exit status, stdout, stderr) of `llm-srt argv` run in-process, argparse's SystemExit included."""
    try:
        status = cli.main([str(a) for a in argv])
    except SystemExit as stop:
        status = stop.code
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(err, *names):
    """A single `...: error: ...` line naming each of `names`, no traceback (progress bars may come before it)."""
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    for name in names:
        assert name in lines[0], (name, err)


class FakePipeline:
    """Stands in for the speech-translation pipeline: echoes the file, fails on 'bad' files, can be interrupted."""

    def __init__(self, interrupt_at=None):
        self.calls, self.interrupt_at = 0, interrupt_at

    def __call__(self, path, **kwargs):
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        if "bad" in os.path.basename(path):
            raise ValueError(f"{path}: could not decode the audio")
        return {"text": f"text of {os.path.basename(path)}", "src_lang": kwargs["src_lang"]}


@pytest.fixture
def fake_pipe(monkeypatch):
    def install(**kwargs):
        pipe = FakePipeline(**kwargs)
        monkeypatch.setattr(cli_translate, "load_pipeline", lambda args: pipe)
        return pipe
    return install


@pytest.fixture
def model_dir(tmp_path_factory):
    """A folder that passes the CLI's up-front model check (the fake pipeline never reads it)."""
    folder = tmp_path_factory.mktemp("model")
    (folder / "config.json").write_text("{}")
    return str(folder)


# ------------------------------------------------------------------------------------------------- the parser
@pytest.mark.parametrize("argv, name", [
    (["--beams", "0"], "--beams"), (["--beams", "-2"], "--beams"), (["--max-new-tokens", "0"], "--max-new-tokens"),
    (["--batch-size", "0"], "--batch-size"), (["--batch-size", "two"], "--batch-size"),
    (["--chunk-length", "0"], "--chunk-length"), (["--chunk-length", "-5"], "--chunk-length"),
    (["--chunk-length", "nan"], "--chunk-length"), (["--dtype", "float8"], "--dtype"),
    (["--task", "summarise"], "--task"),
])
def test_nonsensical_values_are_refused_by_the_parser(capsys, argv, name):
    status, _, err = run_cli(capsys, "translate", "a.wav", "--model", "m", "--src", "eng", "--tgt", "deu", *argv)
    assert status == 2
    assert_one_line_error(err, name)


# ------------------------------------------------------------------------------------ usage errors: exit 2, early
def test_usage_errors_are_one_line_naming_the_fault(capsys, tmp_path, wavs, fake_pipe, model_dir):
    pipe = fake_pipe()
    base = ["translate", wavs[0], "--model", model_dir]
    cases = [
        ([*base, "--src", "klingon", "--tgt", "deu"], ["klingon"]),
        ([*base, "--src", "eng", "--tgt", "deu,xx"], ["'xx'"]),
        ([*base, "--src", "eng"], ["--tgt"]),
        ([*base, "--src", "eng", "--tgt", "deu", "--task", "transcribe"], ["--tgt", "transcribe"]),
        (["translate", str(tmp_path / "missing.wav"), wavs[1], "--model", model_dir, "--src", "eng", "--tgt",
          "deu"], ["missing.wav"]),
        (["translate", wavs[0], "--model", str(tmp_path / "no_such_model"), "--src", "eng", "--tgt", "deu"],
         ["no_such_model"]),
        ([*base, "--src", "eng", "--tgt", "deu", "--device", "toaster"], ["--device", "toaster"]),
    ]
    for argv, names in cases:
        status, out, err = run_cli(capsys, *argv)
        assert status == 2, argv
        assert out == ""
        assert_one_line_error(err, *names)
    assert pipe.calls == 0  # all refused before any work


@pytest.mark.integration
def test_a_missing_model_folder_through_the_real_entry_point_has_no_traceback(tmp_path, wavs):
    result = subprocess.run(
        [sys.executable, "-m", "llm_srt.cli", "translate", wavs[0], "--model", str(tmp_path / "gone" / "model"),
         "--src", "eng", "--tgt", "deu"], capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("llm-srt: error: ") and "gone" in result.stderr


def test_a_chunk_length_beyond_the_model_window_is_refused_before_any_file(capsys, tiny_folder, wavs, tmp_path):
    out = tmp_path / "out.jsonl"
    status, _, err = run_cli(capsys, "translate", *wavs, "--model", tiny_folder, "--src", "eng", "--tgt", "deu",
                             "--chunk-length", "45", "--output", out, *FAST)
    assert status == 2
    assert_one_line_error(err, "--chunk-length", "window")
    assert not out.exists()


# ------------------------------------------------------------------------------------------------ outputs
def test_an_existing_output_is_kept_unless_overwrite(capsys, tiny_folder, wavs, tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("my earlier results\n")
    status, _, err = run_cli(capsys, "translate", *wavs, "--model", tiny_folder, "--src", "eng", "--tgt", "deu",
                             "--output", out, *FAST)
    assert status == 2
    assert_one_line_error(err, str(out), "--overwrite")
    assert out.read_text() == "my earlier results\n"

    status, _, err = run_cli(capsys, "translate", *wavs, "--model", tiny_folder, "--src", "eng", "--tgt", "deu,fra",
                             "--output", out, "--overwrite", *FAST)
    assert status == 0, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["file"], r["tgt_lang"]) for r in rows] == [(w, t) for w in wavs for t in ("deu", "fra")]
    assert sorted(os.listdir(tmp_path)) == sorted(["out.jsonl", *map(os.path.basename, wavs)])  # no temp files left


def test_an_output_that_is_an_input_is_refused_even_with_overwrite(capsys, wavs, tmp_path, fake_pipe, model_dir):
    pipe = fake_pipe()
    before = open(wavs[1], "rb").read()
    status, _, err = run_cli(capsys, "translate", *wavs, "--model", model_dir, "--src", "eng", "--tgt", "deu",
                             "--output", wavs[1], "--overwrite")
    assert status == 2 and pipe.calls == 0
    assert_one_line_error(err, wavs[1], "input")
    assert open(wavs[1], "rb").read() == before


def test_when_every_input_fails_the_old_output_is_untouched(capsys, tmp_path, fake_pipe, model_dir):
    fake_pipe()
    bad = [tmp_path / "bad1.wav", tmp_path / "bad2.wav"]
    for path in bad:
        path.write_bytes(b"not audio")
    out = tmp_path / "out.jsonl"
    out.write_text("keep me\n")
    status, _, err = run_cli(capsys, "translate", *bad, "--model", model_dir, "--src", "eng", "--tgt", "deu",
                             "--output", out, "--overwrite")
    assert status == 1
    assert "bad1.wav" in err and "bad2.wav" in err and "Traceback" not in err
    assert "not written" in err
    assert out.read_text() == "keep me\n"
    assert sorted(os.listdir(tmp_path)) == ["bad1.wav", "bad2.wav", "out.jsonl"]


def test_some_failures_still_write_the_others_with_exit_1(capsys, tmp_path, wavs, fake_pipe, model_dir):
    fake_pipe()
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"x")
    out = tmp_path / "sub" / "out.jsonl"
    status, _, err = run_cli(capsys, "translate", wavs[0], bad, wavs[1], "--model", model_dir, "--src", "eng",
                             "--tgt", "deu", "--output", out)
    assert status == 1 and "1 of 3 files failed" in err
    assert [json.loads(line)["file"] for line in out.read_text().splitlines()] == [wavs[0], wavs[1]]


def test_an_interrupted_run_keeps_the_old_output_and_saves_what_was_done(capsys, tmp_path, wavs, fake_pipe, model_dir):
    fake_pipe(interrupt_at=2)
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    status, _, err = run_cli(capsys, "translate", *wavs, "--model", model_dir, "--src", "eng", "--tgt", "deu",
                             "--output", out, "--overwrite")
    assert status == 130 and "Traceback" not in err and "interrupted" in err
    assert out.read_text() == "old\n"
    partial = [f for f in os.listdir(tmp_path) if f.endswith(".partial")]
    assert len(partial) == 1 and partial[0] in err
    assert [json.loads(line)["file"] for line in open(tmp_path / partial[0])] == [wavs[0]]


def test_stdout_streams_one_line_per_file(capsys, tmp_path, wavs, fake_pipe, model_dir):
    fake_pipe()
    status, out, _ = run_cli(capsys, "translate", *wavs, "--model", model_dir, "--src", "eng", "--tgt", "deu")
    assert status == 0
    assert [json.loads(line)["file"] for line in out.splitlines()] == wavs


# ------------------------------------------------------------------------------------------------ safe_io
def test_check_output_dir(tmp_path):
    check_output_dir(tmp_path / "new")  # missing: fine
    check_output_dir(tmp_path)  # empty: fine
    (tmp_path / "README.md").write_text("mine")
    with pytest.raises(OutputExistsError, match="README.md.*--overwrite"):
        check_output_dir(tmp_path)
    check_output_dir(tmp_path, overwrite=True)
    with pytest.raises(ValueError, match="holds the input"):
        check_output_dir(tmp_path, overwrite=True, inputs=[tmp_path / "README.md"])
    with pytest.raises(OutputExistsError, match="is a file"):
        check_output_dir(tmp_path / "README.md", overwrite=True)


def test_atomic_dir_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as folder:
            open(os.path.join(folder, "new.txt"), "w").write("half")
            raise RuntimeError("killed")
    assert os.listdir(target) == ["old.txt"] and os.listdir(tmp_path) == ["model"]
    with atomic_dir(target) as folder:
        open(os.path.join(folder, "new.txt"), "w").write("new")
    assert os.listdir(target) == ["new.txt"] and os.listdir(tmp_path) == ["model"]


def test_atomic_write_keeps_the_old_file_on_failure_and_its_permissions(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")
    os.chmod(path, 0o644)
    with pytest.raises(RuntimeError):
        with atomic_write(path) as handle:
            handle.write("half")
            raise RuntimeError
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["out.json"]
    with atomic_write(path) as handle:
        handle.write("new")
    assert path.read_text() == "new" and oct(os.stat(path).st_mode & 0o777) == "0o644"
    with pytest.raises(ValueError, match="is also an input"):
        check_output_file(path, inputs=[str(path)], overwrite=True)


# --------------------------------------------------------------------------------------- found in QA (round 2)
def test_a_folder_given_as_audio_is_named_as_a_folder(capsys, tmp_path, wavs, fake_pipe, model_dir):
    # It was reported as "audio file not found", though it exists.
    pipe = fake_pipe()
    folder = tmp_path / "clips"
    folder.mkdir()
    status, _, err = run_cli(capsys, "translate", wavs[0], folder, "--model", model_dir, "--src", "eng", "--tgt", "deu")
    assert status == 2 and pipe.calls == 0
    assert_one_line_error(err, str(folder), "a folder, not an audio file")
    assert "not found" not in err


def test_an_output_under_a_file_is_refused_before_the_model_loads(capsys, tmp_path, wavs, monkeypatch, model_dir):
    # It failed after loading the model with "[Errno 17] File exists: <the audio file>".
    loads = []
    monkeypatch.setattr(cli_translate, "load_pipeline", lambda args: loads.append(args) or FakePipeline())
    output = os.path.join(wavs[1], "out.jsonl")
    status, _, err = run_cli(capsys, "translate", wavs[0], "--model", model_dir, "--src", "eng", "--tgt", "deu",
                             "--output", output)
    assert status == 2 and not loads
    assert_one_line_error(err, output, f"{wavs[1]} is a file")
    assert os.path.isfile(wavs[1])


def test_a_failed_file_is_named_once(capsys, tmp_path, wavs, fake_pipe, model_dir):
    fake_pipe()
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"junk")
    status, out, err = run_cli(capsys, "translate", bad, wavs[0], "--model", model_dir, "--src", "eng", "--tgt", "deu")
    assert status == 1
    line = next(line for line in err.splitlines() if ": error: " in line)
    assert line.count(str(bad)) == 1, line


def test_an_error_during_the_progress_bar_starts_its_own_line(capsys, tmp_path, wavs, fake_pipe, model_dir):
    """With several files a progress bar runs on stderr; a failing file's error is written above the bar, on a line
    of its own, not glued after the bar's text (`translating: 33%|...| 1/3 [...]llm-srt: error: ...`)."""
    fake_pipe()
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"junk")
    status, _, err = run_cli(capsys, "translate", wavs[0], bad, wavs[1], "--model", model_dir, "--src", "eng",
                             "--tgt", "deu")
    assert status == 1 and "translating" in err  # the bar ran
    shown = [line.split("\r")[-1] for line in err.split("\n")]  # what a terminal shows of each line
    errors = [line for line in shown if "error:" in line]
    assert errors and all(line.startswith("llm-srt: error: ") for line in errors), err
    assert any(line.startswith("llm-srt: 1 of 3 files failed") for line in shown), err


SIGTERM_RUN = """
import os, signal, sys
from llm_srt.cli import main, translate

class Pipe:
    calls = 0
    def __call__(self, path, **kwargs):
        Pipe.calls += 1
        if Pipe.calls == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # as `timeout` or `docker stop` would
        return {"text": "text of " + os.path.basename(path)}

translate.load_pipeline = lambda args: Pipe()
sys.exit(main.main(sys.argv[1:]))
"""


@pytest.mark.integration
def test_sigterm_mid_run_keeps_the_old_output_and_names_the_finished_lines(tmp_path, wavs, model_dir):
    # SIGTERM killed the run outright: a stray, unnamed .partial file beside the output.
    output = tmp_path / "out.jsonl"
    output.write_text("old\n")
    run = subprocess.run(
        [sys.executable, "-c", SIGTERM_RUN, "translate", *wavs, wavs[0], "--model", model_dir, "--src", "eng",
         "--tgt", "deu", "--output", output, "--overwrite"], capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 130, run.stderr
    assert output.read_text() == "old\n"
    partial = [p for p in os.listdir(tmp_path) if p.endswith(".partial")]
    assert len(partial) == 1 and partial[0] in run.stderr
    assert "Traceback" not in run.stderr
    assert [json.loads(line)["file"] for line in (tmp_path / partial[0]).read_text().splitlines()] == wavs[:1]


# ------------------------------------------------------------------------------------ an edited model folder
def _edited(tiny_folder, tmp_path, name, edit):
    import shutil

    folder = tmp_path / name
    shutil.copytree(tiny_folder, folder)
    config = folder / "config.json"
    config.write_text(edit(config.read_text(encoding="utf-8")), encoding="utf-8")
    return folder


@pytest.mark.parametrize("name, edit, message", [
    ("comma", lambda text: text.replace('"num_queries"', '"num_queries" 8, "x"', 1),
     r"config.json: not valid JSON \(Expecting ':' delimiter, line \d+ column \d+\)"),
    ("type", lambda text: text.replace('"num_queries": 8', '"num_queries": "eighty"', 1),
     r"config.json: not a valid LLM-SRT config \(.*num_queries.*'eighty'"),
    ("heads", lambda text: json.dumps({**json.loads(text), "projector_config": {
        **json.loads(text)["projector_config"], "num_attention_heads": 5}}),
     r"config.json: not a valid LLM-SRT config \(.*num_attention_heads 5 does not divide .*hidden_size 32"),
])
def test_an_edited_config_is_one_line_naming_the_file_and_the_fault(capsys, tiny_folder, wavs, tmp_path, name, edit,
                                                                      message):
    import re

    folder = _edited(tiny_folder, tmp_path, name, edit)
    status, _, err = run_cli(capsys, "translate", wavs[0], "--model", folder, "--src", "eng", "--tgt", "deu", *FAST)
    assert status == 1
    assert_one_line_error(err, f"{folder}{os.sep}config.json")
    assert re.search(message, err), err
    assert "\\n" not in err and "File \"" not in err  # no flattened traceback


def test_truncated_weights_through_the_cli_name_the_file(capsys, tiny_folder, wavs, tmp_path):
    folder = _edited(tiny_folder, tmp_path, "cut", lambda text: text)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    status, _, err = run_cli(capsys, "translate", wavs[0], "--model", folder, "--src", "eng", "--tgt", "deu", *FAST)
    assert status == 1
    assert_one_line_error(err, f"{weights} is truncated or corrupt")


def test_a_reader_that_stops_reading_is_not_an_error():
    """`llm-srt languages | head -2`: the reader goes away before the command is done writing; the command ends
    quietly, without an error line."""
    process = subprocess.Popen([sys.executable, "-m", "llm_srt.cli", "languages"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    process.stdout.close()  # gone before the first line: every write meets a closed pipe
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141 and stderr == "", stderr


def test_live_refuses_a_target_named_twice_as_translate_does(wavs, capsys):
    status, _, err = run_cli(capsys, "live", wavs[0], "--model", "no-such-model", "--src", "eng",
                              "--tgt", "deu,German")
    assert status == 2
    assert_one_line_error(err, "--tgt", "deu twice")


def test_device_defaults_to_auto_the_gpu_when_there_is_one_and_says_which(capsys, monkeypatch, tiny_folder):
    """`--device` is `auto` for translate, live and serve (as Whisper and faster-whisper users expect): the GPU when
    there is one, else cpu, said on stderr; beam defaults are named in --help (translate: the paper's 5; serve and
    live: greedy)."""
    import argparse

    import torch
    import transformers

    from llm_srt.cli import common
    from llm_srt.cli.main import build_parser
    from llm_srt.engines import loading
    from llm_srt.serving.settings import ServeSettings

    parser = build_parser()
    for argv in (["translate", "a.wav", "--model", "m"], ["live", "a.wav", "--model", "m"], ["serve", "m"]):
        assert parser.parse_args(argv).device == "auto", argv
    assert ServeSettings().device == "auto" and ServeSettings(engine="vllm").device == "auto"
    with pytest.raises(ValueError, match="device applies to the transformers engine"):
        ServeSettings(engine="vllm", device="cuda")
    for command, words in (("translate", ["paper's 5", "greedily"]), ("live", ["greedy", "model's 5"]),
                           ("serve", ["greedy", "paper's 5"])):
        status, out, _ = run_cli(capsys, command, "--help")
        text = " ".join(out.split())  # argparse wraps the help
        assert status == 0 and "auto (default: the GPU when there is one, else cpu)" in text, command
        assert all(word in text for word in words), (command, text)

    for available, expected in ((True, "cuda"), (False, "cpu")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
        assert loading.resolve_device("auto") == expected
        assert loading.resolve_device("cuda:1") == "cuda:1" and loading.resolve_device(None) == "cpu"
        placed = {}
        monkeypatch.setattr(loading, "open_model", lambda model, device, *a, **k: (f"model on {device}", "processor"))
        monkeypatch.setattr(transformers, "pipeline", lambda task, **kwargs: placed.update(kwargs) or "pipe")
        args = argparse.Namespace(model=tiny_folder, trust_remote_code=False, dtype=None, quantization=None,
                                  device="auto")
        assert common.load_pipeline(args) == "pipe" and placed["device"] == expected
        assert f"decoding on {expected} (--device auto)" in capsys.readouterr().err
