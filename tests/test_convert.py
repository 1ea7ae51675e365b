import json
import os
import re

import pytest
import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard
from transformers import (
    AutoModel,
    AutoProcessor,
    Blip2QFormerConfig,
    Blip2QFormerModel,
    Qwen2ForCausalLM,
    WhisperForConditionalGeneration,
)

from llm_srt.languages_llm_srt import LANGUAGE_TABLE
from llm_srt.testing import build_tiny_model_and_processor, synthetic_speech
from llm_srt.cli.safe_io import UsageError
from llm_srt.hub import convert as converter
from llm_srt.hub.convert import ConversionError, parse_args
from llm_srt.hub.push import PushArguments, files_to_upload, push
from llm_srt.hub.push import main as push_main


def convert(argv):
    """Parse and convert, raising what the conversion raises (`converter.main` turns it into an exit status)."""
    return converter.convert(parse_args(argv))


SR = 16000
QFORMER = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
           "encoder_hidden_size": 32}


@pytest.fixture(scope="module")
def components(tokenizer, tmp_path_factory):
    """A Whisper checkpoint and an LLM folder (with tokenizer), as the Hub ids would provide."""
    root = tmp_path_factory.mktemp("components")
    model, processor = build_tiny_model_and_processor(tokenizer=tokenizer, seed=5)
    whisper = WhisperForConditionalGeneration(model.config.audio_config)
    whisper.model.encoder.load_state_dict(model.audio_tower.state_dict())
    whisper.save_pretrained(root / "whisper")
    processor.feature_extractor.save_pretrained(root / "whisper")
    model.language_model.save_pretrained(root / "llm")
    tokenizer.save_pretrained(root / "llm")
    return str(root / "whisper"), str(root / "llm"), processor


