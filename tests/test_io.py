"""Atomic writes leave either the old file or the new one, never a partial file."""

from __future__ import annotations

import builtins
import dataclasses
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config

from sharp.config import ConfigError
from sharp.model.learner import Sharp
from sharp.runs.checkpoints import (
    CheckpointError,
    atomic_path,
    atomic_write_text,
    load_checkpoint,
    plain,
    save_checkpoint,
)
from sharp.runs.registry import LEARNER_KINDS, LearnerSpec, baseline_spec, build_learner
from sharp.runs.stream import run_stream

SMALL: dict[str, dict[str, object]] = {
    "rnn": {"layers": 2, "hidden": 16, "embedding": 8, "tbptt": 4},
    "lstm": {"layers": 2, "hidden": 16, "embedding": 8, "tbptt": 4},
    "gru": {"layers": 2, "hidden": 16, "embedding": 8, "tbptt": 4},
    "clockwork": {"modules": 3, "hidden": 8, "embedding": 8, "tbptt": 4},
    "transformer": {"d_model": 16, "layers": 1, "heads": 2, "context": 16, "stride": 8},
}


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path) -> None:
    target = atomic_write_text(tmp_path / "out.txt", "old")

    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_saving_onto_a_folder_says_to_give_a_file_path(tmp_path) -> None:
    """It raised IsADirectoryError naming an internal '.ck.xxxx.part' file."""
    folder = tmp_path / "ck"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match=rf"^{re.escape(str(folder))} is a folder; give "
                       r"the path of a file to write \(e.g. one inside it\)$"):
        save_checkpoint(Sharp(tiny_config()), folder)
    assert list(tmp_path.rglob("*")) == [folder]  # nothing written


def test_loading_something_else_than_a_checkpoint_is_refused(tmp_path) -> None:
    path = tmp_path / "x.pt"
    torch.save({"weights": 1}, path)
    with pytest.raises(CheckpointError, match="is not a sharp learner checkpoint"):
        load_checkpoint(path)


# -- checkpoints: weights_only, devices, unreadable files (issue 12, cases 9 and 10) -------
def saved(tmp_path, learner=None) -> Path:
    learner = learner or Sharp(tiny_config())
    return save_checkpoint(learner, tmp_path / "learner.pt")


@pytest.mark.parametrize("kind", LEARNER_KINDS)
def test_every_learner_kind_round_trips_through_a_weights_only_checkpoint(
    kind, tmp_path, random_stream
) -> None:
    spec = (LearnerSpec("sharp", tiny_config().to_dict()) if kind == "sharp" else
            baseline_spec(kind, "quick", vocab_size=7, window=3, device="cpu", **SMALL[kind]))
    first = build_learner(spec)
    run_stream(first, random_stream[:206], progress=False)  # mid TBPTT block and chunk
    path = save_checkpoint(first, tmp_path / f"{kind}.pt")
    torch.load(path, weights_only=True)  # plain data only: no code runs on loading
    resumed = load_checkpoint(path)
    tail = random_stream[203:503]
    straight = run_stream(first, tail, offset=203, progress=False)["bits"].to_numpy()
    again = run_stream(resumed, tail, offset=203, progress=False)["bits"].to_numpy()
    assert np.array_equal(straight, again)


def test_checkpoint_contents_are_plain_data() -> None:
    @dataclasses.dataclass
    class Opaque:
        x: int

    state = {"a": [np.int64(3), (np.float32(0.5), torch.zeros(2))], "b": None}
    converted = plain(state)
    assert converted["a"][0] == 3 and type(converted["a"][0]) is int
    assert type(converted["a"][1][0]) is float and isinstance(converted["a"][1], tuple)
    with pytest.raises(TypeError, match=r"state\['a'\]\[1\] is a Opaque; a checkpoint holds"):
        plain({"a": [1, Opaque(2)]})
    with pytest.raises(TypeError, match=r"state\['rng'\] is a ndarray"):
        plain({"rng": np.zeros(3)})


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_checkpoint_saved_on_a_missing_device_loads_on_the_cpu(tmp_path) -> None:
    path = saved(tmp_path)
    state = torch.load(path, weights_only=True)
    state["config"]["device"] = "cuda"
    torch.save(state, path)
    with pytest.warns(RuntimeWarning, match="saved on device 'cuda', which this machine does "
                                            "not have; loading it on the CPU"):
        learner = load_checkpoint(path)
    assert learner.device.type == "cpu" and learner.config.device == "cpu"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_checkpoint(path, device="cpu").device.type == "cpu"
    with pytest.raises(ConfigError, match=r"device 'cuda' is not available on this machine "
                                          r"\(torch .*\); use 'cpu' or 'auto'"):
        load_checkpoint(path, device="cuda")  # asked for explicitly: refused, saying why


def test_a_checkpoint_keeps_an_available_device(tmp_path) -> None:
    path = saved(tmp_path, Sharp(tiny_config(device="cpu")))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_checkpoint(path).config.device == "cpu"


@pytest.mark.parametrize("content", ["empty", "truncated", "text", "foreign code"])
def test_unreadable_checkpoints_raise_one_clear_error(content, tmp_path) -> None:
    path = tmp_path / "bad.pt"
    if content == "empty":
        path.write_bytes(b"")
    elif content == "truncated":
        data = saved(tmp_path).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif content == "text":
        path.write_text("hello")
    else:
        torch.save({"kind": "sharp", "config": Exploit()}, path)
    with pytest.raises(CheckpointError, match=f"{path} cannot be read as a checkpoint: it is "
                                              "empty, truncated or not a sharp learner") as info:
        load_checkpoint(path)
    assert not hasattr(builtins, "sharp_test_exploited")
    message = str(info.value)
    assert "\n" not in message and "weights_only" not in message  # torch's advice to run it
    if content == "foreign code":
        assert "it holds pickled data a checkpoint never holds (torch refused: " in message
        assert "GLOBAL" in message and "no code in it was run" in message
        assert "safe_globals" not in message  # nor its advice to allow-list the code
    if content == "empty":
        assert message.endswith("(EOFError: no data)")


class Exploit:
    """Unpickling this would run code; a weights-only load refuses it."""

    def __reduce__(self) -> tuple:
        return (exec, ("import builtins; builtins.sharp_test_exploited = True",))
