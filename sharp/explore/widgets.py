"""The stream explorer: an ipywidgets panel that steps any learner through a token stream.

It works on the learner protocol alone (``learn``, ``state_dict``/``load_state_dict``);
when the learner sleeps (SHARP) it adds the "Sleep now" button, sleep markers and a
heatmap of the layer states. Every button and slider calls a plain method
(:meth:`StreamExplorer.step`, :meth:`~StreamExplorer.sleep`, :meth:`~StreamExplorer.reset`,
:meth:`~StreamExplorer.set_tau`, :meth:`~StreamExplorer.set_lr`), so notebooks run
headlessly (``interactive=False``) drive the same panel without displaying it, and
tests click the buttons without a browser.

The live figure is a plotly ``FigureWidget`` (``anywidget`` must be installed). It is
redrawn once per call of :meth:`~StreamExplorer.step`, in one batched update, from at
most ``max_points`` points per trace, so stepping thousands of tokens stays fast.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from sharp.data.vocab import TEXT8, Vocabulary
from sharp.protocol import Learner, Sleeper, StepResult, check_stream
from sharp.runs.stream import run_stream

Decoder = Callable[[np.ndarray], str]

#: Symbols used to show token ids of vocabularies without text (id i -> _SYMBOLS[i]).
_SYMBOLS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def decoder_for(vocab_size: int, decode: Vocabulary | Decoder | None = None) -> Decoder:
    """A function from token ids to display text: ``decode`` itself, a vocabulary's
    ``decode``, ``TEXT8`` for 27 symbols, else one digit or letter per id."""
    if isinstance(decode, Vocabulary):
        return decode.decode
    if decode is not None:
        return decode
    if vocab_size == TEXT8.size:
        return TEXT8.decode
    if vocab_size <= len(_SYMBOLS):
        return Vocabulary(_SYMBOLS[:vocab_size]).decode
    return lambda ids: " ".join(str(int(i)) for i in np.asarray(ids).reshape(-1))


def rolling_mean(values: np.ndarray, width: int) -> np.ndarray:
    """Mean of the last ``width`` values at every position (fewer at the start)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return values
    total = np.concatenate(([0.0], np.cumsum(values)))
    index = np.arange(1, values.size + 1)
    start = np.maximum(index - width, 0)
    return (total[index] - total[start]) / (index - start)


def thin(count: int, max_points: int) -> np.ndarray:
    """At most ``max_points`` evenly spread indices of 0..count-1, always the last one."""
    if count <= max_points:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, max_points).round().astype(np.int64))


