import numpy as np
import pytest
import torch

from llm_srt import normalize_language
from llm_srt.languages_llm_srt import LANGUAGES
from llm_srt.processing_llm_srt import IGNORE_INDEX


SR = 16000


def original_example(tokenizer, prompt, answer, audio_length, inference):
    """The original `SpeechDatasetJsonl.__getitem__` (SPEC): ids of `[audio -1s][prompt][answer][eos]` and labels."""
    prompt_ids = tokenizer.encode(prompt)
    if inference:
        return [-1] * audio_length + prompt_ids, None, audio_length + len(prompt_ids)
    ids = tokenizer.encode(prompt + answer) + [tokenizer.eos_token_id]
    ids = [-1] * audio_length + ids
    labels = [IGNORE_INDEX] * (audio_length + len(prompt_ids)) + ids[audio_length + len(prompt_ids):]
    return ids, labels, audio_length + len(prompt_ids)


def original_collate(tokenizer, examples):
    """The original collator: left-pad the [audio+prompt] block, right-pad the answer block."""
    prompt_max = max(e[2] for e in examples)
    answer_max = max(len(e[0]) - e[2] for e in examples)
    ids, masks, labels = [], [], []
    for seq, lab, plen in examples:
        left, right = prompt_max - plen, answer_max - (len(seq) - plen)
        pad = tokenizer.pad_token_id
        ids.append([pad] * left + seq + [pad] * right)
        masks.append([0] * left + [1] * len(seq) + [0] * right)  # `ge(-1)`: audio slots count as attended
        if lab is not None:
            labels.append([IGNORE_INDEX] * left + lab + [IGNORE_INDEX] * right)
    return ids, masks, labels


def original_rows(src, tgt, transcript, translation):
    """A data row stored in SRT form, and the (prompt, answer) each task derives from it, as the original does."""
    prompt = f"<|{src}|><|{tgt}|>"
    gt = f"{transcript}{prompt}{translation}"
    return {
        "srt": (prompt, gt),
        "asr": (prompt[:7], gt.split(prompt)[0]),
        "smt": (gt.split(prompt)[0] + prompt, gt.split(prompt)[1]),
    }


def assert_matches_original(processor, clips, task, rows, inference):
    """The processor's batch equals the original dataset + collator on `rows` of (src, tgt, transcript, translation)."""
    tok = processor.tokenizer
    examples = []
    for src, tgt, transcript, translation in rows:
        tags = (processor.tag(src)[2:-2], processor.tag(tgt)[2:-2])
        prompt, answer = original_rows(*tags, transcript, translation)[task]
        examples.append(original_example(tok, prompt, answer, processor.num_audio_tokens, inference))
    ids, masks, labels = original_collate(tok, examples)
    expected_ids = torch.tensor(ids)
    expected_ids[expected_ids == -1] = processor.audio_token_id

    audio = [clips[i % len(clips)] for i in range(len(rows))]
    batch = processor(
        audio, task=task, src_lang=[r[0] for r in rows], tgt_lang=[r[1] for r in rows],
        transcript=None if (inference and task != "smt") else [r[2] for r in rows],
        translation=None if inference else [r[3] for r in rows], sampling_rate=SR,
    )
    assert batch["input_ids"].tolist() == expected_ids.tolist()
    assert torch.equal(batch["attention_mask"], torch.tensor(masks))
    if inference:
        assert "labels" not in batch
    else:
        assert batch["labels"].tolist() == labels
    return batch


@pytest.mark.parametrize("task", ["asr", "smt", "srt"])
@pytest.mark.parametrize("inference", [False, True])
def test_batch_matches_original_dataset_and_collator(tiny, clips, task, inference):
    rows = [("eng", "deu", "I see three red cats.", "Ich sehe drei rote Katzen."),
            ("fra", "zho", "Je vois", "我看到三只红色的猫。"),
            ("jpn", "eng", "赤い猫が三匹見えます。", "I see three red cats and two blue dogs.")]
    assert_matches_original(tiny[1], clips, task, rows, inference)


# Qwen2.5's BPE merges these answer-initial characters with the prompt's last `>` (`>"`, `>(`, `>\n`, ...).
MERGING_STARTS = ['"', "'", "(", "-", ".", ",", "[", "\n"]


