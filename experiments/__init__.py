"""The experiments of docs/results.md, one runner per experiment, each run as
``python -m experiments.NAME --plan | --run [--stream S] | --cell CELL [--check] | --summarize``:

- ``run``: multi-task learning on GLUE, domain adaptation, the SAN ablation;
- ``interference``: sampling, loss weighting, PCGrad and the task affinity;
- ``adapters``: per-task LoRA adapters against full fine-tuning;
- ``smart_distill``: SMART and multi-task knowledge distillation;
- ``defaults_check``: the defaults of ``mtdnn train`` against the paper's optimiser;
- ``glue_seeds``: the GLUE comparison on three multi-task seeds with the equal-passes control, dev
  against held-out selection, domain adaptation on those seeds, and the full-data point.

``settings`` holds what they share (encoder, budgets, task lists, where records and runs live),
``cells`` the toolkit of grids of resumable cells and the command line.
"""
