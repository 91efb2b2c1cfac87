"""Running the kit's notebooks headlessly (papermill) and rendering them to HTML.

:func:`execute_notebook` runs a notebook with parameters injected after its
``parameters`` cell, keeps the executed copy, and renders a self-contained HTML page
whose plotly figures show without network (plotly.js is inlined once). A failing cell
raises :class:`NotebookError` naming the notebook and the cell.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import plotly.io as pio
from plotly.offline import get_plotlyjs

from sharp.runs.checkpoints import atomic_write_text

#: The notebooks folder of a source checkout (the notebooks are not in the wheel).
NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"

PLOTLY_MIME = "application/vnd.plotly.v1+json"

# plotly.js is a UMD bundle: with require.js on the page (nbconvert's template loads it
# when online) it would register as an AMD module instead of defining ``Plotly``.
_PLOTLY_LOADER = (
    "<script>window.__sharpDefine = window.define; window.define = undefined;</script>"
    "<script type='text/javascript'>{js}</script>"
    "<script>window.define = window.__sharpDefine;</script>"
)


class NotebookError(RuntimeError):
    """A notebook cell failed; the message names the notebook and the cell."""


@dataclass(frozen=True)
class ExecutedNotebook:
    """Where the executed notebook and its HTML rendering were written."""

    notebook: Path
    html: Path | None
    seconds: float


def notebook_path(name: str | os.PathLike[str]) -> Path:
    """A notebook by path, or by name in the source tree's ``notebooks/`` folder
    (``"05_evaluation"`` or ``"05_evaluation.ipynb"``)."""
    path = Path(name)
    if path.is_file():
        return path
    candidate = NOTEBOOKS / (path.name if path.suffix == ".ipynb" else f"{path.name}.ipynb")
    if candidate.is_file():
        return candidate
    raise FileNotFoundError(
        f"no notebook {str(name)!r} (looked in {NOTEBOOKS}); the notebooks ship with the "
        "source checkout, so run from a clone, or use `sharp bench --no-notebook`"
    )


def execute_notebook(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    parameters: dict[str, Any] | None = None,
    *,
    html: bool = True,
    kernel_name: str | None = None,
    timeout: float | None = None,
    progress: bool = False,
    cwd: str | os.PathLike[str] | None = None,
) -> ExecutedNotebook:
    """Execute ``source`` with ``parameters`` (papermill), writing the executed copy to
    ``out_dir/<name>.ipynb`` and, if ``html``, its rendering to ``out_dir/<name>.html``.

    Cells run in ``cwd`` (default: the notebook's folder); ``timeout`` bounds each cell
    (seconds). With ``progress`` the kernel draws text progress bars and its stderr is
    relayed to this process's stderr. Widget state is not stored. A failing cell raises
    :class:`NotebookError`; the executed copy (with the traceback) and its HTML are still
    written.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    source = notebook_path(source)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / source.name
    partial = out / f".{source.stem}.part.ipynb"
    start = time.perf_counter()
    try:
        with _text_progress(progress):
            papermill.execute_notebook(
                str(source), str(partial), parameters=parameters or {},
                kernel_name=kernel_name, progress_bar=False, cwd=str(cwd or source.parent),
                store_widget_state=False, execution_timeout=timeout,
                stderr_file=sys.stderr if progress else None,
            )
    except PapermillExecutionError as error:
        os.replace(partial, target)
        if html:
            write_html(target, target.with_suffix(".html"))
        first_line = error.source.strip().splitlines()[0] if error.source.strip() else ""
        raise NotebookError(
            f"notebook {source.name} failed at In [{error.exec_count}] (cell "
            f"{error.cell_index + 1} of the executed notebook, starting {first_line!r}): "
            f"{error.ename}: {error.evalue}. The executed notebook with the traceback is "
            f"{target}"
        ) from error
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, target)
    page = write_html(target, target.with_suffix(".html")) if html else None
    return ExecutedNotebook(target, page, time.perf_counter() - start)


@contextmanager
def _text_progress(enabled: bool) -> Iterator[None]:
    """Ask kernels started inside for text progress bars (``SHARP_PROGRESS=text``, see
    :mod:`sharp.runs.progress`), restoring the environment afterwards."""
    saved = os.environ.get("SHARP_PROGRESS")
    if enabled:
        os.environ["SHARP_PROGRESS"] = "text"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("SHARP_PROGRESS", None)
        else:
            os.environ["SHARP_PROGRESS"] = saved


def offline_plotly(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Give every plotly figure output an HTML form that draws without network:
    plotly.js is inlined once, before the first figure. Changes ``notebook`` in place."""
    loader = _PLOTLY_LOADER.format(js=get_plotlyjs())
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if PLOTLY_MIME not in data:
                continue
            figure = pio.to_html(data.pop(PLOTLY_MIME), full_html=False,
                                 include_plotlyjs=False)
            data["text/html"] = loader + figure
            loader = ""
    return notebook


def notebook_html(path: str | os.PathLike[str]) -> str:
    """A notebook rendered to one self-contained HTML page (plotly figures offline)."""
    from nbconvert import HTMLExporter

    notebook = offline_plotly(nbformat.read(path, as_version=4))
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(notebook)
    return body


def write_html(notebook: str | os.PathLike[str], html_path: str | os.PathLike[str]) -> Path:
    """Render ``notebook`` with :func:`notebook_html` and write it atomically."""
    return atomic_write_text(html_path, notebook_html(notebook))
