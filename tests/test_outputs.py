"""Bad inputs to ``sharp experiment``, ``sharp throughput`` and ``sharp reference``: every
option and output path is checked before any work, no run silently replaces another's
results, and the combined experiment index always matches its files (issue 12)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

import sharp.cli as cli
from sharp.cli import main
from sharp.perf.throughput import measure_baseline, measure_sharp, throughput_table
from sharp.runs.outputs import check_output_folder, check_replace
from sharp.runs.report import markdown_table


def _no_work(*args: object, **kwargs: object) -> None:
    raise AssertionError("work started before the options were checked")


@pytest.fixture
def no_measurement(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "throughput_table", _no_work)
    monkeypatch.setattr(cli, "wake_anatomy", _no_work)
    monkeypatch.setattr(cli, "reference_curve", _no_work)


def _error(capsys: pytest.CaptureFixture[str], argv: list[str], code: int = 2) -> str:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == code
    return capsys.readouterr().err


def test_output_folder_must_be_a_writable_folder(tmp_path: Path) -> None:
    file = tmp_path / "file.txt"
    file.write_text("x")
    with pytest.raises(FileExistsError, match=r"--out .*file.txt is a file, but --out needs a"):
        check_output_folder(file)
    with pytest.raises(FileExistsError, match=r"file.txt is a file \(in .*file.txt/sub\)"):
        check_output_folder(file / "sub")
    assert check_output_folder(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # nothing created
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(PermissionError, match=r"--out .*locked/out: cannot make a folder "
                           r"in .*locked \(Permission denied\); give a folder you can write"):
            check_output_folder(locked / "out", "--out")
    if Path("/proc/self").is_dir():  # root passed os.access, then got a raw "[Errno 2]"
        with pytest.raises(PermissionError, match=r"^--out /proc/nope: cannot make a folder "
                           r"in /proc \(No such file or directory\); give a folder you can "
                           r"write to$"):
            check_output_folder("/proc/nope")
    for empty in ("", " "):  # was the current folder, silently
        with pytest.raises(ValueError, match=r"^--out is empty; give an output folder's path"):
            check_output_folder(empty)
    assert not list(tmp_path.rglob(".sharp-probe-*"))  # the probes left nothing


def test_check_replace_names_what_differs(tmp_path: Path) -> None:
    check_replace(tmp_path, ["a.csv", "a.json"], "a.json", {"seed": 1})  # empty: passes
    (tmp_path / "a.csv").write_text("x")
    with pytest.raises(FileExistsError, match=r"of an unknown run \(a.csv\); choose another"):
        check_replace(tmp_path, ["a.csv", "a.json"], "a.json", {"seed": 1})
    (tmp_path / "a.json").write_text(json.dumps({"identity": {"seed": 1, "steps": [1, 2]}}))
    check_replace(tmp_path, ["a.csv", "a.json"], "a.json", {"seed": 1, "steps": (1, 2)})
    with pytest.raises(FileExistsError, match=r"another run \(different seed\)"):
        check_replace(tmp_path, ["a.csv", "a.json"], "a.json", {"seed": 2, "steps": [1, 2]})
    check_replace(tmp_path, ["a.csv"], "a.json", {"seed": 2}, overwrite=True)


# -- sharp throughput ------------------------------------------------------------------
@pytest.mark.parametrize(("argv", "message"), [
    (["--steps", "0"], "argument --steps: must be a positive integer (1 or more), got 0"),
    (["--steps", "-5"], "argument --steps: must be a positive integer (1 or more), got -5"),
    (["--repeats", "0"], "argument --repeats: must be a positive integer"),
    (["--ensemble", "0"], "argument --ensemble: must be a positive integer"),
    (["--ensemble", "9", "-1"], "argument --ensemble: must be a positive integer"),
    (["--threads", "0"], "argument --threads: must be a positive integer"),
    (["--steps", "ten"], "argument --steps: expected an integer, got 'ten'"),
])
def test_throughput_counts_are_checked_by_argparse(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], no_measurement: None
) -> None:
    assert message in _error(capsys, ["throughput", *argv])


def test_throughput_devices_are_checked_before_any_measurement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_measurement: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``sharp throughput --device cuda --ensemble 1 9 64`` (issue 13): a device this
    machine lacks, or the fused engine off the CPU, is refused before the first
    measurement, and nothing is written."""
    out = ["--out", str(tmp_path / "tp")]
    assert main(["throughput", "--device", "gpu", *out]) == 2
    assert "unknown device 'gpu'; use 'auto', 'cpu', 'cuda'" in capsys.readouterr().err
    monkeypatch.setattr("sharp.cli.check_device", lambda name: None)  # as if CUDA were here
    assert main(["throughput", "--device", "cuda", "--ensemble", "9", *out]) == 2
    assert ("the fused engine runs on the CPU only: measure SHARP on --device cuda with "
            "--engines torch") in capsys.readouterr().err
    assert not (tmp_path / "tp").exists()


