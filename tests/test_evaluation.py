import json
import os
import subprocess
import sys

import pytest
import soundfile

from llm_srt.metrics import bleu_tokenizer, corpus_bleu, error_rate, evaluate_module_path, score_directions
from llm_srt.testing import synthetic_speech


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVALUATE = os.path.join(ROOT, "trainer_scripts", "evaluate.py")
PAPER = os.path.join(ROOT, "llm_srt", "reference", "paper_fleurs_bleu_3b.json")
SETS = {
    "eng": (["The cat sat on the mat.", "I see three red dogs today", "hello world"],
            ["The cat sat on a mat.", "I see three red dogs.", "Hello, world!"]),
    "zho": (["我看到三只红色的猫。", "今天天气很好", "你好世界"], ["我看到三只红猫。", "今天天气不错。", "你好，世界！"]),
    "tha": (["ฉันเห็นแมวสีแดงสามตัว", "สวัสดีครับ", "วันนี้อากาศดี"], ["ฉันเห็นแมวแดงสามตัว", "สวัสดีค่ะ", "วันนี้อากาศดีมาก"]),
}


@pytest.mark.parametrize("lang", sorted(SETS))
def test_bleu_equals_the_sacrebleu_command_line(lang, tmp_path):
    hyps, refs = SETS[lang]
    (tmp_path / "hyp.txt").write_text("\n".join(hyps) + "\n", encoding="utf-8")
    (tmp_path / "ref.txt").write_text("\n".join(refs) + "\n", encoding="utf-8")
    tokenize = bleu_tokenizer(lang)
    assert tokenize == ("13a" if lang == "eng" else "char")
    cli = subprocess.run([sys.executable, "-m", "sacrebleu", str(tmp_path / "ref.txt"), "-i", str(tmp_path / "hyp.txt"),
                          "-tok", tokenize, "-b", "-w", "6"], capture_output=True, text=True, check=True)
    ours = corpus_bleu(hyps, refs, lang)
    assert ours["score"] == pytest.approx(float(cli.stdout.strip()), abs=1e-6)
    assert f"tok:{tokenize}" in ours["signature"] and ours["count"] == 3


def test_wer_and_cer_after_whisper_normalization():
    # "Hello, World!" -> "hello world"; hypothesis "hello word" = 1 substitution of 2 words
    result = error_rate(["hello word", "I see 3 cats"], ["Hello, World!", "i see 3 cats."], "eng")
    assert result == {"score": pytest.approx(1 / 6), "metric": "wer", "count": 2, "skipped_empty": 0}
    # Chinese is scored by characters. As in the original scorer, the normalizer turns "，" into a space that CER
    # counts: "你好 世界" (5 chars) vs "你好世界" = 1 deletion; "红狗" vs "红猫" = 1 substitution -> 2 / 7
    result = error_rate(["你好世界", "红猫"], ["你好，世界！", "红狗"], "zho")
    assert result["metric"] == "cer" and result["score"] == pytest.approx(2 / 7)
    assert error_rate(["x", "a b"], ["...", "a b"], "eng")["skipped_empty"] == 1


def test_local_evaluate_modules_load_offline():
    import evaluate

    bleu = evaluate.load(evaluate_module_path("bleu"))
    hyps, refs = SETS["zho"]
    assert bleu.compute(predictions=hyps, references=refs, tgt_lang="zho")["score"] == pytest.approx(
        corpus_bleu(hyps, refs, "zho")["score"])
    wer = evaluate.load(evaluate_module_path("wer"))
    assert wer.compute(predictions=["hello word"], references=["Hello, World!"], language="eng")["score"] == 0.5


def test_averages_per_source_target_and_overall():
    rows = []
    for src, tgt, hyp in (("eng", "deu", "a b c d"), ("eng", "fra", "x y z w"), ("deu", "eng", "a b c d")):
        rows.append({"src_lang": src, "tgt_lang": tgt, "hypothesis": hyp, "reference": "a b c d"})
    scores = score_directions(rows, "smt")
    assert set(scores["directions"]) == {"eng-deu", "eng-fra", "deu-eng"}
    avg = scores["averages"]
    assert avg["bleu_by_source"] == pytest.approx({"deu": 100.0, "eng": 50.0})
    assert avg["bleu_by_target"] == pytest.approx({"deu": 100.0, "eng": 100.0, "fra": 0.0})
    assert avg["bleu"] == pytest.approx(200 / 3)


# ------------------------------------------------------------------------------------------------ the script
@pytest.fixture(scope="module")
def test_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("testset")
    rows = []
    for i in range(3):
        soundfile.write(folder / f"c{i}.wav", synthetic_speech(0.6, seed=20 + i), 16000)
        for src, tgt in (("eng", "deu"), ("eng", "zho"), ("eng", "tha")):
            rows.append({"audio": f"c{i}.wav", "src_lang": src, "tgt_lang": tgt, "transcript": f"I see {i} cats",
                         "translation": {"deu": f"Ich sehe {i} Katzen", "zho": "我看到猫", "tha": "ฉันเห็นแมว"}[tgt],
                         "key": f"c{i}-{tgt}"})
    path = folder / "test.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def run_evaluate(args):
    from trainer_scripts.evaluate import main

    return main(args)


def script_args(model, test_file, out, *extra):
    return ["--model", model, "--test_file", test_file, "--output_dir", out, "--task", "srt", "--batch_size", "2",
            "--num_beams", "1", "--max_new_tokens", "6", *extra]


