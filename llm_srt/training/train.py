"""Train one curriculum stage of LLM-SRT (ASR -> SMT -> SRT) with Seq2SeqTrainer.

    python trainer_scripts/train.py --recipe asr \
        --audio_model openai/whisper-large-v3 --text_model Qwen/Qwen2.5-3B \
        --train_file data/train.jsonl --eval_file data/dev.jsonl --output_dir runs/asr
    python trainer_scripts/train.py --recipe smt --init_from runs/asr ...
    python trainer_scripts/train.py --recipe srt --init_from runs/smt [--use_lora] ...

A recipe (YAML: a file, or the name of one shipped in `llm_srt/training/recipes/`) gives the paper's settings for
a stage; any flag on the command line overrides it. The same
command runs under `torchrun --nproc_per_node N` or `accelerate launch` (DDP; on CPU with gloo). Sharded training is
the Trainer's own FSDP2, on GPUs and on CPU (gloo):

    torchrun --nproc_per_node 2 trainer_scripts/train.py --recipe ... \
        --fsdp --fsdp_config trainer_scripts/configs/fsdp.json
    accelerate launch --config_file trainer_scripts/configs/fsdp.yaml trainer_scripts/train.py --recipe ...

Accelerate enables FSDP only on accelerators and would silently run DDP on a CPU launch; `LlmSrtTrainer` routes it
to FSDP2 there (`llm_srt.training.enable_fsdp_on_cpu`). Checkpoints are then sharded (one file per process) and a
killed run resumes from them with the same command; the final folder holds the full weights. `--deepspeed
trainer_scripts/configs/ds_zero2.json` goes through the Trainer too (DeepSpeed needs GPUs). The output folder is a
loadable model (remote code, processor, generation config).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field

import yaml
from transformers import HfArgumentParser, Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback, set_seed
from transformers.trainer_callback import ProgressCallback



from ..modeling_llm_srt import LlmSrtForConditionalGeneration
from ..processing_llm_srt import LlmSrtProcessor
from ..cli.safe_io import UsageError, exit_with_error
from .runs import FINAL_STAGING, checkpoint_problem, mark_finished, plan_output_dir, publish_final_model
from .data import (
    LlmSrtDataCollator, add_input_features, default_base_dir, load_rows, select_stage_rows, tag_base_dir,
)
from .stages import build_compute_metrics, configure_stage, record_trained_languages
from .fsdp import (
    enable_fsdp_on_cpu, fsdp_layer_classes, fsdp_offload_requested, is_fsdp_checkpoint, requested_fsdp_version, sharded_parameter_count, unsharded_model,
)


logger = logging.getLogger("llm_srt.train")
PROG = "train.py"


@dataclass
class ModelArguments:
    init_from: str | None = field(
        default=None, metadata={"help": "Model folder to start from: the previous stage's output, or an initial model."}
    )
    audio_model: str | None = field(
        default=None, metadata={"help": "Fresh start (first stage): Whisper checkpoint (Hub id or folder)."}
    )
    text_model: str | None = field(default=None, metadata={"help": "Fresh start: causal LLM (Hub id or folder)."})
    num_queries: int = field(default=80, metadata={"help": "Fresh start: learned queries (audio tokens per window)."})
    mandarin_tag: str = field(default="zho", metadata={"help": "Fresh start: Mandarin's tag, zho or cmn."})
    use_lora: bool = field(default=False, metadata={"help": "Add and train LoRA on the LLM (SRT stage only)."})
    lora_r: int = field(default=8)
    lora_alpha: int = field(default=32)
    lora_dropout: float = field(default=0.05)
    lora_target_modules: str = field(default="q_proj,v_proj")
    attn_implementation: str = field(default="sdpa", metadata={"help": "sdpa or eager."})

    def __post_init__(self):
        _at_least(self, 1, "num_queries", "lora_r")
        if not self.lora_alpha > 0:
            raise ValueError(f"--lora_alpha must be > 0, got {self.lora_alpha}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"--lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.mandarin_tag not in ("zho", "cmn"):
            raise ValueError(f"--mandarin_tag must be zho or cmn, got {self.mandarin_tag!r}")
        if not [m for m in self.lora_target_modules.split(",") if m.strip()]:
            raise ValueError("--lora_target_modules names no module")


@dataclass
class DataArguments:
    stage: str = field(default=None, metadata={"help": "Curriculum stage: asr, smt or srt.", "choices": ["asr", "smt", "srt"]})
    train_file: str = field(default=None, metadata={"help": "Training rows: a .jsonl manifest or a datasets folder."})
    eval_file: str | None = field(default=None, metadata={"help": "Evaluation rows, same format."})
    audio_base_dir: str | None = field(
        default=None, metadata={"help": "Folder relative audio paths are under (default: the manifest's folder)."}
    )
    max_train_samples: int | None = field(default=None)
    max_eval_samples: int | None = field(default=None)
    precompute_features: bool = field(
        default=False, metadata={"help": "Compute log-mel features once before training (small corpora)."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Train into an --output_dir that holds a finished model or other files, replacing them "
                          "(and not resuming from its checkpoints). Without it such a folder is refused."},
    )

    def __post_init__(self):
        _at_least(self, 1, "max_train_samples", "max_eval_samples")


def _at_least(args, minimum: int, *names: str) -> None:
    """Refuse (ValueError, shown by the parser) numeric flags below `minimum`; None means unset."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < minimum:
            raise ValueError(f"--{name} must be >= {minimum}, got {value}")


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


