"""One audio into many targets with the transcript decoded once (`generate_many_targets(shared_transcript=True)`)."""

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from llm_srt.generation_llm_srt import generate_many_targets
from llm_srt.testing import synthetic_speech


TARGETS = ["deu", "fra", "jpn"]
GREEDY = {"num_beams": 1, "do_sample": False, "no_repeat_ngram_size": 0, "max_new_tokens": 12}


def hand_greedy(model, processor, block: list[int], audio_embeds: torch.Tensor, max_new_tokens: int,
                stop_text: str | None = None) -> list[int]:
    """Greedy decoding written out: the LLM on `[audio][block]`, then argmax token by token with the KV cache,
    until eos, `max_new_tokens`, or (when given) the decoded text ending with `stop_text`."""
    ids = torch.tensor([block])
    embeds, _ = model.embed_inputs(ids, audio_embeds=audio_embeds)
    out = model.language_model(inputs_embeds=embeds, use_cache=True)
    new = []
    for _ in range(max_new_tokens):
        token = int(out.logits[0, -1].argmax())
        new.append(token)
        if token == processor.eos_token_id:
            break
        if stop_text is not None and processor.decode(new).endswith(stop_text):
            break
        step = model.get_input_embeddings()(torch.tensor([[token]]))
        out = model.language_model(inputs_embeds=step, cache=out.cache, use_cache=True)
    return new


def strip_pad(row: torch.Tensor, processor) -> list[int]:
    ids = row.tolist()
    eos = processor.eos_token_id
    return ids[: ids.index(eos) + 1] if eos in ids else ids


def assert_row(row: torch.Tensor, expected: list[int], processor, what: str) -> None:
    """The row is `expected`, then only padding."""
    ids = row.tolist()
    assert ids[: len(expected)] == expected, what
    assert set(ids[len(expected):]) <= {processor.pad_token_id}, what


def test_forced_prefix_is_the_joint_training_encoding(tiny):
    """The second step's input is what the processor builds for a training example with that answer start: Qwen's
    BPE merges `.<` across transcript and tag, so encoding the parts apart would feed ids the model never saw."""
    model, processor = tiny
    transcript = "Hello world."
    blocks, prefixes = processor.forced_answer_inputs("eng", TARGETS, [transcript])
    assert len(blocks) == len(prefixes) == len(TARGETS)
    tok = processor.tokenizer
    for block, prefix, tgt in zip(blocks, prefixes, TARGETS):
        # A translation starting with a letter does not merge with the tag's `>`, so the training ids begin with
        # exactly the forced-prefix input.
        training = processor.prepare_text("srt", ["eng"], [tgt], [transcript], ["Hallo Welt."])["input_ids"][0]
        assert block == training[: len(block)]
        assert block[: processor.num_audio_tokens] == [model.config.audio_token_id] * processor.num_audio_tokens
        pair = processor.tag("eng") + processor.tag(tgt)
        assert processor.decode(prefix) == transcript + pair
        naive = tok.encode(processor.build_prompt("srt", "eng", tgt)) + tok.encode(transcript) + tok.encode(pair)
        assert block[processor.num_audio_tokens:] != naive  # the parts encoded apart differ: the test can fail


def test_shared_transcript_equals_forced_prefix_decode_by_hand(tiny):
    """Given transcripts, every (audio, target) row is the forced prefix plus a greedy decode done by hand."""
    model, processor = tiny
    audio = [synthetic_speech(0.8, seed=1), synthetic_speech(1.2, seed=2)]
    features = processor.extract_features(audio, 16000)
    transcripts = ["Hello world.", "Ich sehe drei Katzen"]
    out = generate_many_targets(model, processor, "eng", TARGETS, input_features=features, transcripts=transcripts,
                                      **GREEDY)
    assert out.shape[0] == len(audio) * len(TARGETS)
    audio_embeds = model.get_audio_features(features)
    blocks, prefixes = processor.forced_answer_inputs("eng", TARGETS, transcripts)
    for row in range(out.shape[0]):
        a = row // len(TARGETS)
        expected = prefixes[row] + hand_greedy(model, processor, blocks[row], audio_embeds[a:a + 1],
                                               GREEDY["max_new_tokens"])
        assert_row(out[row], expected, processor, f"row {row}")
    decoded = processor.post_process(out, "srt", "eng", TARGETS * len(audio))
    assert [d["transcript"] for d in decoded] == [t for t in transcripts for _ in TARGETS]
    assert all(d["well_formed"] for d in decoded)