def original_checkpoint(intermediate: int, lora_rank: int | None, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights named as SLAM-LLM saves them, with the older transformers' unused text-branch keys."""
    torch.manual_seed(seed)
    qformer = Blip2QFormerModel(Blip2QFormerConfig(**QFORMER, use_qformer_text_input=True))
    state = {f"encoder_projector.qformer.{k}": v.normal_(0, 0.2) if v.dim() > 1 else v.clone()
             for k, v in qformer.state_dict().items()}
    assert any(".intermediate.dense" in k for k in state)  # the text branch is there, to be dropped
    state["encoder_projector.query"] = torch.randn(1, 8, 32)
    if intermediate:
        state.update({"encoder_projector.linear1.weight": torch.randn(intermediate, 32) * 0.2,
                      "encoder_projector.linear1.bias": torch.randn(intermediate) * 0.1,
                      "encoder_projector.linear2.weight": torch.randn(64, intermediate) * 0.2,
                      "encoder_projector.linear2.bias": torch.randn(64) * 0.1})
    else:
        state.update({"encoder_projector.linear.weight": torch.randn(64, 32) * 0.2,
                      "encoder_projector.linear.bias": torch.randn(64) * 0.1})
    state.update({"encoder_projector.norm.weight": 1 + 0.1 * torch.randn(64),
                  "encoder_projector.norm.bias": 0.1 * torch.randn(64)})
    if lora_rank:
        for layer in range(2):
            for proj, out in (("q_proj", 64), ("v_proj", 32)):
                prefix = f"llm.base_model.model.model.layers.{layer}.self_attn.{proj}"
                state[f"{prefix}.lora_A.default.weight"] = torch.randn(lora_rank, 64) * 0.1
                state[f"{prefix}.lora_B.default.weight"] = torch.randn(out, lora_rank) * 0.1
    return state


def reference_logits(state, whisper_dir, llm_dir, processor, audio, prompt, lora_alpha=32):
    """A straightforward forward pass from the original weights, written independently of llm_srt."""
    encoder = WhisperForConditionalGeneration.from_pretrained(whisper_dir).model.encoder.eval()
    features = processor.feature_extractor(audio, sampling_rate=SR, return_tensors="pt")["input_features"]
    frames = encoder(features).last_hidden_state
    qformer = Blip2QFormerModel(Blip2QFormerConfig(**QFORMER)).eval()
    prefix = "encoder_projector.qformer."
    text_branch = re.compile(r"encoder\.layer\.\d+\.(intermediate|output)\.")  # unused by the queries
    qformer.load_state_dict({k[len(prefix):]: v for k, v in state.items()
                             if k.startswith(prefix) and not text_branch.match(k[len(prefix):])})
    hidden = qformer(query_embeds=state["encoder_projector.query"], encoder_hidden_states=frames).last_hidden_state
    if "encoder_projector.linear.weight" in state:
        hidden = F.linear(hidden, state["encoder_projector.linear.weight"], state["encoder_projector.linear.bias"])
    else:
        hidden = F.linear(hidden, state["encoder_projector.linear1.weight"], state["encoder_projector.linear1.bias"])
        hidden = F.linear(F.relu(hidden), state["encoder_projector.linear2.weight"], state["encoder_projector.linear2.bias"])
    audio_embeds = F.layer_norm(hidden, (64,), state["encoder_projector.norm.weight"], state["encoder_projector.norm.bias"], 1e-5)
    llm = Qwen2ForCausalLM.from_pretrained(llm_dir).eval()
    lora = {k: v for k, v in state.items() if ".lora_" in k}
    if lora:  # merge W + alpha/r * B A
        with torch.no_grad():
            for key in [k for k in lora if ".lora_A." in k]:
                module = key.split(".lora_A.")[0].removeprefix("llm.base_model.model.")
                a, b = lora[key], lora[key.replace("lora_A", "lora_B")]
                llm.get_submodule(module).weight += (lora_alpha / a.shape[0]) * b @ a
    ids = torch.tensor([[-1] * 8 + processor.tokenizer.encode(prompt)])
    mask = (ids == -1)
    embeds = llm.get_input_embeddings()(ids.clamp(min=0))
    embeds = embeds * ~mask[..., None]
    embeds[:, :8] = embeds[:, :8] + audio_embeds
    return llm(inputs_embeds=embeds).logits


@pytest.mark.parametrize("intermediate, lora_rank, adapter_only", [(48, None, False), (0, 4, True)])
def test_converted_model_reproduces_the_original_forward(components, tmp_path, intermediate, lora_rank, adapter_only):
    whisper_dir, llm_dir, processor = components
    state = original_checkpoint(intermediate, lora_rank)
    torch.save(state, tmp_path / "llm_srt.pt")
    out = str(tmp_path / "converted")
    args = ["--checkpoint", str(tmp_path / "llm_srt.pt"), "--encoder", whisper_dir, "--llm", llm_dir,
            "--output_dir", out, "--dtype", "float32", "--qformer_heads", "2"]
    convert(args + (["--lora", "true"] if lora_rank else []) + (["--adapter_only", "true"] if adapter_only else []))
    files = set(os.listdir(out))
    assert {"config.json", "generation_config.json", "processor_config.json", "tokenizer.json", "README.md",
            "modeling_llm_srt.py", "pipeline_llm_srt.py"} <= files
    assert any(f.endswith(".safetensors") for f in files)
    generation = json.load(open(os.path.join(out, "generation_config.json")))
    assert (generation["num_beams"], generation["no_repeat_ngram_size"], generation["max_new_tokens"]) == (5, 5, 400)

    model = AutoModel.from_pretrained(out, trust_remote_code=True).eval()
    loaded_processor = AutoProcessor.from_pretrained(out, trust_remote_code=True)
    assert model.config.adapter_only is adapter_only
    # the released checkpoints were trained on the paper's 15 languages, all 210 directions: recorded as such
    assert model.config.trained_languages == list(LANGUAGE_TABLE)
    assert len(model.config.trained_directions) == 210 and "zho-yue" in model.config.trained_directions
    audio = synthetic_speech(0.8, seed=9)
    batch = loaded_processor([audio], task="srt", src_lang="eng", tgt_lang="deu", sampling_rate=SR)
    with torch.no_grad():
        ours = model(**batch).logits
        expected = reference_logits(state, whisper_dir, llm_dir, processor, audio, "<|eng|><|deu|>")
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)
    card = ModelCard(open(os.path.join(out, "README.md")).read())  # parses
    assert card.data.eval_results is None  # a local LLM path: no known scores, so no model-index placeholder


