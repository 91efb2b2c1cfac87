"""Command-line option helpers shared by every ``sharp`` sub-command: integer types checked
by argparse (so a bad value fails before any work, naming the option) and a help
formatter that states each default once."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1. Raises ``argparse.ArgumentTypeError`` (shown by
    argparse as ``argument --NAME: ...``) otherwise."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0. Raises ``argparse.ArgumentTypeError`` otherwise."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(
            f"must be {'a positive integer (1 or more)' if low == 1 else f'an integer >= {low}'}"
            f", got {value}")
    return value


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``ArgumentDefaultsHelpFormatter`` that adds ``(default: X)`` only where the help does
    not already say what the default is (it mentions "default") and the default is a
    value (not None, False or suppressed), so no default is shown twice or as None."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if ("default" in text or action.default is None or action.default is False
                or action.default == argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)
