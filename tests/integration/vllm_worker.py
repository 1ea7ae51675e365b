"""Run by tests/integration/test_vllm.py with the vLLM environment's Python: decodes the requests of a JSON file through
`VllmEngine` (one engine start) and writes the answers as JSON: per-row ids, first-step logprobs, shared-transcript
answers, language detections and the engine's refusals."""

import asyncio
import json
import sys

import numpy as np


def live_segments(engine, audio, settings) -> list:
    """The final segments of a live two-target session fed `audio` in 0.25 s chunks (tests/integration/test_vllm.py too)."""
    from llm_srt.live.translator import LiveTranslator

    live = LiveTranslator(engine, "eng", ["deu", "fra"], settings=settings, min_chunk_seconds=0.5)
    for start in range(0, len(audio), 4000):
        live.feed(audio[start:start + 4000])
    live.finish()
    return json.loads(json.dumps(live.segments))


def bad_audio_refusals(engine, clean: np.ndarray) -> dict:
    """What vLLM's engine answers audio with NaN, infinite or no samples (each error's text, None if accepted), and
    whether a clean clip's tokens are the same after them as before."""
    from vllm import SamplingParams

    ids = engine.processor.tokenizer.encode("<|eng|>", add_special_tokens=False)
    params = SamplingParams(temperature=0, max_tokens=8)

    def tokens(samples, name):
        async def run():
            prompt = {"prompt_token_ids": ids, "multi_modal_data": {"audio": (samples, 16000)}}
            async for out in engine.llm.generate(prompt, params, request_id=f"bad-audio-{name}"):
                final = out
            return list(final.outputs[0].token_ids)

        return engine._run(run())

    before, refusals = tokens(clean, "before"), {}
    with_nan, with_inf = clean.copy(), clean.copy()
    with_nan[100:200], with_inf[300] = np.nan, np.inf
    for name, samples in (("nan", with_nan), ("inf", with_inf), ("empty", np.zeros(0, np.float32))):
        try:
            tokens(samples, name)
            refusals[name] = None
        except Exception as error:  # AsyncLLM raises EngineGenerateError from the processor's ValueError
            while error.__cause__ is not None:
                error = error.__cause__
            refusals[name] = str(error) if isinstance(error, ValueError) else repr(error)
    return {"refusals": refusals, "same_after": tokens(clean, "after") == before}


def main(request_file: str, answer_file: str) -> None:
    from vllm import SamplingParams

    from llm_srt.decoding_llm_srt import DecodeRow
    from llm_srt.vllm.engine import VllmEngine

    request = json.load(open(request_file))
    audio = [np.asarray(a, dtype=np.float32) for a in request["audio"]]
    answers = {}
    with VllmEngine(request["folder"], dtype="float32", enforce_eager=True, max_model_len=512,
                    tensor_parallel_size=request.get("tensor_parallel_size", 1)) as engine:
        handles, detections = engine.encode(audio, detect_language=True)
        answers["detections"] = [d["language"] for d in detections]
        rows = [DecodeRow(**row) for row in request["rows"]]
        decoded = engine.decode_rows(handles, rows, request["settings"])
        answers["rows"] = [{"ids": a["token_ids"], "complete": a["complete"], "text": a["text"]} for a in decoded]
        shared = request["shared"]
        answers["shared"] = [[a["token_ids"] for a in per_audio] for per_audio in engine.decode_shared_transcript(
            [handles[i] for i in shared["audio"]], shared["src_lang"], shared["targets"], shared["settings"],
            shared.get("transcripts"))]
        # first-step logprobs of each row's prompt, straight from vLLM's engine
        params = SamplingParams(temperature=0, max_tokens=1, logprobs=5)

        async def first_logprobs(row, block):
            prompt = {"prompt_token_ids": block[engine.processor.num_audio_tokens:],
                      "multi_modal_data": {"audio": (handles[row.window], 16000)}}
            async for out in engine.llm.generate(prompt, params, request_id=f"logprobs-{id(row)}"):
                final = out
            return {str(k): v.logprob for k, v in final.outputs[0].logprobs[0].items()}

        async def all_logprobs():
            blocks = [engine.processor.prompt_blocks(r.task, r.src_lang, [r.tgt_lang], [r.transcript])[0] for r in rows]
            return await asyncio.gather(*(first_logprobs(r, b) for r, b in zip(rows, blocks)))

        answers["first_logprobs"] = engine._run(all_logprobs())
        refusals = []
        for settings in ({"num_beams": 4}, {"output_scores": True}):
            try:
                engine.sampling_params(settings)
                refusals.append(None)
            except ValueError as error:
                refusals.append(str(error))
        answers["refusals"] = refusals
        answers["live"] = live_segments(engine, audio[2], request["settings"])
        answers["bad_audio"] = bad_audio_refusals(engine, audio[1])
    json.dump(answers, open(answer_file, "w"))


if __name__ == "__main__":
    main(*sys.argv[1:])
