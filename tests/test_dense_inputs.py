"""Token-level inputs (SPEC §2, §11): a frozen (V, D) input table read from a local model
folder, memory 0 recalling dense vectors by squared error, dreams re-embedded, checkpoints
resumed bit-exactly, the baselines on the same inputs, and the engines that refuse them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sharp.baselines import RecurrentBaseline, TransformerBaseline, baseline_preset
from sharp.baselines.config import RecurrentConfig, TransformerConfig
from sharp.baselines.ensemble import baseline_ensemble
from sharp.config import ConfigError, SharpConfig, preset
from sharp.model.inputs import read_table
from sharp.model.learner import Sharp
from sharp.runs.bench import resolve_ensemble
from sharp.runs.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from sharp.runs.registry import BASELINE_KINDS, LearnerSpec, baseline_spec, build_learner

V, D = 40, 12
#: A repeating stream over part of the vocabulary (period 10).
STREAM = np.array([3, 14, 15, 9, 26, 5, 35, 8, 9, 7] * 60)


@pytest.fixture(scope="module")
def table() -> torch.Tensor:
    return torch.randn(V, D, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, table: torch.Tensor) -> Path:
    """A tiny model folder as `transformers` saves one: config.json + model.safetensors."""
    path = tmp_path_factory.mktemp("tiny-gpt2")
    save_file({"wte.weight": table, "wpe.weight": torch.zeros(8, D)},
              str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps({"vocab_size": V, "n_embd": D}))
    return path


def dense_config(folder: Path | None = None, **changes: object) -> SharpConfig:
    """A small dense-input SHARP that learns within a few hundred steps."""
    fields: dict[str, object] = {
        "vocab_size": V, "layers": 2, "hidden": 16, "embedding": 8, "head_layers": 2,
        "lr": 3e-3, "tag_buffer": 4, "sleep_every": 50, "sleep_steps": 9, "top_k": 5,
        "inputs": "dense", "input_dim": D, "engine": "torch",
        "input_table": None if folder is None else str(folder),
    }
    return SharpConfig(**{**fields, **changes})  # type: ignore[arg-type]


def stream(learner: Sharp, start: int, stop: int, sleep_every: int = 50) -> list[tuple]:
    """Wake steps ``start..stop-1`` of :data:`STREAM` with a sleep every ``sleep_every``;
    what each step and sleep reported."""
    out: list[tuple] = []
    for i in range(start, stop):
        step = learner.learn(STREAM[i : i + 4], STREAM[i + 4])
        out.append((step.logits.clone(), step.loss, step.recall, step.memory_learned))
        if (i + 1) % sleep_every == 0:
            report = learner.sleep()
            out.append(tuple((layer.first_loss, layer.last_loss, layer.updates)
                             for layer in report.layers))
    return out


# -- reading the table ---------------------------------------------------------------
def test_the_table_is_read_from_a_model_folder_or_its_file(folder: Path,
                                                          table: torch.Tensor) -> None:
    assert torch.equal(read_table(folder), table)
    assert torch.equal(read_table(folder / "model.safetensors"), table)
    assert read_table(folder, key="wpe.weight").shape == (8, D)


def test_a_gpt2_checkpoint_with_its_lm_prefix_is_read(tmp_path: Path,
                                                      table: torch.Tensor) -> None:
    save_file({"transformer.wte.weight": table.half()}, str(tmp_path / "model.safetensors"))
    read = read_table(tmp_path)
    assert read.dtype == torch.float32 and torch.equal(read, table.half().float())


def test_a_missing_folder_says_which_folder_and_file_to_place(tmp_path: Path) -> None:
    missing = tmp_path / "models" / "gpt2"
    with pytest.raises(FileNotFoundError, match=rf"{missing}.*model\.safetensors"):
        read_table(missing)
    missing.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"holds no \.safetensors file"):
        read_table(missing)
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):
        Sharp(dense_config(missing))


def test_a_file_without_a_known_table_lists_what_it_holds(tmp_path: Path) -> None:
    save_file({"lm_head.weight": torch.zeros(3, 2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(KeyError, match=r"lm_head\.weight.*key="):
        read_table(tmp_path)


def test_a_dense_learner_needs_a_table_of_its_shape(table: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"table=.*input_table"):
        Sharp(dense_config())
    with pytest.raises(ValueError, match=rf"\({V}, {D}\), got \({V}, {D + 1}\)"):
        Sharp(dense_config(), torch.zeros(V, D + 1))
    with pytest.raises(ValueError, match=r"set inputs='dense'"):
        Sharp(preset("quick"), table)


# -- configuration ---------------------------------------------------------------------
@pytest.mark.parametrize("cls", [SharpConfig, RecurrentConfig, TransformerConfig])
def test_the_input_fields_are_type_checked_and_consistent(cls: type) -> None:
    name = cls.__name__
    with pytest.raises(ConfigError, match=rf"{name}\.inputs must be one of 'embedding', "
                                          r"'dense', got 'vectors'"):
        cls(inputs="vectors")
    with pytest.raises(ConfigError, match=rf"{name}\.input_dim must be an int or None"):
        cls(inputs="dense", input_dim=768.5)
    with pytest.raises(ConfigError, match=rf"{name}\.input_table must be a string or None"):
        cls(inputs="dense", input_dim=8, input_table=Path("gpt2"))
    with pytest.raises(ConfigError, match=r"inputs='dense' needs input_dim"):
        cls(inputs="dense")
    with pytest.raises(ConfigError, match=r"set inputs='dense' to use one"):
        cls(input_dim=768)


def test_the_default_stays_a_learned_embedding() -> None:
    config = SharpConfig()
    assert (config.inputs, config.input_dim, config.input_table) == ("embedding", None, None)
    learner = Sharp(preset("quick", hidden=8, embedding=4, layers=2))
    assert learner.table is None and "inputs" not in learner.state_dict()


def test_the_token_presets() -> None:
    gpt2 = preset("pg19-gpt2")
    assert (gpt2.vocab_size, gpt2.layers, gpt2.hidden, gpt2.embedding, gpt2.head_layers) == (
        50_257, 4, (512,) * 4, 128, 4)
    assert (gpt2.lr, gpt2.lr_slowdown, gpt2.tag_buffer, gpt2.tau) == (1e-4, 0.5, 50, 1e-2)
    assert (gpt2.sleep_every, gpt2.replay_steps, gpt2.top_k) == (20_000, 257, 50)
    assert (gpt2.inputs, gpt2.input_dim, gpt2.engine) == ("dense", 768, "torch")
    with pytest.raises(ValueError, match=r"input_table"):
        Sharp(gpt2)
    small = Sharp(preset("tokens-small", vocab_size=300))
    assert small.learn([1, 2, 3, 4], 5).logits.shape == (300,)


# -- wake and sleep ----------------------------------------------------------------------
def test_the_table_stays_frozen_through_wake_and_sleep(folder: Path,
                                                       table: torch.Tensor) -> None:
    learner = Sharp(dense_config(folder))
    before = learner.table.clone()
    optimised = {id(p) for opt in (learner.memory_opt, learner.head_opt) for p in opt.params}
    assert id(learner.table) not in optimised and not learner.table.requires_grad
    assert all(p.data_ptr() != learner.table.data_ptr() for p in learner.net.parameters())
    stream(learner, 0, 120, sleep_every=10**6)
    report = learner.sleep()
    assert report.slept and report.layers[0].updates > 0
    stream(learner, 120, 130)
    assert torch.equal(learner.table, before) and torch.equal(before, table)


def test_dense_memory_0_learns_to_recall_and_its_gate_follows_tau(table: torch.Tensor) -> None:
    always = Sharp(dense_config(tau=0.0), table)
    recall = [r[2] for r in stream(always, 0, 300, sleep_every=10**6)]
    assert np.mean(recall[-50:]) < 0.25 * np.mean(recall[:20])  # squared error falls
    assert all(r[3] for r in stream(always, 300, 310, sleep_every=10**6))

    gated = Sharp(dense_config(tau=0.2), table)
    learned = [r[3] for r in stream(gated, 0, 300, sleep_every=10**6)]
    # (the EMA starts at 0, so it takes a few windows to rise above tau)
    assert all(learned[5:20]) and not any(learned[-100:])  # open while poor, then closed

    closed = Sharp(dense_config(tau=1e3), table)
    weights = [p.clone() for p in closed.memories[0].parameters()]
    assert not any(r[3] for r in stream(closed, 0, 50, sleep_every=10**6))
    assert all(torch.equal(a, b) for a, b in zip(weights, closed.memories[0].parameters(),
                                                 strict=True))


def test_dreams_sample_vocabulary_ids_within_the_top_k(table: torch.Tensor) -> None:
    learner = Sharp(dense_config(top_k=3), table)
    stream(learner, 0, 40, sleep_every=10**6)
    state = torch.cat([tag.state for tag in learner.tags])
    context = torch.cat([tag.context for tag in learner.tags])
    head = learner.heads[0]
    condition = head.condition(context)
    generator = torch.Generator().manual_seed(3)
    seen = set()
    for tokens, new_state in learner.dream_steps(state, context, 30, generator):
        top = head.conditioned(state, condition).topk(3).indices  # (tags, k)
        assert tokens.shape == (len(learner.tags),) and ((tokens >= 0) & (tokens < V)).all()
        assert (top == tokens[:, None]).any(-1).all()
        # memory 0 stepped on the sampled tokens' frozen vectors
        assert torch.equal(new_state, learner.memories[0].step(table[tokens], state))
        state = new_state
        seen.update(tokens.tolist())
    assert len(seen) > 1


def test_prediction_covers_the_whole_vocabulary(table: torch.Tensor) -> None:
    learner = Sharp(dense_config(), table)
    assert learner.learn(STREAM[:4], STREAM[4]).logits.shape == (V,)
    result = learner.evaluate(STREAM[:60])
    assert result.tokens == 56 and np.isfinite(result.mean_bits())
    # scored block by block (a large vocabulary never holds every logit at once), the same
    logits = learner.predict_stream(STREAM[:60])
    assert torch.equal(torch.cat(list(learner.predict_blocks(STREAM[:60], chunk=7))), logits)
    nats = torch.nn.functional.cross_entropy(logits, torch.as_tensor(STREAM[4:60]),
                                             reduction="none")
    assert np.array_equal(result.bits, (nats / np.log(2)).numpy())


# -- checkpoints ---------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["folder", "tensor"])
def test_a_checkpoint_resumes_bit_exactly(tmp_path: Path, folder: Path, table: torch.Tensor,
                                          where: str) -> None:
    config = dense_config(folder if where == "folder" else None)
    given = None if where == "folder" else table
    straight = Sharp(config, given)
    expected = stream(straight, 0, 130)
    first = Sharp(config, given)
    got = stream(first, 0, 75)
    path = save_checkpoint(first, tmp_path / "dense.pt")
    saved = torch.load(path, weights_only=True)
    # a table read from a folder is named by its digest, not copied into every checkpoint
    assert ("table" in saved["inputs"]) == (where == "tensor")
    resumed = load_checkpoint(path)
    assert isinstance(resumed, Sharp) and torch.equal(resumed.table, table)
    got += stream(resumed, 75, 130)
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert all(torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y
                   for x, y in zip(a, b, strict=True))
    mine, theirs = resumed.state_dict(), straight.state_dict()
    assert all(torch.equal(mine["weights"][k], theirs["weights"][k]) for k in mine["weights"])


def test_a_checkpoint_refuses_another_table(table: torch.Tensor) -> None:
    state = Sharp(dense_config(), table).state_dict()
    other = Sharp(dense_config(), table + 1)
    with pytest.raises(ValueError, match=r"another frozen input table"):
        other.load_state_dict(state)


# -- engines that read token ids only ----------------------------------------------------
def test_the_fused_engine_refuses_dense_inputs_and_auto_falls_back(table: torch.Tensor
                                                                   ) -> None:
    with pytest.raises(ConfigError, match=r"not dense input vectors: use engine='torch'"):
        dense_config(engine="fused")  # refused with the config, before any run starts
    with pytest.warns(RuntimeWarning, match=r"torch engine.*dense input vectors"):
        learner = Sharp(dense_config(engine="auto"), table)
    assert learner.engine == "torch"


def test_a_baseline_ensemble_reads_its_table_from_the_folder(tmp_path: Path, folder: Path,
                                                             table: torch.Tensor) -> None:
    """One table for all members, read from ``input_table`` and named (not copied) by the
    checkpoint, which resumes from the folder (tests/test_ensemble_baselines.py holds the
    member-by-member equivalence; tests/test_ensemble.py SharpEnsemble's)."""
    config = baseline_preset("gru", hidden=8, embedding=4, vocab_size=V, inputs="dense",
                             input_dim=D, input_table=str(folder))
    ensemble = baseline_ensemble(config, [0, 1])
    assert torch.equal(ensemble.table, table)
    for i in range(20):
        ensemble.learn([STREAM[i : i + 4]] * 2, [STREAM[i + 4]] * 2)
    path = save_checkpoint(ensemble, tmp_path / "ensemble.pt")
    assert "table" not in torch.load(path, weights_only=True)["inputs"]
    resumed = load_checkpoint(path)
    window, target = [STREAM[20:24]] * 2, [STREAM[24]] * 2
    assert torch.equal(resumed.learn(window, target).logits,
                       ensemble.learn(window, target).logits)


# -- baselines -----------------------------------------------------------------------------
SMALL = {"rnn": {"layers": 1, "hidden": 32, "embedding": 16},
         "lstm": {"layers": 1, "hidden": 32, "embedding": 16},
         "gru": {"layers": 1, "hidden": 32, "embedding": 16},
         "clockwork": {"modules": 2, "hidden": 16, "embedding": 16},
         "transformer": {"d_model": 32, "layers": 1, "heads": 2, "context": 16}}


@pytest.mark.parametrize("kind", BASELINE_KINDS)
def test_every_baseline_learns_from_the_frozen_table(tmp_path: Path, folder: Path,
                                                     kind: str) -> None:
    spec = baseline_spec(kind, vocab_size=V, inputs="dense", input_dim=D,
                         input_table=str(folder), lr=1e-2, **SMALL[kind])
    learner = build_learner(spec)
    before = learner.table.clone()
    assert all(p.data_ptr() != learner.table.data_ptr() for p in learner.optimiser.params)
    losses = [learner.learn(STREAM[i : i + 4], STREAM[i + 4]).loss for i in range(300)]
    assert np.mean(losses[-50:]) < 0.5 * np.mean(losses[:20])
    assert torch.equal(learner.table, before)
    path = save_checkpoint(learner, tmp_path / f"{kind}.pt")
    assert "table" not in torch.load(path, weights_only=True)["inputs"]
    resumed = load_checkpoint(path)
    window, target = STREAM[300:304], STREAM[304]
    assert torch.equal(resumed.learn(window, target).logits, learner.learn(window, target).logits)


def test_a_baseline_without_a_table_says_how_to_give_one() -> None:
    with pytest.raises(ValueError, match=r"table=.*input_table"):
        RecurrentBaseline(baseline_preset("rnn", vocab_size=V, inputs="dense", input_dim=D))


def test_a_benchmark_groups_dense_learners_as_it_groups_learned_ones() -> None:
    for config in ({"device": "cuda"}, {"device": "cuda", "inputs": "dense"}):
        assert resolve_ensemble("auto", [LearnerSpec("sharp", config)], "segment", 4) is True
        cpu = {**config, "device": "cpu"}
        assert resolve_ensemble("auto", [LearnerSpec("sharp", cpu)], "segment", 4) is False


@pytest.mark.parametrize("mode", ["tbptt", "paper"])
def test_a_recurrent_baseline_scores_block_by_block(monkeypatch: pytest.MonkeyPatch,
                                                    table: torch.Tensor, mode: str) -> None:
    monkeypatch.setattr("sharp.baselines.recurrent.EVAL_CHUNK", 7)
    learner = RecurrentBaseline(baseline_preset("gru", vocab_size=V, inputs="dense",
                                                input_dim=D, mode=mode, **SMALL["gru"]), table)
    blocks = list(learner.predict_blocks(STREAM[:40]))
    assert len(blocks) > 1 and all(block.shape[0] <= 7 for block in blocks)
    logits = learner.predict_stream(STREAM[:40])
    nats = torch.nn.functional.cross_entropy(logits, torch.as_tensor(STREAM[4:40]),
                                             reduction="none")
    assert np.array_equal(learner.evaluate(STREAM[:40]).bits, (nats / np.log(2)).numpy())


@pytest.mark.parametrize("eval_mode", ["full", "paper"])
def test_the_transformer_scores_block_by_block(monkeypatch: pytest.MonkeyPatch,
                                               table: torch.Tensor, eval_mode: str) -> None:
    monkeypatch.setattr("sharp.baselines.transformer.EVAL_TOKENS", 16)
    learner = TransformerBaseline(baseline_preset(
        "transformer", vocab_size=V, inputs="dense", input_dim=D, eval_mode=eval_mode,
        **{**SMALL["transformer"], "context": 8, "stride": 4}), table)
    blocks = list(learner.predict_blocks(STREAM[:60]))
    logits = learner.predict_stream(STREAM[:60])
    assert len(blocks) > 2 and logits.shape == (56, V)
    nats = torch.nn.functional.cross_entropy(logits, torch.as_tensor(STREAM[4:60]),
                                             reduction="none")
    assert np.array_equal(learner.evaluate(STREAM[:60]).bits, (nats / np.log(2)).numpy())


def test_a_checkpoint_reads_its_table_from_a_moved_folder(tmp_path: Path, folder: Path,
                                                          table: torch.Tensor) -> None:
    learner = Sharp(dense_config(folder))
    stream(learner, 0, 20)
    path = save_checkpoint(learner, tmp_path / "dense.pt")
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (moved / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    resumed = load_checkpoint(path, input_table=moved)  # a Path is taken as a str is
    assert resumed.config.input_table == str(moved) and torch.equal(resumed.table, table)
    with pytest.raises(TypeError, match=r"input_table is the path of a model folder .* not a "
                                        r"Tensor"):
        load_checkpoint(path, input_table=table)  # type: ignore[arg-type]
    save_file({"wte.weight": table + 1}, str(moved / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"another frozen input table"):
        load_checkpoint(path, input_table=str(moved))


def test_throughput_refuses_the_fused_engine_for_a_dense_preset_before_measuring(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sharp.cli import main

    assert main(["throughput", "--presets", "quick", "pg19-gpt2", "--out", str(tmp_path)]) == 2
    assert "pg19-gpt2 read dense input vectors" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing measured, nothing written


def test_a_table_is_taken_from_numpy_and_refused_with_nan(table: torch.Tensor) -> None:
    learner = Sharp(dense_config(), table.numpy())
    torch.testing.assert_close(learner.table, table, rtol=0, atol=0)
    broken = table.clone()
    broken[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or infinite values \(token ids \[3\]\)"):
        Sharp(dense_config(), broken)


def test_dreaming_from_no_tags_says_so(table: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="dream needs one or more tags"):
        Sharp(dense_config(), table).dream([], 1)