def test_run_writes_everything_and_resumes_without_redoing_work(tiny_folder, test_set, tmp_path, monkeypatch):
    import trainer_scripts.evaluate as script

    full = run_evaluate(script_args(tiny_folder, test_set, str(tmp_path / "full")))
    for name in ("results.json", "results.md", "bleu_heatmap.png", "hypotheses.srt.jsonl"):
        assert os.path.isfile(tmp_path / "full" / name), name
    assert set(full["directions"]) == {"eng-deu", "eng-tha", "eng-zho"}
    assert all(d["count"] == 3 and "signature" in d["bleu"] and "wer" in d for d in full["directions"].values())
    assert full["averages"]["bleu_by_source"].keys() == {"eng"}
    assert open(tmp_path / "full" / "bleu_heatmap.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"

    decoded = []
    real = script.decode_batch

    def dying(model, processor, rows, *args, **kwargs):
        if len(decoded) >= 4:
            raise KeyboardInterrupt  # killed mid-run, after two batches
        decoded.extend(r["key"] for r in rows)
        return real(model, processor, rows, *args, **kwargs)

    monkeypatch.setattr(script, "decode_batch", dying)
    with pytest.raises(KeyboardInterrupt):
        run_evaluate(script_args(tiny_folder, test_set, str(tmp_path / "resumed")))
    assert not os.path.exists(tmp_path / "resumed" / "results.json")
    first = list(decoded)
    decoded.clear()
    monkeypatch.setattr(script, "decode_batch", lambda m, p, rows, *a, **k: decoded.extend(r["key"] for r in rows)
                        or real(m, p, rows, *a, **k))
    resumed = run_evaluate(script_args(tiny_folder, test_set, str(tmp_path / "resumed")))
    assert len(first) == 4 and len(decoded) == 5 and not set(first) & set(decoded)  # nothing decoded twice
    assert resumed["directions"] == full["directions"] and resumed["averages"] == full["averages"]


def test_two_processes_give_the_same_results(tiny_folder, test_set, tmp_path):
    one = run_evaluate(script_args(tiny_folder, test_set, str(tmp_path / "one")))
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(31500 + os.getpid() % 1000), EVALUATE, *script_args(tiny_folder, test_set, str(tmp_path / "two"))]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {f for f in os.listdir(tmp_path / "two") if f.startswith("hypotheses.srt.rank")} == {
        "hypotheses.srt.rank0.jsonl", "hypotheses.srt.rank1.jsonl"}
    two = json.load(open(tmp_path / "two" / "results.json"))
    assert two["directions"] == json.loads(json.dumps(one["directions"]))
    assert two["averages"] == json.loads(json.dumps(one["averages"]))


def test_heatmap_axes_carry_language_codes(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trainer_scripts.evaluate import heatmap

    rows = [{"src_lang": s, "tgt_lang": t, "hypothesis": "a b c", "reference": "a b c d"}
            for s, t in (("eng", "deu"), ("deu", "eng"), ("fra", "eng"))]
    results = {"task": "srt", **score_directions(rows, "srt")}
    captured = {}
    monkeypatch.setattr(plt, "close", lambda fig: captured.setdefault("fig", fig))
    heatmap(results, str(tmp_path / "h.png"))
    ax = captured["fig"].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["deu", "eng"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["deu", "eng", "fra"]
    assert os.path.getsize(tmp_path / "h.png") > 1000


def test_compare_with_the_papers_table(tiny_folder, test_set, tmp_path, capsys):
    run_evaluate(script_args(tiny_folder, test_set, str(tmp_path / "cmp"), "--compare", PAPER))
    out = capsys.readouterr().out
    paper = json.load(open(PAPER))["bleu"]
    assert "| eng-deu |" in out and f"{paper['eng_deu']['llm_srt_3b_v2']:.1f}" in out
    assert "mean over 3 directions" in out


@pytest.mark.parametrize(
    "mutate, extra, status, message",
    [
        (None, ("--directions", "eng-klingon"), 2, "--directions 'eng-klingon': Unsupported language 'klingon'"),
        (None, ("--tgt_langs", "ara"), 2, "--tgt_langs: Unsupported language 'ara'"),
        (lambda rows: [], (), 1, "is empty"),
        (lambda rows: [{k: v for k, v in r.items() if k != "translation"} if i == 4 else r for i, r in enumerate(rows)],
         (), 1, "t.jsonl line 5 \\(key c1-zho\\), field 'translation': missing reference, needed for --task srt"),
        (None, ("--directions", "deu-eng"), 2, "No test row matches"),
    ],
)
def test_bad_requests(tiny_folder, test_set, tmp_path, capsys, mutate, extra, status, message):
    import re

    path = test_set
    if mutate is not None:
        rows = mutate([json.loads(line) for line in open(test_set, encoding="utf-8")])
        path = str(tmp_path / "t.jsonl")
        open(path, "w", encoding="utf-8").write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    with pytest.raises(SystemExit) as raised:
        run_evaluate(script_args(tiny_folder, path, str(tmp_path / "o"), "--audio_base_dir", os.path.dirname(test_set),
                                 *extra))
    err = capsys.readouterr().err.strip().splitlines()
    assert raised.value.code == status and len(err) == 1 and err[0].startswith("evaluate.py: error: ")
    assert re.search(message, err[0]), err[0]
