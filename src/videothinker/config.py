"""Typed configuration: dataclasses, one per concern, loaded from YAML with ``--set key=value``.

A YAML file is a mapping of section name -> fields (``video: {fps: 2.0}``) or flat fields that name
a unique field of any section (``beta: -0.01``); ``--set`` takes the same keys, dotted or flat
(``--set grpo.beta=-0.02`` or ``--set beta=-0.02``). Values from ``--set`` are parsed as YAML scalars.
Every field carries help text in ``metadata["help"]``; unknown keys are an error, never ignored.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml


def describe(cls) -> list[tuple[str, Any, str]]:
    """(name, default, help) of each field of a config dataclass, for --help listings and docs."""
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        )
        out.append((f.name, default, f.metadata.get("help", "")))
    return out


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Coerce a YAML value to a field's type (int -> float where a float is wanted, etc.)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _coerce(value, non_none[0], key) if len(non_none) == 1 else value
    if annotation is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if annotation is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if annotation is bool and isinstance(value, bool):
        return value
    if annotation is str and isinstance(value, str):
        return value
    if origin in (list, tuple) and isinstance(value, list | tuple):
        return list(value) if origin is list else tuple(value)
    if annotation in (float, int, bool, str):
        raise ValueError(f"config key '{key}': expected {annotation.__name__}, got {value!r}")
    return value


def apply_overrides(root: Any, values: dict[str, Any], *, origin: str) -> None:
    """Set fields of a (nested) config dataclass from a mapping; nested mappings set sub-sections and
    a flat key may name a unique field of any section."""
    sections = {f.name: getattr(root, f.name) for f in dataclasses.fields(root) if dataclasses.is_dataclass(getattr(root, f.name))}
    for key, value in values.items():
        parts = key.split(".")
        if parts[0] in sections and len(parts) == 1 and isinstance(value, dict):
            apply_overrides(sections[parts[0]], value, origin=origin)
            continue
        if parts[0] in sections and len(parts) > 1:
            apply_overrides(sections[parts[0]], {".".join(parts[1:]): value}, origin=origin)
            continue
        owners = [root] if _has_field(root, key) else [s for s in sections.values() if _has_field(s, key)]
        if not owners:
            raise ValueError(f"{origin}: unknown config key '{key}'")
        if len(owners) > 1:
            names = [n for n, s in sections.items() if s in owners]
            raise ValueError(f"{origin}: config key '{key}' is ambiguous; write it as one of "
                             + ", ".join(f"{n}.{key}" for n in names))
        owner = owners[0]
        hints = typing.get_type_hints(type(owner))
        setattr(owner, key, _coerce(value, hints[key], key))


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


def load_config(cls, path: str | Path | None = None, overrides: list[str] | None = None, **base):
    """Build a config dataclass from defaults, then a YAML file, then ``--set`` overrides."""
    config = cls(**base)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of config keys")
        apply_overrides(config, data, origin=str(path))
    apply_overrides(config, parse_set(overrides), origin="--set")
    if hasattr(config, "validate"):
        config.validate()
    return config


def to_dict(config: Any) -> dict[str, Any]:
    """A config as plain nested dicts (for logging the resolved config and saving it)."""
    return dataclasses.asdict(config)


def _field(default: Any, help: str, **kw) -> Any:
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return dataclasses.field(default=default, metadata={"help": help}, **kw)


@dataclasses.dataclass
class VideoConfig:
    """Frame sampling and resizing, with the semantics of Qwen's reference preprocessing
    (qwen-vl-utils ``smart_nframes`` / ``smart_resize``). Defaults are the VideoThinker evaluation
    settings (16 frames at most, 256 * 28 * 28 pixels per frame)."""

    fps: float = _field(2.0, "frames sampled per second of video (qwen-vl-utils FPS)")
    nframes: int | None = _field(None, "a fixed frame count instead of fps sampling (rounded to frame_factor)")
    min_frames: int = _field(4, "fewest frames sampled (qwen-vl-utils FPS_MIN_FRAMES)")
    max_frames: int = _field(16, "most frames sampled (VideoThinker sets FPS_MAX_FRAMES=16)")
    frame_factor: int = _field(2, "frame count is rounded to a multiple of this (the temporal patch size)")
    min_pixels: int = _field(128 * 28 * 28, "fewest pixels per frame (qwen-vl-utils VIDEO_MIN_PIXELS)")
    max_pixels: int = _field(256 * 28 * 28, "most pixels per frame (VideoThinker sets VIDEO_MAX_PIXELS=256*28*28)")
    total_pixels: int = _field(
        int(128000 * 28 * 28 * 0.9), "pixel budget over all frames (qwen-vl-utils VIDEO_TOTAL_PIXELS)"
    )
    size_factor: int | None = _field(
        None, "height and width are rounded to multiples of this; None takes patch_size * merge_size from the "
        "processor (28 for Qwen2/2.5-VL, 32 for Qwen3-VL)"
    )
    cache_dir: str | None = _field(None, "folder of an on-disk cache of decoded, sampled frames (None: no cache)")
