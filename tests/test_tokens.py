"""Token-level corpora (issue 15): Hugging Face tokenizers from three sources, token-id
corpora cached as memory maps with per-token character counts, and bits per character in
results and reports. Nothing here touches the network."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import huggingface_hub.errors
import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

import sharp.data.tokenizer as tokenizer_module
from sharp.cli import main
from sharp.data.bundled import stored_text
from sharp.data.corpus import BOOK_SEPARATOR, load_corpus
from sharp.data.tokenizer import BPE_VOCAB_SIZE, TextTokenizer, bpe_cache_path, load_tokenizer
from sharp.runs.benchmark import run_benchmark
from sharp.runs.jobs import with_bits_per_char
from sharp.runs.registry import LearnerSpec, baseline_spec

#: Text no bundled training book holds: accents, a dash, CJK, emoji, tabs, a CRLF.
ODD_TEXT = "Naïve café — 日本語 🐋\tend.\r\n  two  spaces\n\n"


@pytest.fixture(scope="session")
def bpe_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder holding the BPE trained on the bundled books (trained once, ~10 s)."""
    cache = tmp_path_factory.mktemp("sharp-cache")
    load_tokenizer("bpe", cache_dir=cache, progress=False)
    return cache


@pytest.fixture(scope="session")
def bpe(bpe_cache: Path) -> TextTokenizer:
    return load_tokenizer("bpe", cache_dir=bpe_cache, progress=False)


def _pg19_folder(folder: Path) -> dict[str, str]:
    """A PG-19 folder of raw book text (two training books, one held-out): excerpts of
    bundled books with ``ODD_TEXT`` inside. Returns each book's text by id."""
    hamlet, persuasion = stored_text("shakespeare-hamlet"), stored_text("austen-persuasion")
    books = {("train", "1"): hamlet[5_000:8_000] + ODD_TEXT + hamlet[8_000:9_000],
             ("train", "2"): persuasion[20_000:23_000],
             ("validation", "3"): ODD_TEXT + persuasion[40_000:42_500]}
    for (split, book_id), text in books.items():
        (folder / split).mkdir(parents=True, exist_ok=True)
        (folder / split / f"{book_id}.txt").write_text(text, encoding="utf-8", newline="")
    return {book_id: text for (_, book_id), text in books.items()}


def test_bpe_trained_on_the_bundled_books_round_trips_text_exactly(bpe: TextTokenizer) -> None:
    assert bpe.name == "bpe" and bpe.size == bpe.vocab_size == BPE_VOCAB_SIZE
    assert bpe.dtype == np.uint16
    held_out = stored_text("austen-northanger-abbey")[:50_000]  # a validation book
    for text in (held_out, ODD_TEXT, ""):
        ids = bpe.encode(text)
        assert ids.dtype == np.int64 and bpe.decode(ids) == text
        same, chars = bpe.encode_with_chars(text)
        np.testing.assert_array_equal(same, ids)
        assert chars.sum() == len(text) and (chars >= 0).all()
    texts = [held_out, ODD_TEXT, ""]
    for (ids, chars), text in zip(bpe.encode_batch_with_chars(texts), texts, strict=True):
        np.testing.assert_array_equal(ids, bpe.encode(text))  # in parallel, the same
        np.testing.assert_array_equal(chars, bpe.encode_with_chars(text)[1])
    assert len(bpe.encode(held_out)) < len(held_out) / 3  # sub-words, not bytes
    with pytest.raises(ValueError, match="outside tokenizer 'bpe'"):
        bpe.decode([BPE_VOCAB_SIZE])


