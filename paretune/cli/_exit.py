"""The ``paretune`` command's exit codes (the package docstring says what each means)."""

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
