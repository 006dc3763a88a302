"""The one exception type users see: a message that says what is wrong, where, and what to do."""


class LmforgeError(Exception):
    """An error caused by the user's input (recipe, data, paths), printed without a traceback."""
