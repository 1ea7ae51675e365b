"""Training beyond one process: FSDP-sharded training of LLM-SRT that is killed and resumes, and the shipped configs.

`trainer_scripts/train.py --fsdp --fsdp_config trainer_scripts/configs/fsdp.json` under torchrun runs the Trainer's
own FSDP2 path on 2 CPU processes (gloo): Accelerate (1.15) enables FSDP only on accelerator process groups and would
fall back to DDP on CPU, so `LlmSrtTrainer` routes it to FSDP with the Trainer's plugin
(`llm_srt.training.enable_fsdp_on_cpu`); sharded checkpoints (torch.distributed.checkpoint) and resuming are the
Trainer's. DeepSpeed (`ds_zero2.json`) needs a GPU and is not run here.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml

from test_training import TRAIN, make_corpus, stage_args, weights


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(ROOT, "trainer_scripts", "configs")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fsdp_on_cpu_available() -> str | None:
    """None when this torch has FSDP2 and gloo, else the reason."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        return "this torch build has no torch.distributed with gloo"
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        return f"torch {torch.__version__} has no FSDP2 (torch.distributed.fsdp.fully_shard)"
    return None


KILLED_AT_STEP = textwrap.dedent('''
    """train.py, SIGKILLed with its torchrun agent at the end of step `argv[1]`: no cleanup, no final save."""
    import os, signal, sys
    import transformers
    from llm_srt.training import train

    step = int(sys.argv.pop(1))
    AGENT = os.getppid()  # the torchrun agent, which would otherwise stop the other worker cleanly

    class Kill(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                if os.getppid() == AGENT:  # not yet killed by the other worker
                    os.kill(AGENT, signal.SIGKILL)
                os.kill(os.getpid(), signal.SIGKILL)

    setup = train.setup
    def killing_setup(*args):
        trainer, checkpoint, eval_rows = setup(*args)
        trainer.add_callback(Kill())
        return trainer, checkpoint, eval_rows
    train.setup = killing_setup
    train.main(sys.argv[1:])
''')


