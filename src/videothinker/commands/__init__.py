"""Subcommands of the `videothinker` CLI: each parses its arguments and calls library code."""
