"""Config dataclasses filled from YAML files and ``--set key=value`` overrides (the dataclasses
themselves are in videothinker/config.py).

A YAML file is a mapping of section name -> fields (``video: {fps: 2.0}``) or flat fields that name
a unique field of any section (``beta: -0.01``); ``--set`` takes the same keys, dotted or flat
(``--set grpo.beta=-0.02`` or ``--set beta=-0.02``). Values from ``--set`` are parsed as YAML scalars
and every value is coerced to its field's type. Unknown keys are an error, never ignored.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml


def help_field(default: Any, help: str, **kw) -> Any:
    """A dataclass field with its help text in ``metadata["help"]`` (lists and dicts copied per instance)."""
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return dataclasses.field(default=default, metadata={"help": help}, **kw)


def choice_problems(name: str, value: Any, choices: typing.Iterable[Any]) -> list[str]:
    """[] when ``value`` is one of ``choices``, else the one problem naming them (for ``problems()``)."""
    choices = tuple(choices)
    return (
        [] if value in choices else [f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}"]
    )


def coerce_value(value: Any, annotation: Any, key: str) -> Any:
    """Coerce a YAML value to a field's type: int -> float, numeric strings (YAML 1.1 reads ``1e-6``
    as a string) -> float or int, a scalar -> a one-item list, list items to the item type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return coerce_value(value, non_none[0], key) if len(non_none) == 1 else value
    if annotation is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if annotation is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if annotation in (float, int) and isinstance(value, str | float) and not isinstance(value, bool):
        number = _parse_number(value)
        if number is not None and (annotation is float or number.is_integer()):
            return annotation(number)
    if annotation is bool and isinstance(value, bool):
        return value
    if annotation is str and isinstance(value, str | int) and not isinstance(value, bool):
        return str(value)  # an int-looking name or path (``output_dir=2024``) stays a string
    if origin in (list, tuple):
        items = list(value) if isinstance(value, list | tuple) else [value]
        if args and origin is list:
            items = [coerce_value(item, args[0], key) for item in items]
        return items if origin is list else tuple(items)
    if annotation in (float, int, bool, str):
        raise ValueError(f"config key '{key}': expected {annotation.__name__}, got {value!r}")
    return value


def _parse_number(value: str | float) -> float | None:
    if isinstance(value, float):
        return value
    try:
        return float(value.strip())
    except ValueError:
        return None


def apply_overrides(root: Any, values: dict[str, Any], *, origin: str) -> None:
    """Set fields of a (nested) config dataclass from a mapping; nested mappings set sub-sections and
    a flat key may name a unique field of any section."""
    sections = {
        f.name: getattr(root, f.name)
        for f in dataclasses.fields(root)
        if dataclasses.is_dataclass(getattr(root, f.name))
    }
    for key, value in values.items():
        parts = key.split(".")
        if parts[0] in sections and len(parts) == 1 and isinstance(value, dict):
            apply_overrides(sections[parts[0]], value, origin=origin)
            continue
        if parts[0] in sections and len(parts) > 1:
            apply_overrides(sections[parts[0]], {".".join(parts[1:]): value}, origin=origin)
            continue
        if parts[0] in sections:
            raise ValueError(f"{origin}: '{key}' is a config section; give it a mapping of its fields")
        owners = [root] if _has_field(root, key) else [s for s in sections.values() if _has_field(s, key)]
        if not owners:
            raise ValueError(f"{origin}: unknown config key '{key}'")
        if len(owners) > 1:
            names = [n for n, s in sections.items() if s in owners]
            raise ValueError(
                f"{origin}: config key '{key}' is ambiguous; write it as one of "
                + ", ".join(f"{n}.{key}" for n in names)
            )
        owner = owners[0]
        hints = typing.get_type_hints(type(owner))
        setattr(owner, key, coerce_value(value, hints[key], key))


def _has_field(obj: Any, name: str) -> bool:
    return dataclasses.is_dataclass(obj) and any(
        f.name == name and not dataclasses.is_dataclass(getattr(obj, name)) for f in dataclasses.fields(obj)
    )


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """Parse ``--set key=value`` items; values are YAML scalars (``-0.01``, ``true``, ``[a, b]``)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
    return out


def load_config(
    cls,
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    *,
    defaults: dict[str, Any] | None = None,
    **base,
):
    """Build a config dataclass from its defaults, then ``defaults`` (a mapping of the YAML form, e.g.
    a stage's defaults), then a YAML file, then ``--set`` overrides; validate it if it can."""
    config = cls(**base)
    if defaults:
        apply_overrides(config, defaults, origin="defaults")
    if path is not None:
        apply_overrides(config, read_yaml(path), origin=str(path))
    apply_overrides(config, parse_set(overrides), origin="--set")
    if hasattr(config, "validate"):
        config.validate()
    return config


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML config file as a mapping (an empty file is an empty mapping)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config keys")
    return data


def describe(cls) -> list[tuple[str, Any, str]]:
    """(name, default, help) of each field of a config dataclass, for --help listings and docs."""
    out = []
    for f in dataclasses.fields(cls):
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        )
        out.append((f.name, default, f.metadata.get("help", "")))
    return out


PRESET_DIR = Path(__file__).parent / "configs"


def preset_names() -> list[str]:
    """Names of the YAML presets shipped with the package (``src/videothinker/configs/*.yaml``)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A config file: an existing path as given, else a preset of that name (``paper_qwen2_5_vl_3b_cdpo``
    or ``paper_qwen2_5_vl_3b_cdpo.yaml``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    preset = PRESET_DIR / (path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml")
    if path.parent == Path(".") and preset.is_file():
        return preset
    raise FileNotFoundError(
        f"config not found: {name_or_path} is neither a file nor a preset; presets: {', '.join(preset_names())}"
    )


def to_dict(config: Any) -> dict[str, Any]:
    """A config as plain nested dicts (for logging the resolved config and saving it)."""
    return dataclasses.asdict(config)
