"""Command-line parsers built from config dataclasses with jsonargparse.

Each option of ``earthcast rollout``, ``plot`` and ``demo`` is a field of a config dataclass: its type and
default come from the field, its help from the ``Attributes:`` section of the class docstring, so a new field
appears on the command line by itself. ``--config run.yaml`` reads any of them from a YAML file
(``--print_config`` writes one).

The canonical spelling is the field name, as jsonargparse writes it: ``--batch_size 8``,
``--aggregate_leads '[1d, 5d]'``, ``--progress false``, ``--planner.critic learned``. :func:`argparse_style`
also accepts the spellings of earlier versions: dashes for underscores (``--batch-size 8``), space-separated
lists (``--aggregate-leads 1d 5d``; a repeated list option extends the list), bare boolean flags
(``--overwrite``), ``--no-`` negations (``--no-progress``) and Python's ``inf``/``nan`` for floats. A bare
nested-dataclass option (``--planner``) takes that dataclass's defaults.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser

SPELLINGS = (
    "Options may also be spelled with dashes (--batch-size), lists as separate words (--leads 1d 5d), "
    "booleans as flags (--overwrite, --no-progress)."
)
_NUMBER = re.compile(r"^-\d|^-\.\d")
_YAML_FLOATS = {"inf": ".inf", "infinity": ".inf", "-inf": "-.inf", "-infinity": "-.inf", "nan": ".nan"}
"""Python's spellings of non-finite floats -> YAML's, which jsonargparse reads."""


def dataclass_parser(cls: type, *, prog: str, description: str, config_file: bool = True) -> ArgumentParser:
    """A parser whose options are the fields of dataclass ``cls`` (help text: its docstring).

    ``config_file`` adds ``--config FILE.yaml`` and ``--print_config`` (``earthcast demo`` has its own
    ``--config``: the training configs).
    """
    parser = ArgumentParser(prog=prog, description=description, epilog=SPELLINGS)
    if config_file:
        parser.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the options")
    parser.add_class_arguments(cls, as_group=False)
    return parser


def field_kinds(cls: type, namespace: Mapping[str, Any] | None = None, prefix: str = "") -> dict[str, str]:
    """``{option: "bool" | "float" | "list" | "dataclass" | "value"}`` for the fields of ``cls``, nested
    dataclasses as ``parent.child``. ``namespace`` resolves names the module imports only for type checking."""
    hints = typing.get_type_hints(cls, localns=dict(namespace or {}))
    kinds: dict[str, str] = {}
    for field in dataclasses.fields(cls):
        name = prefix + field.name
        hint = hints[field.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
            hint = args[0]  # X | None
        origin = typing.get_origin(hint) or hint
        if hint is bool or hint is float:
            kinds[name] = hint.__name__
        elif origin in (list, tuple) or (isinstance(origin, type) and issubclass(origin, Sequence)):
            kinds[name] = "value" if origin is str else "list"
        elif dataclasses.is_dataclass(hint):
            kinds[name] = "dataclass"
            kinds |= field_kinds(hint, namespace, prefix=f"{name}.")  # type: ignore[arg-type]
        else:
            kinds[name] = "value"
    return kinds


def _is_value(token: str) -> bool:
    return not token.startswith("-") or bool(_NUMBER.match(token))


def argparse_style(
    argv: Sequence[str], kinds: Mapping[str, str], aliases: Mapping[str, str] | None = None
) -> list[str]:
    """``argv`` with earlier argparse spellings rewritten to jsonargparse's (module docstring).

    ``kinds`` is :func:`field_kinds`; ``aliases`` maps other option names to field names (``ckpt`` ->
    ``checkpoint``). Tokens that name no field (``--help``, ``--config``, positionals) pass unchanged.
    """
    out: list[str] = []
    lists: dict[str, tuple[int, list[str]]] = {}  # list option -> (its position in out, its items)
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if not token.startswith("--") or token == "--":
            out.append(token)
            continue
        name, eq, value = token[2:].partition("=")
        key = name.replace("-", "_")
        key = (aliases or {}).get(key, key)
        if key.startswith("no_") and kinds.get(key[3:]) in ("bool", "dataclass") and not eq:
            out.append(f"--{key[3:]}={'false' if kinds[key[3:]] == 'bool' else 'null'}")
            continue
        kind = kinds.get(key)
        if kind == "list" and not eq and i < len(argv) and argv[i].startswith("["):
            eq, value, i = "=", argv[i], i + 1  # jsonargparse's own list syntax
        if kind == "float" and (eq or i < len(argv)):
            if not eq:
                value, i = argv[i], i + 1
            out.append(f"--{key}={_YAML_FLOATS.get(value.lower().lstrip('+'), value)}")
        elif kind is None or (eq and (kind != "list" or value.startswith("["))):
            out.append(token if kind is None else f"--{key}={value}")
        elif kind == "bool":
            given = i < len(argv) and argv[i].lower() in ("true", "false")
            out.append(f"--{key}={argv[i] if given else 'true'}")
            i += given
        elif kind == "dataclass" and (i == len(argv) or not _is_value(argv[i])):
            out.append(f"--{key}={{}}")  # bare: the defaults
        elif kind == "list":
            items = [value] if eq else []
            while not eq and i < len(argv) and _is_value(argv[i]):
                items.append(argv[i])
                i += 1
            position, earlier = lists.get(key, (len(out), []))
            if key not in lists:
                out.append("")
            lists[key] = (position, earlier + items)
            out[position] = f"--{key}={json.dumps(earlier + items)}"
        else:
            out.append(f"--{key}")
    return out


def parse_dataclass(parser: ArgumentParser, cls: type, argv: Sequence[str]) -> Any:
    """Parse ``argv`` (jsonargparse spellings) into an instance of ``cls``, nested dataclasses included.

    Bad options, and values a dataclass refuses (its ``__post_init__`` raises ValueError), exit with status 2
    and the message, as argparse does."""
    namespace = parser.parse_args(list(argv))
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # < 4.49
    try:
        values = instantiate(namespace)
    except ValueError as err:
        parser.error(str(err))
    return cls(**{field.name: values[field.name] for field in dataclasses.fields(cls)})
