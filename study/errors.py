"""The one exception type for mistakes a user can fix (bad paths, bad flags, bad files).

The command-line tools print its message on one line and exit with a non-zero status;
anything else that escapes is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input, reported without a traceback."""
