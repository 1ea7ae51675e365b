"""Run by tests/test_vllm.py with the vLLM environment's Python: decodes the requests of a JSON file with vLLM's
offline engine (one engine start) and writes the generated ids and first-step logprobs as JSON."""

import json
import sys

import numpy as np


def main(request_file: str, answer_file: str) -> None:
    from vllm import LLM, SamplingParams

    request = json.load(open(request_file))
    llm = LLM(model=request["folder"], dtype="float32", max_model_len=512, enforce_eager=True, seed=0,
              tensor_parallel_size=request.get("tensor_parallel_size", 1))
    prompts = []
    for item in request["items"]:
        prompt = {"prompt_token_ids": item["prompt_ids"]}
        if item.get("audio") is not None:
            prompt["multi_modal_data"] = {"audio": (np.asarray(item["audio"], dtype=np.float32), 16000)}
        prompts.append(prompt)
    params = SamplingParams(temperature=0, max_tokens=request["max_new_tokens"], logprobs=5)
    outputs = llm.generate(prompts, params)
    answers = [
        {
            "ids": list(out.outputs[0].token_ids),
            "first_logprobs": {str(k): v.logprob for k, v in out.outputs[0].logprobs[0].items()},
        }
        for out in outputs
    ]
    json.dump(answers, open(answer_file, "w"))


if __name__ == "__main__":
    main(*sys.argv[1:])
