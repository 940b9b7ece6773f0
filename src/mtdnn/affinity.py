"""``mtdnn affinity``: which auxiliary tasks help a target task, measured before training with them.

Lookahead inter-task affinity (Fifty et al. 2021, "Efficiently identifying task groupings for
multi-task learning"): at a point ``theta`` of a multi-task run, take one batch ``X_j`` of every
task, and for each task ``i`` a gradient step on the shared encoder with ``i``'s loss alone,
``theta' = theta - eta * grad L_i(X_i, theta)``; the affinity of ``i`` onto ``j`` is the relative
change of ``j``'s loss, ``Z_ij = 1 - L_j(X_j, theta') / L_j(X_j, theta)``: positive when a step on
``i`` lowers ``j``'s loss, negative when it raises it. ``Z`` is averaged over the measurement points
of a short multi-task run (``--budget`` optimiser steps of all the tasks, proportional sampling
unless the config says otherwise, one measurement every ``--every`` steps), with its standard error
over the points. The gradients' cosine similarity is recorded at the same points (free: the same
gradients).

Choices, so that the numbers are reproducible: the measurements run in eval mode (no dropout: the
same batch always gives the same loss, and the run's random stream is not touched); the batches are
drawn from (seed, step); the lookahead step is plain SGD on the encoder only (the heads stay: the
effect measured is through the shared layers), with ``--lookahead-lr`` (to first order ``Z_ij`` is
``eta * g_i . g_j / L_j``, so the learning rate scales every entry alike and the ranking does not
depend on it); the weights are restored exactly after each lookahead (a copy, not a subtraction).

Output: a ranked table of the candidates' affinity onto the target on the terminal,
``affinity.json`` (the full task-by-task matrices), ``affinity.png`` (a heatmap; needs the
``plots`` extra) in ``--output-dir``; ``--recommend K`` prints the K best auxiliary tasks (those with
a positive affinity) and the ``mtdnn train`` command that uses them.

``lookahead_affinity`` and ``affinity_run`` work on any model with a shared part and per-task loss
closures (the tests use a tiny MLP); ``run_affinity`` is the command on mtdnn's tasks.
"""

from __future__ import annotations

import argparse
import logging
import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from .config import TrainConfig
from .errors import ConfigError
from .training.diagnostics import (batch_loss, cosine_matrix, evaluating, fresh_rows, shared_parameters,
                                   task_gradients)

log = logging.getLogger(__name__)

LossClosures = dict[str, Callable[[], torch.Tensor]]


# ----------------------------------------------------------------------------- the measure
@torch.no_grad()
def _losses(losses: LossClosures) -> np.ndarray:
    return np.array([float(f()) for f in losses.values()])


def lookahead_affinity(losses: LossClosures, shared: list[nn.Parameter], lr: float) -> tuple[np.ndarray, np.ndarray]:
    """``(Z, cos)`` at the current weights: ``Z[i, j] = 1 - L_j(theta - lr g_i) / L_j(theta)`` with
    ``g_i`` task i's gradient on ``shared``, and the cosine matrix of the ``g_i``. ``losses``: one
    closure per task on its fixed batch (the caller chooses the mode, eval for no dropout)."""
    rows = task_gradients(losses, shared)
    base = _losses(losses)
    saved = [p.detach().clone() for p in shared]
    z = np.full((len(losses), len(losses)), np.nan)
    for i in range(len(losses)):
        with torch.no_grad():
            offset = 0
            for p in shared:
                n = p.numel()
                p.sub_(lr * rows[i, offset:offset + n].view_as(p).to(p.dtype))
                offset += n
        after = _losses(losses)
        with torch.no_grad():
            for p, s in zip(shared, saved):
                p.copy_(s)
        ok = base > 0
        z[i, ok] = 1.0 - after[ok] / base[ok]
    return z, np.array(cosine_matrix(rows))


