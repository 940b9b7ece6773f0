"""The run configuration: typed and validated. A YAML file gives values, command-line flags
override them, and the resolved config is saved in the run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from .errors import CheckpointError, ConfigError
from .tasks.schema import _format_validation_error, read_yaml_file


class TrainConfig(BaseModel):
    """Every knob of ``mtdnn train`` (defaults follow the paper where it gives one)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    tasks: list[str] = Field(min_length=1, description="task names, built-in or from task_files")
    task_files: list[str] = Field(default_factory=list, description="YAML files with your own tasks")
    data_dir: str | None = Field(None, description="root of the data files (default: $MTDNN_DATA_DIR or ../shared/data)")
    encoder: str = Field("default", description="Hugging Face encoder name or path; 'default' = embedded all-MiniLM-L6-v2")
    output_dir: str = "runs/mtdnn"
    init_from: str | None = Field(None, description="a run dir whose encoder (and matching heads) start this run")
    resume: str | None = Field(None, description="a run dir to continue from its last checkpoint "
                               "(its config.yaml gives the config)")

    epochs: int = Field(5, ge=1, le=1000)
    batch_size: int = Field(32, ge=1, le=65536)
    eval_batch_size: int = Field(128, ge=1, le=65536)
    lr: float = Field(5e-5, gt=0.0, le=1.0)
    optimizer: Literal["adamax", "adamw"] = "adamax"
    weight_decay: float = Field(0.01, ge=0.0, le=1.0)
    warmup_ratio: float = Field(0.1, ge=0.0, le=1.0)
    max_grad_norm: float = Field(1.0, ge=0.0)
    grad_accum_steps: int = Field(1, ge=1, le=4096)
    max_seq_len: int = Field(128, ge=8, le=65536)
    max_train_examples: int | None = Field(None, ge=1, description="per task: a fixed random subset (subset_seed)")
    max_train_examples_per_task: dict[str, int] = Field(
        default_factory=dict, description="task -> subset size, overriding max_train_examples for that task")
    max_eval_examples: int | None = Field(None, ge=1, description="per eval split: the first N rows (quick runs)")
    subset_seed: int = Field(0, ge=0, description="seed of the --max-train-examples subset")
    seed: int = Field(42, ge=0)
    group_by_length: bool = True

    eval_every: int = Field(1, ge=1, description="evaluate every N epochs (and always after the last)")
    selection: Literal["best", "last"] = Field("best", description="keep each task's best dev epoch, or the last")
    predict_test: bool = Field(True, description="write GLUE submission files for test splits")
    allow_hub: bool = Field(True, description="load missing built-in data through datasets from the hub")
    cache_dir: str | None = Field(None, description="tokenised-data cache (default: $MTDNN_CACHE_DIR or ~/.cache/mtdnn)")

    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    parallel: Literal["ddp", "fsdp"] = Field("ddp", description="under torchrun: ddp (a model replica per "
                                             "process) or fsdp (weights, gradients, optimiser state sharded)")
    dist_timeout: int = Field(600, ge=10, le=86400, description="seconds a process waits for its peers in a "
                              "collective before the job fails (a dead or stuck peer)")
    activation_checkpointing: bool = Field(False, description="recompute the encoder's activations in the "
                                           "backward pass: less memory, ~30% slower")
    threads: int | None = Field(None, ge=1, le=1024, description="torch CPU threads (default: torch's choice)")
    compile: bool = False
    cls_only_last_layer: bool = Field(True, description="for heads that read only [CLS] (linear, regression), "
                                      "the encoder's last layer computes only that position: same outputs and "
                                      "random stream, ~14% fewer encoder FLOPs for MiniLM; not used with compile, "
                                      "activation checkpointing or FSDP")
    num_workers: int = Field(0, ge=0, le=64)
    log_every: int = Field(20, ge=1)
    checkpoint_every: int | None = Field(None, ge=1, description="also save a resumable "
                                         "checkpoint every N optimiser steps (always at epoch ends)")
    on_nan: Literal["stop", "skip"] = Field("stop", description="a NaN/inf loss stops the run, "
                                            "or skips the batch (counted in the history)")
    progress: bool = True

    @field_validator("max_train_examples_per_task")
    @classmethod
    def _positive_sizes(cls, v: dict[str, int]) -> dict[str, int]:
        bad = [k for k, n in v.items() if n < 1]
        if bad:
            raise ValueError(f"subset sizes must be >= 1 (task {bad[0]})")
        return v

    def train_subset(self, task: str) -> int | None:
        return self.max_train_examples_per_task.get(task, self.max_train_examples)

    @field_validator("parallel")
    @classmethod
    def _fsdp_precision(cls, v: str, info: ValidationInfo) -> str:
        if v == "fsdp" and info.data.get("precision") == "fp16":
            raise ValueError("fsdp runs in fp32 or bf16 (--precision bf16), not fp16")
        return v

    @field_validator("tasks", "task_files", mode="before")
    @classmethod
    def _split_commas(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [t.strip() for t in v.split(",") if t.strip()]
        return v


def load_config_file(path: str | Path) -> dict[str, Any]:
    data = read_yaml_file(path, "config file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("a config file must be a mapping of option: value", path=str(path))
    return data


def make_config(file_values: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None,
                source: str = "config") -> TrainConfig:
    """Merge (file, then flags that were given) and validate; errors name the field."""
    values = dict(file_values or {})
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return TrainConfig.model_validate(values)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err), path=source) from None


def resume_values(run_dir: str | Path) -> dict[str, Any]:
    """The config values of a run to continue (its ``config.yaml``), with ``resume`` and
    ``output_dir`` pointing at it: ``make_config(resume_values(d), overrides)``."""
    run_dir = Path(str(run_dir))
    if not run_dir.is_dir():
        raise CheckpointError("run directory to resume not found", path=str(run_dir))
    if not (run_dir / "config.yaml").is_file():
        raise CheckpointError("not an mtdnn run directory (config.yaml missing)", path=str(run_dir))
    values = load_config_file(run_dir / "config.yaml")
    values.pop("encoder_resolved", None)
    values.update(resume=str(run_dir), output_dir=str(run_dir))
    return values
