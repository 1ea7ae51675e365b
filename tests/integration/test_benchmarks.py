import json
import os
import subprocess
import sys

import torch


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))


def test_speed_benchmark_runs_and_reports_every_field(tmp_path):
    """Only that the benchmark runs on a minimal setting and its JSON and tables are complete: no timing asserted."""
    out = tmp_path / "speed.json"
    readme = tmp_path / "README.md"
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "speed.py"), "--preset", "tiny", "--batch_sizes", "1,2",
           "--beams", "1,2", "--clips", "fleurs,30", "--new_tokens", "2", "--repeats", "1", "--one_to_many", "1,2",
           "--transcript_tokens", "3", "--output", str(out), "--readme", str(readme)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert {"preset", "machine", "device", "dtype", "new_tokens", "llm", "rows", "change", "one_to_many"} <= set(data)
    assert [(r["clips"], r["beams"], r["batch_size"]) for r in data["rows"]] == [
        (clips, beams, batch) for clips in ("FLEURS-like 5-20 s", "30 s") for beams in (1, 2) for batch in (1, 2)]
    for row in data["rows"]:
        ours, peer = row["ours"], row["qwen2_audio"]
        assert set(ours["split_s"]) == {"features", "encoder", "qformer", "prefill", "decode"}
        assert ours["llm_input_tokens"] == 80 + 5  # 80 queries + the `<|eng|><|deu|>` prompt of the tiny tokenizer
        # Qwen2-Audio: one LLM token per 40 ms of real audio (+ prompt), so 30 s clips give 750 audio tokens.
        longest = max(row["audio_seconds"])
        assert abs(peer["llm_input_tokens"] - 5 - longest * 25) <= 1
        assert peer["kv_cache_mib"] > ours["kv_cache_mib"] > 0
        assert row["ratio"] > 0
    assert [r["largest_stage"] in {"features", "encoder", "qformer", "prefill", "decode"}
            for r in data["change"]["rows"]] == [True, True]
    otm = data["one_to_many"]
    assert otm["targets"] == [1, 2] and len(otm["independent_ratio"]) == len(otm["shared_ratio"]) == 2
    assert otm["independent_ratio"][0] == 1.0
    text = readme.read_text()
    assert text.count("`tiny`") == 1 and "| clips | beams | batch |" in text and "shared transcript s" in text


def test_qwen2_audio_peer_shares_the_llm_and_copies_the_encoder():
    """The comparison is fair by construction: the very same LLM modules, the encoder's weights copied."""
    import speed

    ours, processor = speed.build_ours("tiny", "cpu", torch.float32, llm_layers=1)
    peer = speed.build_qwen2_audio(ours, "cpu", torch.float32)
    assert peer.model.language_model is ours.language_model.model and peer.lm_head is ours.language_model.lm_head
    for name, value in ours.audio_tower.state_dict().items():
        assert torch.equal(peer.model.audio_tower.state_dict()[name], value), name
    assert peer.model.audio_tower.avg_pooler is not None  # 2x pooling: 750 frames per 30 s


def test_kv_cache_size_from_shapes():
    import speed
    from transformers import Qwen2Config

    config = Qwen2Config(hidden_size=896, num_attention_heads=14, num_key_value_heads=2, num_hidden_layers=24)
    # 2 (keys, values) x 24 layers x 2 heads x 64 dims x 100 positions x 3 rows x 4 bytes
    assert speed.kv_cache_mib(config, 100, 3, torch.float32) == 2 * 24 * 2 * 64 * 100 * 3 * 4 / 2**20


def test_benchmarks_write_no_tracked_file_by_default():
    """`python benchmarks/serve_load.py --model runs/demo/srt ...` overwrote the tracked
    benchmarks/results/serve_load.json: every default output is under the untracked outputs/."""
    import dataclasses
    import importlib.util

    tracked = set(subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split())
    for script, fields in (("serve_load.py", ("output",)), ("speed.py", ("output", "readme"))):
        spec = importlib.util.spec_from_file_location(f"_bench_{script[:-3]}", os.path.join(ROOT, "benchmarks", script))
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
        classes = [c for c in vars(module).values() if dataclasses.is_dataclass(c) and isinstance(c, type)]
        defaults = {f.name: f.default for c in classes for f in dataclasses.fields(c) if f.name in fields}
        assert set(defaults) == set(fields), (script, defaults)
        for name, default in defaults.items():
            if default:
                relative = os.path.relpath(os.path.join(ROOT, default), ROOT)
                assert relative not in tracked and relative.split(os.sep)[0] == "outputs", (script, name, default)


