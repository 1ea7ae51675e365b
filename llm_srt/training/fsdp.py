"""FSDP through the Trainer on CPU process groups (gloo), where Accelerate would run DDP, and its checkpoints."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from transformers.utils import logging


logger = logging.get_logger(__name__)


def requested_fsdp_version(fsdp_plugin_args: dict | None = None) -> int | None:
    """The FSDP version asked for: by the Trainer's `fsdp_plugin_args` (`--fsdp` / `--fsdp_config`), else by
    `accelerate launch`'s FSDP config (`ACCELERATE_USE_FSDP`, `FSDP_VERSION`). None when FSDP is not asked for."""
    if fsdp_plugin_args is not None:
        return int(fsdp_plugin_args.get("fsdp_version", 2))
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return int(os.environ.get("FSDP_VERSION", "1"))  # Accelerate's own default
    return None


def fsdp_offload_requested(fsdp_plugin_args: dict | None = None) -> bool:
    """Whether FSDP's parameter offload to CPU is asked for: `--fsdp offload` / fsdp_config's `cpu_offload`, or
    accelerate's `fsdp_offload_params`."""
    if fsdp_plugin_args is not None:
        return bool(fsdp_plugin_args.get("cpu_offload"))
    return os.environ.get("FSDP_OFFLOAD_PARAMS", "false").lower() in ("true", "1", "yes")


def is_fsdp_checkpoint(folder: str) -> bool:
    """Whether a checkpoint holds FSDP's model state (`pytorch_model_fsdp_0/` sharded, `pytorch_model_fsdp.bin`
    full), as `Trainer._load_from_checkpoint` tells them apart."""
    entries = os.listdir(folder) if os.path.isdir(folder) else []
    return any(n.startswith("pytorch_model_fsdp") and os.path.isdir(os.path.join(folder, n)) for n in entries) or (
        "pytorch_model_fsdp.bin" in entries)


def fsdp_layer_classes(model: torch.nn.Module, names: str | Sequence[str] | None, flag: str) -> str:
    """The layer classes FSDP shards one by one, checked against `model`: `names` (comma-separated or a list, from
    `flag`), or by default the model's `_no_split_modules` that it has (it also names classes of configurations it
    does not build, which Accelerate would refuse). Raises ValueError naming `flag` for a class the model lacks."""
    present = list(dict.fromkeys(type(m).__name__ for m in model.modules()))
    if names is None:
        return ",".join(n for n in (getattr(model, "_no_split_modules", None) or []) if n in present)
    wanted = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    missing = [n for n in wanted if n not in present]
    if missing:
        layers = [n for n in present if n.endswith("Layer")]
        raise ValueError(f"{flag} names {', '.join(missing)}, not a layer class of this model (its layers: "
                         f"{', '.join(layers)}).")
    return ",".join(wanted)


def enable_fsdp_on_cpu(accelerator, fsdp_plugin_args: dict | None = None) -> bool:
    """Shard with FSDP2 on a multi-process CPU launch (gloo), where Accelerate would run DDP instead.

    Accelerate (1.15) honours an FSDP plugin only on accelerator process groups (`AcceleratorState.__init__`:
    MULTI_GPU, MULTI_XPU, ...). On a CPU launch (MULTI_CPU) it drops the plugin the Trainer built from `--fsdp` /
    `--fsdp_config` (or from `accelerate launch`'s FSDP config), and training silently runs as DDP. torch's FSDP2
    (`fully_shard`) runs on CPU with gloo, so this does what Accelerate does on GPUs: the distributed type becomes
    FSDP with that plugin, and `Accelerator.prepare` then shards the model (`fsdp2_prepare_model`).

    Call it right after creating the accelerator, before `prepare`. `fsdp_plugin_args` are the Trainer's
    (`TrainingArguments.fsdp_plugin_args`); without them the plugin is read from Accelerate's `FSDP_*` environment
    variables (`accelerate launch --config_file fsdp.yaml`). Returns True when it enabled FSDP; does nothing (False)
    when FSDP is not asked for, the launch is not multi-process CPU, or Accelerate already enabled it.

    Raises:
        ValueError: FSDP version 1 asked for (Accelerate's FSDP1 plugin needs an accelerator device).
    """
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = accelerator.state
    version = requested_fsdp_version(fsdp_plugin_args)
    if version is None or state.distributed_type != DistributedType.MULTI_CPU or getattr(state, "fsdp_plugin", None):
        return False
    if version != 2:
        raise ValueError(
            f"FSDP on CPU runs FSDP2 only; the FSDP config asks for version {version} "
            "(set fsdp_config's version, or accelerate's fsdp_version, to 2)."
        )
    plugin = FullyShardedDataParallelPlugin(**(fsdp_plugin_args or {}))
    if state.mixed_precision != "no":  # as AcceleratorState does for accelerator groups
        plugin.set_mixed_precision(state.mixed_precision)
    state.fsdp_plugin = plugin
    state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    logger.info(f"FSDP{plugin.fsdp_version} on CPU over {state.num_processes} processes (gloo): Accelerate enables "
                "FSDP only on accelerators and would have run DDP.")
    return True


def sharded_parameter_count(model: torch.nn.Module) -> tuple[int, int]:
    """(parameters held as DTensors, i.e. sharded by FSDP2, all parameters) of a model."""
    from torch.distributed.tensor import DTensor

    params = list(model.parameters())
    return sum(isinstance(p, DTensor) for p in params), len(params)


def unsharded_model(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A plain copy of an FSDP2-sharded model holding `state_dict` (its full weights, e.g. gathered on rank 0).

    `fully_shard` swaps a model's class for a generated `FSDP<Name>` defined in torch; `save_pretrained` on it would
    write torch's files as the folder's remote code (auto_map `_fsdp_init.FSDP<Name>`). The copy has the original
    class, built on the meta device and filled with the given tensors (no second copy of the weights).
    """
    import copy

    from torch.distributed.fsdp import FSDPModule

    cls = next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))
    with torch.device("meta"):
        plain = cls(copy.deepcopy(model.config))
    plain.load_state_dict(state_dict, strict=True, assign=True)
    plain.tie_weights()
    plain.generation_config = copy.deepcopy(model.generation_config)
    return plain