@dataclass
class AffinityResult:
    tasks: list[str]
    steps: list[int]               # the optimiser steps after which it was measured
    affinity: np.ndarray           # mean Z[i, j] over the measurements
    affinity_se: np.ndarray        # its standard error over the measurements
    cosine: np.ndarray             # mean gradient cosine
    lookahead_lr: float

    def onto(self, target: str) -> list[tuple[str, float, float, float]]:
        """(task, affinity onto target, se, cosine) for every other task, best first."""
        j = self.tasks.index(target)
        rows = [(t, float(self.affinity[i, j]), float(self.affinity_se[i, j]), float(self.cosine[i, j]))
                for i, t in enumerate(self.tasks) if t != target]
        return sorted(rows, key=lambda r: -r[1] if math.isfinite(r[1]) else math.inf)

    def to_json(self, target: str | None = None) -> dict[str, Any]:
        def matrix(m: np.ndarray) -> dict[str, dict[str, float | None]]:
            return {a: {b: (round(float(m[i, j]), 8) if math.isfinite(m[i, j]) else None)
                        for j, b in enumerate(self.tasks)} for i, a in enumerate(self.tasks)}
        out: dict[str, Any] = {"tasks": self.tasks, "measured_after_steps": self.steps,
                               "lookahead_lr": self.lookahead_lr,
                               "affinity": matrix(self.affinity), "affinity_se": matrix(self.affinity_se),
                               "grad_cosine": matrix(self.cosine),
                               "meaning": "affinity[i][j] = 1 - L_j(after an SGD step on i) / L_j(before), "
                                          "mean over the measurements"}
        if target is not None:
            out["target"] = target
            out["ranking"] = [{"task": t, "affinity": a, "se": se, "grad_cosine": c}
                              for t, a, se, c in self.onto(target)]
        return out


def affinity_run(tasks: list[str], shared: list[nn.Parameter], model: nn.Module, *, steps: int, every: int,
                 lookahead_lr: float, train_step: Callable[[int], None],
                 probe: Callable[[int], LossClosures]) -> AffinityResult:
    """Train ``steps`` steps (``train_step(step)``), measuring ``lookahead_affinity`` on the batches
    of ``probe(step)`` after every ``every``-th step, in eval mode; average the measurements."""
    zs, cosines, at = [], [], []
    for step in range(1, steps + 1):
        train_step(step)
        if step % every == 0 or (step == steps and not at):
            with evaluating(model):
                z, cos = lookahead_affinity(probe(step), shared, lookahead_lr)
            zs.append(z)
            cosines.append(cos)
            at.append(step)
    stack = np.stack(zs)
    n = np.sum(np.isfinite(stack), axis=0)
    mean = np.nanmean(stack, axis=0)
    se = np.where(n > 1, np.nanstd(stack, axis=0, ddof=min(1, len(zs) - 1)) / np.sqrt(np.maximum(n, 1)), np.nan)
    return AffinityResult(list(tasks), at, mean, se, np.mean(np.stack(cosines), axis=0), lookahead_lr)


# ----------------------------------------------------------------------------- on mtdnn's tasks
def _batches(schedule: Any) -> Iterator[Any]:
    epoch = 1
    while True:
        yield from schedule.epoch(epoch)
        epoch += 1


