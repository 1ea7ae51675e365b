import json
import os
import subprocess
import sys


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_speed_benchmark_runs_and_reports_every_field(tmp_path):
    """Only that the benchmark runs on a minimal setting and its JSON is complete: no timing is asserted."""
    out = tmp_path / "speed.json"
    readme = tmp_path / "README.md"
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "speed.py"), "--preset", "tiny", "--batch_sizes", "1,2",
           "--beams", "1,2", "--new_tokens", "2", "--repeats", "1", "--one_to_many", "1,4", "--feature_clips", "2",
           "--output", str(out), "--readme", str(readme)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert {"preset", "machine", "device", "dtype", "new_tokens", "audio_tokens", "rows", "one_to_many",
            "feature_extraction"} <= set(data)
    assert data["audio_tokens"] == {"ours": 80, "baseline": 750}
    assert [(r["beams"], r["batch_size"]) for r in data["rows"]] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    for row in data["rows"]:
        for side in ("ours", "baseline"):
            m = row[side]
            assert {"utterances_per_s", "peak_memory_mib", "seconds", "audio_tokens", "sequence_length"} <= set(m)
            assert set(m["split_s"]) == {"features", "encoder", "projector", "prefill", "decode"}
        assert row["ours"]["audio_tokens"] == 80 and row["baseline"]["audio_tokens"] == 750
        assert row["speedup"] > 0
    assert data["one_to_many"]["targets"] == [1, 4] and len(data["one_to_many"]["ratio_to_one"]) == 2
    assert {"numpy_clips_per_s", "torch_clips_per_s"} <= set(data["feature_extraction"])
    assert "| beams | batch |" in result.stdout and "one audio -> N targets" in result.stdout
    assert readme.read_text().count("`tiny`") == 1
