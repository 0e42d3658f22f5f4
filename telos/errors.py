"""User-facing errors: printed as one `error: ...` line, exit code 2, no traceback."""


class UserError(Exception):
    """A mistake the user can fix (bad recipe, path, data row, request).

    The CLI prints ``error: <message>`` and exits with code 2; pass ``--debug`` for the traceback.
    """

    exit_code = 2
