"""Sub-word tokenizers through Hugging Face ``tokenizers`` (no tokenizer code of our own).

Three sources, all loaded by :func:`load_tokenizer`:

* ``"bpe"`` (the offline default): a byte-level BPE of :data:`BPE_VOCAB_SIZE` tokens trained
  with ``tokenizers`` on the raw text of the bundled books' training split, cached under
  ``<cache>/tokenizers/`` by a hash of that text (the books' sha256) and the trainer settings;
* a path: a ``tokenizer.json`` file, or a folder holding one (what ``transformers``'
  ``save_pretrained`` of a fast tokenizer or ``tokenizers``' ``Tokenizer.save`` writes);
* a Hugging Face hub id such as ``gpt2``, fetched with ``huggingface_hub`` where the network
  allows; offline it raises a RuntimeError saying which folder to place instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from sharp.runs.checkpoints import atomic_write_text

#: The source name of the BPE trained on the bundled books.
BPE_SOURCE = "bpe"
#: Vocabulary size of that BPE: 256 byte tokens plus merges.
BPE_VOCAB_SIZE = 4096
#: Everything that decides the trained BPE besides its text (part of its cache key).
BPE_SETTINGS: dict[str, Any] = {"model": "BPE", "pre_tokenizer": "ByteLevel",
                                "add_prefix_space": False, "vocab_size": BPE_VOCAB_SIZE,
                                "min_frequency": 2, "split": "train", "format": 1}
#: The Unicode form every text is put in before a tokenizer sees it: NFC composes each
#: accented letter written as a base letter plus combining marks ("e\u0301", NFD) into its
#: one precomposed character ("\u00e9"), so text that looks the same gives the same token
#: ids; unlike NFKC it keeps ligatures, fullwidth letters and symbols as written. Part of
#: every token corpus's cache key (:meth:`TextTokenizer.identity`).
UNICODE_FORM = "NFC"


@dataclass(frozen=True)
class TextTokenizer:
    """A Hugging Face tokenizer as the kit uses it: text to token ids and back.

    ``name`` is the source it was loaded from (``"bpe"``, a path, a hub id); ``sha256`` is
    the hash of its serialised form (``tokenizer.json``), so two tokenizers with the same
    hash encode alike. Duck-types :class:`~sharp.data.vocab.Vocabulary` where corpora use
    it (``size``, ``dtype``, ``encode``, ``decode``). Every text is put in Unicode form
    :data:`UNICODE_FORM` before it is encoded, so NFC and NFD spellings of the same words
    give the same ids (and decode to the NFC text).

    Examples
    --------
    >>> from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    >>> alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    >>> backend = Tokenizer(models.BPE({c: i for i, c in enumerate(alphabet)}, []))
    >>> backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    >>> backend.decoder = decoders.ByteLevel()
    >>> tok = TextTokenizer.from_backend("bytes", backend)
    >>> tok.size, tok.encode("hé").tolist(), tok.decode(tok.encode("héllo"))
    (256, [...], 'héllo')
    """

    name: str
    backend: Tokenizer = field(repr=False, compare=False)
    sha256: str

    @classmethod
    def from_backend(cls, name: str, backend: Tokenizer) -> TextTokenizer:
        """Wrap a ``tokenizers.Tokenizer``; its hash is taken over ``backend.to_str()``."""
        return cls(name, backend, hashlib.sha256(backend.to_str().encode()).hexdigest())

    @property
    def size(self) -> int:
        """Number of token ids (the V of a learner), added tokens included."""
        return int(self.backend.get_vocab_size(with_added_tokens=True))

    @property
    def vocab_size(self) -> int:
        """Same as :attr:`size`."""
        return self.size

    @property
    def dtype(self) -> np.dtype:
        """Dtype of stored token ids: uint16 when every id fits, int32 otherwise."""
        return np.dtype(np.uint16) if self.size <= 1 << 16 else np.dtype(np.int32)

    def encode(self, text: str) -> np.ndarray:
        """Token ids of ``text`` in Unicode form :data:`UNICODE_FORM`, shape (T,) int64 (no
        special tokens added)."""
        return np.asarray(self.backend.encode(unicodedata.normalize(UNICODE_FORM, text),
                                              add_special_tokens=False).ids, dtype=np.int64)

    def encode_with_chars(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Token ids of ``text`` (T,) int64 and each token's number of characters (T,)
        int64, which sum to the length of ``text`` in Unicode form :data:`UNICODE_FORM`
        (characters as they look: an accented letter counts once however it was written).

        A token's characters are those between the end of the previous token and its own
        end (character offsets); a character split over several byte-level tokens counts
        for the first of them, characters no token covers (dropped by a normaliser) for
        the token before them (the last one at the end)."""
        text = unicodedata.normalize(UNICODE_FORM, text)
        return _ids_and_chars(self.backend.encode(text, add_special_tokens=False), text)

    def encode_batch_with_chars(self, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`encode_with_chars` of each text, encoded in parallel by the Rust side (on
        every core), with the same result."""
        texts = [unicodedata.normalize(UNICODE_FORM, text) for text in texts]
        encodings = self.backend.encode_batch(texts, add_special_tokens=False)
        return [_ids_and_chars(encoding, text)
                for encoding, text in zip(encodings, texts, strict=True)]

    def decode(self, ids: Any) -> str:
        """Text of token ids (numpy array, list, or torch tensor). Raises ValueError for
        an id outside 0..size-1."""
        if hasattr(ids, "detach"):
            ids = ids.detach().cpu().numpy()
        arr = np.asarray(ids).reshape(-1).astype(np.int64)
        bad = np.flatnonzero((arr < 0) | (arr >= self.size))
        if bad.size:
            raise ValueError(f"token id {int(arr[bad[0]])} at position {int(bad[0])} is "
                             f"outside tokenizer {self.name!r} (ids 0..{self.size - 1})")
        return self.backend.decode(arr.tolist(), skip_special_tokens=False)

    def identity(self) -> dict[str, str]:
        """What identifies its encodings in a cache key: the serialised tokenizer's hash and
        the Unicode form texts are put in."""
        return {"tokenizer_sha256": self.sha256, "unicode": UNICODE_FORM}


def _ids_and_chars(encoding: Any, text: str) -> tuple[np.ndarray, np.ndarray]:
    """The ids (T,) int64 of a ``tokenizers`` encoding of ``text`` and each token's
    characters (T,) int64 (:meth:`TextTokenizer.encode_with_chars`)."""
    ids = np.asarray(encoding.ids, dtype=np.int64)
    if ids.size == 0:
        return ids, np.zeros(0, dtype=np.int64)
    ends = np.maximum.accumulate(np.asarray([end for _, end in encoding.offsets],
                                            dtype=np.int64))
    ends[-1] = len(text)
    return ids, np.diff(ends, prepend=0)


def load_tokenizer(source: str, *, cache_dir: str | os.PathLike[str] | None = None,
                   progress: bool = True) -> TextTokenizer:
    """The tokenizer named by ``source``: ``"bpe"`` (:func:`bundled_bpe`), the path of a
    ``tokenizer.json`` file or of a folder holding one, or a Hugging Face hub id.

    Raises FileNotFoundError for a path (or a folder without ``tokenizer.json``) that does
    not exist, ValueError for a file that is not a tokenizer, and RuntimeError (saying
    which folder to place) for a hub id that cannot be fetched."""
    if source == BPE_SOURCE:
        return bundled_bpe(cache_dir=cache_dir, progress=progress)
    path = Path(source).expanduser()
    if path.exists():
        return TextTokenizer.from_backend(str(path), _from_file(_tokenizer_file(path)))
    if source.startswith(("/", ".", "~")) or source.count("/") > 1 or "\\" in source:
        raise FileNotFoundError(f"no tokenizer at {path}: give a tokenizer.json file or a "
                                f"folder holding one, {BPE_SOURCE!r}, or a hub id such as gpt2")
    return TextTokenizer.from_backend(source, _from_file(hub_file(source, "tokenizer.json")))


def _tokenizer_file(path: Path) -> Path:
    """``path`` itself, or ``path/tokenizer.json`` for a folder (FileNotFoundError when it
    has none)."""
    if path.is_dir():
        if not (path / "tokenizer.json").is_file():
            raise FileNotFoundError(
                f"{path} holds no tokenizer.json: save the tokenizer there with transformers' "
                "save_pretrained (a fast tokenizer writes tokenizer.json) or tokenizers' "
                "Tokenizer.save, or give the path of its tokenizer.json")
        return path / "tokenizer.json"
    return path


def _from_file(path: Path) -> Tokenizer:
    """``Tokenizer.from_file``; ValueError naming the file when it is not a tokenizer."""
    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:  # the Rust side raises plain Exception
        raise ValueError(f"{path} is not a Hugging Face tokenizer.json ({err})") from None


def _offline_message(repo_id: str, filename: str, why: str) -> str:
    folder = f"tokenizers/{repo_id.replace('/', '--')}"
    files = "tokenizer.json" if filename == "tokenizer.json" else f"tokenizer.json {filename}"
    return (f"{filename} of {repo_id!r} is not on this machine and cannot be fetched from the "
            f"Hugging Face hub ({why}). On a machine with network, save the model folder with "
            f"transformers' save_pretrained (python -c \"from transformers import AutoModel, "
            f"AutoTokenizer; AutoTokenizer.from_pretrained('{repo_id}').save_pretrained("
            f"'{folder}'); AutoModel.from_pretrained('{repo_id}').save_pretrained('{folder}')\")"
            f" or `hf download {repo_id} {files} --local-dir {folder}`, copy that folder "
            f"here and pass --tokenizer {folder} (notebook: tokenizer='{folder}'); or use "
            f"--tokenizer {BPE_SOURCE}, trained offline on the bundled books")


def _hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` is set now (huggingface_hub reads it only at import)."""
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return flag in ("1", "on", "yes", "true") or bool(constants.HF_HUB_OFFLINE)


def hub_file(repo_id: str, filename: str) -> Path:
    """File ``filename`` of hub repository ``repo_id``: from huggingface_hub's cache, else
    downloaded into it. Offline (``HF_HUB_OFFLINE``) no request is made; without it and
    without network, huggingface_hub retries for about 30 s first. Raises RuntimeError
    saying which folder to place when it cannot be had."""
    import huggingface_hub
    from huggingface_hub import errors

    if _hub_offline():
        cached = huggingface_hub.try_to_load_from_cache(repo_id, filename)
        if isinstance(cached, str):
            return Path(cached)
        raise RuntimeError(_offline_message(repo_id, filename, "HF_HUB_OFFLINE is set and "
                                            "it is not in the Hugging Face cache"))
    try:
        return Path(huggingface_hub.hf_hub_download(repo_id, filename))
    except errors.LocalEntryNotFoundError as err:  # the hub unreachable (after its retries)
        raise RuntimeError(_offline_message(repo_id, filename, str(err))) from None
    except (errors.RepositoryNotFoundError, errors.EntryNotFoundError) as err:
        raise RuntimeError(f"the hub has no {filename} for {repo_id!r} ({err}); give a hub "
                           f"id of a model with a fast tokenizer, a local folder, or "
                           f"{BPE_SOURCE!r}") from None
    except (errors.HfHubHTTPError, OSError) as err:
        raise RuntimeError(_offline_message(repo_id, filename,
                                            f"{type(err).__name__}: {err}")) from None


def bpe_cache_path(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where :func:`bundled_bpe` keeps its tokenizer.json: ``<cache>/tokenizers/bpe-<key>.json``,
    the key hashing the bundled training books' sha256 and :data:`BPE_SETTINGS`."""
    from sharp.data.bundled import provenance
    from sharp.data.corpus import cache_root

    rows = provenance()
    rows = rows[rows["split"] == BPE_SETTINGS["split"]]
    key = json.dumps({"books": list(zip(rows["id"], rows["sha256"], strict=True)),
                      "settings": BPE_SETTINGS}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return cache_root(cache_dir) / "tokenizers" / f"bpe-{digest}.json"


def bundled_bpe(*, cache_dir: str | os.PathLike[str] | None = None,
                progress: bool = True) -> TextTokenizer:
    """The byte-level BPE of :data:`BPE_VOCAB_SIZE` tokens trained on the raw text of the
    bundled books' training split (about 14M characters: ~10 s on one core), read from
    its cache file (:func:`bpe_cache_path`) when it is there, else trained and written
    there atomically. Every byte is a token, so any text encodes and decodes exactly.
    ``progress`` shows the trainer's progress bar."""
    path = bpe_cache_path(cache_dir)
    if path.is_file():
        return TextTokenizer.from_backend(BPE_SOURCE, _from_file(path))
    from sharp.data.bundled import provenance, stored_text

    rows = provenance()
    texts = (unicodedata.normalize(UNICODE_FORM, stored_text(doc_id))
             for doc_id in rows.loc[rows["split"] == BPE_SETTINGS["split"], "id"])
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=BPE_SETTINGS["vocab_size"],
                                  min_frequency=BPE_SETTINGS["min_frequency"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=progress)
    backend.train_from_iterator(texts, trainer)
    atomic_write_text(path, backend.to_str())
    return TextTokenizer.from_backend(BPE_SOURCE, backend)
