"""The task-by-task affinity matrix as a heatmap PNG (needs the ``plots`` extra)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .measure import AffinityResult


def write_heatmap(result: AffinityResult, path: Path, target: str | None = None) -> None:
    """The task-by-task affinity matrix as a heatmap PNG (rows: the task stepped on; columns: the
    task whose loss is measured)."""
    try:  # matplotlib: the optional plots extra
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
