"""The one exception type that cbr-lite shows to users as a one-line message."""


class CbrError(Exception):
    """An error caused by the user's input; its message is shown as one line."""
