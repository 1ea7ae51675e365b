"""Training beyond one process: FSDP-sharded training of LLM-SRT that is killed and resumes, and the shipped configs.

The Trainer reaches FSDP through accelerate, which (1.15) enables FSDP only on accelerator process groups: on a CPU
launch with gloo, `--fsdp` silently runs DDP. The sharded run here therefore uses torch's FSDP2 (`fully_shard`)
directly on CPU with gloo, with torch.distributed.checkpoint for the sharded checkpoints. The Trainer + accelerate
FSDP path (`trainer_scripts/configs/fsdp.yaml`) and DeepSpeed (`ds_zero2.json`) need GPUs and are not run here.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "trainer_scripts", "configs")

WORKER = textwrap.dedent('''
    """Train the projector of a tiny LLM-SRT sharded over the process group; a sharded checkpoint every
    `save_every` steps (written to a temporary folder, renamed when complete); resume from the newest one."""
    import os, signal, sys
    import torch, torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict, get_model_state_dict, StateDictOptions
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from llm_srt.testing import build_tiny_model_and_processor, build_tiny_tokenizer, synthetic_speech

    out_dir, total, save_every, die_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    mesh = init_device_mesh("cpu", (world,))
    model, processor = build_tiny_model_and_processor(seed=0, tokenizer=build_tiny_tokenizer(), projector_dropout=0.0)
    model.train()
    for layer in model.projector.qformer.encoder.layer:  # one shard unit per Q-Former layer, then the rest
        fully_shard(layer, mesh=mesh)
    fully_shard(model.projector, mesh=mesh)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    start = 0
    done = sorted(int(d.split("-")[1]) for d in os.listdir(out_dir) if d.startswith("step-") and "." not in d)
    if done:
        start = done[-1]
        model_sd, optim_sd = get_state_dict(model, optimizer)
        state = {"model": model_sd, "optim": optim_sd}
        dcp.load(state, checkpoint_id=os.path.join(out_dir, f"step-{start}"))
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    sharded = type(model.projector.query).__name__
    for step in range(start + 1, total + 1):
        # Each rank its own half of a batch that depends only on the step: resuming sees the same data.
        clips = [synthetic_speech(0.5 + 0.1 * ((step + i) % 5), seed=100 * step + 2 * i + rank) for i in range(2)]
        batch = processor(clips, src_lang="eng", tgt_lang="deu", transcript="I see three red cats.",
                          translation="Ich sehe drei rote Katzen.", sampling_rate=16000)
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % save_every == 0:
            model_sd, optim_sd = get_state_dict(model, optimizer)
            tmp = os.path.join(out_dir, f"step-{step}.tmp")
            dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=tmp)
            dist.barrier()
            if rank == 0:
                os.rename(tmp, os.path.join(out_dir, f"step-{step}"))
            dist.barrier()
        if step == die_at and rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)  # killed mid-run, without any cleanup
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank == 0:
        torch.save({k: v for k, v in full.items() if k.startswith("projector.")}, os.path.join(out_dir, "final.pt"))
        print(f"sharded as {sharded}; resumed from step {start}; last loss {loss.item():.4f}")
    dist.destroy_process_group()
''')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(script: str, out_dir: str, total: int, save_every: int, die_at: int) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           script, out_dir, str(total), str(save_every), str(die_at)]
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


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


@pytest.mark.skipif(fsdp_on_cpu_available() is not None, reason=str(fsdp_on_cpu_available()))
def test_sharded_run_trains_and_resumes_after_a_kill(tmp_path):
    """Two processes (CPU, gloo), the projector sharded (FSDP2, DTensor parameters). A run killed at step 5 after
    its step-4 checkpoint resumes from it and ends with exactly the parameters of a run never interrupted."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    killed.mkdir()
    clean.mkdir()

    first = launch(str(script), str(killed), total=6, save_every=2, die_at=5)
    assert first.returncode != 0, "the run was to be killed"
    assert sorted(os.listdir(killed)) == ["step-2", "step-4"]  # step 6 never came
    resumed = launch(str(script), str(killed), total=6, save_every=2, die_at=-1)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "sharded as DTensor; resumed from step 4" in resumed.stdout
    uninterrupted = launch(str(script), str(clean), total=6, save_every=2, die_at=-1)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    assert "resumed from step 0" in uninterrupted.stdout

    after_resume = torch.load(killed / "final.pt")
    reference = torch.load(clean / "final.pt")
    assert set(after_resume) == set(reference) and len(reference) > 10
    for name, value in reference.items():
        assert torch.equal(after_resume[name], value), name
    untrained = build_initial_projector()
    assert any(not torch.equal(untrained[k], v) for k, v in reference.items())  # it did train


def build_initial_projector() -> dict:
    from llm_srt.testing import build_tiny_model_and_processor, build_tiny_tokenizer

    model, _ = build_tiny_model_and_processor(seed=0, tokenizer=build_tiny_tokenizer(), projector_dropout=0.0)
    return {k: v for k, v in model.state_dict().items() if k.startswith("projector.")}


def test_shipped_engine_configs_are_complete():
    """The DeepSpeed ZeRO-2 file leaves sizes to the Trainer ("auto"); the FSDP file shards the model's layers."""
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
