"""The experiments of docs/results.md, one runner per experiment, each run as
``python -m experiments.NAME --plan | --run [--stream S] | --cell CELL [--check] | --summarize``:

- ``run``: multi-task learning on GLUE, domain adaptation, the SAN ablation;
- ``interference``: sampling, loss weighting, PCGrad and the task affinity;
- ``adapters``: per-task LoRA adapters against full fine-tuning;
- ``smart_distill``: SMART and multi-task knowledge distillation;
- ``defaults_check``: the defaults of ``mtdnn train`` against the paper's optimiser;
- ``glue_seeds``: the GLUE comparison on three multi-task seeds with the equal-passes control, dev
  against held-out selection, domain adaptation on those seeds, and the full-data point;
- ``tagging``: CoNLL-2003 NER and WNUT-17 alone and beside auxiliary tasks (test F1, three seeds);
- ``qa``: extractive QA (squad11) alone and beside other tasks (three seeds).

``settings`` holds what they share (encoder, budgets, task lists, where records and runs live),
``cells`` the toolkit of grids of resumable cells and the command line, ``stats`` the seed means
and paired bootstrap intervals; ``seed_grid`` and ``examples`` are the grid and the per-example
predictions the tagging and QA runners share.
"""
