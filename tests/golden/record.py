"""Record the golden 2-task run (tests/test_golden.py compares every later code version to it).

    .venv/bin/python tests/golden/record.py                  # writes tests/golden/two_task.json
    .venv/bin/python tests/golden/record.py --add-platform   # adds this platform's values to it

Run it with the code before a change that must not change what is computed, in the environment of
requirements/lock.txt (scripts/setup.sh), and commit the JSON; run it again after refreshing the
lock (scripts/lock.sh). A recording names its platform: the processor, torch's SIMD level and the
version of every package that can move floating-point rounding (mtdnn.runtime.ROUNDING_PACKAGES).
The values are bitwise only for that platform: processors round differently even at one SIMD level,
and so can a new release of transformers or numpy. ``--add-platform`` adds this platform's values,
computed by code that matches the recording bitwise on the recording's platform, and changes
nothing else.
The run: a tiny random BERT (mtdnn.testing.tiny_encoder, seed 0), RTE (SAN head) and STS-B
(regression) on 48 training rows each, 2 epochs, every option that could change its value set
explicitly and the two tasks defined in tests/golden/tasks.yaml (so later changes of the defaults
and of the built-in tasks do not touch it).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "two_task.json"
TASKS = HERE / "tasks.yaml"  # RTE (SAN head) and STS-B as they were at the recording

# every option that decides what is computed, pinned
CONFIG = {
    "tasks": ["rte", "stsb"], "task_files": [str(TASKS)], "epochs": 2, "batch_size": 8, "eval_batch_size": 16, "lr": 2e-4,
    "optimizer": "adamw", "weight_decay": 0.01, "warmup_ratio": 0.1, "max_grad_norm": 1.0,
    "grad_accum_steps": 2, "max_seq_len": 64, "max_train_examples": 48, "max_eval_examples": 40,
    "subset_seed": 0, "seed": 7, "group_by_length": True, "eval_every": 1, "selection": "best",
    "predict_test": False, "allow_hub": False, "device": "cpu", "precision": "fp32", "threads": 1,
    "compile": False, "cls_only_last_layer": True, "num_workers": 0, "log_every": 1,
    "on_nan": "stop", "progress": False,
}
VOLATILE = ("train_seconds", "eval_seconds")  # history fields that are times


def tensor_digests(path: Path) -> dict[str, str]:
    from safetensors.torch import load_file

    return {k: hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest()
            for k, v in sorted(load_file(str(path)).items())}


def run_golden(workdir: Path, encoder: str, data_dir: str) -> dict:
    """Train the golden run in ``workdir``; returns what is compared."""
    import torch

    from mtdnn.config import make_config
    from mtdnn.training.loop import train

    torch.set_num_threads(1)
    cfg = make_config(CONFIG | {"encoder": encoder, "data_dir": data_dir,
                                "cache_dir": str(workdir / "cache"), "output_dir": str(workdir / "run")})
    run = train(cfg)
    history = [{k: v for k, v in json.loads(line).items() if k not in VOLATILE}
               for line in (run / "history.jsonl").read_text().splitlines()]
    selection = json.loads((run / "selection.json").read_text())
    return {
        "metrics": json.loads((run / "metrics.json").read_text()),
        "history": history,
        "selection": selection,
        "weights": {f"epoch-{e}": tensor_digests(run / "checkpoints" / f"epoch-{e}.safetensors")
                    for e in sorted(set(selection["tasks"].values()) | {selection["last"]})},
    }


def this_platform() -> dict[str, str | None]:
    """What bitwise equality depends on: the processor, torch's SIMD level and the versions of the
    packages that can move rounding (torch, transformers, tokenizers, numpy, scipy, ...)."""
    import torch

    from mtdnn.runtime import cpu_model, package_versions
    return {"cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(), **package_versions()}


def platform_difference(recorded: dict[str, str | None]) -> list[str]:
    """What differs between a recording's platform and this one (every key of this platform must
    match; a recording that lacks one, made before it was recorded, matches nothing)."""
    here = this_platform()
    return [f"{k} {recorded.get(k, 'unrecorded')} there, {v} here" for k, v in here.items() if recorded.get(k, "?") != v]


def same_platform(recorded: dict[str, str | None]) -> bool:
    """Whether a recording was computed on this platform, so that it must match bitwise."""
    return not platform_difference(recorded)


def main(argv: list[str] | None = None) -> int:
    from mtdnn.data.readers import data_dir_default
    from mtdnn.run_dir import write_json
    from mtdnn.testing import tiny_encoder

    add = "--add-platform" in (sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory() as d:
        enc = tiny_encoder(Path(d) / "enc")
        out = run_golden(Path(d), str(enc), str(data_dir_default()))
    out["recorded_with"] = this_platform()
    if add:
        golden = json.loads(GOLDEN.read_text())
        if out["selection"] != golden["selection"]:
            print("the epoch selection differs from the recording's: not a rounding difference", file=sys.stderr)
            return 1
        del out["selection"]
        others = [p for p in golden.get("platforms", []) if not same_platform(p["recorded_with"])]
        out = golden | {"platforms": [*others, out]}
    write_json(GOLDEN, out)
    print(f"wrote {GOLDEN}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
