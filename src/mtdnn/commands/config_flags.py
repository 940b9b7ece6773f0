"""The flags of ``mtdnn train`` (and of ``distill`` and ``affinity``), generated from
:class:`mtdnn.config.TrainConfig`: one flag per field (``max_seq_len`` -> ``--max-seq-len``), typed
by its annotation, helped by its description, with its default shown. A flag that is not given is
``None`` in the parsed arguments, so a value of the ``--config`` file stays."""

from __future__ import annotations

import argparse
import types
from typing import Any, Callable, Literal, Union, get_args, get_origin

from pydantic.fields import FieldInfo

from ..config import TrainConfig, load_config_file, make_config, resume_values


def task_values(kind: type, letter: str, example: str) -> Callable[[str], dict[str, Any]]:
    """The argparse type of a ``dict[str, kind]`` flag: ``rte=1000,stsb=500`` -> ``{"rte": 1000,
    "stsb": 500}`` (``letter`` and ``example`` show the syntax in its errors)."""

    def parse(text: str) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            task, eq, number = (x.strip() for x in item.partition("="))
            try:
                value = kind(number)
            except ValueError:
                value = None
            if not eq or not task or value is None:
                raise argparse.ArgumentTypeError(f"expected task={letter},task={letter} (e.g. {example}), "
                                                 f"got {item!r}")
            if task in values:
                raise argparse.ArgumentTypeError(f"task {task!r} is given twice")
            values[task] = value
        return values

    return parse


def _without_none(annotation: Any) -> Any:
    """``X | None`` -> ``X``; anything else unchanged."""
    if get_origin(annotation) in (Union, types.UnionType):
        rest = [a for a in get_args(annotation) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def _flag_kind(name: str, annotation: Any) -> dict[str, Any]:
    """The ``add_argument`` keywords that parse a field of this type (not the help)."""
    ann = _without_none(annotation)
    origin, args = get_origin(ann), get_args(ann)
    if ann is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is Literal:
        return {"type": type(args[0]), "choices": list(args)}
    if origin is list and args == (str,):
        return {"type": str, "metavar": "A,B"}  # the field's validator splits the commas
    if origin is dict and args == (str, int):
        return {"type": task_values(int, "N", "rte=1000,stsb=500"), "metavar": "TASK=N,..."}
    if origin is dict and args == (str, float):
        return {"type": task_values(float, "X", "rte=2,sst2=0.5"), "metavar": "TASK=X,..."}
    if ann in (int, float, str):
        return {"type": ann, "metavar": {int: "N", float: "X", str: None}[ann]}
    raise TypeError(f"TrainConfig.{name}: no command-line form for type {annotation!r}")


def default_text(info: FieldInfo) -> str | None:
    """The default as ``--help`` shows it; None for a required field or a None default (whose
    description says what unset means)."""
    if info.is_required():
        return None
    default = info.get_default(call_default_factory=True)
    if default is None:
        return None
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, dict):
        return ",".join(f"{k}={v}" for k, v in default.items()) or "none"
    if isinstance(default, list):
        return ",".join(map(str, default)) or "none"
    return str(default)


def _field_help(info: FieldInfo) -> str:
    """The field's description and its default: the help of its flag."""
    text = info.description or ""
    default = default_text(info)
    if default is not None:
        text += f" (default: {default})"
    return text.replace("%", "%%")  # argparse %-formats help strings


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (plus its older spellings); not given: None."""
    for name, info in TrainConfig.model_fields.items():
        flags = [f"--{name.replace('_', '-')}", *TrainConfig.flag_aliases(name)]
        parser.add_argument(*flags, dest=name, default=None, help=_field_help(info),
                            **_flag_kind(name, info.annotation))


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The config of the parsed flags: the defaults, then a resumed run's own config, then
    ``--config``, then the flags given (``train()`` rejects fields a resume may not change)."""
    file_values = load_config_file(args.config) if args.config else {}
    resume = getattr(args, "resume", None) or file_values.get("resume")
    if resume:
        file_values = {**resume_values(resume), **file_values, "resume": resume}
    fields = set(TrainConfig.model_fields)
    overrides = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    return make_config(file_values, overrides, source=args.config or "command line")
