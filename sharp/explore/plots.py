"""Plotly figures for streams and benchmark results."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

SLICE_ORDER = ("forward", "backward", "current")


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
                                 fill="tonexty", fillcolor=_alpha(colour), showlegend=False,
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


def _alpha(colour: str, alpha: float = 0.2) -> str:
    colour = colour.lstrip("#")
    r, g, b = (int(colour[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def figures_html(figures: list[go.Figure], title: str) -> str:
    """One self-contained HTML page (plotly.js inlined once) holding ``figures``."""
    parts = [fig.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False)
             for i, fig in enumerate(figures)]
    body = "\n".join(parts)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head>"
            f"<body><h1 style='font-family:sans-serif'>{title}</h1>{body}</body></html>")