def test_independent_mode_is_one_generate_batch(tiny):
    """`shared_transcript=False` decodes every row on its own: the same as `generate` on the processor's prompts."""
    model, processor = tiny
    audio = [synthetic_speech(1.0, seed=3)]
    features = processor.extract_features(audio, 16000)
    out = generate_many_targets(model, processor, "eng", TARGETS, input_features=features, shared_transcript=False,
                                      **GREEDY)
    text = processor.prepare_text("srt", ["eng"] * 3, TARGETS, [None] * 3, [None] * 3)
    ref = model.generate(input_ids=torch.tensor(text["input_ids"]), attention_mask=torch.tensor(text["attention_mask"]),
                         input_features=features.repeat(3, 1, 1), **GREEDY)
    for row in range(3):
        assert strip_pad(out[row], processor) == strip_pad(ref[row], processor)


def test_no_tag_pair_falls_back_to_independent_decoding(tiny):
    """A random model never writes the tag pair: nothing is lost, the rows are the independent decode."""
    model, processor = tiny
    features = processor.extract_features([synthetic_speech(1.0, seed=4)], 16000)
    shared = generate_many_targets(model, processor, "eng", TARGETS, input_features=features, **GREEDY)
    independent = generate_many_targets(model, processor, "eng", TARGETS, input_features=features,
                                              shared_transcript=False, **GREEDY)
    assert [strip_pad(r, processor) for r in shared] == [strip_pad(r, processor) for r in independent]


class TranscribesFirst(LogitsProcessor):
    """Stands in for a trained model in the first `generate` call only: forces `answer` token by token (then eos),
    as a model that hears the audio would write it. Later calls (the translation step) decode freely. A call
    starts where no token has been generated yet (the LLM sees only embeddings), which is how calls are counted."""

    def __init__(self, answer: list[int], eos: int):
        self.answer, self.eos, self.calls, self.first_call_steps = answer, eos, 0, 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1]
        if step == 0:
            self.calls += 1
        if self.calls != 1:
            return scores
        self.first_call_steps = step + 1
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.answer[step] if step < len(self.answer) else self.eos] = 0.0
        return forced


@pytest.mark.parametrize("num_beams", [1, 3])
def test_shared_transcript_end_to_end_equals_two_step_decode_by_hand(tiny, num_beams):
    """The first step stops at the source tag ending the transcript, and the transcript it heard is fed to every
    target with its tag pair as the forced prefix, in one batch: each row equals the forced prefix plus a greedy decode done by hand."""
    model, processor = tiny
    transcript = "Hello world."
    pair = processor.tag("eng") + processor.tag(TARGETS[0])
    answer = processor.tokenizer.encode(" " + transcript + pair + "Hallo Welt.")
    forcing = TranscribesFirst(answer, processor.eos_token_id)
    features = processor.extract_features([synthetic_speech(1.0, seed=5)], 16000)
    kwargs = {**GREEDY, "num_beams": num_beams}
    out = generate_many_targets(model, processor, "eng", TARGETS, input_features=features,
                                      logits_processor=LogitsProcessorList([forcing]), **kwargs)
    assert forcing.calls == 2  # the first target's transcript, then every translation in one batch
    # The first step ended with the first token that completes the source tag (the transcript's end), not at the
    # tag pair or eos: the target tags are forced.
    stop = next(k for k in range(1, len(answer) + 1) if processor.tag("eng") in processor.decode(answer[:k]))
    assert stop < len(processor.tokenizer.encode(" " + transcript + pair))
    assert forcing.first_call_steps == stop
    decoded = processor.post_process(out, "srt", "eng", TARGETS)
    assert [d["transcript"] for d in decoded] == [transcript] * len(TARGETS)  # stripped, as in training
    if num_beams == 1:
        audio_embeds = model.get_audio_features(features)
        blocks, prefixes = processor.forced_answer_inputs("eng", TARGETS, [transcript])
        for row, tgt in enumerate(TARGETS):
            expected = prefixes[row] + hand_greedy(model, processor, blocks[row], audio_embeds,
                                                   GREEDY["max_new_tokens"])
            assert_row(out[row], expected, processor, tgt)