def test_throughput_with_nothing_to_measure_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_measurement: None
) -> None:
    out = ["--out", str(tmp_path)]
    assert main(["throughput", "--presets", "--steps", "20", "--repeats", "1", *out]) == 2
    assert ("nothing to measure: give --presets NAMES or --baselines KINDS"
            in capsys.readouterr().err)
    assert main(["throughput", "--presets", "--ensemble", "9", *out]) == 2
    assert "nothing to measure" in capsys.readouterr().err
    assert main(["throughput", "--anatomy", "--presets", *out]) == 2
    assert "--anatomy measures SHARP presets; give --presets NAMES" in capsys.readouterr().err
    with pytest.raises(ValueError, match="nothing to measure"):
        throughput_table([])


def test_throughput_checks_out_before_measuring(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_measurement: None
) -> None:
    file = tmp_path / "file.txt"
    file.write_text("keep")
    assert main(["throughput", "--out", str(file)]) == 2
    assert "is a file, but --out needs a folder" in capsys.readouterr().err
    assert main(["throughput", "--anatomy", "--out", str(file / "sub")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert file.read_text() == "keep"


def test_throughput_never_replaces_another_measurement_silently(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    table = pd.DataFrame({"learner": ["SHARP"], "wake_tokens_per_s": [1.0]})
    monkeypatch.setattr(cli, "throughput_table", lambda configs, **kwargs: table)
    argv = ["throughput", "--presets", "quick", "--threads", "1", "--out", str(tmp_path)]
    assert main([*argv, "--steps", "5"]) == 0
    record = json.loads((tmp_path / "throughput.json").read_text())
    assert record["identity"]["steps"] == 5 and record["identity"]["presets"] == ["quick"]
    assert main([*argv, "--steps", "5"]) == 0  # the same measurement may replace itself
    capsys.readouterr()
    assert main([*argv, "--steps", "6"]) == 2
    assert "holds the throughput tables of another run (different steps)" in (
        capsys.readouterr().err)
    assert main([*argv, "--steps", "6", "--overwrite"]) == 0


def test_a_tilde_out_is_locked_checked_and_written_in_one_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # --out '~/x' (the shell leaves a quoted ~) locked $HOME/x but checked and wrote ./~/x
    table = pd.DataFrame({"learner": ["SHARP"], "wake_tokens_per_s": [1.0]})
    monkeypatch.setattr(cli, "throughput_table", lambda configs, **kwargs: table)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert main(["throughput", "--presets", "quick", "--threads", "1", "--steps", "5",
                 "--out", "~/x"]) == 0
    assert sorted(p.name for p in (tmp_path / "home" / "x").iterdir()) == [
        ".sharp.lock", "throughput.csv", "throughput.json", "throughput.md"]
    assert not (tmp_path / "~").exists()


def test_small_steps_give_a_short_measurement() -> None:
    row = measure_sharp("quick", steps=5, repeats=1)
    assert row["eval_tokens"] == 250 and row["sleep_tags"] == 20  # buffer topped up untimed
    assert measure_sharp("quick", steps=5_000, repeats=1, eval_tokens=10)["eval_tokens"] == 10
    assert measure_baseline("rnn", "quick", steps=3, repeats=1)["eval_tokens"] == 60
    with pytest.raises(ValueError, match="steps must be a positive integer, got 0"):
        measure_sharp("quick", steps=0)
    with pytest.raises(ValueError, match="repeats must be a positive integer, got -1"):
        measure_baseline("rnn", "quick", repeats=-1)


# -- sharp reference -------------------------------------------------------------------
def test_reference_out_is_a_folder_checked_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "file.csv"
    file.write_text("keep")
    monkeypatch.setattr(cli, "reference_curve", _no_work)
    assert main(["reference", "--out", str(file)]) == 2
    assert "is a file, but --out needs a folder" in capsys.readouterr().err
    assert main(["reference", "--out", ""]) == 2  # was taken for no --out, after the run
    assert "sharp reference: error: --out is empty" in capsys.readouterr().err
    assert "argument --seed: must be an integer >= 0, got -1" in _error(
        capsys, ["reference", "--seed", "-1"])
    frame = pd.DataFrame({"tokens": [2_000], "bits": [3.0], "difference": [0.1]})
    monkeypatch.setattr(cli, "reference_curve", lambda *args, **kwargs: frame)
    out = tmp_path / "existing"
    out.mkdir()
    assert main(["reference", "--out", str(out), "--quiet"]) == 0
    assert pd.read_csv(out / "reference.csv").equals(frame)
    assert json.loads((out / "reference.json").read_text())["identity"] == {
        "preset": "text8-small", "seed": 0}
    monkeypatch.setattr(cli, "reference_curve", _no_work)
    assert main(["reference", "--out", str(out), "--seed", "1"]) == 2
    assert "the reference table of another run (different seed)" in capsys.readouterr().err


# -- help ------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["throughput", "reference", "experiment"])
def test_help_states_each_default_once(command: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text and "(default: False)" not in text
    assert text.count("(default:") >= 2
    for option in text.split(" --")[1:]:
        assert option.count("default") <= 1, option


def test_a_table_of_learners_and_ensembles_keeps_its_counts_integers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``sharp throughput --ensemble``: a count some rows lack (members) printed as 9.000."""
    rows = iter([{"learner": "SHARP", "threads": 1, "parameters": 321_713, "rate": 2.5},
                 {"learner": "SHARP x9", "threads": 1, "members": 9, "parameters": 321_713,
                  "rate": 1.5}])
    monkeypatch.setattr("sharp.perf.throughput.measure_sharp", lambda **kwargs: next(rows))
    monkeypatch.setattr("sharp.perf.throughput.measure_ensemble", lambda **kwargs: next(rows))
    table = throughput_table([{"preset_name": "quick"}, {"members": 9, "preset_name": "quick"}])
    assert str(table["members"].dtype) == "Int64" and table["rate"].dtype == float
    lines = markdown_table(table.set_index("learner")).splitlines()
    assert lines[2:] == ["| SHARP | 1 | 321,713 | 2.500 | — |",
                         "| SHARP x9 | 1 | 321,713 | 1.500 | 9 |"]


def test_the_numbers_of_a_column_share_one_format() -> None:
    """The bench's training table printed tokens_per_s as 524.177 next to 1,481."""
    table = pd.DataFrame({"learner": ["SHARP", "RNN"], "tokens_per_s": [524.177, 1481.4],
                          "bits": [2.1234, 1.5]}).set_index("learner")
    assert markdown_table(table).splitlines()[2:] == ["| SHARP | 524 | 2.123 |",
                                                      "| RNN | 1,481 | 1.500 |"]


def test_an_experiment_with_a_tilde_out_writes_where_it_locks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as for throughput: sharp experiment locked $HOME/x but wrote its files in ./~/x
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert main(["experiment", "nonstationarity", "--preset", "tiny", "--quiet",
                 "--out", "~/x"]) == 0
    written = {p.name for p in (tmp_path / "home" / "x").iterdir()}
    assert {".sharp.lock", "nonstationarity.csv", "nonstationarity.md"} <= written
    assert not (tmp_path / "~").exists()