def run_affinity(cfg: TrainConfig, *, steps: int, every: int, lookahead_lr: float) -> AffinityResult:
    """The short multi-task run of ``cfg``'s tasks with the affinity measured along it."""
    from .data.batching import collate
    from .runtime import seed_everything, set_threads, to_device
    from .training.distributed import Distributed
    from .training.optim import build_optimizer, build_scheduler
    from .training.methods.sampling import build_schedule
    from .training.setup import build_setup
    from .training.step import StepLoss, SummedGradients, optimizer_step, train_step

    set_threads(cfg.threads)
    seed_everything(cfg.seed)
    s = build_setup(cfg)
    splits = {n: d.train for n, d in s.data.items() if d.train is not None}
    schedule, pad_id = build_schedule(cfg, splits), s.tokenizer.pad_token_id or 0
    optimizer = build_optimizer(s.model, cfg, s.device)
    scheduler = build_scheduler(optimizer, steps, cfg.warmup_ratio)
    objective, gradients, single = StepLoss(s.model), SummedGradients(1), Distributed(device=s.device)
    batches = _batches(schedule)

    def one_step(step: int) -> None:
        s.model.train()
        b = next(batches)
        batch = to_device(collate(splits[b.task], b.indices, pad_id), s.device)
        train_step(objective, b.task, batch, None, dist=single, gradients=gradients, sync=True, device=s.device,
                   precision=cfg.precision, on_nan=cfg.on_nan, where=f"affinity step {step}")
        optimizer_step(s.model, optimizer, scheduler, gradients, cfg.max_grad_norm, drop_window=False)

    def probe(step: int) -> LossClosures:
        return {name: batch_loss(s.model, name, split, fresh_rows(split, cfg.batch_size, cfg.seed, step, k),
                                 pad_id=pad_id, device=s.device, precision=cfg.precision)
                for k, (name, split) in enumerate(splits.items())}

    return affinity_run(list(splits), shared_parameters(s.model), s.model, steps=steps, every=every,
                        lookahead_lr=lookahead_lr, train_step=one_step, probe=probe)


# ----------------------------------------------------------------------------- outputs
def ranking_table(result: AffinityResult, target: str) -> str:
    j = result.tasks.index(target)
    lines = [f"affinity onto {target}: 1 - L_{target}(after a step on the task) / L_{target}(before), mean over "
             f"{len(result.steps)} measurements in {result.steps[-1]} steps (lookahead lr {result.lookahead_lr:g})",
             f"{'rank':<5} {'task':<14} {'affinity':>10} {'± se':>10} {'grad cosine':>12}"]
    for k, (t, a, se, c) in enumerate(result.onto(target), 1):
        lines.append(f"{k:<5} {t:<14} {a:>+10.5f} {se:>10.5f} {c:>+12.3f}")
    lines.append(f"{'':<5} {target + ' (itself)':<14} {result.affinity[j, j]:>+10.5f} "
                 f"{result.affinity_se[j, j]:>10.5f} {1.0:>+12.3f}")
    return "\n".join(lines)


def recommend(result: AffinityResult, target: str, k: int) -> list[str]:
    """The ``k`` candidates with the highest positive affinity onto ``target``."""
    return [t for t, a, _, _ in result.onto(target) if math.isfinite(a) and a > 0][:k]


def train_command(target: str, auxiliaries: list[str], args: argparse.Namespace) -> str:
    """The ``mtdnn train`` command of the target with its recommended auxiliary tasks."""
    words = ["mtdnn", "train", "--tasks", ",".join([target, *auxiliaries])]
    for flag, value in (("--config", args.config), ("--task-files", args.task_files),
                        ("--data-dir", args.data_dir), ("--encoder", args.encoder)):
        if value:
            words += [flag, str(value)]
    words += ["--output-dir", f"runs/{target}-with-{'-'.join(auxiliaries) or 'none'}"]
    return " ".join(shlex.quote(w) for w in words)


