import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModel, AutoProcessor, LogitsProcessor, LogitsProcessorList

from llm_srt import LlmSrtForConditionalGeneration
from llm_srt.configuration_llm_srt import LlmSrtConfig, projector_intermediate_size_for
from llm_srt.modeling_llm_srt import is_adapter_key, load_whisper_encoder
from llm_srt.processing_llm_srt import IGNORE_INDEX
from llm_srt.testing import build_tiny_model_and_processor


SR = 16000


def srt_batch(processor, clips, with_answers=True):
    return processor(
        clips, task="srt", src_lang=["eng", "deu", "fra"][: len(clips)], tgt_lang="zho",
        transcript=["I see cats", "Ich sehe drei rote Katzen", "Je"][: len(clips)] if with_answers else None,
        translation=["我看到猫", "我", "我看到三只红色的猫。"][: len(clips)] if with_answers else None,
        sampling_rate=SR,
    )


def test_forward_shapes_and_audio_placement(tiny, clips):
    model, processor = tiny
    batch = srt_batch(processor, clips)
    with torch.no_grad():
        out = model(**batch)
    B, L = batch["input_ids"].shape
    cfg = model.config
    assert out.logits.shape == (B, L, cfg.text_config.vocab_size)
    assert out.audio_embeds.shape == (B, cfg.num_queries, cfg.text_config.hidden_size)
    with torch.no_grad():
        embeds, audio = model.embed_inputs(batch["input_ids"], batch["input_features"])
        token_embeds = model.get_input_embeddings()(batch["input_ids"].clamp(max=cfg.audio_token_id - 1))
    for row in range(B):
        slots = (batch["input_ids"][row] == cfg.audio_token_id).nonzero().flatten()
        first_real = int(batch["attention_mask"][row].argmax())
        # the 80 (here num_queries) slots come right after the left padding, in order, before the prompt
        assert slots.tolist() == list(range(first_real, first_real + cfg.num_queries))
        torch.testing.assert_close(embeds[row, slots], audio[row])
        others = torch.ones(L, dtype=torch.bool)
        others[slots] = False
        torch.testing.assert_close(embeds[row, others], token_embeds[row, others])


def test_loss_is_cross_entropy_over_answer_tokens_only(tiny, clips):
    model, processor = tiny
    batch = srt_batch(processor, clips)
    with torch.no_grad():
        out = model(**batch)
    logits, labels = out.logits[:, :-1], batch["labels"][:, 1:]
    picked = labels != IGNORE_INDEX
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    manual = -log_probs[picked].gather(-1, labels[picked].unsqueeze(-1)).mean()
    torch.testing.assert_close(out.loss, manual)
    # targets are exactly answer + eos of each example
    for row, (t, tr) in enumerate(zip(["I see cats", "Ich sehe drei rote Katzen", "Je"], ["我看到猫", "我", "我看到三只红色的猫。"])):
        n_targets = int((batch["labels"][row] != IGNORE_INDEX).sum())
        prompt = processor.build_prompt("srt", ["eng", "deu", "fra"][row], "zho")
        full = processor.tokenizer.encode(prompt + processor.build_answer("srt", ["eng", "deu", "fra"][row], "zho", t, tr))
        assert n_targets == len(full) - len(processor.tokenizer.encode(prompt)) + 1
    # changing a prompt token's label cannot matter: it is never a target
    assert int((batch["labels"][:, : model.config.num_queries] != IGNORE_INDEX).sum()) == 0


def test_mlp_sizes_follow_llm_width():
    assert [projector_intermediate_size_for(d) for d in (896, 1536, 2048, 2560, 3584, 5120)] == [0, 0, 1536, 1536, 2560, 2560]
    for size, inner in (("3b", 1536), ("7b", 2560), ("32b", 2560)):
        cfg = LlmSrtConfig.from_preset(size)
        assert cfg.projector_intermediate_size == inner
        assert cfg.projector_config.hidden_size == 768 and cfg.projector_config.num_hidden_layers == 8
        assert cfg.projector_config.encoder_hidden_size == 1280 and cfg.audio_config.num_mel_bins == 128
        assert cfg.num_queries == 80 and cfg.chunk_length_s == 30


