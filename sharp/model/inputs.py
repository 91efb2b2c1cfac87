"""Frozen dense inputs (SPEC §2, §11): token ids read through a (V, D) table given from
outside, e.g. GPT-2's 50,257 x 768 input embeddings.

The table is never trained: it is no parameter of any module, so no optimiser ever sees it,
in wake or in sleep. It comes from a local model folder's safetensors file
(:func:`read_table`; nothing is downloaded) or as a tensor. A checkpoint names it by its
shape and SHA-256 (:func:`table_state`) and holds the table itself only when the learner's
config gives no ``input_table`` to read it back from, so a big table read from a folder is
not copied into every checkpoint; loading checks that the learner's table is the one saved
with (:func:`check_table_state`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

#: Names under which model folders keep their input embeddings, tried in order: GPT-2
#: (``wte.weight``; ``transformer.wte.weight`` when saved with its LM head), Llama-style
#: (``model.embed_tokens.weight``), BERT-style.
TABLE_KEYS = ("wte.weight", "transformer.wte.weight", "model.embed_tokens.weight",
              "embed_tokens.weight", "embeddings.word_embeddings.weight")

#: The file :func:`read_table` looks for first in a model folder.
MODEL_FILE = "model.safetensors"


def _missing(path: Path, what: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{what}: place a model folder there holding {MODEL_FILE} with the frozen input "
        f"embeddings (e.g. GPT-2's {TABLE_KEYS[0]}), or give the path of the .safetensors "
        "file itself; nothing is downloaded. Where the network allows, GPT-2's is fetched "
        f"with: huggingface-cli download gpt2 {MODEL_FILE} config.json --local-dir {path}"
    )


def table_files(source: str | os.PathLike) -> list[Path]:
    """The safetensors files to search for a table: ``source`` itself if it is a file, else
    the folder's ``model.safetensors`` then its other ``*.safetensors`` files (sorted, e.g.
    the shards of a big model). Raises FileNotFoundError naming the folder to place and
    what to put in it when there is none."""
    path = Path(source).expanduser()
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise _missing(path, f"no model folder or safetensors file at {path}")
    files = sorted(path.glob("*.safetensors"), key=lambda f: (f.name != MODEL_FILE, f.name))
    if not files:
        raise _missing(path, f"the model folder {path} holds no .safetensors file")
    return files


def read_table(source: str | os.PathLike, key: str | None = None) -> Tensor:
    """The frozen input table (V, D) float32 (CPU) of a local model folder or safetensors
    file ``source``: the tensor ``key``, or the first of :data:`TABLE_KEYS` found.

    Raises FileNotFoundError (saying what to place where) for a missing folder or file,
    KeyError listing the tensors found when none has a known name, ValueError for a tensor
    that is not 2-D.

    >>> import tempfile, torch, safetensors.torch
    >>> folder = tempfile.mkdtemp()
    >>> safetensors.torch.save_file({"wte.weight": torch.ones(5, 3)},
    ...                             f"{folder}/model.safetensors")
    >>> read_table(folder).shape
    torch.Size([5, 3])
    """
    from safetensors import safe_open

    wanted = (key,) if key is not None else TABLE_KEYS
    found: list[str] = []
    for file in table_files(source):
        with safe_open(file, framework="pt") as tensors:
            names = list(tensors.keys())
            for name in wanted:
                if name in names:
                    table = tensors.get_tensor(name)
                    if table.ndim != 2:
                        raise ValueError(f"{file}: {name} has shape {tuple(table.shape)}; an "
                                         "input table is 2-D (vocabulary, dimension)")
                    return table.to(torch.float32).contiguous()
            found += names
    raise KeyError(f"no input embedding table in {source}: looked for {list(wanted)} among "
                   f"{found[:20]}{' ...' if len(found) > 20 else ''}; pass key=<its name>")


def input_table(config: Any, table: Tensor | None, device: torch.device | str = "cpu"
                ) -> Tensor | None:
    """The frozen table a learner with ``config`` (any config with ``inputs``,
    ``input_dim``, ``input_table`` and ``vocab_size``) reads its tokens through, on
    ``device`` and without gradient: None for a learned embedding, else ``table`` if given
    or the one read from ``config.input_table``.

    ``table`` may be a tensor or an array (e.g. numpy); it is copied. Raises ValueError for
    a table given to a learned-embedding config, for a dense config with neither a table
    nor ``input_table`` (saying how to give one), for a table that is not (vocab_size,
    input_dim) and for one holding NaN or infinite values; what :func:`read_table` raises.
    """
    if config.inputs != "dense":
        if table is not None:
            raise ValueError("a frozen input table was given to a learner with a learned "
                             "embedding; set inputs='dense' and input_dim in its config")
        return None
    if table is None:
        if config.input_table is None:
            raise ValueError(
                "inputs='dense' needs the frozen (vocab_size, input_dim) input table: pass "
                "it as a tensor (table=...) or set input_table to a local model folder "
                f"holding {MODEL_FILE} (e.g. GPT-2's, with {TABLE_KEYS[0]})"
            )
        table = read_table(config.input_table)
    elif not isinstance(table, Tensor) and hasattr(table, "__array__"):
        table = torch.as_tensor(table)
    expected = (config.vocab_size, config.input_dim)
    if not isinstance(table, Tensor) or tuple(table.shape) != expected:
        got = tuple(table.shape) if isinstance(table, Tensor) else type(table).__name__
        raise ValueError(f"the frozen input table must be a tensor of shape (vocab_size, "
                         f"input_dim) = {expected}, got {got}")
    table = table.detach().to(device=device, dtype=torch.float32, copy=True).contiguous()
    if not bool(torch.isfinite(table).all()):  # else every loss is NaN and blames the lr
        rows = torch.nonzero(~torch.isfinite(table).all(dim=1)).flatten()[:5].tolist()
        raise ValueError(f"the frozen input table holds NaN or infinite values (token ids "
                         f"{rows}{' ...' if len(rows) == 5 else ''}): a learner cannot read it")
    return table  # a copy: the caller's tensor may change later, the learner's must not


def table_digest(table: Tensor) -> str:
    """SHA-256 (hex) of a table's float32 bytes: which table a checkpoint was saved with
    (about 0.1 s for GPT-2's 154 MB)."""
    values = table.detach().to("cpu", torch.float32).contiguous().numpy()
    return hashlib.sha256(values.data).hexdigest()


def table_state(table: Tensor, config: Any) -> dict[str, Any]:
    """The checkpoint entry of a learner's frozen ``table``: its shape and SHA-256, and the
    table itself (CPU) when ``config.input_table`` is None."""
    state: dict[str, Any] = {"shape": list(table.shape), "sha256": table_digest(table)}
    if config.input_table is None:
        state["table"] = table.detach().cpu().clone()
    return state


def check_table_state(saved: dict[str, Any], table: Tensor) -> None:
    """Raise ValueError unless a checkpoint's table entry ``saved`` names the frozen
    ``table`` (a learner resumed on another table would compute something else)."""
    digest = table_digest(table)
    if saved["sha256"] != digest:
        raise ValueError(
            f"the checkpoint was saved with another frozen input table (sha256 "
            f"{saved['sha256'][:12]}..., shape {saved['shape']}) than this learner's "
            f"({digest[:12]}...); build the learner with the table it was saved with"
        )


class DenseInput(nn.Module):
    """Token ids -> their rows of a frozen table -> a trained linear to ``embedding``: the
    input layer of a baseline with dense inputs, in place of its learned embedding.

    ``forward``: ids (...,) int64 -> (..., embedding). The table (V, D) is a non-persistent
    buffer: it follows the module to its device, and is in neither ``parameters()`` nor
    ``state_dict()``.
    """

    table: Tensor

    def __init__(self, table: Tensor, embedding: int) -> None:
        super().__init__()
        self.register_buffer("table", table, persistent=False)
        self.linear = nn.Linear(table.shape[1], embedding)

    def forward(self, ids: Tensor) -> Tensor:
        """The trained projection of the frozen vectors of ``ids``."""
        return self.linear(self.table[ids])


def token_inputs(ids: Tensor, table: Tensor | None) -> Tensor:
    """What a SHARP memory 0 reads for token ``ids`` (any shape, int64): the ids themselves
    (learned embedding, ``table`` None) or their rows of the frozen ``table``, shape
    (*ids.shape, D) (dense inputs)."""
    return ids if table is None else table[ids]


def input_layer(vocab_size: int, embedding: int, table: Tensor | None) -> nn.Module:
    """A baseline's input layer: a learned ``nn.Embedding(vocab_size, embedding)``, or a
    :class:`DenseInput` over the frozen ``table`` (V, D)."""
    if table is None:
        return nn.Embedding(vocab_size, embedding)
    return DenseInput(table, embedding)