def torchrun_train(args: list[str], script: str = TRAIN, before: tuple = ()) -> subprocess.CompletedProcess:
    """`train.py` (or `script`) under torchrun, 2 CPU processes."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           script, *before, *args]
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, start_new_session=True)


def assert_sharded_on_both_ranks(log: str, start: int) -> None:
    """What train.py logs on each rank once the Trainer has prepared the model: every parameter a DTensor (FSDP2
    shards), and the step training starts from."""
    found = re.findall(r"distributed: FSDP2 over 2 processes \(gloo\); rank (\d): (\d+) of (\d+) parameters sharded "
                       r"\(DTensor\); training from step (\d+) of 6", log)
    assert sorted(int(rank) for rank, *_ in found) == [0, 1], log[-3000:]
    for _, sharded, total, first in found:
        assert int(sharded) == int(total) > 0 and int(first) == start


@pytest.mark.skipif(fsdp_on_cpu_available() is not None, reason=str(fsdp_on_cpu_available()))
def test_trainer_fsdp_run_is_sharded_killed_and_resumed(tmp_path):
    """train.py --fsdp under torchrun, 2 CPU processes (gloo): every parameter is a DTensor on both ranks and the
    checkpoints are sharded (one file per rank). SIGKILLed after step 3 (checkpoint-2 on disk), the same command
    resumes at step 2 and ends with the weights of an uninterrupted one-process run over the same batches."""
    from llm_srt import LlmSrtForConditionalGeneration
    from llm_srt.testing import build_tiny_tokenizer, save_tiny_model
    from llm_srt.training.train import main

    corpus = make_corpus(str(tmp_path / "corpus"))
    init = save_tiny_model(tmp_path / "init", tokenizer=build_tiny_tokenizer(), projector_dropout=0.0)
    out = tmp_path / "fsdp"
    # 2 processes x 2 rows = the 4-row corpus every step, as one process with batch 4: same gradients.
    args = stage_args("asr", init, corpus, str(out), steps=6, extra=(
        "--fsdp", "--fsdp_config", os.path.join(CONFIGS, "fsdp.json"), "--save_strategy", "steps", "--save_steps", "2"))

    script = tmp_path / "killed_at_step.py"
    script.write_text(KILLED_AT_STEP)
    killed = torchrun_train(args, script=str(script), before=("3",))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert_sharded_on_both_ranks(killed.stderr, start=0)
    assert sorted(n for n in os.listdir(out) if n.startswith("checkpoint-")) == ["checkpoint-2"]
    assert not (out / "model.safetensors").exists()
    for part in ("pytorch_model_fsdp_0", "optimizer_0"):  # torch.distributed.checkpoint: one shard file per rank
        assert sorted(n for n in os.listdir(out / "checkpoint-2" / part) if n.endswith(".distcp")) == [
            "__0_0.distcp", "__1_0.distcp"]

    resumed = torchrun_train(args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming from {out / 'checkpoint-2'}" in resumed.stderr
    assert_sharded_on_both_ranks(resumed.stderr, start=2)
    with open(out / "checkpoint-6" / "trainer_state.json") as handle:
        assert json.load(handle)["global_step"] == 6

    reference = tmp_path / "one"
    main(stage_args("asr", init, corpus, str(reference), steps=6, extra=("--per_device_train_batch_size", "4")))
    final, expected, initial = weights(str(out)), weights(str(reference)), weights(init)
    assert final.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(final[key], expected[key], atol=1e-5, rtol=0, msg=key)
    model = LlmSrtForConditionalGeneration.from_pretrained(out)  # a loadable folder, the original class's code
    moved = [k for k, v in model.state_dict().items() if k.startswith("projector.") and not torch.equal(v, initial[k])]
    assert moved
    with open(out / "config.json") as handle:
        assert json.load(handle)["auto_map"]["AutoModel"] == "modeling_llm_srt.LlmSrtForConditionalGeneration"


def test_bad_fsdp_usage_is_named_before_anything_loads(tmp_path, monkeypatch, capsys):
    """One process has nothing to shard over, and on CPU only FSDP2 runs (Accelerate's FSDP1 plugin needs a device):
    both are refused as usage errors at parsing, where the Trainer or Accelerate would fail later with a traceback."""
    from llm_srt.training.train import _has_accelerator, parse_args

    corpus = make_corpus(str(tmp_path / "corpus"), n=1)

    def refused(*extra: str) -> str:
        with pytest.raises(SystemExit) as exit_info:
            parse_args(stage_args("asr", str(tmp_path), corpus, str(tmp_path / "out"), extra=extra))
        assert exit_info.value.code == 2
        return capsys.readouterr().err

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert "train.py: error: --fsdp shards the model over processes" in refused("--fsdp")
    if not _has_accelerator():  # `accelerate launch` with an FSDP1 config sets these
        monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
        monkeypatch.setenv("FSDP_VERSION", "1")
        assert "train.py: error: FSDP on CPU runs FSDP2 only" in refused()


def test_shipped_engine_configs_are_complete():
    """The DeepSpeed ZeRO-2 file leaves sizes to the Trainer ("auto"); the FSDP files shard the model's layers."""
    with open(os.path.join(CONFIGS, "ds_zero2.json"), encoding="utf-8") as handle:
        ds = json.load(handle)
    assert ds["zero_optimization"]["stage"] == 2
    assert ds["train_micro_batch_size_per_gpu"] == ds["gradient_accumulation_steps"] == "auto"
    with open(os.path.join(CONFIGS, "fsdp.yaml"), encoding="utf-8") as handle:
        fsdp = yaml.safe_load(handle)
    assert fsdp["distributed_type"] == "FSDP" and fsdp["fsdp_config"]["fsdp_version"] == 2
    from llm_srt import LlmSrtForConditionalGeneration

    wrapped = set(fsdp["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"].split(","))
    assert wrapped <= set(LlmSrtForConditionalGeneration._no_split_modules)
    # The Trainer's `--fsdp_config` (JSON) says the same as the accelerate config.
    with open(os.path.join(CONFIGS, "fsdp.json"), encoding="utf-8") as handle:
        trainer_fsdp = json.load(handle)
    assert trainer_fsdp["version"] == 2 and set(trainer_fsdp["transformer_layer_cls_to_wrap"]) == wrapped
    assert trainer_fsdp["state_dict_type"] == fsdp["fsdp_config"]["fsdp_state_dict_type"] == "SHARDED_STATE_DICT"


@pytest.mark.skipif(fsdp_on_cpu_available() is not None, reason=str(fsdp_on_cpu_available()))
def test_fsdp_string_form_with_generate_evaluation_on_a_small_dev_set(tmp_path):
    """`--fsdp "full_shard auto_wrap"` (no config: the layers to shard are the model's own `_no_split_modules` that it
    has), evaluated during training with generate on 3 dev rows. 2 processes x the recipe's eval batch 16 pad the
    dev set with repeated rows (Seq2SeqTrainer.evaluate gathers them all); the metrics are those of the 3 rows, as a
    one-process evaluation of the same weights gives them."""
    from llm_srt.testing import build_tiny_tokenizer, save_tiny_model
    from llm_srt.training.train import main

    corpus = make_corpus(str(tmp_path / "corpus"))
    dev = make_corpus(str(tmp_path / "dev"), n=3)
    init = save_tiny_model(tmp_path / "init", tokenizer=build_tiny_tokenizer(), projector_dropout=0.0)
    out = tmp_path / "fsdp"
    evaluation = ("--eval_file", dev, "--predict_with_generate", "true", "--generation_max_length", "4")
    run = torchrun_train(stage_args("srt", init, corpus, str(out), steps=2, extra=(
        "--fsdp", "full_shard auto_wrap", *evaluation, "--eval_strategy", "steps", "--eval_steps", "1")))
    assert run.returncode == 0, run.stderr[-3000:]
    assert re.search(r"FSDP2 over 2 processes \(gloo\); rank 0: (\d+) of \1 parameters sharded", run.stderr)
    with open(out / "all_results.json") as handle:
        sharded = json.load(handle)
    # The final model evaluated by one process (learning rate 0: the weights stay as they are).
    reference = tmp_path / "one"
    main(stage_args("srt", str(out), corpus, str(reference), steps=1, extra=(*evaluation, "--learning_rate", "0")))
    with open(reference / "all_results.json") as handle:
        one = json.load(handle)
    assert {"eval_bleu", "eval_wer"} <= sharded.keys()
    assert {k: sharded[k] for k in ("eval_bleu", "eval_wer")} == {k: one[k] for k in ("eval_bleu", "eval_wer")}


def test_checkpoint_of_another_launch_and_cpu_offload_are_refused_by_name(tmp_path, monkeypatch, capsys):
    """A sharded FSDP checkpoint resumed without --fsdp (or a full-weights one with it), and FSDP's CPU offload on a
    CPU launch, are usage errors named before anything loads: the Trainer, torch.distributed.checkpoint and FSDP would
    fail later with tracebacks on every rank. The checkpoint is left as it was."""
    from llm_srt.training.train import _has_accelerator, main

    corpus = make_corpus(str(tmp_path / "corpus"), n=1)

    def refused(out, *extra: str) -> str:
        with pytest.raises(SystemExit) as exit_info:
            main(stage_args("asr", str(tmp_path / "init"), corpus, str(out), extra=extra))
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        return err

    (tmp_path / "init").mkdir()
    sharded, full = tmp_path / "sharded" / "checkpoint-2", tmp_path / "full" / "checkpoint-2"
    for folder, weights_name in ((sharded, "pytorch_model_fsdp_0"), (full, "model.safetensors")):
        folder.mkdir(parents=True)
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
        (folder / weights_name).mkdir() if weights_name.startswith("pytorch") else (folder / weights_name).write_bytes(b"")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    err = refused(tmp_path / "sharded")
    assert f"train.py: error: {sharded} is a sharded FSDP checkpoint" in err and "--fsdp" in err
    assert sorted(os.listdir(sharded)) == ["pytorch_model_fsdp_0", "trainer_state.json"]
    # `accelerate launch --config_file fsdp.yaml` sets these (the Trainer's --fsdp needs torchrun's WORLD_SIZE here).
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    err = refused(tmp_path / "full")
    assert f"train.py: error: {full} was written without FSDP" in err and "--fsdp" in err
    assert sorted(os.listdir(full)) == ["model.safetensors", "trainer_state.json"]
    if not _has_accelerator():
        monkeypatch.setenv("FSDP_OFFLOAD_PARAMS", "true")
        assert "train.py: error: --fsdp offload" in refused(tmp_path / "new")