@pytest.mark.parametrize("start", MERGING_STARTS)
@pytest.mark.parametrize("task", ["asr", "smt", "srt"])
def test_answers_starting_with_a_merging_character_keep_it(tiny, clips, task, start):
    """SPEC "label boundary": the input is the joint encode(prompt + answer); nothing of the answer is dropped."""
    _, processor = tiny
    tok = processor.tokenizer
    rows = [("eng", "deu", f'{start}Yes," he said.', f'{start}Ja," sagte er.'),
            ("eng", "fra", f"{start}laughs) hello", f"{start}rires) bonjour"),
            ("deu", "eng", "kurz", "short")]
    prompt = processor.build_prompt(task, "eng", "deu", rows[0][2])
    answer = processor.build_answer(task, "eng", "deu", rows[0][2], rows[0][3])
    prompt_ids = tok.encode(prompt)
    assert tok.encode(prompt + answer)[: len(prompt_ids)] != prompt_ids  # the boundary merge this test is about
    batch = assert_matches_original(processor, clips, task, rows, inference=False)
    for row, (src, tgt, transcript, translation) in enumerate(rows):
        attended = batch["input_ids"][row][batch["attention_mask"][row].bool()]
        text = tok.decode([i for i in attended.tolist() if i != processor.audio_token_id])
        prompt = processor.build_prompt(task, src, tgt, transcript)
        assert text == prompt + processor.build_answer(task, src, tgt, transcript, translation) + tok.eos_token


@pytest.mark.parametrize("ending", [".", "?", "。", " ", "ฉันเห็นแมว", "고양이"])
@pytest.mark.parametrize("task", ["smt", "srt"])
def test_transcript_endings_tokenize_the_tags_as_the_original(tiny, clips, task, ending):
    """A transcript ending in `.`, `?`, `。`, a space, Thai or Korean changes how the tag pair after it tokenizes
    (`.<`, `Ġ<|`); the processor reproduces the original's joint tokenization in prompt (smt) and answer (srt)."""
    rows = [("eng", "deu", f"I see three cats{ending}", "Ich sehe drei Katzen."),
            ("tha", "kor", f"ฉันเห็น{ending}", "고양이가 보여요"),
            ("kor", "zho", f"고양이{ending}", "我看到猫。")]
    for inference in (False, True):
        assert_matches_original(tiny[1], clips, task, rows, inference)


SCRIPTS = {
    "deu": "Größe über Straße, „sagte“ er.", "eng": "I see three red cats.", "fra": "Où êtes-vous ? « Ici ! »",
    "ind": "Saya melihat tiga kucing.", "ita": "Perché è così? Sì.", "jpn": "赤い猫が三匹見えます。",
    "kor": "빨간 고양이 세 마리가 보여요.", "nld": "Ik zie drie rode katten.", "por": "Eu vejo três gatos, não?",
    "rus": "Я вижу трёх красных котов.", "spa": "¿Dónde están? ¡Aquí!", "tha": "ฉันเห็นแมวสีแดงสามตัว",
    "vie": "Tôi thấy ba con mèo đỏ.", "yue": "我見到三隻紅色嘅貓。", "zho": "我看到三只红色的猫。",
}


@pytest.mark.parametrize("mandarin_tag", ["zho", "cmn"])
@pytest.mark.parametrize("task", ["asr", "smt", "srt"])
def test_every_languages_script_matches_the_original(tokenizer, clips, task, mandarin_tag):
    from llm_srt.testing import build_tiny_processor, tiny_config

    processor = build_tiny_processor(tiny_config(len(tokenizer), mandarin_tag=mandarin_tag), tokenizer)
    codes = list(SCRIPTS)
    rows = [(src, codes[(i + 5) % len(codes)], SCRIPTS[src], SCRIPTS[codes[(i + 5) % len(codes)]])
            for i, src in enumerate(codes)]
    rows.append(("cmn", "zh", SCRIPTS["zho"], SCRIPTS["zho"]))  # Mandarin by its other names
    for inference in (False, True):
        batch = assert_matches_original(processor, clips, task, rows, inference)
    text = processor.tokenizer.decode(batch["input_ids"][-1][batch["attention_mask"][-1].bool()][processor.num_audio_tokens:])
    assert text.startswith(f"<|{mandarin_tag}|>") or f"<|{mandarin_tag}|><|{mandarin_tag}|>" in text