def test_bad_checkpoints_are_refused_naming_the_fault(components, tmp_path):
    whisper_dir, llm_dir, _ = components

    def attempt(state, message, extra=()):
        path = tmp_path / "bad.pt"
        torch.save(state, path)
        with pytest.raises(ConversionError, match=message):
            convert(["--checkpoint", str(path), "--encoder", whisper_dir, "--llm", llm_dir,
                     "--output_dir", str(tmp_path / "out"), "--dtype", "float32", "--qformer_heads", "2", *extra])
        assert not os.path.exists(tmp_path / "out" / "config.json")  # nothing half-written

    good = original_checkpoint(48, None)
    attempt({k: v for k, v in good.items() if k != "encoder_projector.norm.bias"},
            r"parameters not filled: \['projector.norm.bias'\]")
    attempt({**good, "encoder_projector.bogus": torch.zeros(1)}, r"no place in the model: \['projector.bogus'\]")
    attempt({**good, "vision_tower.weight": torch.zeros(1)}, r"cannot be placed in LLM-SRT: \['vision_tower.weight'\]")
    attempt({**good, "encoder_projector.norm.weight": torch.ones(65)},
            r"wrong shapes: projector.norm.weight \(65,\) \(model \(64,\)\)")
    attempt(original_checkpoint(48, 4), "holds LoRA weights: pass --lora")
    attempt(good, "--lora was given", extra=("--lora", "true"))
    attempt({"encoder_projector.query": torch.zeros(1, 8, 32), "meta": {"epoch": 3}}, "not tensors: \\['meta'\\]")
    # weights no model should hold: NaN / inf values, integers (or bools) where the model has float parameters
    nan = good["encoder_projector.norm.weight"].clone()
    nan[3] = float("nan")
    attempt({**good, "encoder_projector.norm.weight": nan},
            r"non-finite values \(NaN or inf\): \['encoder_projector.norm.weight' \(1 NaN, 0 inf\)\]")
    attempt({**good, "encoder_projector.linear1.bias": torch.full((48,), float("inf"))},
            r"'encoder_projector.linear1.bias' \(0 NaN, 48 inf\)")
    attempt({**good, "encoder_projector.norm.bias": torch.zeros(64, dtype=torch.int64)},
            r"not floating point: \['encoder_projector.norm.bias' \(torch.int64\)\]")

    torch.save({"encoder_projector.query": PickledThing()}, tmp_path / "pickled.pt")
    with pytest.raises(ConversionError, match="needs pickled code"):
        convert(["--checkpoint", str(tmp_path / "pickled.pt"), "--encoder", whisper_dir, "--llm", llm_dir,
                 "--output_dir", str(tmp_path / "out")])
    with pytest.raises(UsageError, match="nope.pt"):
        convert(["--checkpoint", str(tmp_path / "nope.pt"), "--encoder", whisper_dir, "--llm", llm_dir,
                 "--output_dir", str(tmp_path / "out")])


def conversion_args(components, tmp_path, out, *extra):
    whisper_dir, llm_dir, _ = components
    if not (tmp_path / "llm_srt.pt").exists():
        torch.save(original_checkpoint(48, None), tmp_path / "llm_srt.pt")
    return ["--checkpoint", str(tmp_path / "llm_srt.pt"), "--encoder", whisper_dir, "--llm", llm_dir,
            "--output_dir", str(out), "--dtype", "float32", "--qformer_heads", "2", *extra]


def snapshot(folder):
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


def test_converter_keeps_a_folder_that_holds_files_unless_overwrite(components, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "README.md").write_text("my notes")  # no config.json: still a user's folder
    (out / "model.safetensors").write_bytes(b"my weights")
    before = snapshot(out)
    assert converter.main(conversion_args(components, tmp_path, out)) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err and "README.md" in err and "--overwrite" in err
    assert snapshot(out) == before

    assert converter.main(conversion_args(components, tmp_path, out, "--overwrite", "true")) == 0
    after = snapshot(out)
    assert "config.json" in after and after["README.md"] != b"my notes" and after["model.safetensors"] != b"my weights"
    assert sorted(os.listdir(tmp_path)) == ["llm_srt.pt", "mine"]  # no temporary folder left beside it


