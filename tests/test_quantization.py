"""quantization_llm_srt: int8/int4 weights for the LLM on torch's CPU kernels, through transformers' quantization
interface (quantize while loading, save, load again, also as remote code), and few-row bf16 products."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from llm_srt import LlmSrtForConditionalGeneration
from llm_srt import quantization_llm_srt as quantization
from llm_srt.quantization_llm_srt import (
    FewRowsLinear, Int4Linear, Int8Linear, LlmSrtQuantizationConfig, as_quantization_config, cpu_computes_bf16,
    pack_int4, quantize_int4, quantize_int8, unpack_int4,
)
from llm_srt.testing import build_tiny_model_and_processor, save_model


@pytest.fixture(scope="module")
def bf16_folder(tokenizer, tmp_path_factory):
    """A tiny model saved in bf16 (its linear layers take int4 groups of 32)."""
    model, processor = build_tiny_model_and_processor(seed=3, tokenizer=tokenizer)
    return save_model(model.to(torch.bfloat16), processor, tmp_path_factory.mktemp("bf16"))


@pytest.fixture(scope="module")
def prompt(bf16_folder):
    return torch.tensor([[11, 22, 33, 44, 55, 66]])


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def cosine(a, b):
    return F.cosine_similarity(a.flatten(), b.flatten(), 0).item()


@pytest.mark.parametrize("shape", [(2 * 64 + 48, 64), (11008 // 16, 256), (48, 128), (16, 32)])
def test_int4_layout_is_torchs_and_turns_back(shape):
    """The kernel's layout made from the stored form equals torch's own packing (full blocks and tails), and the
    stored form comes back from it (saving a packed model)."""
    codes = torch.randint(0, 16, shape, dtype=torch.int32)
    reference = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1).view(shape[0], -1)
    nibbles = quantization.codes_to_nibbles(codes.to(torch.uint8))
    packed = pack_int4(nibbles)
    assert torch.equal(packed, reference)
    assert torch.equal(unpack_int4(packed), nibbles)


def test_quantized_layers_compute_their_dequantized_weights():
    torch.manual_seed(0)
    linear = nn.Linear(256, 96, bias=True).to(torch.bfloat16)
    x = torch.randn(5, 256, dtype=torch.bfloat16)
    codes, scales = quantize_int8(linear.weight)
    assert codes.dtype == torch.int8 and codes.abs().max() == 127
    int8 = Int8Linear.from_linear(linear, torch.bfloat16)
    dequantized = codes.float() * scales[:, None]
    torch.testing.assert_close(int8(x).float(), F.linear(x.float(), dequantized, linear.bias.float()), atol=0.02, rtol=0.02)
    nibbles, scales_and_zeros = quantize_int4(linear.weight, 64, torch.bfloat16)
    q = quantization.nibbles_to_codes(nibbles).float()
    scale = scales_and_zeros[..., 0].float().t().repeat_interleave(64, 1)
    zero = scales_and_zeros[..., 1].float().t().repeat_interleave(64, 1)
    int4 = Int4Linear.from_linear(linear, 64, torch.bfloat16)
    torch.testing.assert_close(int4(x).float(), F.linear(x.float(), (q - 8) * scale + zero, linear.bias.float()),
                               atol=0.02, rtol=0.02)
    assert cosine((q - 8) * scale + zero, linear.weight.float()) > 0.99


@pytest.mark.parametrize("weights", ["int8", "int4"])
def test_quantize_while_loading_save_and_load_again(bf16_folder, prompt, tmp_path, weights):
    reference = LlmSrtForConditionalGeneration.from_pretrained(bf16_folder)
    config = LlmSrtQuantizationConfig(weights, group_size=32)
    model = LlmSrtForConditionalGeneration.from_pretrained(bf16_folder, quantization_config=config)
    layer = Int8Linear if weights == "int8" else Int4Linear
    llm = model.language_model
    assert isinstance(llm.model.layers[0].mlp.down_proj, layer) and isinstance(llm.lm_head, layer)
    for part in (model.projector, model.audio_tower):  # the LLM's layers only
        assert not any(isinstance(m, layer) for m in part.modules())
    assert llm.model.embed_tokens.weight.dtype == torch.bfloat16  # the lookup keeps float rows
    quantized = logits(model, prompt)
    assert cosine(quantized, logits(reference, prompt)) > 0.99
    model.save_pretrained(tmp_path)
    saved = json.load(open(tmp_path / "config.json"))
    assert saved["quantization_config"] == {"quant_method": "llm_srt", "weights": weights, "group_size": 32,
                                            "modules_to_not_convert": ["audio_tower", "projector", "language_detector"]}
    assert saved["text_config"]["tie_word_embeddings"] is False
    assert (tmp_path / "quantization_llm_srt.py").is_file()
    again = LlmSrtForConditionalGeneration.from_pretrained(tmp_path)
    assert isinstance(again.language_model.lm_head, layer)
    assert torch.equal(logits(again, prompt), quantized)
    with pytest.raises(ValueError, match=f"saved quantized \\({weights}.*asked for int8"):
        LlmSrtForConditionalGeneration.from_pretrained(tmp_path, quantization_config="int8" if weights == "int4"
                                                       else LlmSrtQuantizationConfig("int8", group_size=64))


def test_quantization_by_name_and_its_errors(bf16_folder):
    assert as_quantization_config("int8").weights == "int8"
    assert as_quantization_config(None) is None
    with pytest.raises(ValueError, match="quantization must be one of int8, int4, got 'int3'"):
        as_quantization_config("int3")
    with pytest.raises(ValueError, match="group_size must be one of"):
        LlmSrtQuantizationConfig("int4", group_size=100)
    model = LlmSrtForConditionalGeneration.from_pretrained(bf16_folder, quantization_config="int4")
    # default groups of 128: the tiny LLM's 64-wide inputs are not a multiple, its 128-wide down_proj is
    assert type(model.language_model.model.layers[0].mlp.up_proj) is FewRowsLinear
    assert isinstance(model.language_model.model.layers[0].mlp.down_proj, Int4Linear)
    with pytest.raises(ValueError, match="computes on the CPU only"):
        model.language_model.model.layers[0].mlp.down_proj(torch.zeros(1, 128, device="meta"))


@pytest.mark.parametrize("rows", [1, 2, 5, 32, 33])
def test_few_rows_linear_is_f_linear(rows):
    torch.manual_seed(rows)
    for bias in (True, False):
        layer = FewRowsLinear(2048, 256, bias=bias).to(torch.bfloat16)
        x = torch.randn(1, rows, 2048, dtype=torch.bfloat16)
        with torch.no_grad():
            assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))


def test_few_rows_linear_decodes_as_nn_linear(bf16_folder, prompt):
    """Greedy and beam decoding of a bf16 model give the same tokens with the LLM's layers as plain nn.Linear."""
    model = LlmSrtForConditionalGeneration.from_pretrained(bf16_folder)
    assert all(type(m) is FewRowsLinear for m in model.language_model.modules() if isinstance(m, nn.Linear))
    settings = [{"num_beams": 1}, {"num_beams": 3}]
    fast = [model.generate(input_ids=prompt, max_new_tokens=8, **s) for s in settings]
    for module in model.language_model.modules():
        if type(module) is FewRowsLinear:
            module.__class__ = nn.Linear
    plain = [model.generate(input_ids=prompt, max_new_tokens=8, **s) for s in settings]
    for a, b in zip(fast, plain):
        assert torch.equal(a, b)