def test_two_layer_mlp_projector_shapes(tokenizer):
    model, _ = build_tiny_model_and_processor(tokenizer=tokenizer, projector_intermediate_size=48)
    names = {n: tuple(p.shape) for n, p in model.projector.named_parameters()}
    assert names["linear1.weight"] == (48, 32) and names["linear2.weight"] == (64, 48)
    assert names["norm.weight"] == (64,) and names["query"] == (1, 8, 32) and "linear.weight" not in names


def greedy(model, batch, **kwargs):
    return model.generate(**batch, num_beams=1, max_new_tokens=8, no_repeat_ngram_size=0, **kwargs)


def strip_pad(ids, pad):
    ids = ids.tolist()
    while ids and ids[-1] == pad:
        ids.pop()
    return ids


@pytest.mark.parametrize("num_beams", [1, 3])
def test_batched_left_padded_generation_equals_one_by_one(tiny, clips, num_beams):
    model, processor = tiny
    # SMT prompts of different lengths force left padding
    kwargs = dict(task="smt", src_lang="eng", tgt_lang="deu", sampling_rate=SR)
    transcripts = ["I see", "I see three red cats and two blue dogs", "cats"]
    batch = processor(clips, transcript=transcripts, **kwargs)
    assert (batch["attention_mask"] == 0).any()
    gen = dict(num_beams=num_beams, max_new_tokens=8, no_repeat_ngram_size=0)
    batched = model.generate(**batch, **gen)
    pad = model.generation_config.pad_token_id
    for i, clip in enumerate(clips):
        single = model.generate(**processor([clip], transcript=[transcripts[i]], **kwargs), **gen)
        assert strip_pad(batched[i], pad) == strip_pad(single[0], pad)


def test_generate_returns_only_new_tokens_with_original_defaults(tiny, clips):
    model, processor = tiny
    gc = model.generation_config
    assert (gc.num_beams, gc.max_new_tokens, gc.no_repeat_ngram_size, gc.do_sample) == (5, 400, 5, False)
    assert gc.eos_token_id == processor.tokenizer.eos_token_id == gc.pad_token_id
    batch = srt_batch(processor, clips, with_answers=False)
    out = model.generate(**batch, max_new_tokens=6)  # the defaults: beam search 5
    assert out.shape[0] == len(clips) and out.shape[1] <= 6
    assert not (out == model.config.audio_token_id).any()


class PreferSequence(LogitsProcessor):
    """Pushes generation to emit `sequence` (after n-gram blocking, which it cannot undo: -inf stays -inf)."""

    def __init__(self, sequence):
        self.sequence = sequence

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1]
        if step < len(self.sequence):
            scores = scores.clone()
            scores[:, self.sequence[step]] += 1000.0
        return scores


def test_no_repeat_ngram_ignores_the_prompt(tiny, clips):
    """SPEC: the SRT answer repeats the prompt's tag pair; the prompt must not count as n-gram history."""
    model, processor = tiny
    batch = srt_batch(processor, clips[:1], with_answers=False)
    tags = processor.tokenizer.encode("<|eng|><|zho|>")
    assert len(tags) >= 5
    out = model.generate(**batch, num_beams=1, max_new_tokens=len(tags), no_repeat_ngram_size=5,
                         logits_processor=LogitsProcessorList([PreferSequence(tags)]))
    assert out[0].tolist() == tags


class PreferToken:
    """A forward hook on the LM head that makes one id win every step by a wide margin."""

    def __init__(self, token_id):
        self.token_id = token_id

    def __call__(self, module, args, output):
        output = output.clone()
        output[..., self.token_id] += 1e4
        return output