def test_a_conversion_failing_midway_leaves_the_old_folder_whole(components, tmp_path, monkeypatch):
    import llm_srt.hub.cards as cards

    out = tmp_path / "model"
    out.mkdir()
    (out / "README.md").write_text("old card")
    (out / "config.json").write_text("{}")
    before = snapshot(out)

    def fail(*args, **kwargs):  # the weights and processor are written by now
        raise OSError("No space left on device")

    monkeypatch.setattr(cards, "write_model_card", fail)
    with pytest.raises(OSError, match="No space"):
        convert(conversion_args(components, tmp_path, out, "--overwrite", "true"))
    assert snapshot(out) == before
    assert sorted(os.listdir(tmp_path)) == ["llm_srt.pt", "model"]


def test_converter_refuses_bad_usage_before_loading(components, tmp_path, capsys):
    whisper_dir, llm_dir, _ = components
    llm_before = snapshot(llm_dir)
    # An output folder that is one of the inputs is refused even with --overwrite.
    assert converter.main(conversion_args(components, tmp_path, llm_dir, "--overwrite", "true")) == 2
    assert "holds the input" in capsys.readouterr().err
    assert snapshot(llm_dir) == llm_before
    for extra, name in ((["--dtype", "float8"], "--dtype"), (["--qformer_heads", "0"], "--qformer_heads"),
                        (["--max_shard_size", "5XB"], "--max_shard_size"), (["--mandarin_tag", "man"], "--mandarin_tag"),
                        (["--lora_alpha", "-1"], "--lora_alpha")):
        with pytest.raises(SystemExit) as stop:
            converter.main(conversion_args(components, tmp_path, tmp_path / "o", *extra))
        err = capsys.readouterr().err
        assert stop.value.code == 2 and name in err and "Traceback" not in err, err
    args = conversion_args(components, tmp_path, tmp_path / "o")
    args[args.index("--encoder") + 1] = str(tmp_path / "no" / "whisper")
    assert converter.main(args) == 2
    err = capsys.readouterr().err
    assert "--encoder" in err and "no such folder" in err
    assert not (tmp_path / "o").exists()


def test_a_qformer_head_count_that_does_not_divide_the_width_names_its_flag(components, tmp_path, capsys):
    """The config's refusal named num_attention_heads, not the flag that set it."""
    assert converter.main(conversion_args(components, tmp_path, tmp_path / "o", "--qformer_heads", "5")) == 2
    err = capsys.readouterr().err
    assert "--qformer_heads 5 does not divide the checkpoint's Q-Former width 32" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


class PickledThing:
    """An object only pickle (arbitrary code) can restore."""