def test_bad_arguments_are_named(tiny):
    model, processor = tiny
    features = processor.extract_features([synthetic_speech(1.0, seed=6)], 16000)
    with pytest.raises(ValueError, match="tgt_langs is empty"):
        generate_many_targets(model, processor, "eng", [], input_features=features)
    with pytest.raises(ValueError, match="exactly one of input_features and audio_embeds"):
        generate_many_targets(model, processor, "eng", TARGETS)
    with pytest.raises(ValueError, match="2 transcripts for 1 audio"):
        generate_many_targets(model, processor, "eng", TARGETS, input_features=features, transcripts=["a", "b"])
    with pytest.raises(ValueError, match="num_return_sequences"):
        generate_many_targets(model, processor, "eng", TARGETS, input_features=features, num_return_sequences=2)


@pytest.mark.parametrize("option", [{"shared_transcript": True}, {}])
def test_pipeline_shares_the_transcript_by_default(tiny, option):
    """`pipe(..., tgt_lang=[...])` (and `shared_transcript=True`) decodes the transcript once (two `generate` calls
    for three targets) and gives every target the transcript heard; `shared_transcript=False` decodes each target
    whole (one call, the transcript written three times)."""
    from llm_srt import SpeechTranslationPipeline

    model, processor = tiny
    pipe = SpeechTranslationPipeline(model=model, processor=processor)
    transcript = "Hello world."
    pair = processor.tag("eng") + processor.tag(TARGETS[0])
    forcing = TranscribesFirst(processor.tokenizer.encode(transcript + pair + "Hallo."), processor.eos_token_id)
    out = pipe(synthetic_speech(1.0, seed=7), sampling_rate=16000, src_lang="eng", tgt_lang=TARGETS,
               generate_kwargs={**GREEDY, "logits_processor": LogitsProcessorList([forcing])}, **option)
    assert forcing.calls == 2
    assert [o["tgt_lang"] for o in out] == TARGETS
    assert [o["transcript"] for o in out] == [transcript] * len(TARGETS)
    forcing = TranscribesFirst(processor.tokenizer.encode(transcript + pair + "Hallo."), processor.eos_token_id)
    pipe(synthetic_speech(1.0, seed=7), sampling_rate=16000, src_lang="eng", tgt_lang=TARGETS,
         generate_kwargs={**GREEDY, "logits_processor": LogitsProcessorList([forcing])}, shared_transcript=False)
    # one call whose rows write the whole answer (here up to max_new_tokens), not stopping at the source tag
    assert forcing.calls == 1 and forcing.first_call_steps == GREEDY["max_new_tokens"]


# ------------------------------------------------------------------------------------------- prefix KV cache
def record_llm_input_lengths(model) -> tuple[list[int], object]:
    """Sequence length the LLM is run on at every call (prefix, prefills, decode steps), via a forward hook."""
    lengths = []
    handle = model.language_model.register_forward_hook(
        lambda module, args, kwargs, out: lengths.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True)
    return lengths, handle


def test_shared_prefix_is_computed_once_and_only_the_rest_prefilled(tiny):
    """The audio and the prompt start every target shares run through the LLM once; the translation step prefills
    only what follows it (rows of different lengths padded after the prefix), and the answers still equal the
    hand decode of the whole block."""
    model, processor = tiny
    features = processor.extract_features([synthetic_speech(0.9, seed=11), synthetic_speech(1.1, seed=12)], 16000)
    transcripts = ["Hello world.", '"Quoted," she said.']
    prefix = processor.shared_prompt_prefix("srt", "eng", TARGETS)
    blocks, prefixes = processor.forced_answer_inputs("eng", TARGETS, transcripts)
    assert len({len(b) for b in blocks}) > 1  # the padding really goes in the middle of some rows
    lengths, handle = record_llm_input_lengths(model)
    try:
        out = generate_many_targets(model, processor, "eng", TARGETS, input_features=features,
                                    transcripts=transcripts, **GREEDY)
    finally:
        handle.remove()
    assert lengths[0] == len(prefix) > processor.num_audio_tokens
    assert lengths[1] == max(len(b) for b in blocks) - len(prefix)
    assert set(lengths[2:]) == {1}
    audio_embeds = model.get_audio_features(features)
    for row in range(out.shape[0]):
        a = row // len(TARGETS)
        expected = prefixes[row] + hand_greedy(model, processor, blocks[row], audio_embeds[a:a + 1],
                                               GREEDY["max_new_tokens"])
        assert_row(out[row], expected, processor, f"row {row}")


