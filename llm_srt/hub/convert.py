"""Convert an original LLM-SRT checkpoint (SLAM-LLM `.pt`, e.g. `llm_srt_3b.pt` of the Hub repo `yxdu/llm-srt`).

    python trainer_scripts/convert_original_checkpoint.py --checkpoint llm_srt_3b.pt \
        --encoder openai/whisper-large-v3 --llm Qwen/Qwen2.5-3B --output_dir llm-srt-3b [--lora] [--adapter_only] \
        [--dtype bfloat16] [--mandarin_tag zho]

The original checkpoint is `torch.save` of a plain {name: tensor} dict of the trained parameters, named after the
SLAM-LLM wrapper (`encoder_projector.*`, with LoRA `llm.base_model.model.*.lora_A.default.weight`). It is read with
`torch.load(weights_only=True)`: a file that needs pickled code is refused. Every key is mapped to ours
(`encoder_projector.` -> `projector.`, `llm.base_model.model.` -> `language_model.`, `encoder.` ->
`audio_tower.`); the Q-Former text-branch modules older transformers versions created (`intermediate`, `output`,
never used by the queries) are dropped and reported; any other key that cannot be placed, any parameter left
unfilled and any shape mismatch stops the conversion with the list. The output folder holds the config,
safetensors weights (sharded), processor files, the original decoding settings, the remote code and a model card.

A folder that already holds files is refused unless `--overwrite` (which replaces the folder as a whole); the
output is written to a temporary folder beside it and moved into place at the end, so a failed or killed run leaves
the old folder as it was. Errors are one line `convert_original_checkpoint: error: ...` (exit 2 for bad usage, 1
for a checkpoint that does not convert).
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from dataclasses import dataclass, field

import argparse

import torch
from transformers import HfArgumentParser



from ..modeling_llm_srt import LlmSrtForConditionalGeneration
from ..processing_llm_srt import LlmSrtProcessor
from ..languages_llm_srt import LANGUAGE_TABLE
from ..modeling_llm_srt import is_adapter_key, state_dict_mismatches
from ..cli.safe_io import (
    UsageError, atomic_dir, check_output_dir, positive_int, run_reporting_errors, set_argument_types,
)


PROG = "convert_original_checkpoint"
logger = logging.getLogger("llm_srt.convert")

PREFIXES = (("encoder_projector.", "projector."), ("llm.base_model.model.", "language_model."),
            ("encoder.", "audio_tower."), ("llm.", "language_model."))
# Modules of the Q-Former's text branch: created by older transformers versions, never used by the queries.
UNUSED_QFORMER = re.compile(r"^encoder_projector\.qformer\.encoder\.layer\.\d+\.(intermediate|output)\.")


class ConversionError(ValueError):
    """The checkpoint does not fit the model; the message lists every key at fault."""


@dataclass
class ConvertArguments:
    checkpoint: str = field(metadata={"help": "Original LLM-SRT checkpoint (.pt)."})
    encoder: str = field(metadata={"help": "Whisper checkpoint: Hub id (openai/whisper-large-v3) or folder."})
    llm: str = field(metadata={"help": "LLM: Hub id (Qwen/Qwen2.5-3B) or folder."})
    output_dir: str = field(metadata={"help": "Folder to write the converted model to (empty or new, unless "
                                                  "--overwrite)."})
    lora: bool = field(default=False, metadata={"help": "The checkpoint holds LoRA weights (the paper's V2 model)."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (not stored in checkpoints; paper: 32)."})
    adapter_only: bool = field(default=False, metadata={"help": "Write only projector/LoRA weights; reference the rest."})
    dtype: str = field(default="bfloat16", metadata={"help": "bfloat16 (as released), float16 or float32.",
                                                     "choices": ["bfloat16", "float16", "float32"]})
    mandarin_tag: str = field(default="zho", metadata={"help": "Mandarin's tag in the prompts it was trained with.",
                                                       "choices": ["zho", "cmn"]})
    qformer_heads: int = field(default=12, metadata={"help": "Q-Former attention heads (not in the weights; the "
                                                      "original's Blip2QFormerConfig() has 12)."})
    max_shard_size: str = field(default="5GB", metadata={"help": "Largest weight file, e.g. 5GB or 500MB."})
    model_card: bool = field(default=True, metadata={"help": "Write README.md (the model card)."})
    overwrite: bool = field(default=False, metadata={"help": "Replace a --output_dir that already holds files "
                                                              "(the whole folder)."})


def shard_size(text: str) -> str:
    """argparse type: a size such as 5GB, 500MB or a number of bytes."""
    from transformers.utils.hub import convert_file_size_to_int

    try:
        value = convert_file_size_to_int(text if not text.isdigit() else int(text))
    except (ValueError, TypeError):
        raise argparse.ArgumentTypeError(f"expected a size such as 5GB or 500MB, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 bytes, got {text!r}")
    return text


def parse_args(argv: list[str] | None = None) -> ConvertArguments:
    """The command line as `ConvertArguments`; bad values are refused by the parser (exit 2)."""
    parser = set_argument_types(HfArgumentParser(ConvertArguments, prog=PROG), lora_alpha=positive_int,
                                qformer_heads=positive_int, max_shard_size=shard_size)
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    return args


def check_arguments(args: ConvertArguments) -> None:
    """What can be checked before loading anything: inputs exist, the output folder may be written."""
    if not os.path.isfile(args.checkpoint):
        raise UsageError(f"--checkpoint {args.checkpoint}: no such file.")
    for flag, value in (("--encoder", args.encoder), ("--llm", args.llm)):
        if not os.path.isdir(value) and (os.path.exists(value) or _looks_local(value)):
            raise UsageError(f"{flag} {value}: no such folder (give a model folder or a Hub id).")
    check_output_dir(args.output_dir, overwrite=args.overwrite, what="--output_dir",
                     inputs=[args.checkpoint, args.encoder, args.llm])


def _looks_local(name: str) -> bool:
    """Whether a model name can only be a local path (a Hub id is `name` or `owner/name`)."""
    return name.startswith((".", "/", "~")) or name.endswith("/") or name.count("/") > 1


def read_original_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """Load a `.pt` state dict safely (tensors only)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ConversionError(
            f"{path} needs pickled code to load, which weights_only=True refuses (it could run arbitrary code); "
            f"an LLM-SRT checkpoint holds tensors only. Details: {str(error).splitlines()[0]}"
        ) from None
    except Exception as error:  # corrupt or not a torch file at all
        raise ConversionError(f"{path} is not a readable torch checkpoint: {error}") from None
    if not isinstance(state, dict) or not state:
        raise ConversionError(f"{path} holds {type(state).__name__}, not a {{name: tensor}} state dict.")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ConversionError(f"{path}: entries that are not tensors: {bad[:10]}")
    non_finite = [f"{key!r} ({int(torch.isnan(v).sum())} NaN, {int(torch.isinf(v).sum())} inf)"
                  for key, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if non_finite:
        raise ConversionError(f"{path}: weights with non-finite values (NaN or inf): [{', '.join(non_finite[:10])}"
                              f"{', ...' if len(non_finite) > 10 else ''}]; the training run that wrote it diverged, "
                              "or the file is damaged.")
    return state


def our_key(key: str) -> str | None:
    """Our name for an original checkpoint key; None for a key that has no place in LLM-SRT."""
    for old, new in PREFIXES:
        if key.startswith(old):
            return new + key[len(old):]
    return None


def map_keys(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """(our state dict, dropped unused Q-Former keys, keys that could not be placed)."""
    mapped, dropped, unplaced = {}, [], []
    for key, tensor in state.items():
        if UNUSED_QFORMER.match(key):
            dropped.append(key)
        elif (new := our_key(key)) is not None:
            mapped[new] = tensor
        else:
            unplaced.append(key)
    return mapped, dropped, unplaced


def infer_config_kwargs(state: dict[str, torch.Tensor]) -> dict:
    """Projector shapes and LoRA rank read off the checkpoint itself."""
    query = state.get("encoder_projector.query")
    if query is None:
        raise ConversionError("The checkpoint has no encoder_projector.query: not an LLM-SRT Q-Former checkpoint.")
    kwargs = {"num_queries": query.shape[1]}
    layers = {int(m.group(1)) for k in state if (m := re.match(r"encoder_projector\.qformer\.encoder\.layer\.(\d+)\.", k))}
    overrides = {"hidden_size": query.shape[2], "num_hidden_layers": max(layers) + 1 if layers else 8}
    feed_forward = state.get("encoder_projector.qformer.encoder.layer.0.intermediate_query.dense.weight")
    if feed_forward is not None:
        overrides["intermediate_size"] = feed_forward.shape[0]
    kwargs["projector_config_overrides"] = overrides
    if "encoder_projector.linear1.weight" in state:
        kwargs["projector_intermediate_size"] = state["encoder_projector.linear1.weight"].shape[0]
    elif "encoder_projector.linear.weight" in state:
        kwargs["projector_intermediate_size"] = 0
    lora_a = [v for k, v in state.items() if ".lora_A." in k]
    if lora_a:
        targets = sorted({m.group(1) for k in state if (m := re.search(r"\.(\w+)\.lora_A\.", k))})
        kwargs["lora"] = {"r": lora_a[0].shape[0], "target_modules": targets}
    return kwargs


def check_fit(model, mapped: dict[str, torch.Tensor], adapter_only: bool, names: dict[str, str] | None = None) -> None:
    """Raise listing missing trained parameters, keys the model lacks, shape mismatches and integer tensors in float
    slots (`names`: the checkpoint's own name of each of our keys, for that message)."""
    own = model.state_dict()
    problems = state_dict_mismatches(own, mapped, required={k for k in own if is_adapter_key(k)})
    # an integer (or bool) tensor where the model has a float parameter would be cast silently
    wrong_kind = [f"{(names or {}).get(k, k)!r} ({v.dtype})" for k, v in mapped.items()
                  if k in own and own[k].is_floating_point() and not v.is_floating_point()]
    if wrong_kind:
        problems.append(f"weights that are not floating point: [{', '.join(wrong_kind[:10])}]")
    if adapter_only and any(not is_adapter_key(k) for k in mapped):
        problems.append("--adapter_only, but the checkpoint holds encoder/LLM weights: "
                        f"{sorted(k for k in mapped if not is_adapter_key(k))[:10]}")
    if problems:
        raise ConversionError("The checkpoint does not fit: " + "; ".join(problems))


def convert(args: ConvertArguments) -> str:
    """Convert and write the model folder; returns its path."""
    try:
        check_arguments(args)
    except ValueError as error:  # an output folder that holds an input
        raise UsageError(str(error)) from None
    state = read_original_checkpoint(args.checkpoint)
    inferred = infer_config_kwargs(state)
    if bool(inferred.get("lora")) != args.lora:
        raise ConversionError(
            "The checkpoint holds LoRA weights: pass --lora." if inferred.get("lora")
            else "--lora was given but the checkpoint holds no LoRA weights.")
    mapped, dropped, unplaced = map_keys(state)
    if unplaced:
        raise ConversionError(f"Keys that cannot be placed in LLM-SRT: {sorted(unplaced)}")
    if dropped:
        logger.warning(f"Dropped {len(dropped)} unused Q-Former text-branch keys (older transformers), e.g. {dropped[0]}")

    width = inferred["projector_config_overrides"]["hidden_size"]
    if width % args.qformer_heads:  # the config refuses it too, without naming the flag that set it
        divisors = [n for n in range(1, min(width, 64) + 1) if width % n == 0]
        raise UsageError(f"--qformer_heads {args.qformer_heads} does not divide the checkpoint's Q-Former width "
                         f"{width} (each head takes an equal share of it); pass one of {divisors} (the original's "
                         "Blip2QFormerConfig() has 12).")
    dtype = getattr(torch, args.dtype)
    model = LlmSrtForConditionalGeneration.from_components(
        args.encoder, args.llm, dtype=dtype, num_queries=inferred["num_queries"],
        projector_intermediate_size=inferred.get("projector_intermediate_size"), mandarin_tag=args.mandarin_tag,
        projector_config={**_default_qformer(), **inferred["projector_config_overrides"],
                          "num_attention_heads": args.qformer_heads},
        # the released checkpoints were trained on the paper's 15 languages, in all 210 directions
        trained_languages=list(LANGUAGE_TABLE),
        trained_directions=[f"{s}-{t}" for s in LANGUAGE_TABLE for t in LANGUAGE_TABLE if s != t],
    )
    if args.lora:
        model.enable_lora(r=inferred["lora"]["r"], lora_alpha=args.lora_alpha,
                          target_modules=inferred["lora"]["target_modules"])
    check_fit(model, mapped, args.adapter_only, names={our_key(k): k for k in state if our_key(k)})
    model.load_state_dict({k: v.to(dtype) for k, v in mapped.items()}, strict=False)
    model.eval()

    processor = build_processor(args, model)
    # Written beside the target and moved into place whole: a failure leaves the old folder (or none) as it was.
    with atomic_dir(args.output_dir) as folder:
        model.save_pretrained(folder, adapter_only=args.adapter_only, max_shard_size=args.max_shard_size)
        processor.save_pretrained(folder)
        if args.model_card:
            from .cards import write_model_card

            write_model_card(folder, base_llm=args.llm, encoder=args.encoder, lora=args.lora,
                             name=os.path.basename(os.path.abspath(args.output_dir)))
    logger.warning(f"Converted {len(mapped)} tensors into {args.output_dir}")
    return args.output_dir


def _default_qformer() -> dict:
    from ..configuration_llm_srt import LlmSrtConfig

    return {"model_type": "blip_2_qformer",
            **LlmSrtConfig.sub_configs_defaults["projector_config"].init_kwargs}


def build_processor(args: ConvertArguments, model) -> LlmSrtProcessor:
    from transformers import AutoTokenizer, WhisperFeatureExtractor

    tokenizer = AutoTokenizer.from_pretrained(args.llm)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LlmSrtProcessor(
        WhisperFeatureExtractor.from_pretrained(args.encoder), tokenizer, num_audio_tokens=model.config.num_queries,
        audio_token_id=model.config.audio_token_id, mandarin_tag=args.mandarin_tag,
    )


def main(argv: list[str] | None = None) -> int:
    """The command: exit status 0, 2 for bad usage, 1 for a checkpoint that does not convert, 130 interrupted."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    args = parse_args(argv)
    return run_reporting_errors(PROG, lambda: convert(args) and 0)