class StreamExplorer:
    """Step ``learner`` through ``tokens`` (stride-1 windows), watch it learn, sleep it.

    ``smooth`` is the width (tokens) of the rolling means; ``sleep_every`` the automatic
    sleep schedule (None: the learner's config; 0: only "Sleep now"); ``decode`` turns
    token ids into display text (see :func:`decoder_for`). ``run_interval`` is the
    milliseconds between two chunks of the Run button. ``tokens`` is checked as
    :func:`~sharp.protocol.check_stream` checks a stream (ValueError).
    """

    def __init__(
        self,
        learner: Learner,
        tokens: np.ndarray,
        *,
        decode: Vocabulary | Decoder | None = None,
        smooth: int = 200,
        sleep_every: int | None = None,
        max_points: int = 1_000,
        heatmap_units: int = 64,
        step_n: int = 500,
        run_interval: int = 300,
        title: str = "",
    ) -> None:
        self.learner = learner
        self.window = learner.window
        self.tokens = check_stream(tokens, self.window, learner.vocab_size)
        self.total = self.tokens.size - self.window
        self.decode = decoder_for(learner.vocab_size, decode)
        self.smooth = smooth
        self.sleep_every = sleep_every
        self.max_points = max_points
        self.heatmap_units = heatmap_units
        self.sleeps = isinstance(learner, Sleeper)
        self.layered = isinstance(getattr(learner, "states", None), list)
        self._initial_config = getattr(learner, "config", None)
        self._initial_state = learner.state_dict()
        self._clear()
        self._build(step_n, run_interval, title)
        self.redraw()

    # -- history ----------------------------------------------------------------------
    def _clear(self) -> None:
        self.steps = 0
        self._frames: list[pd.DataFrame] = []
        self._bits = np.empty(0)
        self._correct = np.empty(0)
        self._learned = np.empty(0)
        self.sleep_steps: list[int] = []
        self.sleep_reports: list[Any] = []
        self.last: StepResult | None = None
        self.ms_per_token = math.nan

    @property
    def records(self) -> pd.DataFrame:
        """Every step so far: step, bits, correct, recall, memory_learned, slept, seconds."""
        if not self._frames:
            return pd.DataFrame(columns=["step", "bits", "correct", "recall", "memory_learned",
                                         "slept", "seconds"])
        if len(self._frames) > 1:
            self._frames = [pd.concat(self._frames, ignore_index=True)]
        return self._frames[0]

    @property
    def done(self) -> bool:
        """Whether the whole stream has been consumed."""
        return self.steps >= self.total

    # -- actions (what the buttons and sliders call) -------------------------------------
    def step(self, n: int | None = None) -> pd.DataFrame:
        """Learn from the next ``n`` tokens (default: the N slider), sleeping on the
        schedule; redraw once. Returns the new records (empty at the end of the stream)."""
        n = self.n_slider.value if n is None else int(n)
        start, stop = self.steps, min(self.steps + max(n, 0), self.total)
        if stop <= start:
            self.play.playing = False
            return self.records.iloc[0:0]
        times: list[float] = []
        clock = [time.perf_counter()]

        def on_step(_: int, result: StepResult) -> None:
            now = time.perf_counter()
            times.append(now - clock[0])
            clock[0] = now
            self.last = result

        chunk = self.tokens[start : stop + self.window]
        frame = run_stream(self.learner, chunk, sleep_every=self.sleep_every, offset=start,
                           progress=False, on_step=on_step)
        frame["seconds"] = times
        self._frames.append(frame)
        self._bits = np.concatenate([self._bits, frame["bits"].to_numpy()])
        self._correct = np.concatenate([self._correct, frame["correct"].to_numpy(float)])
        self._learned = np.concatenate([self._learned, frame["memory_learned"].to_numpy(float)])
        self.sleep_steps += frame.loc[frame["slept"], "step"].tolist()
        self.ms_per_token = 1000 * float(np.mean(times))
        self.steps = stop
        if self.done:
            self.play.playing = False
        self.redraw()
        return frame

    def sleep(self) -> Any:
        """Run the learner's sleep phase now; returns its report (SHARP: SleepReport)."""
        if not isinstance(self.learner, Sleeper):
            raise TypeError(f"{type(self.learner).__name__} has no sleep phase")
        report = self.learner.sleep()
        self.sleep_steps.append(self.steps)
        self.sleep_reports.append(report)
        self.redraw()
        return report

    def reset(self) -> None:
        """Rewind the stream and restore the learner exactly as it was when the explorer
        was made (config, weights, optimisers and their learning rates, states); the tau
        and lr sliders move back to its values."""
        self.play.playing = False
        if self._initial_config is not None:
            self.learner.config = self._initial_config  # type: ignore[attr-defined]
        self.learner.load_state_dict(self._initial_state)
        self._clear()
        tau, lr = self._settings()
        self._sync(self.tau_slider, self.tau_value, tau)
        self._sync(self.lr_slider, self.lr_value, lr)
        self.redraw()

    def _settings(self) -> tuple[float, float]:
        """The learner's own tau (NaN without one) and base learning rate (NaN without a
        config saying it)."""
        config: Any = getattr(self.learner, "config", None)
        return float(getattr(config, "tau", math.nan)), float(getattr(config, "lr", math.nan))

    @property
    def has_tau(self) -> bool:
        """Whether the learner has a recall threshold (SHARP)."""
        return hasattr(getattr(self.learner, "config", None), "tau")

    def set_tau(self, tau: float) -> None:
        """Set the memory-0 recall threshold; it takes effect on the next step."""
        if not self.has_tau:
            raise TypeError(f"{type(self.learner).__name__} has no recall threshold tau")
        tau = float(tau)
        learner: Any = self.learner
        learner.config = learner.config.replace(tau=tau)
        self._sync(self.tau_slider, self.tau_value, tau)
        self.redraw(figure=False)

    def set_lr(self, lr: float) -> None:
        """Set the base learning rate; it takes effect on the next step. SHARP: memory 0
        and sleep use lr, head l uses lr·slowdown**l; a baseline's optimiser uses lr."""
        lr = float(lr)
        learner: Any = self.learner
        config = getattr(learner, "config", None)
        if not hasattr(config, "lr"):
            raise TypeError(f"{type(learner).__name__} has no config with a learning rate")
        learner.config = config.replace(lr=lr)  # applied to its optimisers (LiveConfig)
        self._sync(self.lr_slider, self.lr_value, lr)
        self.redraw(figure=False)

    def _sync(self, slider: widgets.FloatLogSlider, label: widgets.Label, value: float) -> None:
        """Show ``value`` on ``label`` and move ``slider`` to it (widening its range to
        include it) without calling its observer again. A log slider cannot show 0 (tau=0:
        the gate always open): it then rests at its lowest stop, and the label says 0."""
        if not math.isfinite(value):
            label.value = "–"
            return
        label.value = f"{value:.1e}" if value else "0"
        self._syncing = True
        try:
            if value > 0:
                slider.min = min(slider.min, math.floor(math.log10(value)))
                slider.max = max(slider.max, math.ceil(math.log10(value)))
            if not math.isclose(slider.value, value, rel_tol=1e-9):
                slider.value = value
        finally:
            self._syncing = False

    # -- the panel ----------------------------------------------------------------------
    def _build(self, step_n: int, run_interval: int, title: str) -> None:
        self._syncing = False
        button = widgets.Layout(width="auto")
        self.step_button = widgets.Button(description="Step 1", layout=button)
        self.step_n_button = widgets.Button(description="Step N", button_style="primary",
                                            layout=button)
        self.n_slider = widgets.IntSlider(value=step_n, min=1, max=5_000, step=1,
                                          description="N", continuous_update=False)
        self.play = widgets.Play(value=0, min=0, max=10**9, interval=run_interval,
                                 show_repeat=False, description="Run")
        self.sleep_button = widgets.Button(description="Sleep now", disabled=not self.sleeps,
                                           button_style="warning", layout=button)
        self.reset_button = widgets.Button(description="Reset", button_style="danger",
                                           layout=button)
        self.tau_slider = widgets.FloatLogSlider(
            value=1e-2, base=10, min=-4, max=1, step=0.1, description="tau",
            disabled=not self.has_tau, continuous_update=False, readout=False)
        self.lr_slider = widgets.FloatLogSlider(
            value=1e-3, base=10, min=-6, max=-1, step=0.1, description="lr",
            continuous_update=False, readout=False)
        self.tau_value, self.lr_value = widgets.Label(), widgets.Label()
        tau, lr = self._settings()
        self._sync(self.tau_slider, self.tau_value, tau)
        self._sync(self.lr_slider, self.lr_value, lr)
        self.step_button.on_click(lambda _: self.step(1))
        self.step_n_button.on_click(lambda _: self.step())
        self.sleep_button.on_click(lambda _: self.sleep())
        self.reset_button.on_click(lambda _: self.reset())
        self.play.observe(self._on_play, "value")
        self.tau_slider.observe(self._on_slider(self.set_tau), "value")
        self.lr_slider.observe(self._on_slider(self.set_lr), "value")
        self.readout = widgets.HTML()
        self.stream_view = widgets.HTML()
        self.figure = self._make_figure(title)
        self.widget = widgets.VBox([
            widgets.HBox([self.step_button, self.step_n_button, self.n_slider,
                          widgets.Label("Run"), self.play, self.sleep_button,
                          self.reset_button]),
            widgets.HBox([self.tau_slider, self.tau_value, self.lr_slider, self.lr_value]),
            self.readout, self.figure, self.stream_view,
        ])

    def _on_slider(self, setter: Callable[[float], None]) -> Callable[[dict[str, Any]], None]:
        def observer(change: dict[str, Any]) -> None:
            if not self._syncing:
                setter(change["new"])
        return observer

    def _on_play(self, change: dict[str, Any]) -> None:
        """One Run tick: a chunk sized to take about half the tick interval."""
        if change["new"] == 0:
            return
        per_token = self.ms_per_token if math.isfinite(self.ms_per_token) else 5.0
        chunk = int(0.5 * self.play.interval / max(per_token, 1e-3))
        self.step(max(1, min(chunk, self.n_slider.value)))

    def _make_figure(self, title: str) -> go.FigureWidget:
        rows = 3 if self.layered else 2
        heights = [0.45, 0.2, 0.35] if self.layered else [0.65, 0.35]
        titles = ["bits per token (prediction before learning) vs stream step",
                  "share of recent tokens vs stream step"]
        if self.layered:
            titles.append("layer states now (layer l ticks every a**l tokens)")
        fig = make_subplots(rows=rows, cols=1, row_heights=heights, vertical_spacing=0.1,
                            subplot_titles=titles)
        smooth = f"rolling mean of {self.smooth}"
        fig.add_trace(go.Scatter(name=f"bits ({smooth})", mode="lines", x=[], y=[],
                                 line={"color": "#1f77b4"}), row=1, col=1)
        fig.add_trace(go.Scatter(name="sleep", mode="markers", x=[], y=[],
                                 marker={"symbol": "triangle-down", "size": 12,
                                         "color": "#d62728"}), row=1, col=1)
        fig.add_trace(go.Scatter(name="top-1 correct", mode="lines", x=[], y=[],
                                 line={"color": "#2ca02c"}), row=2, col=1)
        if self.sleeps:
            fig.add_trace(go.Scatter(name="memory-0 updates", mode="lines", x=[], y=[],
                                     line={"color": "#ff7f0e"}), row=2, col=1)
        if self.layered:
            fig.add_trace(go.Heatmap(name="layer states", z=[[0.0]], zmin=-1, zmax=1,
                                     colorscale="RdBu", showscale=False), row=3, col=1)
        fig.update_yaxes(title_text="bits", row=1, col=1)
        fig.update_yaxes(range=[0, 1.05], row=2, col=1)
        fig.update_xaxes(matches="x2", row=1, col=1)
        if self.layered:
            fig.update_xaxes(title_text="unit", row=3, col=1)
        fig.update_layout(template="plotly_white", height=640 if self.layered else 460,
                          margin={"l": 60, "r": 20, "t": 80 if title else 50, "b": 40},
                          title=title or None)
        return go.FigureWidget(fig)

    def trace(self, name: str) -> Any:
        """The figure's trace called ``name`` (e.g. ``"sleep"``, ``"layer states"``)."""
        for trace in self.figure.data:
            if trace.name == name or trace.name.startswith(f"{name} ("):
                return trace
        raise KeyError(f"no trace {name!r}; traces: {[t.name for t in self.figure.data]}")

    def layer_matrix(self) -> np.ndarray:
        """The current layer states, one row per layer, the first ``heatmap_units`` units
        (shorter layers padded with NaN)."""
        states = [s.detach().reshape(-1).cpu().numpy()
                  for s in self.learner.states]  # type: ignore[attr-defined]
        width = min(self.heatmap_units, max(s.size for s in states))
        matrix = np.full((len(states), width), np.nan)
        for level, state in enumerate(states):
            matrix[level, : min(width, state.size)] = state[:width]
        return matrix

    # -- drawing ------------------------------------------------------------------------
    def redraw(self, figure: bool = True) -> None:
        """Refresh the readout and stream text, and (``figure``) the plot in one batch."""
        self.readout.value = self._readout_html()
        self.stream_view.value = self._stream_html()
        if not figure:
            return
        index = thin(self.steps, self.max_points)
        x = index + 1
        bits = rolling_mean(self._bits, self.smooth)
        sleeps = np.asarray(self.sleep_steps, dtype=np.int64)
        marks = (bits[np.clip(sleeps - 1, 0, bits.size - 1)] if bits.size
                 else np.full(sleeps.size, np.nan))
        with self.figure.batch_update():
            data = self.figure.data
            data[0].x, data[0].y = x, bits[index]
            data[1].x, data[1].y = sleeps, marks
            data[2].x, data[2].y = x, rolling_mean(self._correct, self.smooth)[index]
            if self.sleeps:
                data[3].x, data[3].y = x, rolling_mean(self._learned, self.smooth)[index]
            if self.layered:
                strides = getattr(self.learner, "strides", None) or ()
                data[-1].z = self.layer_matrix()
                data[-1].y = [f"layer {level}" + (f" (every {strides[level]})"
                                                   if level < len(strides) else "")
                              for level in range(len(self.learner.states))]  # type: ignore

    def _readout_html(self) -> str:
        recent = slice(-self.smooth, None)
        parts = [f"step <b class='sharp-steps'>{self.steps:,}</b> of {self.total:,}"]
        if self.steps:
            parts.append(f"bits (last {min(self.smooth, self.steps)}) "
                         f"<b>{self._bits[recent].mean():.3f}</b>")
            parts.append(f"top-1 {self._correct[recent].mean():.0%}")
        learner: Any = self.learner
        if self.sleeps:
            if self.steps:
                parts.append(f"memory-0 updates {self._learned[recent].mean():.0%}")
            parts.append(f"recall EMA {getattr(learner, 'recall_ema', math.nan):.3g} "
                         f"vs tau {learner.config.tau:.3g}")
            parts.append(f"tags {len(getattr(learner, 'tags', ()))}")
            parts.append(f"sleeps <b class='sharp-sleeps'>{len(self.sleep_steps)}</b>")
        if math.isfinite(self.ms_per_token):
            parts.append(f"{self.ms_per_token:.2f} ms/token")
        return "<div style='font-family:sans-serif'>" + " · ".join(parts) + "</div>"

    def _stream_html(self, width: int = 80) -> str:
        """The last ``width`` tokens, each shaded by how surprising it was (bits), and the
        last prediction's top 3."""
        start = max(0, self.steps - width)
        shown = self.tokens[self.window + start : self.window + self.steps]
        bits = self._bits[start : self.steps]
        top = max(math.log2(self.learner.vocab_size), 1.0)
        spans = []
        for token, value in zip(shown.tolist(), bits.tolist(), strict=True):
            alpha = min(value / top, 1.0)
            char = html.escape(self.decode(np.array([token])))
            spans.append(f"<span title='{value:.2f} bits' "
                         f"style='background:rgba(214,39,40,{alpha:.2f})'>{char}</span>")
        text = "".join(spans) or "<i>no tokens yet</i>"
        line = ""
        if self.last is not None:
            probs = torch.softmax(self.last.logits.float(), -1)
            values, ids = probs.topk(min(3, probs.numel()))
            guesses = ", ".join(f"{self._show(int(i))} {float(p):.0%}"
                                for p, i in zip(values, ids, strict=True))
            line = (f"<br>last prediction: {guesses} → actual {self._show(self.last.target)} "
                    f"({self.last.bits:.2f} bits)")
        return ("<div style='font-family:monospace;white-space:pre;font-size:13px'>"
                f"{text}{line}</div>")

    def _show(self, token: int) -> str:
        text = self.decode(np.array([token]))
        return "␣" if text == " " else html.escape(text)

    def snapshot(self) -> go.Figure:
        """A static copy of the live figure (for executed notebooks and HTML reports)."""
        return go.Figure(self.figure)