def test_cpu_computes_bf16_reads_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx2": True, "avx512_bf16": False}, raising=False)
    assert cpu_computes_bf16() is False
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": True}, raising=False)
    assert cpu_computes_bf16() is True


@pytest.mark.integration
def test_quantized_folder_loads_without_the_package(bf16_folder, prompt, tmp_path):
    """A saved int4 folder loads as remote code in a Python where `llm_srt` cannot be imported, quantized."""
    model = LlmSrtForConditionalGeneration.from_pretrained(bf16_folder, quantization_config=LlmSrtQuantizationConfig(
        "int4", group_size=32))
    model.save_pretrained(tmp_path)
    expected = logits(model, prompt)[0, -1, :5].tolist()
    script = textwrap.dedent(f"""
        import sys
        sys.modules["llm_srt"] = None  # block the package, installed or on the path
        import torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)
        print(type(model.language_model.lm_head).__name__)
        with torch.no_grad():
            print(model(input_ids=torch.tensor({prompt.tolist()!r})).logits[0, -1, :5].float().tolist())
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", script], cwd="/", env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    name, values = result.stdout.strip().splitlines()[-2:]
    assert name == "Int4Linear"
    assert eval(values) == expected


# ------------------------------------------------------------------ one option: engine, CLI, server, evaluation
def test_cpu_dtype_default(monkeypatch):
    from llm_srt.engines.loading import cpu_dtype

    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"amx_bf16": True}, raising=False)
    assert cpu_dtype(None) == ("bfloat16", pytest.approx("computing in bfloat16: this CPU computes bf16 natively "
                                                         "(--dtype float32 for float32)"))
    assert cpu_dtype("float32")[0] == "float32" and cpu_dtype(None, "cuda")[0] is None
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx2": True}, raising=False)
    assert cpu_dtype(None)[0] == "float32"


def test_open_engine_quantizes_and_says_so(bf16_folder, tiny_folder):
    from llm_srt.engines.loading import open_engine

    told = []
    engine = open_engine(bf16_folder, quantization="int8", log=told.append)
    assert isinstance(engine.model.language_model.lm_head, Int8Linear)
    assert told == [pytest.approx(told[0])] and "the LLM's weights in int8" in told[0] and "computing in" in told[0]
    with pytest.raises(ValueError, match="quantization 'int4' is the transformers engine's"):
        open_engine(tiny_folder, "vllm", quantization="int4")
    with pytest.raises(ValueError, match="runs on the CPU"):
        open_engine(tiny_folder, quantization="int4", device="cuda")


def test_the_cli_takes_quantization(bf16_folder, capsys, tmp_path):
    import soundfile

    from llm_srt.cli import main as cli
    from llm_srt.testing import synthetic_speech

    clip = tmp_path / "clip.wav"
    soundfile.write(clip, synthetic_speech(0.8, seed=1), 16000)
    status = cli.main(["translate", str(clip), "--model", bf16_folder, "--src", "eng", "--tgt", "deu",
                       "--quantization", "int4", "--beams", "1", "--max-new-tokens", "3"])
    out, err = capsys.readouterr()
    assert status == 0 and json.loads(out.splitlines()[0])["file"] == str(clip)
    assert "llm-srt: computing in " in err and "the LLM's weights in int4" in err
    with pytest.raises(SystemExit):
        cli.main(["translate", str(clip), "--model", bf16_folder, "--tgt", "deu", "--quantization", "int2"])
    assert "--quantization: invalid choice: 'int2'" in capsys.readouterr().err


def test_serve_and_evaluate_take_quantization(tmp_path):
    from llm_srt.evaluation.run import EvaluateArguments
    from llm_srt.serving.settings import ServeSettings

    assert ServeSettings(quantization="int4").quantization == "int4"
    with pytest.raises(ValueError, match="quantization must be one of int8, int4, got 'int2'"):
        ServeSettings(quantization="int2")
    with pytest.raises(ValueError, match="quantization int8 runs on the transformers engine"):
        ServeSettings(quantization="int8", engine="vllm")
    assert EvaluateArguments(model="m", output_dir=str(tmp_path), test_file="t.jsonl", quantization="int8")
    with pytest.raises(ValueError, match="--quantization runs on --engine transformers"):
        EvaluateArguments(model="m", output_dir=str(tmp_path), test_file="t.jsonl", quantization="int8", engine="vllm")
    help_text = subprocess.run([sys.executable, "-m", "llm_srt.cli", "serve", "--help"], capture_output=True,
                               text=True, cwd=os.path.dirname(os.path.dirname(__file__))).stdout
    assert "--quantization {int8,int4}" in help_text


def test_pipeline_model_kwargs_quantize(bf16_folder):
    from transformers import pipeline

    pipe = pipeline("speech-translation", model=bf16_folder, trust_remote_code=True,
                    model_kwargs={"quantization_config": "int8"})
    assert isinstance(pipe.model.language_model.lm_head, Int8Linear)


def mapping_rss_kb(path: str) -> int:
    """Resident kB of this process's mappings of `path` (/proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:
                inside = len(fields) >= 6 and fields[5] == path
            elif inside and fields[0] == "Rss:":
                total += int(fields[1])
    return total


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="Linux's /proc")
def test_release_file_pages_drops_only_mapped_file_pages(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = str(tmp_path / "w.safetensors")
    save_file({"w": torch.arange(16 << 20, dtype=torch.int32).to(torch.uint8)}, path)
    with safe_open(path, framework="pt") as f:
        mapped = f.get_tensor("w")
    checksum = int(mapped.sum())  # touches every page
    before = mapping_rss_kb(path)
    quantization.release_file_pages(mapped)
    assert before > 15000 and mapping_rss_kb(path) < before / 4
    assert int(mapped.sum()) == checksum  # read again from the file
    anonymous = mapped.clone()
    quantization.release_file_pages(anonymous)  # not a file's: left alone
    assert int(anonymous.sum()) == checksum
