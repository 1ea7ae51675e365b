"""Every shell and Python block of README.md and docs/*.md runs as written, so the docs cannot drift from the code.

Each ```python / ```bash block follows a marker line that says what happens to it:

- `<!-- test ... -->`: run here, as written, in a folder holding what the docs name: the model folder `path/or/repo`
  (a tiny random model with a language detector, so `src_lang="auto"` works; 6 new tokens; head sizes vLLM's CPU
  attention supports) also as `path/to/folder` and `runs/srt`, the files `talk.wav`, `a.wav`, `b.flac`,
  `other.flac`, a test set `test.jsonl` and `data/fleurs_test.jsonl`, the variables `array` (8 kHz samples) and
  `audio_16khz`, and links to the repository's `trainer_scripts/` and `llm_srt/`. Pages run in order (README
  first); a page's Python blocks share one namespace. Shell commands run in bash one by one (continued lines
  joined) with this checkout's `llm_srt` first on the path; `llm-srt serve` and vLLM's server start in the
  background on a free port instead of the block's (`127.0.0.1:8000` in the Python blocks is pointed there) and stay
  up until the next server starts; `pip install` lines are checked, not run: the extras they name exist and their
  requirements are installed here. `load_dataset("google/fleurs", ...)` gives a local dataset of the files (no
  network). Where an expression is followed by a comment showing its result (`# {...}` or `# [{...}]`), the result
  has exactly the keys the comment shows. Every expression's value and every command's output is printed (`-s`).
- `<!-- test: vllm -->`: the same, in vLLM's environment (`.venv-vllm` is linked to the one `LLM_SRT_VLLM_PYTHON`
  names; skipped without it), with `VLLM_CPU_KVCACHE_SPACE` unset so vLLM sizes its memory as a user's run would.
  `LLM_SRT_BUSY_GB=5` holds that much memory while they run, as other work on a busy machine would.
- `<!-- not run by the docs test: why -->`: reported as a skipped test with that reason.

On a trained model: `LLM_SRT_README_MODEL=runs/demo/srt LLM_SRT_README_DATA=runs/demo/data pytest -s
tests/integration/test_readme.py` runs the same blocks on that model, with held-out clips of the demo corpus as the
files (`talk.wav`: three English sentences with pauses) and the held-out sentences they say printed for comparison.
"""

import ast
import glob
import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from llm_srt.testing import ServerProcess, build_tiny_model_and_processor, synthetic_speech


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAGES = ["README.md", *sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))]
SR = 16000
CODE = ("python", "bash")
VLLM_PYTHON = os.environ.get("LLM_SRT_VLLM_PYTHON")
# Head size 32 (vLLM's CPU attention supports 32, 64, 80, ...), so vLLM's blocks run on the same folder.
SHAPES = dict(encoder_width=64, qformer_width=64, llm_width=128, num_heads=2, projector_dropout=0.0)
# openai 3.x marks audio.translations deprecated; the README uses it
pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")


class Block:
    """One fenced code block of a page, with what its marker line says about it."""

    def __init__(self, page: str, line: int, language: str, code: str, marker: str):
        self.page, self.line, self.language, self.code, self.marker = page, line, language, code, marker

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def kind(self) -> str:
        """"test", "vllm", "not run" or "unmarked"."""
        if re.match(r"<!-- test: vllm\b", self.marker):
            return "vllm"
        if re.match(r"<!-- test\b", self.marker):
            return "test"
        if self.marker.startswith("<!-- not run by the docs test: "):
            return "not run"
        return "unmarked"

    @property
    def reason(self) -> str:
        return self.marker.removeprefix("<!-- not run by the docs test: ").removesuffix("-->").strip()


def page_blocks(page: str) -> list[Block]:
    """Every ```python / ```bash block of `page` (first code line, language, code, the marker line above it)."""
    lines = open(os.path.join(ROOT, page), encoding="utf-8").read().splitlines()
    blocks = []
    for index, line in enumerate(lines):
        if line.startswith("```") and line[3:].strip() in CODE and (index == 0 or not lines[index - 1].startswith("```")):
            end = lines.index("```", index + 1)
            marker = lines[index - 1].strip() if index else ""
            blocks.append(Block(page, index + 2, line[3:].strip(), "\n".join(lines[index + 1:end]), marker))
    return blocks


