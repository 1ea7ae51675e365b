import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from llm_srt.evaluation.metrics import (
    bleu_tokenizer, corpus_bleu, error_rate, evaluate_module_path, score_directions,
)
from llm_srt.decoding_llm_srt import TransformersEngine
from llm_srt.generation_llm_srt import generate_many_targets
from llm_srt.testing import free_port, synthetic_speech


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVALUATE = os.path.join(ROOT, "trainer_scripts", "evaluate_model.py")
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


def test_bleu_takes_several_references_per_row_as_sacrebleu_does(tmp_path):
    """References as a list of lists, one list per row (the Hub's sacrebleu metric's form), also with a varying
    number per row: the same score as sacreBLEU's command line with one reference file per reference."""
    hyps = ["The cat sat on the mat.", "I see three red dogs today", "hello world"]
    refs = [["The cat sat on a mat.", "A cat sat on the mat."], ["I see three red dogs.", "Today I see three red dogs"],
            ["Hello, world!", "hello world"]]
    for name, column in (("hyp", hyps), ("ref1", [r[0] for r in refs]), ("ref2", [r[1] for r in refs])):
        (tmp_path / f"{name}.txt").write_text("\n".join(column) + "\n", encoding="utf-8")
    cli = subprocess.run([sys.executable, "-m", "sacrebleu", str(tmp_path / "ref1.txt"), str(tmp_path / "ref2.txt"),
                          "-i", str(tmp_path / "hyp.txt"), "-b", "-w", "6"], capture_output=True, text=True, check=True)
    ours = corpus_bleu(hyps, refs, "eng")
    assert ours["score"] == pytest.approx(float(cli.stdout.strip()), abs=1e-6)
    assert ours["score"] > corpus_bleu(hyps, [r[0] for r in refs], "eng")["score"]
    assert "nrefs:2" in ours["signature"] and ours["count"] == 3
    # a varying number of references per row; a row with none is an error naming it
    varying = corpus_bleu(hyps, [refs[0], [refs[1][0]], refs[2]], "eng")
    assert "nrefs:var" in varying["signature"]
    with pytest.raises(ValueError, match="row 1 has no reference"):
        corpus_bleu(hyps, [refs[0], [], refs[2]], "eng")
    import evaluate

    bleu = evaluate.load(evaluate_module_path("bleu"))
    assert bleu.compute(predictions=hyps, references=refs, tgt_lang="eng")["score"] == pytest.approx(ours["score"])
    assert bleu.compute(predictions=hyps, references=[r[0] for r in refs], tgt_lang="eng")["score"] == pytest.approx(
        corpus_bleu(hyps, [r[0] for r in refs], "eng")["score"])


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
    from llm_srt.evaluation.run import main

    return main(args)


def script_args(model, test_file, out, *extra):
    return ["--model", model, "--test_file", test_file, "--output_dir", out, "--task", "srt", "--batch_size", "2",
            "--num_beams", "1", "--max_new_tokens", "6", *extra]


