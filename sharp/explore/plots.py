"""Plotly figures for streams, benchmark results and the notebooks' views of the data,
the layers and sleep: data in, ``go.Figure`` out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots
from torch import Tensor

SLICE_ORDER = ("forward", "backward", "current")
#: Colours of a segment's training span and its evaluation slices.
PART_COLOURS = {"train": "#c7c7c7", "backward": "#1f77b4", "current": "#2ca02c",
                "forward": "#d62728"}


def learning_curves(curves: pd.DataFrame, title: str = "Learning curves") -> go.Figure:
    """Prequential bits (mean over segments, band = min..max) and memory update rate
    against stream step, one colour per learner."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3],
                        vertical_spacing=0.06,
                        subplot_titles=("bits per token (prediction before learning)",
                                        "memory-0 update rate"))
    colours = qualitative.Plotly
    for i, (learner, group) in enumerate(curves.groupby("learner", sort=False)):
        colour = colours[i % len(colours)]
        stats = group.groupby("step")["bits"].agg(["mean", "min", "max"]).reset_index()
        fig.add_trace(go.Scatter(x=stats["step"], y=stats["max"], line={"width": 0},
                                 showlegend=False, hoverinfo="skip", legendgroup=learner),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=stats["step"], y=stats["min"], line={"width": 0},
                                 fill="tonexty", fillcolor=alpha(colour), showlegend=False,
                                 hoverinfo="skip", legendgroup=learner), row=1, col=1)
        fig.add_trace(go.Scatter(x=stats["step"], y=stats["mean"], name=learner,
                                 line={"color": colour}, legendgroup=learner), row=1, col=1)
        rate = group.groupby("step")["memory_update_rate"].mean().reset_index()
        fig.add_trace(go.Scatter(x=rate["step"], y=rate["memory_update_rate"], name=learner,
                                 line={"color": colour, "dash": "dot"}, showlegend=False,
                                 legendgroup=learner), row=2, col=1)
        sleeps = group.loc[group["sleeps"] > 0, "step"].unique()
        for step in sleeps if i == 0 else ():
            fig.add_vline(x=step, line={"color": "grey", "width": 1, "dash": "dash"})
    fig.update_xaxes(title_text="stream step (tokens)", row=2, col=1)
    fig.update_yaxes(title_text="bits", row=1, col=1)
    fig.update_yaxes(title_text="rate", range=[0, 1.05], row=2, col=1)
    fig.update_layout(title=title + " (dashed lines: sleep)", template="plotly_white",
                      height=600)
    return fig


def slice_bars(results: pd.DataFrame, column: str = "bits", title: str = "") -> go.Figure:
    """Grouped bars: mean ``column`` per slice and learner, error bars = sample std."""
    stats = results.groupby(["learner", "slice"], sort=False)[column].agg(["mean", "std"])
    fig = go.Figure()
    for learner in results["learner"].unique():
        rows = stats.loc[learner].reindex([s for s in SLICE_ORDER if s in stats.loc[learner].index])
        fig.add_trace(go.Bar(x=list(rows.index), y=rows["mean"], name=learner,
                             error_y={"type": "data", "array": rows["std"].fillna(0)}))
    fig.update_layout(barmode="group", template="plotly_white",
                      title=title or f"{column} per slice (mean ± std over segments)",
                      yaxis_title=column, xaxis_title="evaluation slice")
    return fig


def alpha(colour: str, value: float = 0.2) -> str:
    """``#rrggbb`` or ``rgb(r,g,b)`` as rgba with ``value`` opacity."""
    if colour.startswith("#"):
        r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    else:
        r, g, b = (int(float(v)) for v in colour[colour.index("(") + 1 : -1].split(","))
    return f"rgba({r},{g},{b},{value})"


def char_histogram(frequencies: pd.DataFrame) -> go.Figure:
    """Grouped bars of every symbol's share of all tokens, one colour per corpus;
    ``frequencies`` has the columns of :func:`sharp.data.stats.char_frequencies` plus
    ``corpus``. The space is drawn as ``␣``."""
    frame = frequencies.assign(symbol=frequencies["symbol"].replace(" ", "␣"))
    return px.bar(frame, x="symbol", y="share", color="corpus", barmode="group",
                  title="Character histogram (share of all tokens)", template="plotly_white")


