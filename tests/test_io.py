"""Atomic writes leave either the old file or the new one, never a partial file."""

from __future__ import annotations

import pytest
import torch

from sharp.runs.checkpoints import atomic_path, atomic_write_text, load_checkpoint


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path) -> None:
    target = atomic_write_text(tmp_path / "out.txt", "old")

    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_loading_something_else_than_a_checkpoint_is_refused(tmp_path) -> None:
    path = tmp_path / "x.pt"
    torch.save({"weights": 1}, path)
    with pytest.raises(ValueError, match="is not a sharp learner checkpoint"):
        load_checkpoint(path)