def test_qwen2_audio_like_folder_has_our_encoder_and_llm(tmp_path):
    """engines.py's Qwen2-Audio peer: the hub layout (transformers loads it with nothing missing), our encoder's and
    LLM's shapes and weights, Qwen2-Audio's audio tokens within the LLM's vocabulary."""
    import engines
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    from llm_srt import LlmSrtForConditionalGeneration
    from llm_srt.testing import save_tiny_model

    ours_folder = save_tiny_model(tmp_path / "ours", seed=0, llm_layers=1)
    folder = engines.save_qwen2_audio_like(ours_folder, str(tmp_path / "qwen2_audio"))
    peer, info = Qwen2AudioForConditionalGeneration.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    ours = LlmSrtForConditionalGeneration.from_pretrained(ours_folder)
    a, q = ours.config.audio_config, peer.config.audio_config
    for name in ("d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim", "num_mel_bins",
                 "max_source_positions"):
        assert getattr(q, name) == getattr(a, name), name
    t, qt = ours.config.text_config, peer.config.text_config
    for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                 "vocab_size", "tie_word_embeddings"):
        assert getattr(qt, name) == getattr(t, name), name
    assert peer.config.tie_word_embeddings == t.tie_word_embeddings  # vLLM copies the top-level value to the LLM
    for name, value in ours.audio_tower.state_dict().items():
        assert torch.equal(peer.model.audio_tower.state_dict()[name], value), name
    assert torch.equal(peer.get_input_embeddings().weight, ours.get_input_embeddings().weight)
    assert torch.equal(peer.get_output_embeddings().weight, ours.get_output_embeddings().weight)
    processor = AutoProcessor.from_pretrained(folder)
    assert processor.audio_token_id == peer.config.audio_token_id < t.vocab_size
    assert processor.feature_extractor.feature_size == a.num_mel_bins
    assert [engines.audio_tokens_of(s) for s in (8, 30)] == [200, 750]  # one LLM token per 40 ms


def test_vllm_cpu_env_binds_vllm_to_every_core_of_the_run(monkeypatch):
    """vLLM on x86 keeps a core for its scheduler unless told otherwise; beside the transformers engine the
    benchmarks give it the same cores, split over tensor-parallel workers, and keep what the user set."""
    import pytest

    from llm_srt.testing import vllm_cpu_env

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {5, 2, 3, 4}, raising=False)
    env = vllm_cpu_env(environ={"PATH": "/bin"})
    assert env == {"PATH": "/bin", "VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_CPU_OMP_THREADS_BIND": "2,3,4,5"}
    assert vllm_cpu_env(2, environ={})["VLLM_CPU_OMP_THREADS_BIND"] == "2,3|4,5"
    assert vllm_cpu_env(3, environ={})["VLLM_CPU_OMP_THREADS_BIND"] == "2|3|4"  # one core per worker, one left over
    mine = {"VLLM_CPU_OMP_THREADS_BIND": "nobind", "VLLM_CPU_KVCACHE_SPACE": "8"}
    assert vllm_cpu_env(environ=mine) == mine
    with pytest.raises(ValueError, match="tensor_parallel_size 5 needs as many CPU cores; this run has 4"):
        vllm_cpu_env(5, environ={})


def test_serve_load_starts_the_vllm_server_bound_to_every_core(monkeypatch, tmp_path):
    import serve_load

    started = {}

    def fake_serve(python, model, *args, env, log_path):
        started.update(python=python, args=args, env=env)
        return "server"

    monkeypatch.setattr(serve_load.ServerProcess, "llm_srt_serve", staticmethod(fake_serve))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    args = serve_load.LoadArguments(engines="vllm", vllm_python="/venv/bin/python")
    assert serve_load.serve_engine("vllm", "folder", args, str(tmp_path)) == "server"
    assert started["python"] == "/venv/bin/python" and "vllm" in started["args"]
    assert started["env"]["VLLM_CPU_OMP_THREADS_BIND"] == "0,1" and started["env"]["PYTHONPATH"] == ROOT
