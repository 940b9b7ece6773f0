"""The run configuration: typed and validated. A YAML file gives values, command-line flags
override them, and the resolved config is saved in the run directory.

:class:`TrainConfig` is the one source of the options: the flags of ``mtdnn train`` are generated
from its fields (``mtdnn.commands.config_flags``), and the fields a resumed run may change are
marked on them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from .errors import CheckpointError, ConfigError
from .tasks.schema import format_validation_error, read_yaml_file


# ``json_schema_extra["resume"]`` of a field that a resumed run (``--resume``) may change: one that
# does not change what the run computes (where files are, how fast it runs, what it logs).
MAY_CHANGE_ON_RESUME: Final = "may_change"


def _may_change(**extra: Any) -> dict[str, Any]:
    """``json_schema_extra`` of a field that ``--resume`` may change (plus any other metadata)."""
    return {"resume": MAY_CHANGE_ON_RESUME, **extra}


class TrainConfig(BaseModel):
    """Every option of ``mtdnn train``, in one place: its type, range, default and help.

    The command line is generated from these fields (``commands/config_flags.py``): each field
    ``foo_bar`` is the flag ``--foo-bar`` (bools: ``--foo-bar/--no-foo-bar``), its help is the field's
    ``description`` and ``--help`` shows the default. Older spellings of a flag are listed in
    the field's ``json_schema_extra`` under ``"flag_aliases"`` (``--task-file``, ``--hub``/``--no-hub``).

    A YAML file (``--config``) uses the field names; given flags override it.

    ``json_schema_extra={"resume": "may_change"}`` marks a field that a resumed run may set to
    another value than the killed run had; every other field must stay as it was
    (:meth:`resume_may_change`, checked by ``training.checkpoint.check_resume_config``).

    Defaults are what works for the default encoder (all-MiniLM-L6-v2) on a short budget:
    AdamW at lr 1e-4, 10% warm-up, batch 32, 128 tokens. The paper's Adamax at lr 5e-5 learns too
    slowly for that encoder (RTE dev below the majority class after 2 epochs on 1000 examples);
    the paper's exact settings are ``configs/paper.yaml``. Descriptions quote the paper's value
    where it gives one.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # ------------------------------------------------------------------ what to train, where
    tasks: list[str] = Field(
        min_length=1, description="Tasks to train together, comma-separated: built-in names (see `mtdnn "
        "tasks`) or names defined in --task-files; required unless --resume or --config gives them.")
    task_files: list[str] = Field(  # may change on resume: the resolved task definitions are compared
        default_factory=list, json_schema_extra=_may_change(flag_aliases=["--task-file"]),
        description="YAML files defining your own tasks, comma-separated; a task named like a "
        "built-in one replaces it.")
    data_dir: str | None = Field(
        None, json_schema_extra=_may_change(),
        description="Root folder of the data files; unset: $MTDNN_DATA_DIR, else ./data.")
    encoder: str = Field(
        "default", description="Hugging Face encoder name or local folder; 'default' is the embedded "
        "all-MiniLM-L6-v2 (the paper used BERT).")
    output_dir: str = Field(
        "runs/mtdnn", json_schema_extra=_may_change(),
        description="Run directory to write: config, checkpoints, metrics, history, submissions.")
    pair_head: Literal["linear", "san"] = Field(
        "linear", description="Head of the pair classification tasks whose definition names none (the "
        "built-in RTE, MRPC, MNLI, QNLI, QQP, WNLI, SNLI, SciTail): linear on [CLS], which exports to a "
        "standard Hugging Face folder, or san, the paper's stochastic answer network (K = 5 steps; "
        "configs/paper.yaml); a task file's head: {kind: ...} wins.")
    init_from: str | None = Field(
        None, description="A finished run directory whose encoder (and the heads of tasks defined the "
        "same way) start this run: the paper's stage-two fine-tuning; unset: the encoder's "
        "pretrained weights and new heads.")
    resume: str | None = Field(
        None, json_schema_extra=_may_change(),
        description="A killed run's directory to continue from its last checkpoint; its config.yaml "
        "gives the config, and only options that do not change the results may differ.")

    # ------------------------------------------------------------------ optimisation
    epochs: int = Field(5, ge=1, le=1000, description="Passes over the training data (paper: 5).")
    batch_size: int = Field(
        32, ge=1, le=65536, description="Training examples per batch; each batch holds one task (paper: 32).")
    eval_batch_size: int = Field(
        128, ge=1, le=65536, description="Examples per batch when evaluating and predicting (does not "
        "change the results).")
    lr: float = Field(
        1e-4, gt=0.0, le=1.0, description="Peak learning rate, reached after the warm-up and then decayed "
        "linearly to zero (paper: 5e-5 with Adamax; 1e-4 suits AdamW and the default encoder).")
    optimizer: Literal["adamax", "adamw"] = Field(
        "adamw", description="adamw, which works for the default encoder, or adamax (paper).")
    weight_decay: float = Field(
        0.01, ge=0.0, le=1.0, description="Weight decay of weight matrices (not biases or LayerNorm): "
        "decoupled in AdamW, an L2 term in Adamax.")
    warmup_ratio: float = Field(
        0.1, ge=0.0, le=1.0, description="Share of the optimiser steps spent in linear warm-up (paper: 0.1).")
    max_grad_norm: float = Field(
        1.0, ge=0.0, description="Gradient clipping to this global norm, 0 for none (paper: 1.0).")
    grad_accum_steps: int = Field(
        1, ge=1, le=4096, description="Batches whose gradients are summed before one optimiser step.")
    max_seq_len: int = Field(
        128, ge=8, le=65536, description="Tokens per example, longer inputs are truncated (paper: 512).")
    max_train_examples: int | None = Field(
        None, ge=1, description="Per task, train on a fixed random subset of this size (drawn with "
        "--subset-seed); unset: all rows.")
    max_train_examples_per_task: dict[str, int] = Field(
        default_factory=dict, description="Subset sizes of single tasks as task=N,task=N, overriding "
        "--max-train-examples for those tasks.")
    max_eval_examples: int | None = Field(
        None, ge=1, description="Per evaluation split, only the first N rows (quick runs); unset: all rows.")
    subset_seed: int = Field(0, ge=0, description="Seed of the random training subsets.")
    seed: int = Field(42, ge=0, description="Random seed of the data order, dropout and head initialisation.")
    group_by_length: bool = Field(
        True, description="Sort rows by length within windows of a few batches before batching, so "
        "batches pad little; off: plain random batches.")

    # ------------------------------------------------------------------ evaluation and data
    eval_every: int = Field(1, ge=1, description="Evaluate every N epochs (and always after the last).")
    selection: Literal["best", "last"] = Field(
        "best", description="Which epoch's weights each task keeps: its best dev epoch, or the last.")
    selection_split: Literal["dev", "holdout"] = Field(
        "dev", description="Where each task's kept epoch (and early stopping) is chosen: on its dev "
        "split, or on a held-out part of its training data (--holdout-fraction; its rows are listed in "
        "the run directory's holdout.json), so that dev is reported clean.")
    holdout_fraction: float = Field(
        0.1, gt=0.0, lt=0.5, description="With --selection-split holdout: the share of each task's "
        "training rows held out, drawn with --subset-seed and stratified by label (whole questions "
        "for ranking); they do not train.")
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop training after this many evaluations without an improvement of "
        "the selection score (the mean over the tasks of each task's score on its selection split) "
        "by more than --early-stopping-min-delta; unset: train every epoch.")
    early_stopping_min_delta: float = Field(
        0.0, ge=0.0, description="The least rise of the selection score (points) that counts as an "
        "improvement for --early-stopping-patience.")
    predict_test: bool = Field(True, description="Write GLUE submission files for the tasks' test splits.")
    allow_hub: bool = Field(
        True, json_schema_extra=_may_change(flag_aliases=["--hub"]),
        description="Load built-in data missing from the data folder from the Hugging Face hub.")
    cache_dir: str | None = Field(
        None, json_schema_extra=_may_change(),
        description="Tokenised-data cache folder; unset: $MTDNN_CACHE_DIR, else ~/.cache/mtdnn.")

    # ------------------------------------------------------------------ multi-task methods (docs/interference.md)
    sampling: Literal["proportional", "temperature", "uniform", "annealed"] = Field(
        "proportional", description="Which task each batch is of: proportional (the paper's Algorithm "
        "1: every batch of every task once per epoch), temperature (task t drawn with probability ~ "
        "n_t^(1/T)), uniform, or annealed (exponent from 1 to 0.2 over the epochs).")
    sampling_temperature: float = Field(
        2.0, gt=0.0, le=1e6, description="T of --sampling temperature: 1 is proportional, large T uniform.")
    max_epoch_examples_per_task: int | None = Field(
        None, ge=1, description="At most N training examples of a task per epoch: proportional takes a "
        "fresh random N of a larger task's rows each epoch; the sampled methods count it as N in the "
        "mixture; unset: no cap.")
    mtl_method: Literal["none", "uncertainty", "pcgrad"] = Field(
        "none", description="none; uncertainty (a learned log-variance per task weighs its loss, Kendall "
        "et al. 2018); or pcgrad (each step takes one batch of every task and projects away the "
        "conflicting parts of the tasks' encoder gradients, Yu et al. 2020).")
    steps_per_epoch: int | None = Field(
        None, ge=1, description="Optimiser steps per epoch of --sampling temperature|uniform|annealed and "
        "of --mtl-method pcgrad; unset: as many batches as a proportional epoch has.")
    task_weights: dict[str, float] = Field(
        default_factory=dict, description="Loss weights of single tasks as task=X,task=X, overriding the "
        "loss_weight of their task definitions (default 1).")
    uncertainty_lr: float = Field(
        1e-2, gt=0.0, le=1.0, description="Peak learning rate of the log-variances of --mtl-method "
        "uncertainty (their own parameter group, no weight decay).")
    log_grad_cosine: int | None = Field(
        None, ge=1, json_schema_extra=_may_change(),
        description="Every N optimiser steps, log the cosine similarity between the tasks' gradients on "
        "the shared encoder (one fresh batch per task, no dropout; history.jsonl and TensorBoard); "
        "training is unchanged; unset: off.")

    # ------------------------------------------------------------------ robustness and distillation (docs/smart-and-distillation.md)
    adv: bool = Field(
        False, description="SMART: add the adversarial smoothness term (perturbed input embeddings vs "
        "clean outputs) to every task's loss; about 2.5x the compute of a step (docs/smart-and-distillation.md).")
    adv_alpha: float = Field(1.0, ge=0.0, description="Weight of SMART's adversarial term (paper: 1 to 5).")
    adv_epsilon: float = Field(
        1e-3, ge=0.0, description="Radius of the perturbation's norm ball (per example; see --adv-norm); "
        "paper: 1e-5, too small to survive bf16.")
    adv_step_size: float = Field(1e-3, ge=0.0, description="Step of each projected gradient-ascent step (paper: 1e-3).")
    adv_steps: int = Field(1, ge=1, le=100, description="Projected gradient-ascent steps per batch (paper: 1).")
    adv_noise_var: float = Field(
        1e-6, ge=0.0, description="Variance of the perturbation's Gaussian start, per element (paper: 1e-5).")
    adv_norm: Literal["inf", "l2"] = Field(
        "inf", description="The perturbation's ball and step normalisation: inf (each element within "
        "epsilon; the paper's) or l2 (the example's embeddings within epsilon).")
    adv_proximal: bool = Field(
        False, description="With --adv: also the Bregman proximal term, the divergence between the "
        "model's outputs and those of an exponential moving average of its weights.")
    adv_proximal_weight: float = Field(1.0, ge=0.0, description="Weight of the proximal term (paper: 1).")
    adv_ema_decay: float = Field(
        0.99, ge=0.0, lt=1.0, description="Decay of the proximal anchor's moving average per optimiser step (paper: 0.99).")
    teachers: list[str] = Field(
        default_factory=list, description="Distillation: finished run directories whose averaged "
        "soft targets (class probabilities, scores) the run trains on, comma-separated; each teacher "
        "uses the epoch its task keeps; unset: no distillation.")
    kd_alpha: float = Field(
        0.5, ge=0.0, le=1.0, description="With --teachers: the loss is kd_alpha * distillation loss + "
        "(1 - kd_alpha) * the gold labels' loss.")
    kd_temperature: float = Field(
        1.0, gt=0.0, le=100.0, description="With --teachers: softmax temperature of teachers and student "
        "(the distillation loss is scaled by T^2).")

    # ------------------------------------------------------------------ hardware and speed
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", json_schema_extra=_may_change(), description="Where to train; auto: CUDA if available.")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="Compute precision; bf16 and fp16 run under autocast.")
    parallel: Literal["ddp", "fsdp"] = Field(
        "ddp", description="Under torchrun: ddp (a model replica per process) or fsdp (weights, "
        "gradients and optimiser state sharded; big encoders).")
    dist_timeout: int = Field(
        600, ge=10, le=86400, json_schema_extra=_may_change(),
        description="Seconds a process waits for its peers in a collective before the job fails "
        "(torchrun runs; a dead or stuck peer).")
    activation_checkpointing: bool = Field(
        False, json_schema_extra=_may_change(),
        description="Recompute the encoder's activations in the backward pass: less memory, ~30% slower.")
    threads: int | None = Field(
        None, ge=1, le=1024, json_schema_extra=_may_change(),
        description="Torch CPU threads; unset: torch's choice.")
    compile: bool = Field(False, description="torch.compile the encoder (does not pay on small CPUs).")
    cls_only_last_layer: bool = Field(
        True, json_schema_extra=_may_change(),
        description="For heads that read only [CLS] (linear, regression), the encoder's last layer "
        "computes only that position: same outputs and random stream, ~14% fewer encoder FLOPs for "
        "MiniLM; not used with compile, activation checkpointing or FSDP.")
    num_workers: int = Field(
        0, ge=0, le=64, json_schema_extra=_may_change(),
        description="Processes that collate training batches ahead of the loop, 0 for inline (same "
        "results with any number).")

    # ------------------------------------------------------------------ per-task adapters (docs/adapters.md)
    adapter: Literal["none", "lora"] = Field(
        "none", description="none: every weight trains; lora: the encoder stays frozen and shared, each "
        "task trains a LoRA adapter (Hugging Face peft, the 'adapters' extra) and its head; with "
        "--init-from RUN the new run also serves RUN's other tasks unchanged.")
    lora_rank: int = Field(8, ge=1, le=4096, description="Rank r of each LoRA update B A (--adapter lora).")
    lora_alpha: int = Field(
        16, ge=1, le=65536, description="LoRA scaling alpha: the update is multiplied by alpha / rank.")
    lora_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout on the input of each LoRA update.")
    lora_targets: list[str] = Field(
        default_factory=lambda: ["query", "value"], min_length=1,
        description="Encoder layers that get LoRA updates, comma-separated names as peft matches them: "
        "query,value for BERT, RoBERTa, MiniLM, ELECTRA; q_lin,v_lin for DistilBERT; "
        "query_proj,value_proj for DeBERTa (docs/adapters.md).")

    # ------------------------------------------------------------------ logging and checkpoints
    log_every: int = Field(
        20, ge=1, json_schema_extra=_may_change(), description="TensorBoard logging interval, in optimiser steps.")
    checkpoint_every: int | None = Field(
        None, ge=1, json_schema_extra=_may_change(),
        description="Also save a resumable checkpoint every N optimiser steps; unset: at epoch ends only.")
    save_all_epochs: bool = Field(
        False, json_schema_extra=_may_change(), description="Keep every epoch's weights in "
        "checkpoints/; off: only the epochs the tasks keep and the last (an adapter run keeps "
        "neither once it finishes).")
    on_nan: Literal["stop", "skip"] = Field(
        "stop", json_schema_extra=_may_change(),
        description="What a NaN or infinite loss does: stop the run, or skip the batch (counted in the history).")
    progress: bool = Field(True, json_schema_extra=_may_change(), description="Show progress bars.")

    @classmethod
    def resume_may_change(cls) -> frozenset[str]:
        """The fields a resumed run may change: those marked ``{"resume": "may_change"}``."""
        return frozenset(name for name, info in cls.model_fields.items()
                         if isinstance(info.json_schema_extra, dict)
                         and info.json_schema_extra.get("resume") == MAY_CHANGE_ON_RESUME)

    @classmethod
    def flag_aliases(cls, name: str) -> tuple[str, ...]:
        """Older spellings of the field's flag (``json_schema_extra["flag_aliases"]``)."""
        extra = cls.model_fields[name].json_schema_extra
        return tuple(extra.get("flag_aliases", ())) if isinstance(extra, dict) else ()

    @field_validator("max_train_examples_per_task")
    @classmethod
    def _positive_sizes(cls, v: dict[str, int]) -> dict[str, int]:
        bad = [k for k, n in v.items() if n < 1]
        if bad:
            raise ValueError(f"subset sizes must be >= 1 (task {bad[0]})")
        return v

    def train_subset(self, task: str) -> int | None:
        return self.max_train_examples_per_task.get(task, self.max_train_examples)

    def held_out_fraction(self) -> float | None:
        """The share of each training split held out for selection; ``None`` when selection is on dev."""
        return self.holdout_fraction if self.selection_split == "holdout" else None

    @field_validator("parallel")
    @classmethod
    def _fsdp_precision(cls, v: str, info: ValidationInfo) -> str:
        if v == "fsdp" and info.data.get("precision") == "fp16":
            raise ValueError("fsdp runs in fp32 or bf16 (--precision bf16), not fp16")
        if v == "fsdp" and info.data.get("mtl_method", "none") != "none":
            raise ValueError(f"--mtl-method {info.data['mtl_method']} runs with ddp, not fsdp")
        return v

    @field_validator("adapter")
    @classmethod
    def _adapter_parallel(cls, v: str, info: ValidationInfo) -> str:
        if v != "none" and info.data.get("parallel") == "fsdp":
            raise ValueError(f"--adapter {v} runs with --parallel ddp, not fsdp")
        return v

    # the methods beyond the paper (docs/interference.md): the combinations that make sense
    @field_validator("mtl_method")
    @classmethod
    def _pcgrad_groups(cls, v: str, info: ValidationInfo) -> str:
        if v == "pcgrad" and info.data.get("sampling", "proportional") != "proportional":
            raise ValueError("pcgrad takes one batch of every task per step: leave --sampling at "
                             f"proportional (got {info.data['sampling']})")
        return v

    @field_validator("steps_per_epoch")
    @classmethod
    def _sampled_steps(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is not None and info.data.get("sampling") == "proportional" and info.data.get("mtl_method") != "pcgrad":
            raise ValueError("proportional sampling takes every batch once per epoch: steps per epoch "
                             "apply to --sampling temperature|uniform|annealed and --mtl-method pcgrad")
        return v

    @field_validator("task_weights")
    @classmethod
    def _weights_of_tasks(cls, v: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        for task, w in v.items():
            if not (w > 0 and w < float("inf")):
                raise ValueError(f"a loss weight must be a positive number (task {task}: {w})")
            if "tasks" in info.data and task not in info.data["tasks"]:
                raise ValueError(f"task {task} is not one of --tasks ({','.join(info.data['tasks'])})")
        return v

    @field_validator("tasks", "task_files", "teachers", "lora_targets", mode="before")
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
        raise ConfigError(format_validation_error(err), path=source) from None
    except UnicodeError:  # a lone surrogate ("\ud800" in a YAML or JSON string) cannot be validated
        bad = next((k for k, v in values.items() if not _valid_text(k) or not _valid_text(v)), None)
        field = None if bad is None else str(bad).encode("utf-8", "backslashreplace").decode("utf-8")
        raise ConfigError("holds text that is not valid Unicode (a lone surrogate)", field=field, path=source) from None


def _valid_text(value: Any) -> bool:
    """Whether every string in ``value`` (nested in lists and mappings) encodes as UTF-8."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(_valid_text(k) and _valid_text(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_valid_text(v) for v in value)
    return True


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
