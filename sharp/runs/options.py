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


def add_checkpoint_options(parser: argparse.ArgumentParser, saves: str) -> None:
    """``--checkpoint-tokens``, ``--checkpoint-minutes`` and ``--keep-checkpoints`` (the
    run's checkpoint policy, checked with the run's other settings before any work);
    ``saves`` says what saves a checkpoint, e.g. ``"each job"``."""
    parser.add_argument("--checkpoint-tokens", type=int, default=50_000,
                        help=f"{saves} saves a checkpoint every this many training steps ...")
    parser.add_argument("--checkpoint-minutes", type=float, default=10.0,
                        help="... or every this many minutes, whichever comes first")
    parser.add_argument("--keep-checkpoints", type=int, default=2,
                        help="checkpoints kept per job (older ones are pruned)")


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
