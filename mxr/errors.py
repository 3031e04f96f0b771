"""The package's one user-error type: a mistake in the user's input, not a bug in mxr.

Raised where input is checked (config files and values, ``--set`` overrides, data and split files,
class embeddings, checkpoints, command-line arguments, missing user files) with a message that names
the field or file, the value found and what was expected. The command line prints exactly these as
one line (exit 2); every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserInputError(ValueError):
    """A mistake in the user's input; the message names the file or field and what was expected."""


class MissingFileError(UserInputError, FileNotFoundError):
    """A file the user named (a config, an annotation file, a checkpoint, ...) does not exist."""