@pytest.mark.integration
def test_run_writes_everything_and_resumes_without_redoing_work(tiny_folder, test_set, tmp_path, monkeypatch):
    import llm_srt.evaluation.run as script

    full = run_evaluate(script_args(tiny_folder, test_set, str(tmp_path / "full")))
    for name in ("results.json", "results.md", "bleu_heatmap.png", "hypotheses.srt.jsonl"):
        assert os.path.isfile(tmp_path / "full" / name), name
    assert set(full["directions"]) == {"eng-deu", "eng-tha", "eng-zho"}
    assert all(d["count"] == 3 and "signature" in d["bleu"] and "wer" in d for d in full["directions"].values())
    assert full["averages"]["bleu_by_source"].keys() == {"eng"}
    assert open(tmp_path / "full" / "bleu_heatmap.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    quality, speed = full["quality"], full["speed"]  # what BLEU hides, beside it
    assert set(quality["directions"]) == set(full["directions"]) and quality["overall"]["count"] == 9
    assert all("chrf" in q and 0 <= q["loop_rate"] <= 1 for q in quality["directions"].values())
    assert speed["utterances"] == 9 and speed["audio_seconds"] > 0 and speed["device"] == "cpu"
    assert speed["rtfx"] == pytest.approx(speed["audio_seconds"] / speed["decode_seconds"])
    report = open(tmp_path / "full" / "results.md").read()
    assert "chrF++" in report and "off-target" in report and "RTFx" in report
    assert "COMET: not computed" in report and full["comet"] == {"skipped": report.split("\n")[-2]}

    decoded = []
    real = script.decode_batch

    def dying(engine, rows, *args, **kwargs):
        if len(decoded) >= 4:
            raise KeyboardInterrupt  # killed mid-run, after two batches
        decoded.extend(r["key"] for r in rows)
        return real(engine, rows, *args, **kwargs)

    monkeypatch.setattr(script, "decode_batch", dying)
    with pytest.raises(KeyboardInterrupt):
        run_evaluate(script_args(tiny_folder, test_set, str(tmp_path / "resumed")))
    assert not os.path.exists(tmp_path / "resumed" / "results.json")
    first = list(decoded)
    decoded.clear()
    monkeypatch.setattr(script, "decode_batch", lambda engine, rows, *a, **k: decoded.extend(r["key"] for r in rows)
                        or real(engine, rows, *a, **k))
    resumed = run_evaluate(script_args(tiny_folder, test_set, str(tmp_path / "resumed")))
    assert len(first) == 4 and len(decoded) == 5 and not set(first) & set(decoded)  # nothing decoded twice
    assert resumed["directions"] == full["directions"] and resumed["averages"] == full["averages"]


@pytest.mark.integration
def test_two_processes_give_the_same_results(tiny_folder, test_set, tmp_path):
    one = run_evaluate(script_args(tiny_folder, test_set, str(tmp_path / "one")))
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(free_port()), EVALUATE, *script_args(tiny_folder, test_set, str(tmp_path / "two"))]
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

    from llm_srt.evaluation.report import heatmap

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