ALL_BLOCKS = [block for page in PAGES for block in page_blocks(page)]


def test_every_shell_and_python_block_is_run_or_says_why_not():
    unmarked = [block.where for block in ALL_BLOCKS if block.kind == "unmarked"]
    assert not unmarked, f"blocks without a `<!-- test -->` or `<!-- not run by the docs test: why -->` line: {unmarked}"
    assert all(block.reason for block in ALL_BLOCKS if block.kind == "not run")
    assert {block.page for block in ALL_BLOCKS if block.kind == "test"} >= {"README.md", "docs/cli.md",
                                                                           "docs/serving.md", "docs/live.md"}
    assert sum(block.kind == "vllm" for block in ALL_BLOCKS) == 3  # vLLM's server, offline, serve + evaluate


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if b.kind == "not run"], ids=lambda b: b.where)
def test_blocks_not_run_say_why(block):
    pytest.skip(f"{block.where}: {block.reason}")


def test_the_vllm_install_command_is_what_ci_runs():
    """docs/vllm.md's install commands are the ones `.ci/run` builds vLLM's environment with (it adds packages of
    its own tests only)."""
    (install,) = [b for b in page_blocks("docs/vllm.md") if "python -m venv" in b.code]
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    ci = " ".join(ci.replace('"$VLLM_VENV/bin/pip"', ".venv-vllm/bin/pip").replace(" -q", "").split())
    for command in " ".join(install.code.replace("\\\n", " ").split()).split(" && "):
        if command.startswith(".venv-vllm/bin/pip"):
            assert command.removesuffix(" openai") in ci, command


# ------------------------------------------------------------------------------------------------- the folder
TRAINED_MODEL = os.environ.get("LLM_SRT_README_MODEL")  # a trained model folder (the demo's), see the docstring
TRAINED_DATA = os.environ.get("LLM_SRT_README_DATA")  # its corpus (test.jsonl and audio), for real speech


