"""The one exception type that cbr-lite shows to users as a one-line message."""


class CbrError(Exception):
    """An error caused by the user's input; its message is shown as one line."""


def first_line(error: BaseException, limit: int = 160) -> str:
    """The first line of a library's error message (at most ``limit`` characters), or its type's name
    when it has none: enough to say what went wrong inside a one-line :class:`CbrError`."""
    lines = str(error).strip().splitlines()
    return lines[0][:limit] if lines else type(error).__name__
