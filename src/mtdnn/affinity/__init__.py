"""Lookahead inter-task affinity: which auxiliary tasks help a target task, measured before training
with them (``mtdnn affinity``, ``commands/affinity.py``).

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

``measure.py``: the measure (``lookahead_affinity``), its average along a run (``affinity_run``) and
its result (``AffinityResult``, ``ranking_table``, ``recommend``); they work on any model with a
shared part and per-task loss closures (the tests use a tiny MLP). ``run.py``: the short multi-task
run on mtdnn's tasks (``run_affinity``). ``heatmap.py``: the task-by-task matrix as a PNG.
"""

from .heatmap import write_heatmap
from .measure import AffinityResult, affinity_run, lookahead_affinity, ranking_table, recommend
from .run import run_affinity

__all__ = ["AffinityResult", "affinity_run", "lookahead_affinity", "ranking_table", "recommend", "run_affinity",
           "write_heatmap"]
