"""The training methods beyond the paper's Algorithm 1, each one object of one interface
(``base.Method``): task sampling, loss weighting, uncertainty weighting, PCGrad, distillation,
SMART and the gradient-cosine monitor. ``registry.py`` builds a run's methods from its config and
gathers what they give it (``MethodSet``); ``builtin.py`` registers the built-in ones.

A new method subclasses ``Method``, implements the hooks it needs and registers a builder
(``register_method``); the loop (``training/loop.py``, ``step.py``, ``job.py``) does not change.
"""

from . import builtin  # noqa: F401  (registers the built-in methods)
from .base import Method, MethodContext
from .registry import MethodSet, build_methods, register_method, registered_methods, unregister_method

__all__ = ["Method", "MethodContext", "MethodSet", "build_methods", "register_method", "registered_methods",
           "unregister_method"]
