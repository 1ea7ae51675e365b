import json
import os
import subprocess
import sys

import pytest
import soundfile
import torch
from safetensors.torch import load_file

from llm_srt import LlmSrtForConditionalGeneration, LlmSrtProcessor
from llm_srt.testing import build_tiny_model_and_processor, free_port, save_tiny_model, synthetic_speech
from llm_srt.training.data import DataError, LlmSrtDataCollator, load_rows, select_stage_rows


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(ROOT, "trainer_scripts", "train.py")
SR = 16000


def make_corpus(folder, n=4, seconds=0.8):
    os.makedirs(folder, exist_ok=True)
    rows = []
    for i in range(n):
        soundfile.write(os.path.join(folder, f"u{i}.wav"), synthetic_speech(seconds, seed=i), SR)
        rows.append({"audio": f"u{i}.wav", "src_lang": "eng", "tgt_lang": "deu", "transcript": f"I see {i} cats",
                     "translation": f"Ich sehe {i} Katzen", "key": f"u{i}"})
    path = os.path.join(folder, "train.jsonl")
    with open(path, "w") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in rows)
    return path


def stage_args(stage, init, train_file, out, steps=2, extra=()):
    return ["--recipe", stage, "--init_from", init,
            "--train_file", train_file, "--output_dir", out, "--max_steps", str(steps), "--bf16", "false",
            "--per_device_train_batch_size", "2", "--eval_strategy", "no", "--save_strategy", "no",
            "--warmup_steps", "0", "--learning_rate", "1e-2", "--dataloader_num_workers", "0",
            "--logging_steps", "1", "--seed", "0", *extra]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(str(tmp_path_factory.mktemp("corpus")))


def weights(folder):
    return load_file(os.path.join(folder, "model.safetensors"))


