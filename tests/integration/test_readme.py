"""README's Python examples run as written, so the README cannot drift from the code.

Every ```python block after a `<!-- test ... -->` line is run, in README order and in one namespace, in a folder
holding what the examples name: the model folder `path/or/repo` (a tiny random model with a language detector, so
`src_lang="auto"` works; 6 new tokens), the files `talk.wav`, `a.wav`, `b.flac`, `other.flac`, and the variables
`array` (8 kHz samples) and `audio_16khz`. `load_dataset("google/fleurs", ...)` gives a local dataset of those files
(no network), and the server the OpenAI client calls is `llm-srt serve path/or/repo` on a free port (the block's
`127.0.0.1:8000` is pointed there). Where an expression is followed by a comment showing its result (`# {...}` or
`# [{...}]`), the result has exactly the keys the comment shows. Every expression's value is printed (`pytest -s`).

On a trained model: `LLM_SRT_README_MODEL=runs/demo/srt LLM_SRT_README_DATA=runs/demo/data pytest -s
tests/integration/test_readme.py` runs the same blocks on that model, with held-out clips of the demo corpus as the files
(`talk.wav`: three English sentences with pauses) and the held-out sentences they say printed for comparison.
"""

import ast
import os
import re

import numpy as np
import pytest
import soundfile

from llm_srt.testing import build_tiny_model_and_processor, synthetic_speech


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SR = 16000
# openai 3.x marks audio.translations deprecated; the README uses it
pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")


def marked_blocks() -> list[tuple[int, str]]:
    """(line number, code) of README's ```python blocks that follow a `<!-- test` line."""
    lines = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read().splitlines()
    blocks = []
    for index, line in enumerate(lines):
        if line.startswith("<!-- test") and index + 1 < len(lines) and lines[index + 1].strip() == "```python":
            end = lines.index("```", index + 2)
            blocks.append((index + 3, "\n".join(lines[index + 2:end])))
    return blocks


def shown_result(source_lines: list[str], node: ast.stmt):
    """The literal a `# {...}` / `# [{...}]` comment right after the statement shows, else None."""
    after = node.end_lineno  # 1-based end line = index of the next line
    if after < len(source_lines):
        comment = source_lines[after].strip()
        if comment.startswith(("# {", "# [{")):
            return ast.literal_eval(comment[2:])
    return None


def run_block(code: str, first_line: int, namespace: dict) -> int:
    """Run a block statement by statement; returns how many shown results were checked."""
    source_lines = code.splitlines()
    checked = 0
    for node in ast.parse(code).body:
        where = f"README.md:{first_line + node.lineno - 1}"
        if isinstance(node, ast.Expr):
            value = eval(compile(ast.Expression(node.value), where, "eval"), namespace)
            print(f"{where}: {ast.get_source_segment(code, node).splitlines()[0]}\n  -> {value!r}")
            shown = shown_result(source_lines, node)
            if shown is not None:
                got = value[0] if isinstance(shown, list) else value
                want = shown[0] if isinstance(shown, list) else shown
                assert set(got) == set(want), (where, sorted(got), sorted(want))
                checked += 1
        else:
            exec(compile(ast.Module([node], []), where, "exec"), namespace)
    return checked


TRAINED_MODEL = os.environ.get("LLM_SRT_README_MODEL")  # a trained model folder (the demo's), see the docstring
TRAINED_DATA = os.environ.get("LLM_SRT_README_DATA")  # its corpus (test.jsonl and audio), for real speech


def held_out_speech(data_dir: str, folder) -> dict:
    """The README's files from the demo corpus' held-out English clips: `talk.wav` three sentences with 0.5 s
    pauses, `a.wav`, `b.flac`, `other.flac` one each; `array` (8 kHz) and `audio_16khz` one each."""
    import json

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


@pytest.fixture
def readme_folder(tmp_path, tokenizer, monkeypatch):
    """A folder with the model and files the README's examples name, as the current directory."""
    from llm_srt.language_detection_llm_srt import WHISPER_CODES, LlmSrtLanguageDetector

    if TRAINED_MODEL:
        os.makedirs(tmp_path / "path" / "or")
        os.symlink(os.path.abspath(TRAINED_MODEL), tmp_path / "path" / "or" / "repo")
        arrays = held_out_speech(TRAINED_DATA, tmp_path)
        monkeypatch.chdir(tmp_path)
        return tmp_path, arrays
    model, processor = build_tiny_model_and_processor(seed=0, tokenizer=tokenizer)
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
    monkeypatch.chdir(tmp_path)
    return tmp_path, {"array": synthetic_speech(1.5, sampling_rate=8000, seed=5), "audio_16khz": synthetic_speech(1.0, seed=6)}


def local_fleurs(folder):
    """What the README's `load_dataset("google/fleurs", "en_us", split="test")` gives, from local files: an Audio
    column (decoded by `datasets` unless cast to `Audio(decode=False)`, as the README does)."""
    import datasets

    def load_dataset(name, config=None, split=None, **kwargs):
        assert (name, config, split) == ("google/fleurs", "en_us", "test")
        paths = [str(folder / name) for name in ("talk.wav", "a.wav", "b.flac")]
        return datasets.Dataset.from_dict({"audio": paths}).cast_column("audio", datasets.Audio())

    return load_dataset


def test_readme_python_examples_run_as_written(readme_folder, monkeypatch):
    import datasets

    folder, arrays = readme_folder
    blocks = marked_blocks()
    assert len(blocks) == 4, [line for line, _ in blocks]  # Use, datasets, lower level, serve
    monkeypatch.setattr(datasets, "load_dataset", local_fleurs(folder))
    namespace = {"__name__": "readme", **arrays}
    checked = 0
    for first_line, code in blocks:
        if "OpenAI(" in code:
            pytest.importorskip("fastapi")
            pytest.importorskip("openai")
            from llm_srt.serving import create_app
            from llm_srt.testing import ServerThread

            assert "llm-srt serve path/or/repo --port 8000" in open(os.path.join(ROOT, "README.md")).read()
            with ServerThread(create_app("path/or/repo")) as server:
                code = code.replace("http://127.0.0.1:8000", server.url)
                checked += run_block(code, first_line, namespace)
        else:
            checked += run_block(code, first_line, namespace)
    assert checked == 4  # the README's four result comments
    assert isinstance(namespace["pipe"]("talk.wav", src_lang="eng", tgt_lang="deu")["text"], str)
    assert re.fullmatch(r"[a-z]{3}", namespace["out"]["src_lang"])  # the datasets loop ran