@pytest.mark.parametrize("num_beams", [1, 5])
def test_placeholder_id_is_never_generated(tiny, clips, num_beams):
    """The audio placeholder is a spare embedding row: even an LLM that prefers it never emits it."""
    model, processor = tiny
    audio_id = model.config.audio_token_id
    batch = srt_batch(processor, clips[:2], with_answers=False)
    handle = model.get_output_embeddings().register_forward_hook(PreferToken(audio_id))
    try:
        with torch.no_grad():
            assert (model(**batch).logits[:, -1].argmax(-1) == audio_id).all()  # the hook does make it win
        out = model.generate(**batch, num_beams=num_beams, num_return_sequences=num_beams, max_new_tokens=5,
                             min_new_tokens=5, no_repeat_ngram_size=0)
    finally:
        handle.remove()
    assert out.shape[1] == 5 and not (out == audio_id).any()


def test_a_continuing_placeholder_id_is_an_ordinary_token(tiny, clips):
    """After the cached prompt every id is an ordinary token (the original's rule): feeding the placeholder id as a
    continuation looks up its embedding row instead of being taken for an audio slot."""
    model, processor = tiny
    audio_id = model.config.audio_token_id
    batch = srt_batch(processor, clips[:2], with_answers=False)
    step = torch.full((2, 1), audio_id)
    mask = torch.cat([batch["attention_mask"], torch.ones(2, 1, dtype=torch.long)], dim=1)
    with torch.no_grad():
        ours = model(**batch, use_cache=True)
        continued = model(input_ids=step, attention_mask=mask, cache=ours.cache, use_cache=True)
        prefix = model(**batch, use_cache=True)
        by_hand = model.language_model(
            inputs_embeds=model.get_input_embeddings()(step), attention_mask=mask, cache=prefix.cache
        )
    torch.testing.assert_close(continued.logits, by_hand.logits)
    with pytest.raises(ValueError, match="Audio goes with the prompt"):
        model(input_ids=step, attention_mask=mask, cache=continued.cache, input_features=batch["input_features"])


def test_text_only_translation(tiny):
    model, processor = tiny
    batch = processor(task="smt", src_lang="eng", tgt_lang="deu", transcript=["hello", "I see"],
                      translation=["hallo", "Ich sehe"])
    with torch.no_grad():
        out = model(**batch)
    assert out.audio_embeds is None and torch.isfinite(out.loss)
    prompt = processor(task="smt", src_lang="eng", tgt_lang="deu", transcript=["hello", "I see three cats"])
    generated = model.generate(**prompt, num_beams=1, max_new_tokens=4, min_new_tokens=4)
    assert generated.shape == (2, 4)


def test_inputs_must_be_consistent(tiny, clips):
    model, processor = tiny
    batch = srt_batch(processor, clips, with_answers=False)
    with pytest.raises(ValueError, match="no input_features"):
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    with pytest.raises(ValueError, match="Batch sizes differ: input_features has 2 rows, input_ids 3"):
        model(input_ids=batch["input_ids"], input_features=batch["input_features"][:2])
    with pytest.raises(ValueError, match="exactly 8 audio slots"):
        model(input_ids=batch["input_ids"][:, 1:], input_features=batch["input_features"])
    with pytest.raises(ValueError, match="input_features must have shape"):
        model(input_ids=batch["input_ids"], input_features=batch["input_features"][..., :100])


def test_frozen_parts_get_no_gradients(tokenizer, clips):
    model, processor = build_tiny_model_and_processor(tokenizer=tokenizer)
    model.train()
    model(**srt_batch(processor, clips)).loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad and all(n.startswith("projector.") for n in with_grad)
    assert with_grad == {n for n, p in model.named_parameters() if n.startswith("projector.")}


def test_lora_adds_only_lora_parameters(tokenizer, clips):
    model, processor = build_tiny_model_and_processor(tokenizer=tokenizer)
    batch = srt_batch(processor, clips)
    before = {n: p.numel() for n, p in model.named_parameters()}
    with torch.no_grad():
        logits_before = model(**batch).logits
    model.enable_lora()
    assert model.config.lora_config == {"r": 8, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}
    after = {n: p.numel() for n, p in model.named_parameters()}
    renamed = {n.replace(".base_layer", "") for n in after}
    added = renamed - set(before)
    assert added and all(".lora_A." in n or ".lora_B." in n for n in added)
    assert all(("q_proj" in n or "v_proj" in n) for n in added)
    assert sum(after.values()) - sum(before.values()) == sum(after[n] for n in after if ".lora_" in n)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in after if n.startswith("projector.") or ".lora_" in n}
    model.eval()
    with torch.no_grad():  # LoRA B starts at zero: the function is unchanged
        torch.testing.assert_close(model(**batch).logits, logits_before)
    model.set_trainable(lora=False)
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".lora_" in n)


