"""The streaming protocol: segment arithmetic, runner, curve mode, benchmark, report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config

from sharp.cli import main
from sharp.data.corpus import Corpus
from sharp.data.streams import plan_segments, windows
from sharp.data.vocab import Vocabulary
from sharp.model.learner import Sharp
from sharp.protocol import EvalResult
from sharp.runs.benchmark import book_benchmark, segment_benchmark, summary_table
from sharp.runs.registry import LearnerSpec
from sharp.runs.stream import run_curve, run_stream


def test_segment_plan_follows_spec() -> None:
    plans = plan_segments(total=1_000, segment=300, slice_len=50, learners=3)
    assert [(p.train.start, p.train.stop) for p in plans] == [(0, 300), (300, 600), (600, 900)]
    second = plans[1]
    assert (second.backward.start, second.backward.stop) == (300, 350)
    assert (second.current.start, second.current.stop) == (550, 600)
    assert all((p.forward.start, p.forward.stop) == (950, 1_000) for p in plans)
    assert all(p.forward.start >= p.train.stop for p in plans)  # forward is never trained on
    with pytest.raises(ValueError, match="need 1050 tokens but the corpus has 1000"):
        plan_segments(total=1_000, segment=350, slice_len=350, learners=2)
    with pytest.raises(ValueError, match="cannot be longer than the segment"):
        plan_segments(total=1_000, segment=10, slice_len=20, learners=1)


def test_windows_are_stride_one_pairs() -> None:
    pairs = list(windows(np.arange(6), 3))
    assert [(list(w), y) for w, y in pairs] == [([0, 1, 2], 3), ([1, 2, 3], 4), ([2, 3, 4], 5)]


def test_run_stream_records_every_step_and_sleeps_on_schedule(periodic_stream) -> None:
    learner = Sharp(tiny_config(tau=0.0, sleep_every=150))
    records = run_stream(learner, periodic_stream[:603], progress=False)
    assert list(records["step"]) == list(range(1, 601))
    assert list(records.index[records["slept"]] + 1) == [150, 300, 450, 600]
    assert records["memory_learned"].all()  # tau = 0: the gate is always open
    # a period-5 stream is learnable: bits fall far below uniform (log2 7 = 2.81)
    assert records["bits"].iloc[-100:].mean() < 1.0 < records["bits"].iloc[:20].mean()


def test_prediction_is_made_before_learning(random_stream) -> None:
    # uniformly random targets cannot be predicted above chance if nothing leaks
    learner = Sharp(tiny_config())
    records = run_stream(learner, random_stream, progress=False)
    assert abs(records["correct"].iloc[500:].mean() - 1 / 7) < 0.04
    assert records["bits"].iloc[500:].mean() > np.log2(7) - 0.05


def test_curve_mode_evaluates_all_slices_every_n_steps(periodic_stream) -> None:
    learner = Sharp(tiny_config(sleep_every=10_000))
    slices = {"forward": periodic_stream[-100:], "backward": periodic_stream[:100]}
    records, evaluations = run_curve(learner, periodic_stream[:503], slices, every=200,
                                     progress=False)
    assert len(records) == 500 and list(records["step"]) == list(range(1, 501))
    assert list(evaluations["step"]) == [200, 200, 400, 400, 500, 500]
    assert set(evaluations["slice"]) == {"forward", "backward"}
    first, last = evaluations.iloc[0]["bits"], evaluations.iloc[-2]["bits"]
    assert last < first


def test_bits_rule_clips_per_token() -> None:
    result = EvalResult(np.array([1.0, 10.0]), np.array([True, False]), 0.0)
    assert result.mean_bits() == 5.5
    assert result.mean_bits(clip=np.log2(27)) == pytest.approx((1 + np.log2(27)) / 2)


def test_segment_benchmark_table(periodic_stream) -> None:
    spec = LearnerSpec("sharp", tiny_config(sleep_every=200).to_dict(), "tiny")
    result = segment_benchmark([spec], periodic_stream, segment=500, slice_len=100,
                               learners=3, progress=False)
    assert len(result.results) == 9
    assert set(result.results["slice"]) == {"forward", "backward", "current"}
    assert list(result.results.drop_duplicates("segment")["seed"]) == [0, 1, 2]
    table = summary_table(result.results)
    assert list(table.columns) == ["forward", "backward", "current"]
    assert "±" in table.loc["tiny", "forward"]
    assert set(result.curves["segment"]) == {0, 1, 2}


def test_bench_command_writes_the_report(tmp_path) -> None:
    text = tmp_path / "corpus.txt"
    rng = np.random.default_rng(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran"]
    text.write_text(" ".join(rng.choice(words, 2_000)))
    out = tmp_path / "run"
    code = main(["bench", "--corpus", str(text), "--segment", "1500", "--slice", "200",
                 "--learners", "2", "--workers", "1", "--quiet", "--out", str(out),
                 "--set", "hidden=16", "--set", "embedding=8", "--set", "sleep_every=500",
                 "--set", "sleep_steps=33", "--no-notebook", "--baselines", "rnn",
                 "--seed", "5"])
    assert code == 0
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 12  # SHARP and the RNN × 2 segments × 3 slices
    assert set(results["learner"]) == {"SHARP", "RNN (tbptt)"}
    # the report says what ran: learner m of each model with seed 5 + m, and no other seed
    runs = results.drop_duplicates(["learner", "segment"])
    assert list(runs["seed"]) == [5, 6, 5, 6]
    run = json.loads((out / "run.json").read_text())
    assert run["seeds"] == {"SHARP": [5, 6], "RNN (tbptt)": [5, 6]} and run["seed"] == 5
    assert all("seed" not in config for config in run["configs"].values())
    assert "seed 5 + m): SHARP: 5, 6; RNN (tbptt): 5, 6" in (out / "summary.md").read_text()
    for column in ("learner", "segment", "slice", "bits", "accuracy", "tokens", "eval_seconds",
                   "train_seconds", "tokens_per_s", "memory_update_rate"):
        assert column in results.columns
    summary = (out / "summary.md").read_text()
    assert "| forward | backward | current |" in summary.replace("learner | ", "")
    assert "sha256" in summary and "±" in summary
    assert "plotly" in (out / "figures.html").read_text()[:5_000_000].lower()


def test_bench_command_reports_bad_options_clearly(tmp_path, capsys) -> None:
    assert main(["bench", "--corpus", "nonsense-corpus", "--quiet"]) == 2
    assert "error" in capsys.readouterr().err
    assert main(["bench", "--set", "hidden", "--quiet", "--out", str(tmp_path)]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_book_protocol_resets_state_per_book_and_evaluates_books() -> None:
    rng = np.random.default_rng(0)
    lengths = {"train": [400, 300, 500, 200], "validation": [300, 250]}
    rows, parts, offset = [], [], 0
    for split, sizes in lengths.items():
        for i, size in enumerate(sizes):
            parts.append(np.tile(rng.integers(0, 7, 5), size // 5 + 1)[:size])
            rows.append({"id": f"{split}-{i}", "title": "", "year": 1900, "split": split,
                         "start": offset, "stop": offset + size, "licence": "", "source": ""})
            offset += size
    tokens = np.concatenate(parts).astype(np.uint8)
    corpus = Corpus("toy-books", tokens, Vocabulary("abcdefg"), "x", pd.DataFrame(rows))
    spec = LearnerSpec("sharp", tiny_config(sleep_every=10_000).to_dict(), "tiny")
    result = book_benchmark([spec], corpus, budget=1_000, books_per_slice=2, learners=2,
                            progress=False)
    # budget 1,000: books of 400 and 300, then 300 of the third
    first = result.results[result.results["segment"] == 0].set_index("slice")
    assert first.loc["backward", "tokens"] == (400 - 3) + (300 - 3)
    assert first.loc["current", "tokens"] == (300 - 3) + (300 - 3)
    assert first.loc["forward", "tokens"] == (300 - 3) + (250 - 3)
    assert first.loc["forward", "train_tokens"] == 1_000 - 3 * 3


def test_sharp_is_a_sleeper_and_a_baseline_is_not() -> None:
    from sharp import Sleeper
    from sharp.runs.registry import baseline_spec, build_learner

    assert isinstance(Sharp(tiny_config()), Sleeper)
    baseline = build_learner(baseline_spec("lstm", vocab_size=7, window=3, hidden=8,
                                           threads=1, device="cpu"))
    assert not isinstance(baseline, Sleeper)
    with pytest.raises(TypeError, match="has no sleep phase"):
        run_stream(baseline, np.arange(10) % 7, sleep_every=4, progress=False)


def test_a_sleep_schedule_or_step_offset_that_is_not_an_int_ge_0_is_refused() -> None:
    """sleep_every=-5 or 2.5 was accepted (the learner slept 9 times in 46 steps) and
    offset=-3 numbered the steps from -2: refused, for one learner and an ensemble."""
    from sharp.engines.ensemble import SharpEnsemble
    from sharp.runs.stream import run_ensemble_stream

    tokens = np.arange(20) % 7
    learner = Sharp(tiny_config())
    ensemble = SharpEnsemble(tiny_config(), [0, 1])
    runs = [lambda **kw: run_stream(learner, tokens, progress=False, **kw),
            lambda **kw: run_ensemble_stream(ensemble, np.stack([tokens, tokens]), **kw)]
    for run in runs:
        for given, error, message in [
            ({"sleep_every": -5}, ValueError, r"^sleep_every must be None or an int >= 0 "
                                              r"\(0: never\), got -5$"),
            ({"sleep_every": 2.5}, TypeError, r"^sleep_every must be None or an int >= 0 "
                                              r"\(0: never\), got 2\.5 \(float\)$"),
            ({"offset": -3}, ValueError, r"^offset must be an int >= 0 \(the steps streamed "
                                         r"before\), got -3$"),
            ({"offset": True}, TypeError, r"^offset must be .*, got True \(bool\)$"),
        ]:
            with pytest.raises(error, match=message):
                run(**given)
    records = run_stream(learner, tokens, sleep_every=0, offset=np.int64(5), progress=False)
    assert records["step"].iloc[0] == 6 and not records["slept"].any()


def test_the_progress_bar_does_not_end_showing_sleeping(
    capsys: pytest.CaptureFixture[str]
) -> None:
    tokens = np.arange(20) % 7  # 17 steps: a sleep follows the last one
    records = run_stream(Sharp(tiny_config()), tokens, sleep_every=17)
    assert records["slept"].tolist() == [False] * 16 + [True]
    final = capsys.readouterr().err.split("\r")[-1]
    assert "17/17" in final and "sleeping" not in final
