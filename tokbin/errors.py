"""The one error type tokbin raises for bad input: its message names the problem and the fix."""


class TokbinError(Exception):
    """A problem the user can fix. Stages and the CLI print it without a traceback and exit 1."""


class NotUTF8Error(TokbinError):
    """A document an engine could not decode; the tokenize stage adds which file and line."""
