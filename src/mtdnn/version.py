"""The package version (one place: the package, environment.json and the model cards read it)."""

__version__ = "0.1.0"