def test_gradient_checkpointing_gives_same_gradients(tokenizer, clips):
    model, processor = build_tiny_model_and_processor(tokenizer=tokenizer)
    batch = srt_batch(processor, clips)
    model.train()
    for module in model.modules():  # deterministic runs: no dropout (the Q-Former's attention keeps a float)
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if hasattr(module, "attention_dropout"):
            module.attention_dropout = 0.0
    model(**batch).loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.activation_checkpointing_enable()
    assert model.language_model.model.gradient_checkpointing and model.audio_tower.gradient_checkpointing
    model(**batch).loss.backward()
    assert grads.keys() == {n for n, p in model.named_parameters() if p.grad is not None}
    for n, g in grads.items():
        torch.testing.assert_close(dict(model.named_parameters())[n].grad, g, rtol=1e-4, atol=1e-7)


def test_sdpa_matches_eager_and_bf16_runs(tiny_folder, clips, tiny):
    _, processor = tiny
    batch = srt_batch(processor, clips)
    eager = LlmSrtForConditionalGeneration.from_pretrained(tiny_folder, attn_implementation="eager").eval()
    sdpa = LlmSrtForConditionalGeneration.from_pretrained(tiny_folder, attn_implementation="sdpa").eval()
    assert sdpa.language_model.config._attn_implementation == "sdpa"
    attended = batch["attention_mask"].bool()  # padded positions differ between SDPA and eager by design
    with torch.no_grad():
        torch.testing.assert_close(sdpa(**batch).logits[attended], eager(**batch).logits[attended], rtol=1e-4, atol=1e-4)
    bf16 = LlmSrtForConditionalGeneration.from_pretrained(tiny_folder, dtype=torch.bfloat16).eval()
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        out = bf16(**batch)
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)


def test_full_save_load_round_trip(tiny, tiny_folder, clips):
    model, processor = tiny
    batch = srt_batch(processor, clips)
    loaded = AutoModel.from_pretrained(tiny_folder, trust_remote_code=True).eval()
    loaded_processor = AutoProcessor.from_pretrained(tiny_folder, trust_remote_code=True)
    assert type(loaded).__name__ == "LlmSrtForConditionalGeneration"
    assert os.path.exists(os.path.join(tiny_folder, "model.safetensors"))
    batch2 = loaded_processor(clips, task="srt", src_lang=["eng", "deu", "fra"], tgt_lang="zho",
                              transcript=["I see cats", "Ich sehe drei rote Katzen", "Je"],
                              translation=["我看到猫", "我", "我看到三只红色的猫。"], sampling_rate=SR)
    for key in batch:
        assert torch.equal(batch[key], batch2[key])
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, loaded(**batch2).logits)
    assert loaded.generation_config.num_beams == 5


def test_adapter_only_save_load_round_trip(tokenizer, clips, tmp_path):
    from transformers import WhisperForConditionalGeneration

    model, processor = build_tiny_model_and_processor(seed=3, tokenizer=tokenizer)
    # the encoder inside a full Whisper checkpoint (keys `model.encoder.*`), as openai/whisper-large-v3 ships it
    whisper = WhisperForConditionalGeneration(model.config.audio_config)
    whisper.model.encoder.load_state_dict(model.audio_tower.state_dict())
    whisper.save_pretrained(tmp_path / "whisper")
    model.language_model.save_pretrained(tmp_path / "adapter" / "llm")  # the base LLM, before LoRA
    model.enable_lora(r=4)
    with torch.no_grad():  # make LoRA matter
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_()
    model.config.audio_model_name_or_path = str(tmp_path / "whisper")
    model.config.text_model_name_or_path = "llm"  # relative: resolved inside the checkpoint folder
    model.save_pretrained(tmp_path / "adapter", adapter_only=True)
    processor.save_pretrained(tmp_path / "adapter")

    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "adapter" / "model.safetensors"))
    assert saved and all(is_adapter_key(k) for k in saved)
    assert any(".lora_A." in k for k in saved) and any(k.startswith("projector.qformer.") for k in saved)

    loaded = AutoModel.from_pretrained(str(tmp_path / "adapter"), trust_remote_code=True).eval()
    assert loaded.config.adapter_only and loaded.config.lora_config["r"] == 4
    batch = srt_batch(processor, clips)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, rtol=0, atol=0)