def test_bpe_is_cached_by_content_and_not_retrained(bpe_cache: Path, bpe: TextTokenizer,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = bpe_cache_path(bpe_cache)
    assert path.parent == bpe_cache / "tokenizers" and path.is_file()
    stamp = path.stat().st_mtime_ns

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached BPE was trained again")

    monkeypatch.setattr(tokenizer_module.trainers, "BpeTrainer", no_training)
    again = load_tokenizer("bpe", cache_dir=bpe_cache)
    assert again.sha256 == bpe.sha256 and path.stat().st_mtime_ns == stamp
    assert not list(path.parent.glob("*.part"))  # written atomically, nothing left over


def _tiny_backend(text: str) -> Tokenizer:
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator([text], trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return backend


def test_a_local_tokenizer_folder_or_file_loads_by_path(tmp_path: Path) -> None:
    folder = tmp_path / "my-tokenizer"
    folder.mkdir()
    _tiny_backend("the whale and the sea " * 50).save(str(folder / "tokenizer.json"))
    by_folder = load_tokenizer(str(folder))
    by_file = load_tokenizer(str(folder / "tokenizer.json"))
    assert by_folder.sha256 == by_file.sha256 and 256 < by_folder.size <= 300
    assert by_folder.name == str(folder)
    assert by_folder.decode(by_folder.encode("the sea, 日本")) == "the sea, 日本"
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"holds no tokenizer\.json: save the tokenizer"):
        load_tokenizer(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="no tokenizer at"):
        load_tokenizer(str(tmp_path / "missing" / "folder"))
    (tmp_path / "junk.json").write_text("{}")
    with pytest.raises(ValueError, match=r"is not a Hugging Face tokenizer\.json"):
        load_tokenizer(str(tmp_path / "junk.json"))


def test_a_hub_id_offline_says_which_folder_to_place(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("a request was made")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError) as error:
        load_tokenizer("gpt2")
    message = str(error.value)
    assert "'gpt2' is not on this machine" in message and "HF_HUB_OFFLINE" in message
    assert "save_pretrained('tokenizers/gpt2')" in message
    assert "--tokenizer tokenizers/gpt2" in message and "--tokenizer bpe" in message


def test_a_hub_id_loads_through_the_hugging_face_cache(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The online path with huggingface_hub's download stubbed (no request is made)."""
    file = tmp_path / "tokenizer.json"
    _tiny_backend("the whale and the sea " * 50).save(str(file))
    asked = []

    def download(repo_id: str, filename: str) -> str:
        asked.append((repo_id, filename))
        return str(file)

    def unreachable(repo_id: str, filename: str) -> str:
        raise huggingface_hub.errors.LocalEntryNotFoundError("cannot reach the hub")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    loaded = load_tokenizer("someone/tiny")
    assert loaded.name == "someone/tiny" and asked == [("someone/tiny", "tokenizer.json")]
    assert loaded.sha256 == load_tokenizer(str(file)).sha256
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(RuntimeError, match="--tokenizer tokenizers/someone--tiny"):
        load_tokenizer("someone/tiny")


def test_token_corpus_is_cached_once_as_memory_maps(tmp_path: Path, bpe: TextTokenizer,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    texts = _pg19_folder(tmp_path / "pg")
    cache = tmp_path / "cache"
    corpus = load_corpus(str(tmp_path / "pg"), tokenizer=bpe, cache_dir=cache, progress=False)
    assert corpus.vocab is bpe and corpus.chars is not None
    assert isinstance(corpus.tokens, np.memmap) and isinstance(corpus.chars, np.memmap)
    assert corpus.tokens.dtype == np.uint16
    assert corpus.characters == sum(map(len, texts.values())) + 2 * len(BOOK_SEPARATOR)
    for row in corpus.documents.itertuples():
        book = slice(row.start, row.stop)
        assert bpe.decode(corpus.tokens[book]) == texts[row.id]
        assert corpus.chars[book].sum() == len(texts[row.id])
    held = corpus.split("validation")
    assert held.characters == len(texts["3"]) and bpe.decode(held.tokens) == texts["3"]

    def no_encoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached corpus was encoded again")

    monkeypatch.setattr(TextTokenizer, "encode_with_chars", no_encoding)
    monkeypatch.setattr(TextTokenizer, "encode_batch_with_chars", no_encoding)
    again = load_corpus(str(tmp_path / "pg"), tokenizer=bpe, cache_dir=cache, progress=False)
    assert again.sha256 == corpus.sha256 and isinstance(again.tokens, np.memmap)
    np.testing.assert_array_equal(again.chars, corpus.chars)
    characters = load_corpus(str(tmp_path / "pg"), cache_dir=cache, progress=False)
    assert characters.chars is None and characters.vocab.size == 27  # the character path
    with pytest.raises(ValueError, match="a tokenizer reads the raw text of book corpora"):
        load_corpus("wiki", tokenizer=bpe)


def _tiny_spec(vocab_size: int) -> LearnerSpec:
    return LearnerSpec("sharp", tiny_config(vocab_size=vocab_size).to_dict(), "SHARP")


def test_bits_per_character_of_a_character_model_is_its_bits_per_token() -> None:
    corpus = load_corpus("wiki")
    specs = [_tiny_spec(27), baseline_spec("rnn", vocab_size=27, hidden=8, window=3)]
    result, _ = run_benchmark(specs, corpus, segment=400, slice_len=60, learners=2,
                              clip=np.log2(27), progress=False)
    rows = result.results
    assert (rows["chars"] == rows["tokens"]).all()
    assert (rows["bits_per_char"] == rows["bits"]).all()  # exactly, not approximately
    assert (rows["bits_per_char_clipped"] == rows["bits_clipped"]).all()
    # a job folder finished before these columns existed gives them on resume
    stored = rows.drop(columns=["chars", "bits_per_char", "bits_per_char_clipped"])
    pd.testing.assert_frame_equal(with_bits_per_char(stored)[rows.columns], rows)


def test_bits_per_character_of_a_token_model_counts_the_slice_characters(
        tmp_path: Path, bpe: TextTokenizer) -> None:
    _pg19_folder(tmp_path / "pg")
    corpus = load_corpus(str(tmp_path / "pg"), tokenizer=bpe, cache_dir=tmp_path / "cache",
                         progress=False)
    result, protocol = run_benchmark([_tiny_spec(bpe.size)], corpus, protocol="segment",
                                     segment=500, slice_len=100, learners=2, progress=False)
    assert protocol == "segment"
    rows = result.results.set_index(["segment", "slice"])
    window = 3
    for (segment, name), row in rows.iterrows():
        start = {"backward": segment * 500, "current": segment * 500 + 400,
                 "forward": len(corpus) - 100}[name]
        chars = int(corpus.chars[start + window: start + 100].sum())
        assert row["chars"] == chars and row["tokens"] == 100 - window
        assert row["bits_per_char"] == pytest.approx(row["bits"] * row["tokens"] / chars)
        assert row["bits_per_char"] < row["bits"]  # a token spans several characters


@pytest.mark.filterwarnings("ignore:only 2 training book")  # backward and current coincide
def test_bench_with_the_bpe_tokenizer_reports_bits_per_token_and_character(
        tmp_path: Path, bpe_cache: Path, bpe: TextTokenizer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARP_CACHE", str(bpe_cache))
    monkeypatch.chdir(tmp_path)
    _pg19_folder(tmp_path / "pg")
    code = main(["bench", "--no-notebook", "--corpus", "./pg", "--tokenizer", "bpe",
                 "--learners", "1", "--baselines", "lstm", "--segment", "1500", "--slice",
                 "300", "--set", "layers=2", "--set", "hidden=32", "--set", "embedding=16",
                 "--set", "tag_buffer=5", "--set", "sleep_steps=9", "--sleep-every", "500",
                 "--workers", "1", "--quiet", "--out", "report"])
    assert code == 0
    report = tmp_path / "report"
    results = pd.read_csv(report / "results.csv")
    assert set(results["learner"]) == {"SHARP", "LSTM (tbptt)"}
    assert results[["bits", "bits_per_char", "chars"]].notna().all().all()
    assert (results["bits_per_char"] < results["bits"]).all()
    meta = json.loads((report / "run.json").read_text())
    assert meta["tokenizer"]["source"] == "bpe" and meta["tokenizer"]["sha256"] == bpe.sha256
    assert all(config["vocab_size"] == BPE_VOCAB_SIZE for config in meta["configs"].values())
    summary = (report / "summary.md").read_text()
    assert "## Bits per token" in summary and "## Bits per character" in summary
    assert "of tokenizer `bpe` (V = 4,096" in summary



def _model_folder(folder: Path, text: str, dim: int, seed: int = 0) -> Tokenizer:
    """A model folder as transformers' save_pretrained leaves it: tokenizer.json and
    model.safetensors with GPT-2's key for the input embeddings (random, dim wide)."""
    import safetensors.torch
    import torch

    folder.mkdir()
    backend = _tiny_backend(text)
    backend.save(str(folder / "tokenizer.json"))
    table = torch.randn(backend.get_vocab_size(), dim,
                        generator=torch.Generator().manual_seed(seed))
    safetensors.torch.save_file({"wte.weight": table}, str(folder / "model.safetensors"))
    return backend


@pytest.mark.filterwarnings("ignore:only 1 training book:RuntimeWarning")  # a toy budget
def test_bench_with_a_model_folder_gives_every_learner_its_frozen_dense_inputs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """--tokenizer PATH of a model folder and a dense config: SHARP and the baselines read
    the folder's frozen table (the authors' GPT-2 setting, at toy size)."""
    monkeypatch.chdir(tmp_path)
    books = _pg19_folder(tmp_path / "pg")
    _model_folder(tmp_path / "model", "".join(books.values()), dim=8)
    argv = ["bench", "--no-notebook", "--corpus", "./pg", "--tokenizer", "model",
            "--learners", "1", "--baselines", "rnn", "--segment", "1200", "--slice", "300",
            "--set", "inputs=dense", "--set", "input_dim=8", "--set", "layers=2",
            "--set", "hidden=16", "--set", "embedding=8", "--set", "tag_buffer=4",
            "--set", "sleep_steps=9", "--set", "engine=torch", "--sleep-every", "500",
            "--workers", "1", "--quiet"]
    assert main([*argv, "--out", "report"]) == 0
    results = pd.read_csv(tmp_path / "report" / "results.csv")
    assert set(results["learner"]) == {"SHARP", "RNN (tbptt)"}
    assert results[["bits", "bits_per_char"]].notna().all().all()
    configs = json.loads((tmp_path / "report" / "run.json").read_text())["configs"]
    for config in configs.values():
        assert (config["inputs"], config["input_dim"]) == ("dense", 8)
        assert Path(config["input_table"]).resolve() == (tmp_path / "model").resolve()
    # a table of another width is refused before any learner starts, saying what to set
    wrong = [("input_dim=5" if arg == "input_dim=8" else arg) for arg in argv]
    assert main([*wrong, "--out", "wrong"]) == 2
    error = capsys.readouterr().err
    assert "(vocab_size, input_dim) =" in error and "--set input_dim=8" in error
    assert not (tmp_path / "wrong" / "results.csv").exists()
    # the run's identity follows the table's content: a replaced table is refused, not
    # resumed as if its results were the old table's
    assert json.loads((tmp_path / "report" / "run.json").read_text())["input_table_sha256"]
    _model_folder(tmp_path / "model2", "".join(books.values()), dim=8, seed=1)
    (tmp_path / "model2" / "model.safetensors").replace(tmp_path / "model" / "model.safetensors")
    assert main([*argv, "--out", "report"]) == 2
    assert "different input_table_sha256" in capsys.readouterr().err
    assert main([*argv, "--out", "report", "--overwrite"]) == 0  # runs afresh, no old job
    again = pd.read_csv(tmp_path / "report" / "results.csv")
    assert not np.allclose(again["bits"], results["bits"])


def test_dense_learners_run_as_ensembles_and_give_the_separate_table(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--ensemble on with a dense config: each model's learners run as one ensemble job
    reading the folder's table once, and the table equals --ensemble off's."""
    monkeypatch.chdir(tmp_path)
    books = _pg19_folder(tmp_path / "pg")
    _model_folder(tmp_path / "model", "".join(books.values()), dim=8)
    argv = ["bench", "--no-notebook", "--corpus", "./pg", "--protocol", "segment",
            "--tokenizer", "model",
            "--learners", "2", "--baselines", "gru", "--segment", "600", "--slice", "200",
            "--set", "inputs=dense", "--set", "input_dim=8", "--set", "layers=2",
            "--set", "hidden=16", "--set", "embedding=8", "--set", "tag_buffer=4",
            "--set", "sleep_steps=9", "--set", "engine=torch", "--sleep-every", "300",
            "--workers", "1", "--quiet"]
    results = {}
    for mode in ("off", "on"):
        assert main([*argv, "--ensemble", mode, "--out", mode]) == 0
        run = json.loads((tmp_path / mode / "run.json").read_text())
        assert (run["ensemble"], run["ensemble_option"]) == (mode, mode)
        results[mode] = pd.read_csv(tmp_path / mode / "results.csv")
    # same rows, seeds, gate decisions and sleeps; bits within 1e-4 (both run the torch engine)
    timing = ["train_seconds", "tokens_per_s", "eval_seconds"]
    off, on = (results[mode].drop(columns=timing) for mode in ("off", "on"))
    bits = [column for column in off.columns if column.startswith("bits")]
    pd.testing.assert_frame_equal(off.drop(columns=bits), on.drop(columns=bits))
    pd.testing.assert_frame_equal(off[bits], on[bits], check_exact=False, atol=1e-4, rtol=0)


def test_a_table_under_an_unknown_name_and_fused_dense_are_refused_before_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import safetensors.torch
    import torch

    monkeypatch.chdir(tmp_path)
    books = _pg19_folder(tmp_path / "pg")
    vocab = _model_folder(tmp_path / "model", "".join(books.values()), dim=8).get_vocab_size()
    safetensors.torch.save_file({"foo": torch.zeros(vocab, 8)},
                                str(tmp_path / "model" / "model.safetensors"))
    argv = ["bench", "--no-notebook", "--corpus", "./pg", "--tokenizer", "model", "--quiet",
            "--set", "inputs=dense", "--set", "input_dim=8"]
    assert main([*argv, "--out", "a"]) == 2
    assert "save the table under one of those names (GPT-2's is wte.weight)" in \
        capsys.readouterr().err
    assert main([*argv, "--set", "engine=fused", "--out", "b"]) == 2
    assert "--set engine=torch" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_dense_inputs_without_a_model_folder_say_what_to_give(
        tmp_path: Path, bpe_cache: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SHARP_CACHE", str(bpe_cache))
    monkeypatch.chdir(tmp_path)
    _pg19_folder(tmp_path / "pg")
    assert main(["bench", "--no-notebook", "--corpus", "./pg", "--tokenizer", "bpe",
                 "--set", "inputs=dense", "--set", "input_dim=8", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "--tokenizer PATH of a folder holding tokenizer.json and model.safetensors" in error


def test_bench_refuses_a_tokenizer_for_a_corpus_without_books(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--no-notebook", "--corpus", "wiki", "--tokenizer", "gpt2",
                 "--quiet"]) == 2
    assert "'wiki' has no books: run it without a tokenizer" in capsys.readouterr().err


@pytest.mark.slow  # encodes every bundled book: ~35 s on two busy cores
def test_the_bundled_books_as_bpe_tokens_decode_to_their_text_and_are_cached(
        bpe_cache: Path, bpe: TextTokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = load_corpus("books", tokenizer=bpe, cache_dir=bpe_cache, progress=False)
    for row in corpus.documents.itertuples():
        text = stored_text(row.id)
        assert bpe.decode(corpus.tokens[row.start:row.stop]) == text, row.id
        assert corpus.chars[row.start:row.stop].sum() == len(text), row.id
    for method in ("encode_with_chars", "encode_batch_with_chars"):  # no encoding from here
        monkeypatch.setattr(TextTokenizer, method, None)
    held = load_corpus("books", split="validation", tokenizer=bpe, cache_dir=bpe_cache)
    assert held.documents["id"].tolist() == ["shakespeare-tempest", "austen-northanger-abbey"]
    assert held.characters == sum(len(stored_text(i)) for i in held.documents["id"]) + len(
        BOOK_SEPARATOR)  # the blank line between the two books


def test_nfc_and_nfd_spellings_give_the_same_tokens(tmp_path: Path) -> None:
    """Issue 12, case 15, on the tokenizer path: the raw text went to the tokenizer as it
    was, so "été" written with combining accents (NFD) gave other ids than the same word
    precomposed (NFC); both are now encoded in NFC, characters counted as they look."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE({c: i for i, c in enumerate(alphabet)}, []))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = TextTokenizer.from_backend("bytes", backend)
    nfc = "Été, l'été à Noël; ﬁn."
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfd != nfc and len(nfd) > len(nfc)
    assert np.array_equal(tokenizer.encode(nfd), tokenizer.encode(nfc))
    assert tokenizer.decode(tokenizer.encode(nfd)) == nfc  # ligatures kept as written
    ids, chars = tokenizer.encode_with_chars(nfd)
    assert np.array_equal(ids, tokenizer.encode(nfc)) and int(chars.sum()) == len(nfc)
    (batch_ids, batch_chars), _ = tokenizer.encode_batch_with_chars([nfd, nfc])
    assert np.array_equal(batch_ids, ids) and np.array_equal(batch_chars, chars)
    corpora = []
    for form in ("NFC", "NFD"):
        folder = tmp_path / form
        for split, text in [("train", nfc * 40), ("validation", nfc * 10)]:
            (folder / split).mkdir(parents=True)
            (folder / split / "1.txt").write_text(unicodedata.normalize(form, text))
        corpora.append(load_corpus(str(folder), tokenizer=tokenizer,
                                   cache_dir=tmp_path / "cache", progress=False))
    assert np.array_equal(corpora[0].tokens, corpora[1].tokens)
    assert np.array_equal(corpora[0].chars, corpora[1].chars)