def _contrast(rgb_a, rgb_b) -> float:
    """WCAG contrast ratio of two sRGB colours (1 to 21)."""
    def luminance(rgb):
        channels = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb[:3]]
        return 0.2126 * channels[0] + 0.7152 * channels[1] + 0.0722 * channels[2]
    high, low = sorted((luminance(rgb_a), luminance(rgb_b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_heatmap_numbers_contrast_with_their_cells(tmp_path, monkeypatch):
    """Each cell's number is written in the colour (white or black) that reads best on that cell: black on the
    yellow of high scores, white on the purple of low ones (white on yellow was unreadable)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgb

    from llm_srt.evaluation.report import heatmap

    hyps = {("eng", "deu"): "a b c d", ("deu", "eng"): "x y z w", ("fra", "eng"): "a b c z", ("eng", "fra"): "a b c d"}
    rows = [{"src_lang": s, "tgt_lang": t, "hypothesis": h, "reference": "a b c d"} for (s, t), h in hyps.items()]
    results = {"task": "srt", **score_directions(rows, "srt")}
    captured = {}
    monkeypatch.setattr(plt, "close", lambda fig: captured.setdefault("fig", fig))
    heatmap(results, str(tmp_path / "h.png"))
    ax = captured["fig"].axes[0]
    image = ax.images[0]
    colours = {}
    for text in ax.texts:
        value = float(text.get_text())
        cell = image.cmap(image.norm(value))
        colours[value] = to_rgb(text.get_color())
        assert _contrast(colours[value], cell) >= 4.5, (value, text.get_color(), cell)
    assert colours[100.0] == (0.0, 0.0, 0.0) and colours[0.0] == (1.0, 1.0, 1.0)


@pytest.mark.integration
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
    assert raised.value.code == status and len(err) == 1 and err[0].startswith("evaluate_model.py: error: ")
    assert re.search(message, err[0]), err[0]


# ------------------------------------------------------------------------------------------ shared transcript
TARGETS = ["deu", "fra", "jpn"]


class WritesTagPair(LogitsProcessor):
    """Stands in for a trained model: every answer writes `pair` after `after` free tokens (a random model never
    writes it, and the shared decode would fall back to independent decoding). Stateless, so the script's calls and
    the hand calls decode alike; it records each `generate` call's batch size."""

    def __init__(self, pair_ids: list[int], after: int = 2):
        self.pair_ids, self.after, self.batch_sizes = pair_ids, after, []

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1]
        if step == 0:
            self.batch_sizes.append(scores.shape[0])
        if self.after <= step < self.after + len(self.pair_ids):
            forced = torch.full_like(scores, float("-inf"))
            forced[:, self.pair_ids[step - self.after]] = 0.0
            return forced
        return scores


@pytest.fixture
def clip_rows(tmp_path):
    """Rows of three clips, interleaved: clips a and b into every target, clip c into one."""
    for i, name in enumerate("abc"):
        soundfile.write(tmp_path / f"{name}.wav", synthetic_speech(0.6 + 0.2 * i, seed=40 + i), 16000)
    order = [("a", "deu"), ("b", "fra"), ("a", "fra"), ("c", "deu"), ("b", "deu"), ("a", "jpn"), ("b", "jpn")]
    return [{"audio": f"{clip}.wav", "src_lang": "eng", "tgt_lang": tgt, "transcript": f"clip {clip}",
             "translation": f"{clip} {tgt}", "key": f"{clip}-{tgt}"} for clip, tgt in order]


def by_hand(model, processor, rows, base_dir, generate_kwargs):
    """Each clip's rows decoded by a hand call of `generate_many_targets` (its targets sorted; one target: nothing
    to share), built into results as independent decoding builds them (the original scorer's split rule)."""
    from llm_srt.audio_llm_srt import load_audio
    from llm_srt.evaluation.metrics import split_srt_response

    expected = {}
    for clip in dict.fromkeys(r["audio"] for r in rows):
        targets = sorted(r["tgt_lang"] for r in rows if r["audio"] == clip)
        features = processor.extract_features([load_audio(os.path.join(base_dir, clip))], 16000)
        ids = generate_many_targets(model, processor, "eng", targets, input_features=features,
                                          shared_transcript=len(targets) > 1, **generate_kwargs)
        outs = dict(zip(targets, processor.post_process(ids, "srt", "eng", targets)))
        for row in (r for r in rows if r["audio"] == clip):
            out = outs[row["tgt_lang"]]
            pair = processor.tag("eng") + processor.tag(row["tgt_lang"])
            transcript, hypothesis = split_srt_response(out["raw"], pair)
            expected[row["key"]] = {"key": row["key"], "src_lang": "eng", "tgt_lang": row["tgt_lang"],
                                    "raw": out["raw"], "hypothesis": hypothesis, "reference": row["translation"],
                                    "transcript": transcript, "transcript_reference": row["transcript"]}
    return [expected[r["key"]] for r in rows]


@pytest.mark.integration
def test_shared_transcript_rows_equal_generate_many_targets_per_clip(tiny, clip_rows, tmp_path):
    from llm_srt.evaluation.decoding import decode_rows

    model, processor = tiny
    pair = processor.tokenizer.encode(processor.tag("eng") + processor.tag("deu"))
    writes = WritesTagPair(pair)
    generate = {"num_beams": 1, "do_sample": False, "no_repeat_ngram_size": 0, "max_new_tokens": len(pair) + 4,
                "logits_processor": LogitsProcessorList([writes])}
    shared = decode_rows(TransformersEngine(model, processor), clip_rows, "srt", batch_size=16, base_dir=str(tmp_path),
                         generate_kwargs=generate, shared_transcript=True)
    # Clips a and b (same targets) in one call: their transcripts (2 rows), then 6 translations in one batch; clip
    # c (one target) decoded on its own.
    assert writes.batch_sizes == [2, 6, 1]
    writes.batch_sizes.clear()
    expected = by_hand(model, processor, clip_rows, str(tmp_path), generate)
    assert writes.batch_sizes == [1, 3, 1, 3, 1]  # the hand calls shared the transcript too
    assert all(isinstance(r.pop("complete"), bool) for r in shared)  # whether EOS ended it (the loop rate's)
    assert shared == expected  # row for row, in the rows' order, the same fields
    # Every row is the clip's transcript, heard once, then its own tag pair (fed as the forced prefix: the model
    # itself only writes eng-deu's), then the translation.
    for clip in "ab":
        heard = {r["raw"].partition(processor.tag("eng") + processor.tag(r["tgt_lang"]))[:2] for r in shared
                 if r["key"].startswith(clip)}
        assert len({transcript for transcript, _ in heard}) == 1 and all(pair for _, pair in heard), heard


def test_batches_keep_clips_whole_and_shards_split_by_clip(clip_rows, tmp_path):
    from llm_srt.evaluation.decoding import make_batches
    from llm_srt.evaluation.run import shard

    assert make_batches(clip_rows, 2) == [[0, 1], [2, 3], [4, 5], [6]]  # default: consecutive rows
    # a: rows 0 2 5, b: 1 4 6, c: 3. Four rows fit: a alone (b would make six), b and c together.
    assert make_batches(clip_rows, 4, shared_transcript=True, base_dir=str(tmp_path)) == [[0, 2, 5], [1, 4, 6, 3]]
    assert make_batches(clip_rows, 2, shared_transcript=True, base_dir=str(tmp_path)) == [[0, 2, 5], [1, 4, 6], [3]]
    ranks = [shard(clip_rows, rank, 2, True, str(tmp_path)) for rank in range(2)]
    assert [[r["key"] for r in rows] for rows in ranks] == [["a-deu", "a-fra", "c-deu", "a-jpn"],
                                                            ["b-fra", "b-deu", "b-jpn"]]
    assert [r["key"] for r in shard(clip_rows, 1, 2, False, None)] == ["b-fra", "c-deu", "a-jpn"]


@pytest.mark.integration
def test_script_shared_transcript_option(tiny, tiny_folder, test_set, tmp_path, monkeypatch, capsys):
    import llm_srt.evaluation.run as script

    calls = []
    real = script.decode_batch

    def spy(engine, rows, *args, **kwargs):
        calls.append(([r["key"] for r in rows], kwargs.get("shared_transcript")))
        return real(engine, rows, *args, **kwargs)

    monkeypatch.setattr(script, "decode_batch", spy)
    out = tmp_path / "out"
    args = script_args(tiny_folder, test_set, str(out), "--max_rows", "6")  # two clips, three targets each
    default = run_evaluate(args)
    assert default["fingerprint"]["shared_transcript"] is False
    assert calls == [(["c0-deu", "c0-zho"], False), (["c0-tha", "c1-deu"], False), (["c1-zho", "c1-tha"], False)]

    # A cache from before the option (no shared_transcript in its fingerprint) counts as independent decoding.
    cache = out / "hypotheses.srt.rank0.jsonl"
    lines = cache.read_text(encoding="utf-8").splitlines(keepends=True)
    header = json.loads(lines[0])
    del header["fingerprint"]["shared_transcript"]
    cache.write_text(json.dumps(header) + "\n" + "".join(lines[1:]), encoding="utf-8")
    calls.clear()
    assert run_evaluate([*args, "--overwrite", "true"])["directions"] == default["directions"]
    assert calls == []  # reused, nothing decoded again
    capsys.readouterr()

    # The independent cache is refused under --shared_transcript, never mixed in.
    with pytest.raises(SystemExit) as raised:
        run_evaluate([*args, "--shared_transcript", "true"])
    err = capsys.readouterr().err.strip().splitlines()
    assert raised.value.code == 2 and len(err) == 1 and "results.json exists already" in err[0], err
    os.rename(out / "results.json", tmp_path / "results.json")  # unfinished: the stale cache itself is named
    with pytest.raises(SystemExit) as raised:
        run_evaluate([*args, "--shared_transcript", "true"])
    err = capsys.readouterr().err.strip()
    assert raised.value.code == 2 and "hypotheses of another evaluation" in err, err
    assert "shared_transcript False -> True" in err, err

    shared = run_evaluate([*args, "--shared_transcript", "true", "--overwrite", "true"])
    assert "starting a fresh cache" in capsys.readouterr().err
    assert shared["fingerprint"]["shared_transcript"] is True and shared["fingerprint"] != default["fingerprint"]
    assert calls == [([f"c{i}-deu", f"c{i}-zho", f"c{i}-tha"], True) for i in range(2)]  # whole clips, in order
    rows = [json.loads(line) for line in open(test_set, encoding="utf-8")][:6]
    model, processor = tiny
    expected = by_hand(model, processor, rows, os.path.dirname(test_set), {"num_beams": 1, "max_new_tokens": 6})
    hypotheses = [json.loads(line) for line in open(out / "hypotheses.srt.jsonl", encoding="utf-8")]
    extra = {"complete", "decode_seconds", "audio_seconds", "device", "engine"}  # for the loop rate and the speed
    assert all(set(h) == set(e) | extra for h, e in zip(hypotheses, expected))
    assert [{k: h[k] for k in e} for h, e in zip(hypotheses, expected)] == expected  # row for row, in order
    assert "--shared_transcript" in open(out / "results.md", encoding="utf-8").read()


def test_shared_transcript_is_for_srt_only(tiny_folder, test_set, tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:  # a flag check: the parser's usage, then its one error line
        run_evaluate(script_args(tiny_folder, test_set, str(tmp_path / "o"), "--task", "asr",
                                 "--shared_transcript", "true"))
    err = capsys.readouterr().err.strip().splitlines()
    assert raised.value.code == 2
    assert err[-1] == "evaluate_model.py: error: --shared_transcript applies to --task srt only, not asr."
    assert not os.path.exists(tmp_path / "o")


def test_comet_scores_per_direction_with_a_local_checkpoint(tmp_path, monkeypatch):
    """`comet_directions` with a stand-in for Unbabel's package: averages per direction and overall, nothing
    downloaded (the checkpoint is a local file)."""
    import sys
    import types

    from llm_srt.evaluation.quality import comet_directions

    seen = {}

    class Model:
        def predict(self, data, batch_size, gpus, progress_bar):
            seen["data"] = data
            return types.SimpleNamespace(scores=[0.5, 0.7, 0.9])

    fake = types.ModuleType("comet")
    fake.load_from_checkpoint = lambda path: seen.update(path=path) or Model()
    monkeypatch.setitem(sys.modules, "comet", fake)
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(b"x")
    rows = [{"src_lang": "eng", "tgt_lang": "deu", "hypothesis": "a", "reference": "b", "transcript_reference": "s"},
            {"src_lang": "eng", "tgt_lang": "deu", "hypothesis": None, "reference": "d"},
            {"src_lang": "eng", "tgt_lang": "fra", "hypothesis": "e", "reference": "f"}]
    result = comet_directions(rows, str(checkpoint))
    assert seen["path"] == str(checkpoint) and seen["data"][0] == {"src": "s", "mt": "a", "ref": "b"}
    assert seen["data"][1]["mt"] == ""  # a missing hypothesis scores as empty
    assert result["directions"] == {"eng-deu": pytest.approx(0.6), "eng-fra": pytest.approx(0.9)}
    assert result["overall"] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="no such file"):
        comet_directions(rows, str(tmp_path / "missing.ckpt"))


def test_a_missing_comet_checkpoint_is_refused_before_decoding(tiny_folder, test_set, tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        run_evaluate(script_args(tiny_folder, test_set, str(tmp_path / "o"), "--comet_model", "/nowhere/model.ckpt"))
    assert raised.value.code == 2
    assert "--comet_model /nowhere/model.ckpt: no such file" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o")


def test_a_changed_clip_is_decoded_again(tmp_path):
    """The cache reuses a row's hypothesis only for the same input: arrays are told apart by their whole content
    (numpy's repr elides arrays over 1,000 samples, so a digest of it took a silent clip and a clip with speech in
    its middle for the same input), and so are precomputed features and file bytes; a file by path, size and time."""
    from llm_srt.evaluation.cache import row_input

    silent = np.zeros(16000, np.float32)
    speech = silent.copy()
    speech[8000:8400] = synthetic_speech(0.025)
    assert repr(silent) == repr(speech)  # what the old digest read

    def row(**fields):
        return {"key": "r1", "src_lang": "eng", "tgt_lang": "deu", "transcript": "a", **fields}

    def array_row(samples):
        return row(audio={"array": samples, "sampling_rate": 16000})

    assert row_input(array_row(silent), None, "srt") != row_input(array_row(speech), None, "srt")
    assert row_input(array_row(silent), None, "srt") == row_input(array_row(silent.copy()), None, "srt")
    features = np.zeros((80, 200), np.float32)
    changed = features.copy()
    changed[40, 100] = 1.0
    assert row_input(row(input_features=features), None, "srt") != row_input(row(input_features=changed), None, "srt")
    assert row_input(row(audio={"bytes": b"RIFF1"}), None, "srt") != row_input(row(audio={"bytes": b"RIFF2"}), None,
                                                                              "srt")
    clip = tmp_path / "a.wav"
    soundfile.write(clip, speech, 16000)
    before = row_input(row(audio="a.wav"), str(tmp_path), "srt")
    soundfile.write(clip, np.concatenate([speech, speech]), 16000)
    assert row_input(row(audio="a.wav"), str(tmp_path), "srt") != before
    # the languages and SMT's transcript are part of the input too
    assert row_input(array_row(silent), None, "srt") != row_input({**array_row(silent), "tgt_lang": "fra"}, None, "srt")
    assert row_input(array_row(silent), None, "smt") != row_input({**array_row(silent), "transcript": "b"}, None, "smt")


def test_a_row_into_its_own_language_is_decoded_as_its_transcript(tiny, clip_rows, tmp_path, monkeypatch):
    """Evaluation applies the rule every caller shares (`decoding_llm_srt.as_decoded`): an SRT row whose target is
    its source is decoded as ASR (the models never learned SRT into the source's own language: no `<|eng|><|eng|>`
    prompt is decoded), alone or among a clip's shared-transcript rows; the other rows are decoded as before."""
    from llm_srt.evaluation.decoding import decode_rows

    model, processor = tiny
    engine = TransformersEngine(model, processor)
    generate = {"num_beams": 1, "max_new_tokens": 6}
    asr = decode_rows(engine, clip_rows[:1], "asr", base_dir=str(tmp_path), generate_kwargs=generate)[0]
    own = [dict(clip_rows[0], tgt_lang="eng", key="a-eng")]
    prompts, generate_method = [], model.generate

    def recording(*args, **kwargs):
        if kwargs.get("input_ids") is not None:
            prompts.extend(processor.tokenizer.batch_decode(kwargs["input_ids"]))
        return generate_method(*args, **kwargs)

    for shared in (False, True):
        expected = decode_rows(engine, clip_rows, "srt", base_dir=str(tmp_path), generate_kwargs=generate,
                               shared_transcript=shared)
        monkeypatch.setattr(model, "generate", recording)
        results = decode_rows(engine, own + clip_rows, "srt", base_dir=str(tmp_path), generate_kwargs=generate,
                              shared_transcript=shared)
        monkeypatch.undo()
        assert results[0]["hypothesis"] == results[0]["transcript"] == asr["hypothesis"] != ""
        assert results[1:] == expected
        assert prompts and not [p for p in prompts if processor.tag("eng") * 2 in p], prompts
        assert any(p.endswith(processor.tag("eng")) for p in prompts)  # the ASR prompt
        prompts.clear()