@pytest.mark.parametrize("num_beams", [1, 3])
def test_generate_from_a_prefix_cache_equals_a_whole_prefill(tiny, num_beams):
    """`model.generate(..., cache=prefix_cache)` on blocks padded after the prefix gives the tokens of the plain
    left-padded call, greedy and with beams (the cache is expanded per beam)."""
    from llm_srt.generation_llm_srt import prefix_cache

    model, processor = tiny
    features = processor.extract_features([synthetic_speech(1.0, seed=13)], 16000)
    audio = model.get_audio_features(features)
    blocks, _ = processor.forced_answer_inputs("eng", TARGETS, ["I see three cats."])
    prefix = processor.shared_prompt_prefix("srt", "eng", TARGETS)
    rows = torch.zeros(len(blocks), dtype=torch.long)
    kwargs = {**GREEDY, "num_beams": num_beams}
    plain = processor.pad_prompt_blocks(blocks)
    expected = model.generate(input_ids=torch.tensor(plain["input_ids"]),
                              attention_mask=torch.tensor(plain["attention_mask"]), audio_embeds=audio[rows], **kwargs)
    cache = prefix_cache(model, prefix, audio[rows])
    padded = processor.pad_prompt_blocks(blocks, len(prefix))
    assert all(ids[: len(prefix)] == prefix for ids in padded["input_ids"])
    assert any(0 in mask[len(prefix):] for mask in padded["attention_mask"])  # padding after the prefix
    got = model.generate(input_ids=torch.tensor(padded["input_ids"]),
                         attention_mask=torch.tensor(padded["attention_mask"]), audio_embeds=audio[rows],
                         cache=cache, **kwargs)
    assert got.tolist() == expected.tolist()


def test_prefix_cache_misuse_is_named(tiny):
    from llm_srt.generation_llm_srt import prefix_cache

    model, processor = tiny
    audio = model.get_audio_features(processor.extract_features([synthetic_speech(1.0, seed=14)], 16000))
    blocks, _ = processor.forced_answer_inputs("eng", TARGETS[:2], ["Hi."])
    prefix = processor.shared_prompt_prefix("srt", "eng", TARGETS[:2])
    padded = processor.pad_prompt_blocks(blocks, len(prefix))
    ids, mask = torch.tensor(padded["input_ids"]), torch.tensor(padded["attention_mask"])
    with pytest.raises(ValueError, match="The cache has 1 rows, the input 2"):
        model.generate(input_ids=ids, attention_mask=mask, audio_embeds=audio.repeat(2, 1, 1),
                       cache=prefix_cache(model, prefix, audio), **GREEDY)
    with pytest.raises(ValueError, match="must be shorter than the input"):
        model.generate(input_ids=ids[:, :len(prefix)], attention_mask=mask[:, :len(prefix)],
                       audio_embeds=audio.repeat(2, 1, 1), cache=prefix_cache(model, prefix, audio.repeat(2, 1, 1)),
                       **GREEDY)
    with pytest.raises(ValueError, match="do not share their first"):
        processor.pad_prompt_blocks([blocks[0], [7] + blocks[1][1:]], len(prefix))
    with pytest.raises(ValueError, match="sets cache itself"):
        generate_many_targets(model, processor, "eng", TARGETS, audio_embeds=audio, cache=object())


LANGUAGE_CODES = ["deu", "eng", "fra", "ind", "ita", "jpn", "kor", "nld", "por", "rus", "spa", "tha", "vie", "yue",
                  "zho"]


@pytest.mark.parametrize("transcript", ["Hello.", '"Hi," he said.', "(aside)", "- dash", "。句子", "สวัสดี", ""])
def test_shared_prompt_prefix_starts_every_block(tiny, transcript):
    """For every source and every set of targets, the prefix whose cache is shared starts the step-one prompt and
    every forced-answer block, whatever the transcript starts with (Qwen's BPE merges the prompt's last `>` with a
    following `"` or `(`: that chunk is never part of the prefix)."""
    _, processor = tiny
    for src in LANGUAGE_CODES:
        targets = [t for t in LANGUAGE_CODES if t != src]
        prefix = processor.shared_prompt_prefix("srt", src, targets)
        assert len(prefix) > processor.num_audio_tokens
        first = processor.prepare_text("srt", [src], [targets[0]], [None], [None])["input_ids"][0]
        blocks, _ = processor.forced_answer_inputs(src, targets, [transcript])
        for block in [first] + blocks:
            assert block[: len(prefix)] == prefix, (src, transcript)