def test_prompts_are_the_papers(tiny):
    _, processor = tiny
    assert processor.build_prompt("asr", "eng") == "<|eng|>"
    assert processor.build_prompt("srt", "eng", "deu") == "<|eng|><|deu|>"
    assert processor.build_prompt("smt", "eng", "deu", transcript="hello") == "hello<|eng|><|deu|>"
    assert processor.build_answer("srt", "eng", "deu", "hello", "hallo") == "hello<|eng|><|deu|>hallo"
    assert processor.build_answer("asr", "eng", None, "hello", None) == "hello"
    assert processor.build_answer("smt", "eng", "deu", "hello", "hallo") == "hallo"


def test_tags_are_plain_text_not_added_tokens(tiny):
    _, processor = tiny
    tok = processor.tokenizer
    assert "<|eng|>" not in tok.get_vocab()
    assert len(tok.encode("<|eng|>")) > 1
    assert tok.decode(tok.encode("abc<|eng|><|deu|>xyz")) == "abc<|eng|><|deu|>xyz"


def test_labels_keep_eos_target_although_pad_is_eos(tiny, clips):
    _, processor = tiny
    tok = processor.tokenizer
    assert tok.pad_token_id == tok.eos_token_id
    batch = processor(clips[:2], task="asr", src_lang="eng", transcript=["a", "a much longer transcript"],
                      sampling_rate=SR)
    for row_ids, row_labels, row_mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
        targets = row_labels[row_labels != IGNORE_INDEX]
        assert targets[-1].item() == tok.eos_token_id  # the model learns to stop
        # every target position is attended; padding is never a target
        assert bool((row_mask[row_labels != IGNORE_INDEX] == 1).all())
    # the shorter row is right-padded after its eos
    assert batch["attention_mask"][0, -1].item() == 0


def test_language_aliases_and_mandarin_names(tiny):
    _, processor = tiny
    assert normalize_language("en") == normalize_language("English") == normalize_language("<|eng|>") == "eng"
    assert normalize_language("cmn") == normalize_language("zh") == "zho"
    assert processor.tag("cmn") == "<|zho|>"  # emits the tag the model was trained with
    assert len(LANGUAGES) == 15


def test_mandarin_tag_cmn(tokenizer):
    from llm_srt.testing import build_tiny_processor, tiny_config

    processor = build_tiny_processor(tiny_config(len(tokenizer), mandarin_tag="cmn"), tokenizer)
    assert processor.build_prompt("srt", "zho", "eng") == "<|cmn|><|eng|>"
    assert processor.build_prompt("asr", "Mandarin") == "<|cmn|>"


def test_text_only_smt_has_no_audio_slots(tiny):
    _, processor = tiny
    batch = processor(task="smt", src_lang="eng", tgt_lang="deu", transcript=["hello", "I see three cats"])
    assert "input_features" not in batch
    assert not (batch["input_ids"] == processor.audio_token_id).any()
    expected = processor.tokenizer.encode("I see three cats<|eng|><|deu|>")
    assert batch["input_ids"][1].tolist() == expected


def _task_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.endswith("processing_llm_srt")]


def test_smt_without_audio_warns_that_the_paper_s_smt_carries_the_audio(tiny, clips, caplog, monkeypatch):
    """The paper's SMT is speech-aided: the audio AND its transcript (the trained models loop on text alone), so a
    text-only SMT request is prepared (it has uses) with a warning saying so, once; with the audio, no warning."""
    import logging

    from llm_srt import processing_llm_srt

    monkeypatch.setattr(processing_llm_srt, "_WARNED", set())
    _, processor = tiny
    with caplog.at_level(logging.WARNING):
        processor(clips[0], task="smt", src_lang="eng", tgt_lang="deu", transcript="hello", sampling_rate=SR)
        assert _task_warnings(caplog) == []
        for _ in range(2):
            processor(task="smt", src_lang="eng", tgt_lang="deu", transcript="hello")
    warnings = _task_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "without audio" in warnings[0] and "transcript" in warnings[0] and "speech-aided" in warnings[0]