# The paper's stage settings (asr, smt, srt) and the offline demo's (demo_asr, ...), shipped with the package.
RECIPES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "recipes")


def packaged_recipes() -> list[str]:
    """Names of the recipes shipped with the package (`--recipe asr`)."""
    return sorted(name[:-5] for name in os.listdir(RECIPES) if name.endswith(".yaml"))


def recipe_file(recipe: str) -> str:
    """`--recipe`'s YAML file: a path, or the name of a packaged recipe (`asr`, `smt`, `srt`, `demo_asr`, ...)."""
    packaged = os.path.join(RECIPES, f"{recipe}.yaml")
    return packaged if not os.path.exists(recipe) and os.path.isfile(packaged) else recipe


def parse_args(argv: list[str] | None = None):
    """Parse flags; `--recipe FILE.yaml` (or a packaged recipe's name) supplies defaults that later flags override.

    Bad usage (an unknown flag, a value out of range, a missing recipe) ends as `train.py: error: ...`, exit 2.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser((ModelArguments, DataArguments, Seq2SeqTrainingArguments))
    parser.prog = PROG
    if "--recipe" in argv:
        at = argv.index("--recipe")
        if at + 1 >= len(argv):
            parser.error("--recipe needs a YAML file")
        recipe_path = recipe_file(argv[at + 1])
        del argv[at:at + 2]
        if not os.path.isfile(recipe_path):
            parser.error(f"--recipe: no file at {recipe_path}, and no packaged recipe of that name "
                         f"({', '.join(packaged_recipes())})")
        try:
            with open(recipe_path, encoding="utf-8") as handle:
                recipe = yaml.safe_load(handle) or {}
        except yaml.YAMLError as error:
            parser.error(f"--recipe {recipe_path}: not valid YAML ({str(error).splitlines()[0]})")
        if not isinstance(recipe, dict):
            parser.error(f"--recipe {recipe_path}: expected a mapping of flag names to values")
        prefix = []
        for key, value in recipe.items():
            if isinstance(value, bool):
                prefix += [f"--{key}", str(value)]
            elif isinstance(value, list):
                prefix += [f"--{key}", *map(str, value)]
            elif value is not None:
                prefix += [f"--{key}", str(value)]
        argv = prefix + argv
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "--use_cpu" not in argv and not _has_accelerator():
        # Without `use_cpu`, Accelerate treats a CPU-only torchrun launch as single-process: every rank would train
        # its own replica with no gradient sync. Multi-CPU DDP (gloo) needs the flag.
        argv += ["--use_cpu", "true"]
    try:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as error:  # __post_init__ checks, ours and the Trainer's
        parser.error(str(error).strip().splitlines()[0])
    if training_args.fsdp and not (training_args.fsdp_config or {}).get("xla") and int(
            os.environ.get("WORLD_SIZE", "1")) < 2:
        parser.error("--fsdp shards the model over processes: launch with `torchrun --nproc_per_node N` "
                     "(or `accelerate launch`), N >= 2.")
    fsdp_version = requested_fsdp_version(training_args.fsdp_plugin_args)
    if fsdp_version == 1 and not _has_accelerator():
        parser.error("FSDP on CPU runs FSDP2 only (Accelerate's FSDP1 needs an accelerator): set \"version\": 2 in "
                     "--fsdp_config, or fsdp_version: 2 in the accelerate config.")
    if fsdp_version and fsdp_offload_requested(training_args.fsdp_plugin_args) and not _has_accelerator():
        parser.error("--fsdp offload moves parameters off an accelerator into CPU memory; on CPU they are there "
                     "already: drop offload (or the accelerate config's fsdp_offload_params).")
    if data_args.stage is None or data_args.train_file is None:
        parser.error("--stage and --train_file are required (a recipe sets the stage).")
    if bool(model_args.init_from) == bool(model_args.audio_model or model_args.text_model):
        parser.error("start from --init_from FOLDER, or from --audio_model and --text_model (first stage).")
    for flag, path in (("--train_file", data_args.train_file), ("--eval_file", data_args.eval_file)):
        if path and not os.path.exists(path):
            parser.error(f"{flag}: no data at {path}")
    if model_args.use_lora and data_args.stage != "srt":
        parser.error("--use_lora is for --stage srt (the paper adds LoRA in the SRT stage only).")
    if model_args.init_from and not os.path.isdir(model_args.init_from) and (
            os.path.exists(model_args.init_from) or model_args.init_from.count("/") != 1):
        parser.error(f"--init_from: no model folder at {model_args.init_from}")
    training_args.remove_unused_columns = False  # the collator reads the raw rows
    return model_args, data_args, training_args


def load_processor(model_args: ModelArguments):
    """The stage's processor and the LLM's context (`max_position_embeddings`, None if the LLM has none), read
    without the weights, so rows are checked before the model loads."""
    from transformers import AutoConfig, AutoTokenizer, WhisperFeatureExtractor

    from ..configuration_llm_srt import LlmSrtConfig

    if model_args.init_from:
        if not os.path.isdir(model_args.init_from) and not model_args.init_from.count("/") == 1:
            raise FileNotFoundError(f"--init_from: no model folder at {model_args.init_from}")
        text_config = LlmSrtConfig.from_pretrained(model_args.init_from).text_config
        processor = LlmSrtProcessor.from_pretrained(model_args.init_from)
    else:
        text_config = AutoConfig.from_pretrained(model_args.text_model)
        tokenizer = AutoTokenizer.from_pretrained(model_args.text_model)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        processor = LlmSrtProcessor(
            WhisperFeatureExtractor.from_pretrained(model_args.audio_model),
            tokenizer,
            num_audio_tokens=model_args.num_queries,
            audio_token_id=text_config.vocab_size - 1,  # LlmSrtConfig's default: the LLM's last embedding row
            mandarin_tag=model_args.mandarin_tag,
        )
    return processor, getattr(text_config, "max_position_embeddings", None)


def load_model_and_processor(model_args: ModelArguments, dtype=None, processor=None):
    """The stage's starting point: a saved model folder, or a fresh model from a Whisper checkpoint and an LLM.
    `processor`: the one `load_processor` gave (loaded again if None)."""
    processor = processor or load_processor(model_args)[0]
    if model_args.init_from:
        model = LlmSrtForConditionalGeneration.from_pretrained(
            model_args.init_from, attn_implementation=model_args.attn_implementation, dtype=dtype
        )
        return model, processor
    model = LlmSrtForConditionalGeneration.from_components(
        model_args.audio_model, model_args.text_model, dtype=dtype, num_queries=model_args.num_queries,
        mandarin_tag=model_args.mandarin_tag,
    )
    processor.audio_token_id = model.config.audio_token_id  # the same rule; the model's config is the authority
    return model, processor


def audio_window(model_args: ModelArguments) -> float:
    """The model's audio window in seconds (its feature extractor's `chunk_length`), read without the weights."""
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor.from_pretrained(model_args.init_from or model_args.audio_model).chunk_length


def check_split(path: str, data_args: DataArguments, window: float, limit: int | None, processor=None,
                max_positions: int | None = None):
    """Load a data file, check every row (kinds, languages, audio headers against `window`, tokens against the
    LLM's context `max_positions`, duplicate keys) and keep the stage's rows. Returns (rows, base_dir)."""
    base_dir = default_base_dir(path, data_args.audio_base_dir)
    rows = select_stage_rows(load_rows(path), data_args.stage, base_dir=base_dir, source=path, max_seconds=window,
                             processor=processor, max_positions=max_positions)
    if limit is not None:
        rows = rows.select(range(min(limit, len(rows))))
    return rows, base_dir


def prepare_split(rows, base_dir: str, data_args: DataArguments, processor):
    """Precompute log-mel features when asked (rows already checked); rows keep their manifest's folder."""
    if data_args.precompute_features and "input_features" not in rows.column_names:
        rows = add_input_features(rows, processor, base_dir=base_dir)
    return tag_base_dir(rows, base_dir)


def resume_point(data_args: DataArguments, training_args: Seq2SeqTrainingArguments,
                 model_args: ModelArguments) -> str | bool | None:
    """The checkpoint to resume from: `--resume_from_checkpoint`, else the newest complete one in `--output_dir`
    (partial ones skipped and named). Refuses an output folder holding a finished model (or the input model)."""
    checkpoint = plan_output_dir(training_args.output_dir, overwrite=data_args.overwrite_output_dir,
                                 inputs=[model_args.init_from] if model_args.init_from else ())
    explicit = training_args.resume_from_checkpoint
    if explicit not in (None, "", False) and isinstance(explicit, str) and explicit.lower() not in ("true", "false"):
        if not os.path.isdir(explicit):
            raise FileNotFoundError(f"--resume_from_checkpoint: no checkpoint folder at {explicit}")
        problem = checkpoint_problem(explicit)
        if problem:
            raise ValueError(f"--resume_from_checkpoint {explicit}: a partial checkpoint ({problem}).")
        checkpoint = explicit
    # (`true`: the newest complete checkpoint, as found above.) Its layout must be the launch's: the Trainer loads
    # FSDP state only under FSDP, and under FSDP only FSDP state.
    if checkpoint:
        fsdp = requested_fsdp_version(training_args.fsdp_plugin_args) is not None
        if is_fsdp_checkpoint(checkpoint) and not fsdp:
            raise ValueError(f"{checkpoint} is a sharded FSDP checkpoint: resume it with --fsdp (the launch that wrote "
                             "it), or pass --overwrite_output_dir true to start afresh.")
        if fsdp and not is_fsdp_checkpoint(checkpoint):
            raise ValueError(f"{checkpoint} was written without FSDP (full weights): resume it without --fsdp, or "
                             "pass --overwrite_output_dir true to start afresh.")
    return checkpoint


def _check_fsdp_layers(model, training_args: Seq2SeqTrainingArguments) -> None:
    """The layer classes FSDP wraps one by one, from `--fsdp_config` (or the accelerate config), checked against the
    model before Accelerate's `prepare` would fail on every rank; by default the model's own layers."""
    plugin_args = training_args.fsdp_plugin_args
    if requested_fsdp_version(plugin_args) is None:
        return
    try:
        if plugin_args is not None:
            if plugin_args.get("auto_wrap_policy") == "TRANSFORMER_BASED_WRAP":
                plugin_args["transformer_cls_names_to_wrap"] = fsdp_layer_classes(
                    model, plugin_args.get("transformer_cls_names_to_wrap"), "--fsdp_config transformer_layer_cls_to_wrap")
        elif os.environ.get("FSDP_AUTO_WRAP_POLICY", "NO_WRAP").upper() == "TRANSFORMER_BASED_WRAP":
            os.environ["FSDP_TRANSFORMER_CLS_TO_WRAP"] = fsdp_layer_classes(
                model, os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP"), "the accelerate config's "
                "fsdp_transformer_layer_cls_to_wrap")
    except ValueError as error:
        raise UsageError(str(error)) from None


class LlmSrtTrainer(Seq2SeqTrainer):
    """`Seq2SeqTrainer` whose `--fsdp` also shards on a CPU process group (gloo), where Accelerate would run DDP.

    Accelerate enables FSDP only on accelerators; [`enable_fsdp_on_cpu`] routes a multi-process CPU launch to the
    Trainer's own FSDP2 plugin, and from there the Trainer's FSDP path runs unchanged (sharded checkpoints, resume).
    """

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        if not enable_fsdp_on_cpu(self.accelerator, self.args.fsdp_plugin_args):
            return
        self.is_fsdp_enabled = True
        # The Trainer's own FSDP checks, which it skipped while Accelerate had dropped the plugin.
        plugin = self.accelerator.state.fsdp_plugin
        if plugin.activation_checkpointing and self.args.activation_checkpointing:
            raise ValueError("fsdp_config's activation_checkpointing and --activation_checkpointing can't both be set.")
        if self.args.save_only_model and self.args.load_best_model_at_end:
            raise ValueError("FSDP can't be used with --save_only_model along with --load_best_model_at_end.")
        if self.args.save_only_model and "SHARDED_STATE_DICT" in str(plugin.state_dict_type):
            raise ValueError("--save_only_model is not compatible with FSDP state dict type SHARDED_STATE_DICT.")

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        from torch.distributed.fsdp import FSDPModule

        if not isinstance(self.model, FSDPModule) or state_dict is None or not self.args.should_save:
            return super()._save(output_dir, state_dict=state_dict)
        # The gathered full weights, saved from a plain copy of the model: the sharded one's class is torch's.
        sharded = self.model
        self.model = unsharded_model(sharded, state_dict)
        try:
            super()._save(output_dir)
        finally:
            self.model = sharded


class DistributedReport(TrainerCallback):
    """Logs on every process, once the Trainer has prepared the model, how training is distributed: the engine
    Accelerate runs, how many parameters FSDP2 holds as shards (DTensors) there, and the step training starts from."""

    def __init__(self, accelerator):
        self.accelerator = accelerator

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        import torch.distributed as dist
        from accelerate.utils import DistributedType

        accelerator = self.accelerator
        if accelerator.num_processes < 2 or model is None:
            return
        engine = {DistributedType.DEEPSPEED: "DeepSpeed"}.get(accelerator.distributed_type, "DDP")
        if accelerator.distributed_type == DistributedType.FSDP:
            engine = f"FSDP{accelerator.state.fsdp_plugin.fsdp_version}"
        sharded, total = sharded_parameter_count(model)
        logger.info(f"distributed: {engine} over {accelerator.num_processes} processes ({dist.get_backend()}); "
                    f"rank {accelerator.process_index}: {sharded} of {total} parameters sharded (DTensor); "
                    f"training from step {state.global_step} of {state.max_steps}")


class StageProgress(ProgressCallback):
    """The Trainer's progress bars, labelled with the stage ("SRT stage training", "SRT stage evaluation"): a
    curriculum runs three stages in a row, each with its own bars."""

    def __init__(self, stage: str):
        super().__init__()
        self.stage = stage.upper()

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        if self.training_bar is not None:
            self.training_bar.set_description(f"{self.stage} stage training")

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        new_bar = self.prediction_bar is None
        super().on_prediction_step(args, state, control, eval_dataloader=eval_dataloader, **kwargs)
        if new_bar and self.prediction_bar is not None:
            self.prediction_bar.set_description(f"{self.stage} stage evaluation")


def setup(model_args: ModelArguments, data_args: DataArguments, training_args: Seq2SeqTrainingArguments):
    """Everything before the first step: the output folder (never replaced without `--overwrite_output_dir`), the
    checkpoint to resume from, the model, and every data row checked. Returns (trainer, checkpoint, eval_rows)."""
    set_seed(training_args.seed)
    import torch

    try:
        checkpoint = resume_point(data_args, training_args, model_args)
    except (ValueError, OSError) as error:
        raise UsageError(str(error)) from None
    # Rows before the model: a bad row is named in seconds, not at the step that reaches it.
    window = audio_window(model_args)
    processor, context = load_processor(model_args)
    train_rows, base_dir = check_split(data_args.train_file, data_args, window, data_args.max_train_samples,
                                       processor, context)
    eval_rows = eval_base_dir = None
    if data_args.eval_file:
        eval_rows, eval_base_dir = check_split(data_args.eval_file, data_args, window, data_args.max_eval_samples,
                                               processor, context)
    dtype = torch.bfloat16 if training_args.bf16 else (torch.float16 if training_args.fp16 else None)
    model, processor = load_model_and_processor(model_args, dtype=None if dtype == torch.float16 else dtype,
                                                processor=processor)
    train_rows = prepare_split(train_rows, base_dir, data_args, processor)
    if eval_rows is not None:
        eval_rows = prepare_split(eval_rows, eval_base_dir, data_args, processor)
    counts = configure_stage(
        model, data_args.stage, use_lora=model_args.use_lora,
        lora_kwargs={"r": model_args.lora_r, "lora_alpha": model_args.lora_alpha,
                     "lora_dropout": model_args.lora_dropout,
                     "target_modules": [m.strip() for m in model_args.lora_target_modules.split(",") if m.strip()]},
    )
    logger.info(f"stage {data_args.stage}: trainable parameters {counts}")
    languages, directions = record_trained_languages(model.config, train_rows, data_args.stage)
    logger.info(f"trained on (recorded in config.json): languages {', '.join(languages)}; directions "
                f"{', '.join(directions) or 'none'}")
    _check_fsdp_layers(model, training_args)
    compute_metrics = None
    if eval_rows is not None and training_args.predict_with_generate:
        compute_metrics = build_compute_metrics(processor, data_args.stage, eval_rows)

    trainer = LlmSrtTrainer(
        model=model,
        args=training_args,
        train_dataset=train_rows,
        eval_dataset=eval_rows,
        data_collator=LlmSrtDataCollator(processor, data_args.stage, base_dir=base_dir),
        processing_class=processor,
        compute_metrics=compute_metrics,
    )
    trainer.add_callback(DistributedReport(trainer.accelerator))
    if trainer.pop_callback(ProgressCallback) is not None:  # absent with --disable_tqdm
        trainer.add_callback(StageProgress(data_args.stage))
    return trainer, checkpoint, eval_rows


def run(trainer: Seq2SeqTrainer, checkpoint: str | None, eval_rows) -> dict:
    """Train (resuming from `checkpoint`), save the model and processor, evaluate; returns the final metrics.

    The final model is written to a staging folder inside `--output_dir` and moved in file by file; the completion
    marker (`training_complete.json`) is written last, after the metrics. A run killed before the marker leaves a
    folder the next run resumes (from its newest checkpoint) instead of calling it finished.
    """
    training_args = trainer.args
    output_dir = training_args.output_dir
    if checkpoint:
        logger.info(f"Resuming from {checkpoint}")
    result = trainer.train(resume_from_checkpoint=checkpoint)
    metrics = dict(result.metrics)
    if trainer.is_fsdp_enabled:
        # Checkpoints may be sharded (resumable by the same launch); the output folder is a loadable model: full
        # weights, gathered from every process and written by the first.
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    staging = os.path.join(output_dir, FINAL_STAGING)
    trainer.save_model(staging)
    files: list[str] = []
    if trainer.is_world_process_zero():
        trainer.processing_class.save_pretrained(staging)
        files = publish_final_model(staging, output_dir)
    if eval_rows is not None:
        metrics.update(trainer.evaluate())
    trainer.log_metrics("all", metrics)
    if trainer.is_world_process_zero():
        trainer.save_metrics("all", metrics)
        mark_finished(output_dir, [*files, "all_results.json"], global_step=trainer.state.global_step)
        logger.info(f"Finished: {output_dir} holds the final model.")
    return metrics


def train(model_args: ModelArguments, data_args: DataArguments, training_args: Seq2SeqTrainingArguments) -> dict:
    """Run one stage; returns the final metrics. The output folder holds the loadable model and processor."""
    return run(*setup(model_args, data_args, training_args))


def main(argv: list[str] | None = None) -> dict:
    """Parse, check and train. A user error found before the first step ends as one line `train.py: error: ...`:
    exit 2 for bad usage (flags, an output folder that would be replaced), 1 for data or a model that cannot be
    used. Failures during training itself keep their traceback."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    args = parse_args(argv)
    try:
        prepared = setup(*args)
    except UsageError as error:
        _fail(error, 2)
    except (ValueError, OSError) as error:  # DataError, AudioInputError, a model folder that does not load
        _fail(error, 1)
    try:
        return run(*prepared)
    finally:
        import torch

        # As evaluate.py: each process of a distributed launch ends its process group itself; left to the
        # interpreter's exit, a process's communication threads can be torn down running (SIGABRT, "terminate called
        # without an active exception"), failing the launch after the model was written.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _fail(error: BaseException, status: int):
    exit_with_error(PROG, error, status)

