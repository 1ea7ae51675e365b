"""One audio into many targets with the transcript decoded once (`generate_many_targets(shared_transcript=True)`)."""

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

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
    blocks, prefixes = model.shared_transcript_inputs(processor, "eng", TARGETS, [transcript])
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
    out = model.generate_many_targets(processor, "eng", TARGETS, input_features=features, transcripts=transcripts,
                                      **GREEDY)
    assert out.shape[0] == len(audio) * len(TARGETS)
    audio_embeds = model.get_audio_features(features)
    blocks, prefixes = model.shared_transcript_inputs(processor, "eng", TARGETS, transcripts)
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
    out = model.generate_many_targets(processor, "eng", TARGETS, input_features=features, shared_transcript=False,
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
    shared = model.generate_many_targets(processor, "eng", TARGETS, input_features=features, **GREEDY)
    independent = model.generate_many_targets(processor, "eng", TARGETS, input_features=features,
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
    """The first step stops at the first target's tag pair, and the transcript it heard is fed to every target as
    the forced prefix, in one batch: each row equals the forced prefix plus a greedy decode done by hand."""
    model, processor = tiny
    transcript = "Hello world."
    pair = processor.tag("eng") + processor.tag(TARGETS[0])
    answer = processor.tokenizer.encode(" " + transcript + pair + "Hallo Welt.")
    forcing = TranscribesFirst(answer, processor.eos_token_id)
    features = processor.extract_features([synthetic_speech(1.0, seed=5)], 16000)
    kwargs = {**GREEDY, "num_beams": num_beams}
    out = model.generate_many_targets(processor, "eng", TARGETS, input_features=features,
                                      logits_processor=LogitsProcessorList([forcing]), **kwargs)
    assert forcing.calls == 2  # the first target's transcript, then every translation in one batch
    stop = len(processor.tokenizer.encode(" " + transcript + pair))
    assert forcing.first_call_steps == stop  # the first step ended at the tag pair, not at eos
    decoded = processor.post_process(out, "srt", "eng", TARGETS)
    assert [d["transcript"] for d in decoded] == [transcript] * len(TARGETS)  # stripped, as in training
    if num_beams == 1:
        audio_embeds = model.get_audio_features(features)
        blocks, prefixes = model.shared_transcript_inputs(processor, "eng", TARGETS, [transcript])
        for row, tgt in enumerate(TARGETS):
            expected = prefixes[row] + hand_greedy(model, processor, blocks[row], audio_embeds,
                                                   GREEDY["max_new_tokens"])
            assert_row(out[row], expected, processor, tgt)


def test_bad_arguments_are_named(tiny):
    model, processor = tiny
    features = processor.extract_features([synthetic_speech(1.0, seed=6)], 16000)
    with pytest.raises(ValueError, match="tgt_langs is empty"):
        model.generate_many_targets(processor, "eng", [], input_features=features)
    with pytest.raises(ValueError, match="exactly one of input_features and audio_embeds"):
        model.generate_many_targets(processor, "eng", TARGETS)
    with pytest.raises(ValueError, match="2 transcripts for 1 audio"):
        model.generate_many_targets(processor, "eng", TARGETS, input_features=features, transcripts=["a", "b"])
    with pytest.raises(ValueError, match="num_return_sequences"):
        model.generate_many_targets(processor, "eng", TARGETS, input_features=features, num_return_sequences=2)


def test_pipeline_shared_transcript_option(tiny):
    """`pipe(..., shared_transcript=True)` decodes the transcript once (two `generate` calls for three targets) and
    gives every target the transcript heard."""
    from llm_srt import SpeechTranslationPipeline

    model, processor = tiny
    pipe = SpeechTranslationPipeline(model=model, processor=processor)
    transcript = "Hello world."
    pair = processor.tag("eng") + processor.tag(TARGETS[0])
    forcing = TranscribesFirst(processor.tokenizer.encode(transcript + pair + "Hallo."), processor.eos_token_id)
    out = pipe(synthetic_speech(1.0, seed=7), sampling_rate=16000, src_lang="eng", tgt_lang=TARGETS,
               shared_transcript=True, generate_kwargs={**GREEDY, "logits_processor": LogitsProcessorList([forcing])})
    assert forcing.calls == 2
    assert [o["tgt_lang"] for o in out] == TARGETS
    assert [o["transcript"] for o in out] == [transcript] * len(TARGETS)