def write_heatmap(result: AffinityResult, path: Path, target: str | None = None) -> None:
    """The task-by-task affinity matrix as a heatmap PNG (rows: the task stepped on; columns: the
    task whose loss is measured)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("the affinity heatmap needs matplotlib, the 'plots' extra: pip install 'mtdnn[plots]'") from None
    m, names = result.affinity, result.tasks
    off = m[~np.eye(len(names), dtype=bool)]  # the colours span the off-diagonal (a task onto itself is large)
    off = off[np.isfinite(off)]
    bound = float(np.max(np.abs(off))) if off.size and np.max(np.abs(off)) > 0 else 1.0
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(names), 0.8 + 0.7 * len(names)))
    im = ax.imshow(np.clip(m, -bound, bound), cmap="RdBu", vmin=-bound, vmax=bound)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("loss measured on (j)")
    ax.set_ylabel("step taken on (i)")
    for i in range(len(names)):
        for j in range(len(names)):
            if math.isfinite(m[i, j]):
                ax.text(j, i, f"{m[i, j]:.2g}", ha="center", va="center", fontsize=7)
    ax.set_title("lookahead affinity" + (f" (target {target})" if target else ""))
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- the command
def add_affinity_parser(sub: Any) -> None:
    """Register ``mtdnn affinity`` (its own flags, then every ``mtdnn train`` option but --tasks)."""
    from .cli import _HelpFormatter, add_config_flags

    a = sub.add_parser("affinity", help="which auxiliary tasks help a target task (lookahead affinity)",
                       config_fields=True, formatter_class=_HelpFormatter,
                       description="Estimate how much training on each candidate task helps the target: the "
                       "lookahead inter-task affinity of Fifty et al. 2021, averaged over a short multi-task "
                       "run of the target and the candidates (docs/interference.md). The training options are "
                       "those of `mtdnn train`.")
    a.add_argument("--target", required=True, help="the task to help")
    a.add_argument("--candidates", required=True, metavar="A,B", help="candidate auxiliary tasks, comma-separated")
    a.add_argument("--budget", type=int, default=200, metavar="N", help="optimiser steps of the short run (default: 200)")
    a.add_argument("--every", type=int, default=10, metavar="N", help="measure after every N-th step (default: 10)")
    a.add_argument("--lookahead-lr", type=float, default=1e-3, metavar="X",
                   help="learning rate of the lookahead SGD step (default: 0.001)")
    a.add_argument("--recommend", type=int, default=None, metavar="K",
                   help="print the K best auxiliary tasks and the mtdnn train command that uses them")
    a.add_argument("--config", metavar="YAML", help="YAML file of training options, as for mtdnn train")
    add_config_flags(a)


def affinity_config(args: argparse.Namespace) -> tuple[TrainConfig, str, list[str]]:
    """The training config of the affinity run (the target first, then the candidates)."""
    from .cli import config_from_args

    if getattr(args, "tasks", None):
        raise ConfigError("give the tasks as --target and --candidates", path="command line", field="tasks")
    candidates = [c.strip() for c in args.candidates.split(",") if c.strip()]
    if not candidates or args.target in candidates or len(set(candidates)) != len(candidates):
        raise ConfigError("--candidates must name other tasks than --target, each once", path="command line",
                          field="candidates")
    for flag, value in (("budget", args.budget), ("every", args.every), ("recommend", args.recommend or 1)):
        if value < 1:
            raise ConfigError(f"--{flag} must be at least 1", path="command line", field=flag)
    if not (args.lookahead_lr > 0 and math.isfinite(args.lookahead_lr)):
        raise ConfigError("--lookahead-lr must be a positive number", path="command line", field="lookahead_lr")
    args.tasks = ",".join([args.target, *candidates])
    args.output_dir = args.output_dir or f"runs/affinity-{args.target}"
    cfg = config_from_args(args)
    if cfg.mtl_method != "none" or cfg.resume or cfg.init_from:
        raise ConfigError("affinity measures a plain multi-task run: no --mtl-method, --resume or --init-from",
                          path="command line", field="mtl_method")
    return cfg.model_copy(update={"predict_test": False}), args.target, candidates


def run_command(args: argparse.Namespace) -> int:
    """``mtdnn affinity``: measure, print the ranking, write the JSON and the heatmap."""
    cfg, target, _ = affinity_config(args)
    result = run_affinity(cfg, steps=args.budget, every=args.every, lookahead_lr=args.lookahead_lr)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    from .run_dir import write_json
    write_json(out / "affinity.json", result.to_json(target) | {"config": cfg.model_dump(mode="json")})
    write_heatmap(result, out / "affinity.png", target)
    print(ranking_table(result, target))
    print(f"\nwrote {out / 'affinity.json'} and {out / 'affinity.png'}")
    if args.recommend is not None:
        best = recommend(result, target, args.recommend)
        note = "" if len(best) == args.recommend else f" (only {len(best)} with a positive affinity)"
        print(f"\nrecommended auxiliary tasks for {target}: {', '.join(best) or 'none'}{note}")
        print(train_command(target, best, args))
    return 0
