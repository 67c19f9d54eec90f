"""The project's error for bad input: a ValueError that the entry points report without a traceback."""
from __future__ import annotations


class InputError(ValueError):
    """A bad value from the user (config, command line, files, tensors handed in) and how to fix it.

    The command-line entry points catch this type only, so an error raised inside torch,
    DeepSpeed or Ray keeps its traceback instead of passing for bad input.
    """
