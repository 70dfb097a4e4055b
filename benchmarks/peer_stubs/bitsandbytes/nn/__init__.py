"""The stand-in's ``bitsandbytes.nn``: empty classes (see the package's docstring)."""

__version__ = "0.49.0"
_classes: dict[str, type] = {}


def __getattr__(name: str) -> type:
    if name.startswith("__"):
        raise AttributeError(name)
    return _classes.setdefault(name, type(name, (), {}))