def test_a_transcript_given_for_srt_inference_is_named_as_ignored(tiny, clips, caplog, monkeypatch):
    """SRT prompts hold no transcript: `transcript=` without `translation=` (inference) would be dropped silently;
    it is prepared with a warning pointing to task='smt'. Training examples (both given) do not warn."""
    import logging

    from llm_srt import processing_llm_srt

    monkeypatch.setattr(processing_llm_srt, "_WARNED", set())
    _, processor = tiny
    with caplog.at_level(logging.WARNING):
        processor(clips[0], task="srt", src_lang="eng", tgt_lang="deu", transcript="hello", translation="hallo",
                  sampling_rate=SR)
        assert _task_warnings(caplog) == []
        plain = processor(clips[0], task="srt", src_lang="eng", tgt_lang="deu", sampling_rate=SR)
        given = processor(clips[0], task="srt", src_lang="eng", tgt_lang="deu", transcript="hello", sampling_rate=SR)
    assert torch.equal(plain["input_ids"], given["input_ids"])  # the transcript really is not used
    warnings = _task_warnings(caplog)
    assert len(warnings) == 1 and "ignored" in warnings[0] and "task='smt'" in warnings[0], warnings


def test_the_pipeline_refusing_smt_says_what_smt_is_and_where_it_runs(tiny):
    from llm_srt.pipeline_llm_srt import SpeechTranslationPipeline

    model, processor = tiny
    pipe = SpeechTranslationPipeline(model=model, processor=processor)
    with pytest.raises(ValueError) as error:
        pipe({"array": np.zeros(SR, np.float32), "sampling_rate": SR}, src_lang="eng", tgt_lang="deu", task="smt")
    message = str(error.value)
    assert "audio and its transcript" in message and "processor(" in message and "transcript=" in message


def test_features_are_whisper_log_mel(tiny, clips):
    _, processor = tiny
    batch = processor(clips[:1], task="asr", src_lang="eng", sampling_rate=SR)
    fe = processor.feature_extractor
    direct = fe(clips[0], sampling_rate=SR, return_tensors="np")["input_features"]
    assert batch["input_features"].shape == (1, fe.feature_size, fe.nb_max_frames)
    np.testing.assert_allclose(batch["input_features"].numpy(), direct, atol=1e-6)


def test_split_srt_output(tiny):
    _, processor = tiny
    good = processor.split_srt_output("I see cats<|eng|><|deu|>Ich sehe Katzen", "eng", "deu")
    assert good == {"transcript": "I see cats", "translation": "Ich sehe Katzen",
                    "raw": "I see cats<|eng|><|deu|>Ich sehe Katzen", "well_formed": True}
    bad = processor.split_srt_output("I see cats Ich sehe Katzen", "eng", "deu")
    assert bad["raw"] == "I see cats Ich sehe Katzen" and bad["well_formed"] is False
    assert bad["transcript"] is None and bad["translation"] == "I see cats Ich sehe Katzen"
    partial = processor.split_srt_output("I see cats<|eng|>Ich sehe", "eng", "deu")
    assert partial["translation"] == "Ich sehe" and partial["raw"] == "I see cats<|eng|>Ich sehe"


def test_post_process_decodes_generated_ids(tiny):
    _, processor = tiny
    ids = processor.tokenizer(["hi<|eng|><|fra|>salut", "oops"], padding=True, return_tensors="pt")["input_ids"]
    results = processor.post_process(ids, task="srt", src_lang="eng", tgt_lang="fra")
    assert results[0]["transcript"] == "hi" and results[0]["translation"] == "salut"
    assert results[1]["raw"] == "oops" and not results[1]["well_formed"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(src_lang="klingon", tgt_lang="deu"), "Unsupported language 'klingon'.*eng \\(English\\)"),
        (dict(src_lang="eng", tgt_lang="xx"), "Unsupported language 'xx'.*deu \\(German\\)"),
        (dict(src_lang="eng", tgt_lang="deu", sampling_rate=8000), "8000 Hz.*16000 Hz"),
        (dict(src_lang="eng", tgt_lang="deu", sampling_rate=None), "sampling_rate"),
        (dict(src_lang="eng", tgt_lang=["deu", "fra"]), "2 values for tgt_lang.*3 examples"),
        (dict(src_lang="eng", tgt_lang="deu", transcript=["a"], translation=["b", "c", "d"]), "1 values for transcript"),
        (dict(src_lang="eng"), "needs a target language"),
        (dict(tgt_lang="deu"), "src_lang"),
        (dict(src_lang="eng", tgt_lang="deu", task="summarize"), "Unknown task 'summarize'"),
    ],
)
def test_bad_requests_raise_clear_errors(tiny, clips, kwargs, message):
    _, processor = tiny
    kwargs = {"sampling_rate": SR, **kwargs}
    with pytest.raises(ValueError, match=message):
        processor(clips, **kwargs)