def held_out_speech(data_dir: str, folder) -> dict:
    """The README's files from the demo corpus' held-out English clips: `talk.wav` three sentences with 0.5 s
    pauses, `a.wav`, `b.flac`, `other.flac` one each; `array` (8 kHz) and `audio_16khz` one each."""
    from llm_srt.audio_llm_srt import load_audio

    rows = [json.loads(line) for line in open(os.path.join(data_dir, "test.jsonl"), encoding="utf-8")]
    english = list({r["audio"]: r for r in rows if r["src_lang"] == "eng"}.values())
    clips = [load_audio(os.path.join(data_dir, r["audio"])) for r in english[:8]]
    pause = np.zeros(SR // 2, np.float32)
    soundfile.write(folder / "talk.wav", np.concatenate([clips[0], pause, clips[1], pause, clips[2]]), SR)
    for name, clip in zip(("a.wav", "b.flac", "other.flac"), clips[3:6]):
        soundfile.write(folder / name, clip, SR)
    said = {name: r["transcript"] for name, r in zip(
        ("talk.wav (1)", "talk.wav (2)", "talk.wav (3)", "a.wav", "b.flac", "other.flac", "array", "audio_16khz"),
        english)}
    print("held-out sentences the files say:", json.dumps(said, ensure_ascii=False, indent=1))
    return {"array": load_audio(os.path.join(data_dir, english[6]["audio"]), target_rate=8000), "audio_16khz": clips[7]}


def write_test_sets(folder) -> None:
    """`test.jsonl` (eng -> deu, beside the files) and `data/fleurs_test.jsonl` (eng -> deu and deu -> eng) over the
    folder's clips, in the manifest layout `evaluate_model.py` reads."""
    os.makedirs(folder / "data", exist_ok=True)
    for path, prefix, directions in ((folder / "test.jsonl", "", [("eng", "deu")]),
                                     (folder / "data" / "fleurs_test.jsonl", "../",
                                      [("eng", "deu"), ("deu", "eng")])):
        rows = [{"audio": prefix + name, "src_lang": src, "tgt_lang": tgt, "transcript": f"I see {i} cats",
                 "translation": f"Ich sehe {i} Katzen", "key": f"{name}-{src}-{tgt}"}
                for i, name in enumerate(("a.wav", "b.flac")) for src, tgt in directions]
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture
def docs_folder(tmp_path, tokenizer, monkeypatch):
    """A folder with the model and files the docs name, as the current directory; returns (folder, arrays)."""
    from llm_srt.language_detection_llm_srt import WHISPER_CODES, LlmSrtLanguageDetector

    os.makedirs(tmp_path / "path" / "or")
    os.makedirs(tmp_path / "runs")
    if TRAINED_MODEL:
        os.symlink(os.path.abspath(TRAINED_MODEL), tmp_path / "path" / "or" / "repo")
        arrays = held_out_speech(TRAINED_DATA, tmp_path)
    else:
        model, processor = build_tiny_model_and_processor(seed=0, tokenizer=tokenizer, **SHAPES)
        model.set_language_detector(LlmSrtLanguageDetector(model.config.audio_config, list(WHISPER_CODES.values())),
                                    save_with_model=True)
        model.generation_config.max_new_tokens = 6  # the examples keep the model's other defaults (beam 5)
        folder = tmp_path / "path" / "or" / "repo"
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        soundfile.write(tmp_path / "talk.wav", synthetic_speech(2.5, seed=1, pause_every=1.2), SR)
        soundfile.write(tmp_path / "a.wav", synthetic_speech(0.8, seed=2), SR)
        soundfile.write(tmp_path / "b.flac", synthetic_speech(0.9, seed=3), SR)
        soundfile.write(tmp_path / "other.flac", synthetic_speech(0.7, seed=4), SR)
        arrays = {"array": synthetic_speech(1.5, sampling_rate=8000, seed=5), "audio_16khz": synthetic_speech(1.0, seed=6)}
    os.makedirs(tmp_path / "path" / "to")
    os.symlink(os.path.join("..", "or", "repo"), tmp_path / "path" / "to" / "folder")
    os.symlink(os.path.join("..", "path", "or", "repo"), tmp_path / "runs" / "srt")
    for name in ("trainer_scripts", "llm_srt"):
        os.symlink(os.path.join(ROOT, name), tmp_path / name)
    if VLLM_PYTHON:
        os.symlink(os.path.dirname(os.path.dirname(VLLM_PYTHON)), tmp_path / ".venv-vllm")
    write_test_sets(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path, arrays


def local_fleurs(folder):
    """What the README's `load_dataset("google/fleurs", "en_us", split="test")` gives, from local files: an Audio
    column (decoded by `datasets` unless cast to `Audio(decode=False)`, as the README does)."""
    import datasets

    def load_dataset(name, config=None, split=None, **kwargs):
        assert (name, config, split) == ("google/fleurs", "en_us", "test")
        paths = [str(folder / name) for name in ("talk.wav", "a.wav", "b.flac")]
        return datasets.Dataset.from_dict({"audio": paths}).cast_column("audio", datasets.Audio())

    return load_dataset


# ------------------------------------------------------------------------------------------------ running blocks
def shown_result(source_lines: list[str], node: ast.stmt):
    """The literal a `# {...}` / `# [{...}]` comment right after the statement shows, else None."""
    after = node.end_lineno  # 1-based end line = index of the next line
    if after < len(source_lines):
        comment = source_lines[after].strip()
        if comment.startswith(("# {", "# [{")):
            return ast.literal_eval(comment[2:])
    return None


def run_python(code: str, where: str, namespace: dict) -> int:
    """Run a block statement by statement in `namespace`; returns how many shown results were checked."""
    page, first_line = where.rsplit(":", 1)
    source_lines = code.splitlines()
    checked = 0
    for node in ast.parse(code).body:
        at = f"{page}:{int(first_line) + node.lineno - 1}"
        if isinstance(node, ast.Expr):
            value = eval(compile(ast.Expression(node.value), at, "eval"), namespace)
            print(f"{at}: {ast.get_source_segment(code, node).splitlines()[0]}\n  -> {value!r}")
            shown = shown_result(source_lines, node)
            if shown is not None:
                got = value[0] if isinstance(shown, list) else value
                want = shown[0] if isinstance(shown, list) else shown
                assert set(got) == set(want), (at, sorted(got), sorted(want))
                checked += 1
        else:
            exec(compile(ast.Module([node], []), at, "exec"), namespace)
    return checked


def shell_commands(code: str) -> list[str]:
    """The commands of a shell block: continued lines joined, blank and comment-only lines dropped."""
    joined = code.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def check_pip_install(command: str) -> None:
    """A `pip install` line, checked instead of run: the project's extras it names exist and every requirement they
    bring is installed here (the test environment is built with them), pinned versions included."""
    from importlib import metadata

    from packaging.requirements import Requirement

    wanted = []
    for word in shlex.split(command.split("#")[0])[2:]:
        match = re.fullmatch(r"\.\[([a-z_,]+)\]", word)
        if match:
            extras = match.group(1).split(",")
            known = metadata.metadata("llm-srt").get_all("Provides-Extra") or []
            assert set(extras) <= set(known), f"{command}: no extra {sorted(set(extras) - set(known))} in setup.py"
            requirements = [Requirement(r) for r in metadata.requires("llm-srt") or []]
            wanted += [r for r in requirements if r.marker and any(r.marker.evaluate({"extra": e}) for e in extras)]
        elif not word.startswith("-"):
            wanted.append(Requirement(word))
    for requirement in wanted:
        version = metadata.version(requirement.name)  # PackageNotFoundError: not installed
        assert requirement.specifier.contains(version, prereleases=True), (command, str(requirement), version)
    print(f"checked (not run): {command}\n  -> {len(wanted)} requirements installed")


def is_server(command: str) -> bool:
    return bool(re.search(r"(^|\s)(llm-srt|-m llm_srt\.cli) serve\s|vllm\.entrypoints\.openai\.api_server", command))


class DocsRun:
    """Runs blocks in the docs folder: Python in per-page namespaces, shell commands with bash, one server at a
    time."""

    def __init__(self, folder, arrays: dict, env: dict):
        self.folder, self.arrays, self.env = folder, arrays, env
        self.namespaces: dict[str, dict] = {}
        self.server: ServerProcess | None = None
        self.checked = 0
        self.done: dict[tuple[str, str], str] = {}  # ("block" or "command", code) -> where it ran
        self.server_command: str | None = None

    def once(self, kind: str, code: str, where: str) -> bool:
        """Whether `code` is to run: a page repeating another's block or command (the README's, whose output
        exists) is not run again."""
        if (kind, code) in self.done:
            print(f"--- {where}: `{code.splitlines()[0]}` is the same as at {self.done[kind, code]}, run there")
            return False
        self.done[kind, code] = where
        return True

    def run(self, block: Block) -> None:
        if not self.once("block", block.code, block.where):
            return
        print(f"--- {block.where} ({block.language})")
        if block.language == "bash":
            for command in shell_commands(block.code):
                self.shell(command, block.where)
        elif block.kind == "vllm":  # vLLM's Python: a script of its own (vLLM spawns processes that import it)
            script = self.folder / f"block_{block.page.replace('/', '_')}_{block.line}.py"
            script.write_text(block.code)
            self.shell(f".venv-vllm/bin/python {script.name}", block.where)
        else:
            namespace = self.namespaces.setdefault(block.page, {"__name__": "docs", **self.arrays})
            code = block.code
            if self.server is not None:
                code = code.replace("127.0.0.1:8000", self.server.url.removeprefix("http://"))
            self.checked += run_python(code, block.where, namespace)

    def shell(self, command: str, where: str) -> None:
        if is_server(command):  # the server of the blocks after it, until the next one starts
            if self.server is not None and command == self.server_command:
                print(f"--- {where}: `{command}` is serving already, on {self.server.url}")
                return
            self.stop_server()
            self.server_command = command
            command = command.split(" #")[0]
            if " --port " in command:
                command = re.sub(r"--port \d+", "--port {port}", command)
            else:
                command += " --port {port}"
            self.server = ServerProcess(["bash", "-c", "exec " + command], env=self.env,
                                        log_path=self.folder / f"server_{where.replace('/', '_')}.log").start()
            print(f"$ {command}\n  -> serving on {self.server.url}")
        elif not self.once("command", command, where):
            return
        elif command.startswith("pip install"):
            check_pip_install(command)
        else:
            done = subprocess.run(["bash", "-c", command], cwd=self.folder, env=self.env, capture_output=True,
                                  text=True, timeout=1500)
            print(f"$ {command}\n{done.stdout[-3000:]}{done.stderr[-1500:]}")
            assert done.returncode == 0, f"{where}: `{command}` exited with {done.returncode}:\n{done.stderr[-4000:]}"

    def stop_server(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


def docs_env() -> dict:
    """The environment of the blocks' commands: this checkout's llm_srt first, this Python's scripts on the path, no
    network, and vLLM left to size its memory as a user's run would."""
    env = {**os.environ, "PYTHONPATH": ROOT, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    env.pop("VLLM_CPU_KVCACHE_SPACE", None)
    return env


def test_docs_blocks_run_as_written(docs_folder, monkeypatch):
    import datasets

    pytest.importorskip("fastapi")
    pytest.importorskip("openai")
    folder, arrays = docs_folder
    monkeypatch.setattr(datasets, "load_dataset", local_fleurs(folder))
    runner = DocsRun(folder, arrays, docs_env())
    try:
        for block in ALL_BLOCKS:
            if block.kind == "test":
                runner.run(block)
    finally:
        runner.stop_server()
    assert runner.checked == 4  # the README's four result comments
    readme = runner.namespaces["README.md"]
    assert isinstance(readme["pipe"]("talk.wav", src_lang="eng", tgt_lang="deu")["text"], str)
    assert re.fullmatch(r"[a-z]{3}", readme["out"]["src_lang"])  # the datasets loop ran
    assert len(open(folder / "out.jsonl").read().splitlines()) == 4  # llm-srt translate: 2 files x 2 targets
    assert json.load(open(folder / "eval" / "srt" / "results.json"))  # evaluate_model.py wrote its results
    events = runner.namespaces["docs/serving.md"]["event"]
    assert events["type"] == "input_audio_buffer.committed"  # the WebSocket loop ended at the turn's end


@pytest.mark.skipif(not VLLM_PYTHON, reason="LLM_SRT_VLLM_PYTHON (the vLLM environment's python) not set")
def test_vllm_docs_blocks_run_as_written(docs_folder):
    """vLLM's blocks (its own server, offline decoding, `llm-srt serve --engine vllm`, evaluation on vLLM) as
    written, without `VLLM_CPU_KVCACHE_SPACE`: vLLM's default wanted 0.92 of the machine's memory free and would
    not start where other work holds some (`LLM_SRT_BUSY_GB` holds that much while they run)."""
    folder, arrays = docs_folder
    busy = np.ones(int(float(os.environ.get("LLM_SRT_BUSY_GB", "0")) * (1 << 30)), np.uint8)  # touched: resident
    runner = DocsRun(folder, arrays, docs_env())
    try:
        for block in ALL_BLOCKS:
            if block.kind == "vllm":
                runner.run(block)
                if runner.server is not None:  # answers, not only starts
                    import urllib.request

                    urllib.request.urlopen(runner.server.url + "/v1/models", timeout=60).read()
    finally:
        runner.stop_server()
        del busy
    assert json.load(open(folder / "eval_vllm" / "results.json"))