def segments_figure(spans: pd.DataFrame) -> go.Figure:
    """Horizontal bars of every learner's training segment (grey) and evaluation slices;
    ``spans`` has one row per learner and part (``train``, ``backward``, ``current``,
    ``forward``) with its ``start`` and ``length`` in tokens. The shared forward slice sits
    at the corpus's end, so it is drawn just after the segments and labelled with its
    tokens."""
    train = spans[spans["part"] == "train"]
    forward = spans[spans["part"] == "forward"].iloc[0]
    gap = int((train["start"] + train["length"]).max() + train["length"].iloc[0] // 2)
    drawn = spans["start"].where(spans["part"] != "forward", gap)
    fig = go.Figure([
        go.Bar(y=spans.loc[rows, "learner"], x=spans.loc[rows, "length"], base=drawn[rows],
               orientation="h", name=part, marker_color=PART_COLOURS[part],
               width=0.5 if part == "train" else 0.8)
        for part, rows in spans.groupby("part", sort=False).groups.items()
    ])
    fig.add_annotation(x=gap, y=1.02, yref="paper", showarrow=False, xanchor="left",
                       text=f"forward = tokens {forward['start']:,}–"
                       f"{forward['start'] + forward['length']:,} (corpus end)")
    fig.update_layout(barmode="overlay", template="plotly_white", xaxis_title="token offset",
                      title="Segments (grey) and evaluation slices; forward is shared and "
                      "never trained on")
    return fig


def _state_heatmap(states: np.ndarray, x: np.ndarray | None = None, *,
                   scale: bool) -> go.Heatmap:
    """States (steps, units) as a units × steps heatmap on the tanh range [-1, 1]."""
    return go.Heatmap(z=states.T, x=x, zmin=-1, zmax=1, colorscale="RdBu", showscale=scale)


def layer_states_figure(states: Sequence[np.ndarray], strides: Sequence[int], window: int,
                        units: int = 24) -> go.Figure:
    """One heatmap per layer (top layer first) of its state over the stream steps;
    ``states[l]`` is (steps, H_l) (:func:`sharp.explore.hierarchy.layer_states`),
    ``strides[l]`` its tick period in tokens, ``window`` the W its memory reads; the first
    ``units`` units are shown."""
    layers = len(states)
    fig = make_subplots(rows=layers, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=[f"layer {level}: ticks every {stride} tokens, window "
                                        f"spans {window * stride} tokens"
                                        for level, stride in enumerate(strides)][::-1])
    for row, level in enumerate(reversed(range(layers)), start=1):
        steps = np.arange(1, len(states[level]) + 1)
        fig.add_trace(_state_heatmap(states[level][:, :units], steps, scale=row == 1),
                      row=row, col=1)
        fig.update_yaxes(title_text="unit", row=row, col=1)
    fig.update_xaxes(title_text="stream step", row=layers, col=1)
    fig.update_layout(template="plotly_white", height=220 * layers,
                      title=f"Layer states over the stream (first {units} units)")
    return fig


def replay_figure(inputs: Mapping[int, Tensor | np.ndarray], strides: Sequence[int],
                  tag: int = 0, units: int = 32) -> go.Figure:
    """One heatmap per upper layer k of the downsampled replay it trains on for tag
    ``tag``; ``inputs[k]`` is (tags, ticks, H_{k-1}) (:func:`sharp.explore.dreams.replay_inputs`)
    and ``strides[k]`` layer k's stride a^k. The first ``units`` units are shown."""
    fig = make_subplots(rows=1, cols=len(inputs), subplot_titles=[
        f"layer {k} sees layer {k - 1} every {strides[k]} steps" for k in inputs])
    for column, seen in enumerate(inputs.values(), start=1):
        fig.add_trace(_state_heatmap(np.asarray(seen[tag, :, :units]), scale=column == 1),
                      row=1, col=column)
        fig.update_xaxes(title_text="replay tick", row=1, col=column)
    fig.update_yaxes(title_text="unit", row=1, col=1)
    fig.update_layout(template="plotly_white", height=360,
                      title=f"Downsampled replay of tag {tag}")
    return fig


def replay_loss_figure(before: Mapping[int, float], after: Mapping[int, float]) -> go.Figure:
    """Grouped bars of every upper memory's recall loss (MSE) on its replay, ``before`` and
    ``after`` sleep (layer -> loss)."""
    comparison = pd.DataFrame({"before sleep": before, "after sleep": after})
    long = comparison.rename_axis("layer").reset_index().melt(
        "layer", var_name="when", value_name="recall loss (MSE)")
    return px.bar(long, x="layer", y="recall loss (MSE)", color="when", barmode="group",
                  template="plotly_white",
                  title="Upper memories' recall loss on their replay, before and after sleep")


def figures_html(figures: list[go.Figure], title: str) -> str:
    """One self-contained HTML page (plotly.js inlined once) holding ``figures``."""
    parts = [fig.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False)
             for i, fig in enumerate(figures)]
    body = "\n".join(parts)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head>"
            f"<body><h1 style='font-family:sans-serif'>{title}</h1>{body}</body></html>")
