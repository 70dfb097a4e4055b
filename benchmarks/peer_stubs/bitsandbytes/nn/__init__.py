"""The stand-in's ``bitsandbytes.nn``: the package's empty classes (see its docstring)."""

from bitsandbytes import __getattr__, __version__  # noqa: F401
