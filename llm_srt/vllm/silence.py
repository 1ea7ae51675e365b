"""Silent audio on vLLM's own server: answered with an empty text, never sent to the LLM.

`llm-srt serve` and the pipeline decode only the speech the detector hears (`speech_llm_srt`): fed silence or noise,
a speech LLM invents text. vLLM's `/v1/audio/*` endpoints send every chunk to the model and give the model no say over the
sampling parameters, so the model (`LlmSrtVllmForConditionalGeneration.get_generation_prompt`) answers a silent
chunk with the one-token prompt `[eos]` and no audio, and this logits processor makes that prompt's only answer the
end-of-sequence token: an empty text, as `llm-srt serve` gives, for the cost of one token.

It is installed for every vLLM model through the entry point group `vllm.logits_processors` (vLLM's server takes
no per-model processors); it does nothing for models other than LLM-SRT. It imports no vLLM model code, so it cannot
break another model's start.

vLLM's beam search (`use_beam_search` on its transcription endpoints) picks its beams from the logprobs vLLM returns,
and by default (`logprobs_mode="raw_logprobs"`) those are computed before any logits processor: the forced end was
never seen and a silent chunk was answered with invented words. So for LLM-SRT the plugin makes vLLM return the
logprobs after the processors (`LlmSrtLogprobsMode`). They are the model's own wherever no processor acts, as in
greedy decoding of anything but a silent chunk; with sampling they are those of the temperature-scaled logits.
"""

from __future__ import annotations

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

from . import ARCHITECTURE


def silent_prompt_token_ids(eos_token_id: int) -> list[int]:
    """The prompt that stands for a silent chunk: the end-of-sequence token alone (no prompt of ours holds it)."""
    return [int(eos_token_id)]


class LlmSrtSilenceLogitsProcessor(LogitsProcessor):
    """Forces end-of-sequence as the first token of requests whose prompt is `silent_prompt_token_ids`."""

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool) -> None:
        architectures = getattr(vllm_config.model_config.hf_config, "architectures", None) or ()
        self.active = ARCHITECTURE in architectures
        self.silent: dict[int, int] = {}  # batch row -> the end-of-sequence token to force

    def is_argmax_invariant(self) -> bool:
        return not self.active  # forcing a token changes the greedy choice; inert for other models

    @staticmethod
    def _eos_if_silent(params, prompt_token_ids: list[int] | None, output_token_ids: list[int]) -> int | None:
        eos = getattr(params, "eos_token_id", None)
        if eos is None or prompt_token_ids is None or list(prompt_token_ids) != silent_prompt_token_ids(eos):
            return None
        return int(eos)

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if self.active:
            process_dict_updates(self.silent, batch_update, self._eos_if_silent)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        for row, eos in self.silent.items():
            logits[row] = float("-inf")
            logits[row, eos] = 0.0
        return logits


class LlmSrtLogprobsMode:
    """vLLM's per-architecture config hook (`vllm.model_executor.models.config.MODELS_CONFIG_MAP`): LLM-SRT's
    logprobs after the logits processors, so that beam search sees the silent chunk's forced end (module docstring).
    Only the default (`raw_logprobs`) is changed; `--logprobs-mode` with another value is kept."""

    @staticmethod
    def verify_and_update_config(vllm_config) -> None:
        return

    @staticmethod
    def verify_and_update_model_config(model_config) -> None:
        if model_config.logprobs_mode == "raw_logprobs":
            model_config.logprobs_mode = "processed_logprobs"