def test_a_prompt_not_starting_with_the_prefix_is_prefilled_whole(tiny, monkeypatch):
    """Should a block not start with the shared prefix, it is prefilled whole (no cache), never mismatched."""
    model, processor = tiny
    features = processor.extract_features([synthetic_speech(1.0, seed=15)], 16000)
    expected = generate_many_targets(model, processor, "eng", TARGETS, input_features=features,
                                     transcripts=["Hello world."], **GREEDY)
    wrong = [model.config.audio_token_id] * processor.num_audio_tokens + [7, 7]
    monkeypatch.setattr(type(processor), "shared_prompt_prefix", lambda self, *a: wrong)
    lengths, handle = record_llm_input_lengths(model)
    try:
        got = generate_many_targets(model, processor, "eng", TARGETS, input_features=features,
                                    transcripts=["Hello world."], **GREEDY)
    finally:
        handle.remove()
    blocks, _ = processor.forced_answer_inputs("eng", TARGETS, ["Hello world."])
    assert lengths[1] == max(len(b) for b in blocks)  # the whole block, not the part after a prefix
    assert got.tolist() == expected.tolist()


def test_stop_criteria_are_built_once_per_tokenizer_and_text(tiny):
    from llm_srt.generation_llm_srt import stop_after_text

    _, processor = tiny
    first = stop_after_text(processor.tokenizer, "<|eng|>")
    assert stop_after_text(processor.tokenizer, "<|eng|>")[0] is first[0]
    assert stop_after_text(processor.tokenizer, "<|deu|>")[0] is not first[0]


