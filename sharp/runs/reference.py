"""The authors' learning curves measured on a text any Debian machine can rebuild
(REFERENCE.md), and the same measurement for this kit's SHARP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sharp.config import preset
from sharp.data.normalize import normalize_text8
from sharp.data.vocab import TEXT8
from sharp.model.learner import Sharp
from sharp.runs.stream import run_stream

LICENCES = ("GPL-3", "GFDL-1.3", "Apache-2.0", "MPL-2.0", "LGPL-2.1", "GPL-2", "Artistic",
            "CC0-1.0")
LICENCE_DIR = Path("/usr/share/common-licenses")
CHECKPOINTS = tuple(range(2_000, 24_001, 2_000))

#: Mean bits of the last 2,000 tokens at each checkpoint, the authors' code, seed 0.
AUTHORS_BITS = {
    "text8": (3.44, 3.29, 3.14, 3.01, 2.98, 2.77, 2.79, 2.81, 2.73, 2.69, 2.62, 2.77),
    "text8-small": (3.96, 3.66, 3.51, 3.40, 3.40, 3.23, 3.29, 3.28, 3.23, 3.14, 3.16, 3.22),
}
#: Memory-0 updates so far at each checkpoint, the authors' code, seed 0.
AUTHORS_UPDATES = {
    "text8": (2_000, 4_000, 6_000, 7_997, 9_688, 10_654, 11_371, 11_939, 12_252, 12_402,
              12_679, 13_047),
    "text8-small": CHECKPOINTS,
}


def licence_text(folder: Path = LICENCE_DIR) -> str:
    """The REFERENCE.md text: eight licences joined by newlines, normalised (134,008
    characters). Raises FileNotFoundError naming the Debian package if they are missing."""
    missing = [name for name in LICENCES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{missing} not found in {folder}; they come with Debian's base-files package"
        )
    return normalize_text8("\n".join((folder / name).read_text("utf-8") for name in LICENCES))


def reference_curve(preset_name: str = "text8-small", seed: int = 0, threads: int = 1,
                    progress: bool = True) -> pd.DataFrame:
    """Stream 24,000 steps of the licence text with a sleep after step 20,000 and compare
    the mean bits of every 2,000 tokens and the memory-0 update count with the authors'."""
    tokens = TEXT8.encode(licence_text())[: CHECKPOINTS[-1] + 4]
    learner = Sharp(preset(preset_name, sleep_every=20_000, seed=seed, threads=threads))
    records = run_stream(learner, tokens, progress=progress, description="reference curve")
    bits = records["bits"].to_numpy()
    updates = records["memory_learned"].cumsum().to_numpy()
    frame = pd.DataFrame({
        "tokens": CHECKPOINTS,
        "bits": [bits[k - 2_000 : k].mean() for k in CHECKPOINTS],
        "memory_updates": [int(updates[k - 1]) for k in CHECKPOINTS],
    })
    if preset_name in AUTHORS_BITS:
        frame["authors_bits"] = AUTHORS_BITS[preset_name]
        frame["difference"] = frame["bits"] - frame["authors_bits"]
        frame["authors_updates"] = AUTHORS_UPDATES[preset_name]
    return frame


def max_abs_difference(frame: pd.DataFrame) -> float:
    """Largest |bits - authors' bits| over the checkpoints."""
    return float(np.abs(frame["difference"]).max())