class RecordingHub:
    """Stands in for `huggingface_hub.HfApi`: records calls instead of sending them."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs))


def test_push_to_hub_uploads_the_model_and_a_valid_card(tiny_folder, tmp_path, capsys):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(tiny_folder, folder)
    os.makedirs(folder / "checkpoint-500")
    (folder / "checkpoint-500" / "optimizer.pt").write_bytes(b"x")
    (folder / "training_args.bin").write_bytes(b"x")
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"task": "srt", "test_file": "fleurs_test.jsonl",
                                   "averages": {"bleu": 21.37, "wer": 0.118}}))
    hub = RecordingHub()
    files = push(PushArguments(folder=str(folder), repo_id="me/llm-srt-tiny", private=True, revision="v1",
                               results=str(results)), api=hub)
    assert [c[0] for c in hub.calls] == ["create_repo", "create_branch", "upload_folder"]
    assert hub.calls[0][1] == ("me/llm-srt-tiny",) and hub.calls[0][2]["private"] is True
    upload = hub.calls[2][2]
    assert upload["folder_path"] == str(folder) and upload["revision"] == "v1"
    assert "README.md" in files and "model.safetensors" in files and "pipeline_llm_srt.py" in files
    assert not any(f.startswith("checkpoint-") or f == "training_args.bin" for f in files)
    assert files == files_to_upload(str(folder))
    card = ModelCard.load(str(folder / "README.md"))
    data = card.data.to_dict()
    for field in ("language", "license", "datasets", "metrics", "pipeline_tag", "library_name", "base_model"):
        assert data.get(field), field
    assert data["library_name"] == "transformers" and len(data["language"]) == 15
    assert card.data.eval_results[0].metric_value == 21.37
    assert "me/llm-srt-tiny" in card.text

    push(PushArguments(folder=str(folder), repo_id="me/x", dry_run=True), api=None)
    assert "Would upload to me/x@main" in capsys.readouterr().out


def test_push_refuses_a_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="missing: modeling_llm_srt.py"):
        push(PushArguments(folder=str(tmp_path), repo_id="me/x"), api=RecordingHub())


def test_release_cards_are_rendered_and_valid():
    from llm_srt.hub.cards import release_cards

    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "model_cards")
    for name, text in release_cards().items():
        assert open(os.path.join(root, name), encoding="utf-8").read() == text, f"{name} is stale: re-render"
        card = ModelCard(text)
        data = card.data.to_dict()
        assert data["base_model"][1].startswith("Qwen/Qwen2.5-") and data["license"] == "cc-by-nc-sa-4.0"
        assert card.data.eval_results and all(r.metric_value > 0 for r in card.data.eval_results)


def model_copy(tiny_folder, tmp_path):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_folder, folder)
    return folder


def write_results(tmp_path, bleu=21.37):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"task": "srt", "test_file": "fleurs_test.jsonl", "averages": {"bleu": bleu}}))
    return path


def test_push_results_are_never_silently_ignored(tiny_folder, tmp_path, capsys):
    folder = model_copy(tiny_folder, tmp_path)
    (folder / "README.md").write_text("---\nlicense: mit\n---\nMy own card.\n")
    results = write_results(tmp_path)
    hub = RecordingHub()
    with pytest.raises(UsageError, match="--overwrite_card"):
        push(PushArguments(folder=str(folder), repo_id="me/x", results=str(results)), api=hub)
    assert hub.calls == [] and (folder / "README.md").read_text().endswith("My own card.\n")
    assert push_main(["--folder", str(folder), "--repo_id", "me/x", "--results", str(results), "--dry_run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("push_to_hub: error: ") and "README.md" in err and "Traceback" not in err

    push(PushArguments(folder=str(folder), repo_id="me/x", results=str(results), overwrite_card=True), api=hub)
    assert ModelCard.load(str(folder / "README.md")).data.eval_results[0].metric_value == 21.37
    assert [c[0] for c in hub.calls] == ["create_repo", "upload_folder"]


def test_push_names_a_missing_or_invalid_results_file(tiny_folder, tmp_path, capsys):
    folder = model_copy(tiny_folder, tmp_path)
    (tmp_path / "broken.json").write_text('{"task": "srt", "averages": {"bleu": 21.3,}}')
    (tmp_path / "other.json").write_text('{"bleu": 3}')
    (tmp_path / "words.json").write_text('{"task": "srt", "averages": {"bleu": "high"}}')
    for name, message in (("gone.json", "no such file"), ("broken.json", "not valid JSON: .*line 1"),
                          ("other.json", "not an evaluate.py results.json"), ("words.json", "not numbers: bleu")):
        with pytest.raises(ValueError, match=message):
            push(PushArguments(folder=str(folder), repo_id="me/x", results=str(tmp_path / name)), api=RecordingHub())
        assert push_main(["--folder", str(folder), "--repo_id", "me/x", "--results", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert name in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (folder / "README.md").exists()  # nothing written on the way


def test_push_dry_run_writes_nothing_and_bad_ids_or_configs_are_named(tiny_folder, tmp_path, capsys):
    folder = model_copy(tiny_folder, tmp_path)
    before = snapshot(folder)
    files = push(PushArguments(folder=str(folder), repo_id="me/x", results=str(write_results(tmp_path)),
                               dry_run=True))
    assert "README.md" in files and snapshot(folder) == before
    out = capsys.readouterr().out
    assert "README.md (generated card)" in out and "21.37" in out
    assert push_main(["--folder", str(folder), "--repo_id", "me/bad name!", "--dry_run"]) == 2
    assert "--repo_id" in capsys.readouterr().err
    (folder / "config.json").write_text('{"model_type": "llm_srt",')
    assert push_main(["--folder", str(folder), "--repo_id", "me/x", "--dry_run"]) == 2
    err = capsys.readouterr().err
    assert "config.json is not valid JSON" in err and "Traceback" not in err