def test_curriculum_stages_change_only_the_intended_parameters(corpus, tmp_path):
    from llm_srt.training.train import main

    init = save_tiny_model(tmp_path / "init")
    previous = init
    for stage, extra in (("asr", ()), ("smt", ()), ("srt", ("--use_lora", "true"))):
        out = str(tmp_path / stage)
        main(stage_args(stage, previous, corpus, out, extra=extra))
        before, after = weights(previous), weights(out)
        # LoRA renames the wrapped layers' weights `q_proj.weight` -> `q_proj.base_layer.weight`
        same_as = {k: k if k in before else k.replace(".base_layer", "") for k in after}
        new = {k for k, old in same_as.items() if old not in before}
        changed = {k for k, old in same_as.items() if old in before and not torch.equal(before[old], after[k])}
        assert changed and all(k.startswith("projector.") for k in changed), stage
        if stage == "srt":  # LoRA added in the SRT stage only, and trained
            assert new and all(".lora_" in k for k in new)
            assert any(not torch.equal(after[k], torch.zeros_like(after[k])) for k in new if "lora_B" in k)
        else:
            assert not new
        # the output of a stage is a loadable model folder, the input of the next
        assert LlmSrtForConditionalGeneration.from_pretrained(out).config.lora_config == (
            None if stage != "srt" else {"r": 8, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": ["q_proj", "v_proj"]})
        LlmSrtProcessor.from_pretrained(out)
        previous = out


def test_overfitting_a_few_utterances(tokenizer):
    model, processor = build_tiny_model_and_processor(tokenizer=tokenizer, projector_dropout=0.0, seed=1)
    model.set_trainable(projector=True, language_model=True)  # a random LLM must learn too, to overfit
    clips = [synthetic_speech(0.7, seed=s) for s in (11, 12)]
    transcripts, translations = ["I see three cats", "Ich sehe"], ["Ich sehe drei Katzen", "I see"]
    batch = processor(clips, task="srt", src_lang=["eng", "deu"], tgt_lang=["deu", "eng"], transcript=transcripts,
                      translation=translations, sampling_rate=SR)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for _ in range(150):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
    model.eval()
    prompts = processor(clips, task="srt", src_lang=["eng", "deu"], tgt_lang=["deu", "eng"], sampling_rate=SR)
    out = model.generate(**prompts, num_beams=1, max_new_tokens=40)
    results = processor.post_process(out, "srt", ["eng", "deu"], ["deu", "eng"])
    assert [r["transcript"] for r in results] == transcripts
    assert [r["translation"] for r in results] == translations


KILLER = """
import os, sys, transformers
class Kill(transformers.TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == {step}:
            os._exit(3)  # abrupt death: no cleanup, no final save
original_init = transformers.Seq2SeqTrainer.__init__
def init(self, *a, **k):
    original_init(self, *a, **k)
    self.add_callback(Kill())
transformers.Seq2SeqTrainer.__init__ = init
sys.path.insert(0, {root!r})
from trainer_scripts.train import main
main(sys.argv[1:])
"""


def run_train(args, timeout=600, torchrun=None, kill_at_step=None):
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    if kill_at_step is not None:
        cmd = [sys.executable, "-c", KILLER.format(step=kill_at_step, root=ROOT), *args]
    elif torchrun is None:
        cmd = [sys.executable, TRAIN, *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(torchrun), "--master_port",
               str(free_port()), TRAIN, *args]  # a port known free: a taken one left torchrun's rendezvous hanging (CI)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def test_ddp_two_processes_equal_one_process(corpus, tmp_path):
    init = save_tiny_model(tmp_path / "init", projector_dropout=0.0)
    # 4 rows = one global batch of 4: every step sees the whole corpus, whatever the sampler's order.
    single = run_train(stage_args("asr", init, corpus, str(tmp_path / "one"), steps=3,
                                  extra=("--per_device_train_batch_size", "4")))
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = run_train(stage_args("asr", init, corpus, str(tmp_path / "two"), steps=3,
                               extra=("--per_device_train_batch_size", "2", "--ddp_backend", "gloo")), torchrun=2)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one, two = weights(str(tmp_path / "one")), weights(str(tmp_path / "two"))
    assert one.keys() == two.keys()
    moved = 0
    for key in one:
        torch.testing.assert_close(two[key], one[key], atol=1e-5, rtol=0)
        moved += int(not torch.equal(one[key], weights(init)[key]))
    assert moved > 0


def test_killed_run_resumes_to_the_same_loss(corpus, tmp_path):
    init = save_tiny_model(tmp_path / "init")
    common = ("--save_strategy", "steps", "--save_steps", "3", "--per_device_train_batch_size", "2")
    full = run_train(stage_args("asr", init, corpus, str(tmp_path / "full"), steps=6, extra=common))
    assert full.returncode == 0, full.stderr[-3000:]
    # Kill after step 4 (the checkpoint of step 3 is on disk), then run the same command again: it resumes.
    killed = run_train(stage_args("asr", init, corpus, str(tmp_path / "resumed"), steps=6, extra=common),
                       kill_at_step=4)
    assert killed.returncode == 3 and os.path.isdir(tmp_path / "resumed" / "checkpoint-3")
    assert not os.path.exists(tmp_path / "resumed" / "model.safetensors")
    resumed = run_train(stage_args("asr", init, corpus, str(tmp_path / "resumed"), steps=6, extra=common))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from" in resumed.stderr
    losses = [json.load(open(tmp_path / name / "checkpoint-6" / "trainer_state.json"))["log_history"]
              for name in ("full", "resumed")]
    final = [[h["loss"] for h in log if "loss" in h][-1] for log in losses]
    assert final[0] == pytest.approx(final[1], abs=1e-6)
    a, b = weights(str(tmp_path / "full")), weights(str(tmp_path / "resumed"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0)


def test_bad_data_rows_fail_clearly(tmp_path):
    path = make_corpus(str(tmp_path), n=3)
    rows = [json.loads(line) for line in open(path)]

    def check(mutate, message, stage="srt"):
        broken = [dict(r) for r in rows]
        mutate(broken)
        bad = tmp_path / "bad.jsonl"
        bad.write_text("".join(json.dumps(r) + "\n" for r in broken))
        with pytest.raises(DataError, match=message):
            select_stage_rows(load_rows(str(bad)), stage, base_dir=str(tmp_path), source=str(bad))

    where = ".*bad.jsonl line"
    check(lambda r: r[1].update(audio="gone.wav"), f"{where} 2 \\(key u1\\), field 'audio': audio file not found: .*gone.wav")
    check(lambda r: r[2].update(tgt_lang="klingon"), f"{where} 3 \\(key u2\\), field 'tgt_lang': Unsupported language 'klingon'")
    check(lambda r: r[0].update(transcript="  "), f"{where} 1 \\(key u0\\), field 'transcript': empty")
    check(lambda r: r[0].update(src_lang="xx"), "field 'src_lang': Unsupported language 'xx'", stage="asr")
    with pytest.raises(FileNotFoundError, match="nothing.jsonl"):
        load_rows(str(tmp_path / "nothing.jsonl"))


def test_asr_only_rows_are_counted_drops_in_translation_stages(tmp_path, caplog):
    path = make_corpus(str(tmp_path), n=3)
    rows = [json.loads(line) for line in open(path)]
    rows[0].update(tgt_lang=None, translation=None)
    (tmp_path / "mixed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load_rows(str(tmp_path / "mixed.jsonl"))
    assert len(select_stage_rows(data, "asr", base_dir=str(tmp_path))) == 3
    import logging

    with caplog.at_level(logging.WARNING):
        assert len(select_stage_rows(data, "srt", base_dir=str(tmp_path))) == 2
    assert "dropped 1 of 3 rows" in caplog.text


def test_collator_resamples_files_and_names_bad_audio(tiny, tmp_path):
    import librosa

    _, processor = tiny
    audio = synthetic_speech(0.8, seed=5)
    soundfile.write(tmp_path / "8k.wav", librosa.resample(audio, orig_sr=SR, target_sr=8000), 8000, subtype="FLOAT")
    collator = LlmSrtDataCollator(processor, "asr", base_dir=str(tmp_path))
    batch = collator([{"audio": "8k.wav", "src_lang": "eng", "transcript": "hi"}])
    expected = processor.extract_features([librosa.resample(
        librosa.resample(audio, orig_sr=SR, target_sr=8000), orig_sr=8000, target_sr=SR)], SR)
    torch.testing.assert_close(batch["input_features"], expected, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="sampling_rate is required"):
        collator([{"audio": {"array": audio, "sampling_rate": None}, "src_lang": "eng", "transcript": "hi"}])
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        collator([{"audio": "missing.wav", "src_lang": "eng", "transcript": "hi"}])


def test_eval_manifest_in_another_folder_finds_its_audio(tiny, tmp_path):
    """Train and eval manifests in different folders, with relative audio paths: one collator (the Trainer's)
    resolves each row against its own manifest's folder."""
    from datasets import Dataset

    from llm_srt.training.data import tag_base_dir

    _, processor = tiny
    (tmp_path / "train").mkdir()
    (tmp_path / "eval").mkdir()
    soundfile.write(tmp_path / "train" / "a.wav", synthetic_speech(0.5, seed=1), SR, subtype="FLOAT")
    soundfile.write(tmp_path / "eval" / "b.wav", synthetic_speech(0.5, seed=2), SR, subtype="FLOAT")
    train = tag_base_dir(Dataset.from_list([{"audio": "a.wav", "src_lang": "eng", "transcript": "a"}]),
                         str(tmp_path / "train"))
    evaluation = tag_base_dir(Dataset.from_list([{"audio": "b.wav", "src_lang": "eng", "transcript": "b"}]),
                              str(tmp_path / "eval"))
    collator = LlmSrtDataCollator(processor, "asr", base_dir=str(tmp_path / "train"))
    expected = processor.extract_features([synthetic_speech(0.5, seed=2)], SR)
    torch.testing.assert_close(collator([evaluation[0]])["input_features"], expected, atol=1e-4, rtol=0)
    assert collator([train[0]])["input_features"].shape == expected.shape


def test_the_stage_progress_bar_says_which_stage_runs(corpus, tmp_path, capsys):
    """The Trainer's bar is unlabelled; a curriculum shows three of them in a row, so each says its stage."""
    from llm_srt.training.train import main

    init = save_tiny_model(tmp_path / "init")
    main(stage_args("smt", init, corpus, str(tmp_path / "smt"), steps=1))
    bars = [line.split("\r")[-1] for line in capsys.readouterr().err.replace("\r", "\n\r").split("\n")]
    assert any(line.startswith("SMT stage training:") and "1/1" in line for line in bars), bars
