"""The report's main figures as plotly figures for report.html: the same data, style and colours as the PNGs of
plots.py, with the numbers on hover (estimator, N, variance and its 95% interval) and one legend entry per
estimator that hides all its traces when clicked (its ``legendgroup``)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .plots import _has_exact, _positive, estimator_style

# matplotlib's markers (plots.estimator_style) as plotly's symbols.
_SYMBOLS = {"o": "circle", "x": "x", "s": "square", "^": "triangle-up", "D": "diamond", "v": "triangle-down",
            "P": "cross", "*": "star", "<": "triangle-left", ">": "triangle-right"}  # fmt: skip
_HOVER = ("<b>%{customdata[0]}</b><br>θ = %{customdata[1]}, N = %{customdata[2]}<br>%{customdata[3]} = %{y:.4g}"
          "<br>95% CI [%{customdata[4]:.4g}, %{customdata[5]:.4g}]<extra></extra>")  # fmt: skip


def _css(rgb: tuple[float, float, float]) -> str:
    return "rgb({},{},{})".format(*(round(255 * c) for c in rgb))


def _estimator_traces(rows: pd.DataFrame, x: str, style: dict, scale: float, quantity: str, first: bool,
                      exact: bool) -> list[go.Scatter]:  # fmt: skip
    """One estimator's points with their 95% intervals, and its exact-variance line where every row has one."""
    rows = rows.sort_values(x)
    y = rows["grad_var"] * scale
    colour, label = _css(style["color"]), style["label"]
    customdata = list(zip(rows["estimator"], rows["theta"], rows["n_samples"], [quantity] * len(rows),
                          rows["grad_var_ci_low"] * scale, rows["grad_var_ci_high"] * scale))  # fmt: skip
    traces = [go.Scatter(
        x=rows[x], y=y, name=label, legendgroup=label, showlegend=first, mode="lines+markers",
        line=dict(color=colour, dash="dash" if style["ls"] == "--" else "solid", width=1.5),
        marker=dict(symbol=_SYMBOLS.get(style["marker"], "circle"), size=7, color=colour),
        error_y=dict(type="data", array=rows["grad_var_ci_high"] * scale - y, arrayminus=y - rows["grad_var_ci_low"] * scale,
                     color=colour, thickness=1, width=3),
        customdata=customdata, hovertemplate=_HOVER,
    )]  # fmt: skip
    if exact and _has_exact(rows):
        traces.append(go.Scatter(
            x=rows[x], y=rows["exact_var"] * scale, name=f"{label}: exact", legendgroup=label, showlegend=False,
            mode="lines", line=dict(color=colour, width=1), opacity=0.6,
            hovertemplate=f"<b>{label}</b>: exact {quantity} %{{y:.4g}}<extra></extra>",
        ))  # fmt: skip
    return traces


def variance_vs_n(group: pd.DataFrame, title: str) -> go.Figure:
    """Variance of the N-sample estimate against N (log–log), one panel per θ, the exact variance as a thin line
    where it is known (plots.variance_vs_n)."""
    thetas = sorted(group["theta"].unique())
    fig = make_subplots(rows=1, cols=len(thetas), shared_yaxes=True, subplot_titles=[f"θ = {t:g}" for t in thetas],
                        horizontal_spacing=0.04)  # fmt: skip
    shown: set[str] = set()
    for column, theta in enumerate(thetas, start=1):
        for estimator, rows in _positive(group[group["theta"] == theta], "grad_var").groupby("estimator", sort=False):
            style = estimator_style(estimator, group[group["estimator"] == estimator])
            for trace in _estimator_traces(rows, "n_samples", style, 1.0, "variance", style["label"] not in shown, True):
                fig.add_trace(trace, row=1, col=column)
            shown.add(style["label"])
        fig.update_xaxes(type="log", title_text="N (samples per estimate)", row=1, col=column)
    fig.update_yaxes(type="log")  # every panel: a matched axis of another type is ignored, with a console warning
    fig.update_yaxes(title_text="variance of the estimate", row=1, col=1)
    return _layout(fig, f"{title}: variance vs N" + _exact_note(group), width=max(520, 380 * len(thetas) + 220))


def variance_vs_theta(group: pd.DataFrame, title: str) -> go.Figure:
    """Per-sample variance against θ at the largest N (plots.per_sample_variance_vs with x = θ)."""
    n_max = group["n_samples"].max()
    fig = go.Figure()
    for estimator, rows in _positive(group[group["n_samples"] == n_max], "per_sample_var").groupby("estimator", sort=False):
        style = estimator_style(estimator, rows)
        for trace in _estimator_traces(rows, "theta", style, float(n_max), "per-sample variance", True, True):
            fig.add_trace(trace)
    fig.update_xaxes(title_text="θ")
    fig.update_yaxes(type="log", title_text=f"per-sample variance (N = {n_max})")
    return _layout(fig, f"{title}: variance vs θ" + _exact_note(group), width=700)


def _exact_note(group: pd.DataFrame) -> str:
    return " <sup>(thin lines: exact variance)</sup>" if "exact_var" in group and group["exact_var"].gt(0).any() else ""


def _layout(fig: go.Figure, title: str, width: int) -> go.Figure:
    fig.update_layout(title=dict(text=title, font=dict(size=14)), width=width, height=420, template="plotly_white",
                      hovermode="closest", legend=dict(font=dict(size=11)), margin=dict(l=60, r=20, t=70, b=50))  # fmt: skip
    return fig
