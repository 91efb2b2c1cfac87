"""Command-line option helpers shared by every ``sharp`` sub-command: integer types checked
by argparse (so a bad value fails before any work, naming the option) and a help
formatter that states each default once."""

from __future__ import annotations

import argparse
from typing import Any

from sharp.config import MAX_SEED
from sharp.runs.jobs import CheckpointPolicy


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1. Raises ``argparse.ArgumentTypeError`` (shown by
    argparse as ``argument --NAME: ...``) otherwise."""
    return _int_at_least(text, 1)


def seed_int(text: str) -> int:
    """An argparse type: a seed, an integer in 0..2**63-1 (:data:`~sharp.config.MAX_SEED`,
    what torch takes). Raises ``argparse.ArgumentTypeError`` otherwise."""
    value = _int_at_least(text, 0)
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer in 0..2**63-1 (torch seeds a "
                                         f"64-bit generator), got {value}")
    return value


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


#: The checkpoint options and their defaults (those of :class:`CheckpointPolicy`), by
#: argparse destination.
CHECKPOINT_DEFAULTS = {"checkpoint_tokens": CheckpointPolicy.every_tokens,
                       "checkpoint_minutes": CheckpointPolicy.every_seconds / 60,
                       "keep_checkpoints": CheckpointPolicy.keep}


def add_checkpoint_options(parser: argparse.ArgumentParser, saves: str) -> None:
    """``--checkpoint-tokens``, ``--checkpoint-minutes`` and ``--keep-checkpoints`` (the
    run's checkpoint policy, checked with the run's other settings before any work);
    ``saves`` says what saves a checkpoint, e.g. ``"each job"``. Their parsed value is None
    when not given (:func:`checkpoint_options` fills in the defaults), so that a command can
    refuse them where nothing would use them."""
    tokens, minutes, keep = CHECKPOINT_DEFAULTS.values()
    parser.add_argument("--checkpoint-tokens", type=int, default=None,
                        help=f"{saves} saves a checkpoint every this many training steps "
                        f"(default {tokens:,}) ...")
    parser.add_argument("--checkpoint-minutes", type=float, default=None,
                        help=f"... or every this many minutes (default {minutes:g}), "
                        "whichever comes first")
    parser.add_argument("--keep-checkpoints", type=int, default=None,
                        help=f"checkpoints kept per job, older ones pruned (default {keep})")


def checkpoint_options(args: argparse.Namespace) -> dict[str, Any]:
    """The checkpoint options of ``args`` (:func:`add_checkpoint_options`), defaults filled
    in for those not given."""
    return {name: default if getattr(args, name) is None else getattr(args, name)
            for name, default in CHECKPOINT_DEFAULTS.items()}


def given_checkpoint_options(args: argparse.Namespace) -> list[str]:
    """The checkpoint options given on the command line, as typed (``--checkpoint-tokens``)."""
    return ["--" + name.replace("_", "-") for name in CHECKPOINT_DEFAULTS
            if getattr(args, name) is not None]


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
