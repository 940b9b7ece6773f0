"""Task kinds: what differs between kinds of task, one module per kind (see ``base.TaskKind``).

``kind_of(task)`` (or ``task.kind``) is the kind of a task, ``get_kind(name)`` the kind of a
``type`` value. A new kind is a ``TaskKind`` subclass in its own module and one entry in
``KINDS`` (or ``register_kind(kind)`` from outside the package)."""

from __future__ import annotations

from .base import CLASS_METRICS, SCORE_METRICS, TaskKind
from .classification import Classification
from .ranking import Ranking
from .regression import Regression
from .span import Span
from .specs import TaskSpec
from .tagging import Tagging

# type name -> kind; the one registry of kinds
KINDS: dict[str, TaskKind] = {k.name: k for k in (Classification(), Regression(), Ranking(), Tagging(), Span())}


def register_kind(kind: TaskKind) -> None:
    """Make ``kind`` available as ``type: <kind.name>`` (replacing a kind of that name)."""
    KINDS[kind.name] = kind


def get_kind(name: str) -> TaskKind:
    """The kind of a ``type`` value; KeyError for an unknown one."""
    return KINDS[name]


def kind_of(task: TaskSpec) -> TaskKind:
    """The kind of a task."""
    return KINDS[task.type]


def kind_names() -> list[str]:
    """The ``type`` values known, in registry order."""
    return list(KINDS)


__all__ = ["CLASS_METRICS", "KINDS", "SCORE_METRICS", "TaskKind", "get_kind", "kind_names", "kind_of",
           "register_kind"]
