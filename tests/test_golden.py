"""Golden trajectory: optimisations must not change what SHARP computes.

Regenerate (only after a deliberate change of behaviour) with
``SHARP_REGENERATE_GOLDEN=1 pytest tests/test_golden.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sharp.config import preset
from sharp.data.bundled import load_wiki
from sharp.model.learner import Sharp
from sharp.runs.stream import run_stream

GOLDEN = Path(__file__).parent / "data" / "golden_text8_small.csv"


def record_trajectory(engine: str = "torch") -> pd.DataFrame:
    """text8-small, seed 0, 2,000 wake steps of the wiki text with a sleep after 1,000."""
    learner = Sharp(preset("text8-small", sleep_every=1_000, seed=0, threads=1, engine=engine))
    records = run_stream(learner, load_wiki().tokens[:2_004], progress=False)
    return records[["step", "bits", "recall", "memory_learned", "slept"]]


@pytest.mark.parametrize("engine", ["torch", "fused"])
def test_golden_trajectory_is_reproduced(engine: str) -> None:
    records = record_trajectory(engine)
    if os.environ.get("SHARP_REGENERATE_GOLDEN") and engine == "torch":
        GOLDEN.parent.mkdir(exist_ok=True)
        records.to_csv(GOLDEN, index=False, float_format="%.9g")
        pytest.skip("golden trajectory regenerated")
    golden = pd.read_csv(GOLDEN)
    assert list(records["slept"]) == list(golden["slept"])
    assert list(records["memory_learned"]) == list(golden["memory_learned"])
    np.testing.assert_allclose(records["recall"], golden["recall"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(records["bits"], golden["bits"], rtol=0, atol=1e-3)