@pytest.mark.parametrize(
    "audio, message",
    [
        (np.zeros(0, dtype=np.float32), r"audio\[1\] is empty"),
        (np.full(1600, np.nan, dtype=np.float32), r"audio\[1\] contains NaN"),
        # a 2-D array is one multi-channel clip (mixed down; see test_bad_input_audio.py); 3-D is refused
        (np.zeros((2, 2, 1600), dtype=np.float32), r"audio\[1\]: audio must be 1-D samples or 2-D"),
        (np.zeros(SR * 3, dtype=np.float32), r"audio\[1\] lasts 3.0 s, longer than the model's 2 s window.*pipeline"),
    ],
)
def test_bad_audio_raises_naming_the_clip(tiny, clips, audio, message):
    _, processor = tiny
    with pytest.raises(ValueError, match=message):
        processor([clips[0], audio], task="asr", src_lang="eng", sampling_rate=SR)


def test_empty_batch_and_single_clip(tiny, clips):
    _, processor = tiny
    with pytest.raises(ValueError, match="The batch is empty"):
        processor([], task="asr", src_lang="eng", sampling_rate=SR)
    single = processor(clips[0], task="asr", src_lang="eng", sampling_rate=SR)
    assert single["input_features"].shape[0] == 1
    assert torch.equal(single["input_ids"], processor([clips[0]], task="asr", src_lang="eng", sampling_rate=SR)["input_ids"])


def test_audio_token_id_must_be_spare(tokenizer):
    from transformers import WhisperFeatureExtractor

    from llm_srt import LlmSrtProcessor

    with pytest.raises(ValueError, match="can emit"):
        LlmSrtProcessor(WhisperFeatureExtractor(feature_size=80), tokenizer, audio_token_id=5)


def test_demo_tokenizer_never_merges_across_the_prompt():
    """The offline demo keeps its own small BPE: its joint prompt + answer encodings split at the prompt exactly, so
    the demo's figures (README) do not depend on the label-boundary rule."""
    import itertools

    from llm_srt.testing import build_tiny_processor, build_tiny_tokenizer, tiny_config
    from llm_srt.training.demo_corpus import sentence

    languages = ["eng", "deu", "fra"]
    grid = list(itertools.product(range(9), range(6), range(6)))
    tokenizer = build_tiny_tokenizer(sorted({sentence(l, *g) for l in languages for g in grid}), vocab_size=600)
    processor = build_tiny_processor(tiny_config(len(tokenizer)), tokenizer)
    checked = 0
    for src, tgt in itertools.permutations(languages, 2):
        for g in grid:
            transcript, translation = sentence(src, *g), sentence(tgt, *g)
            for task in ("asr", "smt", "srt"):
                prompt = processor.build_prompt(task, src, tgt, transcript)
                answer = processor.build_answer(task, src, tgt, transcript, translation)
                prompt_ids = tokenizer.encode(prompt)
                assert tokenizer.encode(prompt + answer)[: len(prompt_ids)] == prompt_ids, (task, prompt, answer)
                checked += 1
    assert checked == 5832


def test_a_target_equal_to_its_source_is_prepared_with_the_warning_every_entry_point_gives(tiny, clips, caplog):
    """processor(task="srt", src_lang="eng", tgt_lang="eng") went on without a word, where the pipeline, the CLI,
    the server and training warn (`normalize_targets`)."""
    import logging

    _, processor = tiny
    with caplog.at_level(logging.WARNING):
        processor(clips[0], task="asr", src_lang="eng", sampling_rate=SR)
        assert "spoken language" not in caplog.text
        batch = processor([clips[0], clips[1]], task="srt", src_lang="eng", tgt_lang=["English", "deu"],
                          sampling_rate=SR)
    assert len(batch["input_ids"]) == 2
    same = [r.getMessage() for r in caplog.records if "is the spoken language" in r.getMessage()]
    assert len(same) == 1 and "tgt_lang eng" in same[0], same