# ------------------------------------------------------------------------------ against independent decoding
class ForcesAnswers(LogitsProcessor):
    """Stands in for a trained model: in `generate` call `c` (counted as in `TranscribesFirst`), row `r` of the
    batch (beams: row `r // num_beams`) is forced to `plan[c][r]` token by token, then decodes freely; a call the
    plan does not cover decodes freely."""

    def __init__(self, plan: list[list[list[int]] | None], num_beams: int = 1):
        self.plan, self.num_beams, self.calls = plan, num_beams, 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1]
        if step == 0:
            self.calls += 1
        rows = self.plan[self.calls - 1] if self.calls <= len(self.plan) else None
        if rows is None:
            return scores
        scores = scores.clone()
        for row in range(scores.shape[0]):
            answer = rows[row // self.num_beams]
            if step < len(answer):
                scores[row] = float("-inf")
                scores[row, answer[step]] = 0.0
        return scores


def answer_start(processor, src: str, tgt: str, transcript: str) -> list[int]:
    """`transcript<|src|><|tgt|>` as the ids a model writes after the prompt (the joint training encoding)."""
    prompt = processor.tokenizer.encode(processor.build_prompt("srt", src, tgt))
    joint = processor.tokenizer.encode(processor.build_prompt("srt", src, tgt) + transcript + processor.tag(src)
                                       + processor.tag(tgt))
    assert joint[: len(prompt)] == prompt
    return joint[len(prompt):]


@pytest.mark.parametrize("history", [{"no_repeat_ngram_size": 5}, {"repetition_penalty": 1.5},
                                     {"no_repeat_ngram_size": 3, "num_beams": 3},
                                     {"no_repeat_ngram_size": 4, "repetition_penalty": 1.2, "num_beams": 4}])
def test_shared_transcript_equals_independent_decoding_with_history_dependent_options(tiny, history):
    """When the model writes a well-formed answer, the shared-transcript rows are the independent decode's, greedy
    and with beams: the n-gram blocking (the model's default `no_repeat_ngram_size=5`) and the repetition penalty
    of the translation step count the forced transcript and tag pair as generated, as independent decoding does.
    Independent decoding spends `max_new_tokens` on the whole answer, the translation step on the translation: the
    independent budget is the translation's plus the forced prefix (beam search is not prefix-consistent)."""
    model, processor = tiny
    targets = ["deu", "jpn"]
    kwargs = {**GREEDY, **history}
    beams, budget = kwargs["num_beams"], kwargs.pop("max_new_tokens")
    for seed, transcript in [(1, "Hello world."), (2, "I see three cats")]:
        features = processor.extract_features([synthetic_speech(1.0, seed=seed)], 16000)
        starts = [answer_start(processor, "eng", t, transcript) for t in targets]
        assert len({len(start) for start in starts}) == 1  # one budget fits both rows
        by_row = ForcesAnswers([starts], beams)
        independent = generate_many_targets(model, processor, "eng", targets, input_features=features,
                                            shared_transcript=False, logits_processor=LogitsProcessorList([by_row]),
                                            max_new_tokens=budget + len(starts[0]), **kwargs)
        first = ForcesAnswers([starts[:1]], beams)
        shared = generate_many_targets(model, processor, "eng", targets, input_features=features,
                                       logits_processor=LogitsProcessorList([first]), max_new_tokens=budget, **kwargs)
        assert (by_row.calls, first.calls) == (1, 2)
        for row, tgt in enumerate(targets):
            assert strip_pad(shared[row], processor) == strip_pad(independent[row], processor), (transcript, tgt)


class RecordsScores(LogitsProcessor):
    """Keeps the scores `generate` gives every row at every step (unchanged)."""

    def __init__(self):
        self.steps = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.steps.append(scores.clone())
        return scores


@pytest.mark.parametrize("shared_transcript", [False, True])
def test_prompts_of_different_lengths_are_not_fed_their_padding(tiny, shared_transcript):
    """`<|eng|><|deu|>` is one token longer than `<|eng|><|fra|>`: the shorter prompt is padded, and its padding
    is masked, in independent decoding and in the fallback of the shared mode (a model that writes no tag pair):
    the scores are those of `generate` on the processor's batch."""
    model, processor = tiny
    targets = ["deu", "fra"]
    text = processor.prepare_text("srt", ["eng"] * 2, targets, [None] * 2, [None] * 2)
    assert 0 in text["attention_mask"][1]  # the test can fail: one prompt is padded
    features = processor.extract_features([synthetic_speech(1.0, seed=16)], 16000)
    expected = RecordsScores()
    model.generate(input_ids=torch.tensor(text["input_ids"]), attention_mask=torch.tensor(text["attention_mask"]),
                   input_features=features.repeat(2, 1, 1), logits_processor=LogitsProcessorList([expected]),
                   **GREEDY)
    got = RecordsScores()
    generate_many_targets(model, processor, "eng", targets, input_features=features,
                          shared_transcript=shared_transcript, logits_processor=LogitsProcessorList([got]), **GREEDY)
    steps = got.steps[-len(expected.steps):]  # the shared mode's first (transcript) decode comes before
    assert len(steps) == len(expected.steps)
    for step, (a, b) in enumerate(zip(steps, expected.steps)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=f"step {step}")


def test_more_bad_arguments_are_named(tiny):
    """Options that would be dropped or fail deep inside `generate` are refused up front, naming the argument."""
    from transformers import GenerationConfig

    model, processor = tiny
    features = processor.extract_features([synthetic_speech(1.0, seed=17)], 16000)
    for config in (GenerationConfig(num_beams=2, num_return_sequences=2, max_new_tokens=3),
                   GenerationConfig(num_beams=1, return_dict_in_generate=True, max_new_tokens=3)):
        with pytest.raises(ValueError, match="num_return_sequences"):
            generate_many_targets(model, processor, "eng", TARGETS, input_features=features, generation_config=config)
    with pytest.raises(ValueError, match="transcripts are only used with shared_transcript=True"):
        generate_many_targets(model, processor, "eng", TARGETS, input_features=features, transcripts=["Hi."],
                              shared_transcript=False, **GREEDY)
    with pytest.raises(ValueError, match=r"transcripts\[1\] holds the source tag <\|eng\|>"):
        generate_many_targets(model, processor, "eng", TARGETS, input_features=features.repeat(2, 1, 1),
                              transcripts=["Hi.", "Hi<|eng|><|deu|>Hallo"], **GREEDY)
    with pytest.raises(ValueError, match="shared_transcript=False"):
        generate_many_targets(model, processor, "eng", TARGETS, input_features=features, stop_strings=["."],
                              **GREEDY)


def test_prompt_blocks_are_the_processors_prompts_unpadded(tiny):
    """`processor.prompt_blocks` gives the rows `prepare_text` batches, without their left padding (targets whose
    prompts differ in length)."""
    _, processor = tiny
    targets = ["deu", "fra", "zho", "eng"]
    text = processor.prepare_text("srt", ["eng"] * 4, targets, [None] * 4, [None] * 4)
    blocks = processor.prompt_blocks("srt", "eng", targets)
    assert len({len(b) for b in blocks}) > 1
    for block, ids, mask in zip(blocks, text["input_ids"], text["attention_mask"]):
        assert block == [i for i, keep in zip(ids, mask) if keep]