def test_adapter_checkpoint_with_wrong_weights_fails_clearly(tiny, tmp_path):
    model, _ = tiny
    with pytest.raises(ValueError, match="projector.norm.weight"):
        broken = {k: v for k, v in model.state_dict().items() if is_adapter_key(k) and k != "projector.norm.weight"}
        model.load_adapter_state_dict(broken, source="broken.safetensors")
    extra = {k: v for k, v in model.state_dict().items() if is_adapter_key(k)}
    extra["projector.bogus"] = torch.zeros(1)
    with pytest.raises(ValueError, match="keys with no place in the model: \\['projector.bogus'\\]"):
        model.load_adapter_state_dict(extra)
    with pytest.raises(ValueError, match="adapter-only save needs"):
        model.save_pretrained(tmp_path / "x", adapter_only=True)


def test_load_whisper_encoder_from_encoder_only_save(tiny, tmp_path):
    model, _ = tiny
    model.audio_tower.save_pretrained(tmp_path / "enc")
    encoder = load_whisper_encoder(str(tmp_path / "enc"))
    for (n, a), (_, b) in zip(model.audio_tower.state_dict().items(), encoder.state_dict().items()):
        assert torch.equal(a, b), n


@pytest.mark.integration
def test_remote_code_load_without_package(tiny_folder, clips, tiny):
    """A saved folder loads and runs in a Python where `llm_srt` cannot be imported."""
    model, processor = tiny
    batch = srt_batch(processor, clips[:1], with_answers=False)
    with torch.no_grad():
        expected = model(**batch).logits[0, -1, :5].tolist()
    script = textwrap.dedent(f"""
        import sys
        sys.modules["llm_srt"] = None  # block the package, installed or on the path
        try:
            import llm_srt
            raise SystemExit("llm_srt is importable: the test would prove nothing")
        except ImportError:
            pass
        import numpy as np, torch
        from transformers import AutoModel, AutoProcessor
        model = AutoModel.from_pretrained({tiny_folder!r}, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained({tiny_folder!r}, trust_remote_code=True)
        audio = np.load({str(tiny_folder + "/clip.npy")!r})
        batch = processor([audio], task="srt", src_lang="eng", tgt_lang="zho", sampling_rate=16000)
        with torch.no_grad():
            print(model(**batch).logits[0, -1, :5].tolist())
    """)
    import numpy as np

    np.save(tiny_folder + "/clip.npy", clips[0])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", script], cwd="/", env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    got = eval(result.stdout.strip().splitlines()[-1])
    assert got == pytest.approx(expected, abs=1e-5)


def test_small_gpu_loading_options_on_cpu(tiny, tiny_folder, clips):
    from transformers import BitsAndBytesConfig

    _, processor = tiny
    batch = srt_batch(processor, clips[:1])
    model = AutoModel.from_pretrained(tiny_folder, trust_remote_code=True, device_map="auto", dtype=torch.bfloat16)
    assert model.device.type == "cpu" and model.dtype == torch.bfloat16
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)
    if not torch.cuda.is_available():  # refused up front, with the reason and the alternative
        with pytest.raises(ValueError, match="needs a CUDA GPU.*dtype=torch.bfloat16"):
            AutoModel.from_pretrained(tiny_folder, trust_remote_code=True,
                                      quantization_config=BitsAndBytesConfig(load_in_8bit=True))
    config = LlmSrtForConditionalGeneration.prepare_quantization
    assert config(None) is None
