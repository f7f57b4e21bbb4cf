"""Comparison plots from a results table (PNG). Every estimator keeps one colour across all figures."""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import pickle
import signal
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # reports are rendered headless
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

import hashlib  # noqa: E402
import colorsys  # noqa: E402

from ..statistics import Z95  # noqa: E402

# Colours are fixed per estimator name, so adding an estimator never recolours the others; any other name (a
# user's estimator) gets a hue from a hash of its name.
_NAMED_COLOURS = dict(zip(
    ["pathwise", "score_function", "score_function_loo", "measure_valued", "naive", "arm", "disarm", "gumbel_softmax",
     "straight_through", "rebar", "relax", "finite_difference", "pyro_trace_elbo", "pyro_tracegraph_elbo",
     "pyro_tracegraph_elbo_avg_baseline", "storch_reparameterization", "storch_score_function"],
    sns.color_palette("colorblind", 10) + sns.color_palette("dark", 7),
))  # fmt: skip
BIASED_COLOUR = (0.55, 0.55, 0.55)


def colour(estimator: str) -> tuple[float, float, float]:
    """The colour of an estimator (its registry name) in every figure; its variants share it."""
    if estimator in _NAMED_COLOURS:
        return tuple(_NAMED_COLOURS[estimator])
    hue = int.from_bytes(hashlib.sha256(estimator.encode()).digest()[:4], "big") / 2**32
    return colorsys.hls_to_rgb(hue, 0.45, 0.75)


def _biased(rows: pd.DataFrame) -> bool:
    return bool(rows["expected_unbiased"].eq(False).any() or rows["biased"].eq(True).any())


def estimator_style(estimator: str, rows: pd.DataFrame) -> dict:
    """Line style of one estimator's rows: its colour, or grey and dashed with '(biased)' when it is biased in
    theory or measurably biased in any of them (a low variance does not buy the right gradient)."""
    base = rows["base"].iloc[0] if "base" in rows else estimator  # the registry name behind a variant's label
    if _biased(rows):
        # Several biased estimators share the grey; a marker per name still tells them apart.
        marker = _BIASED_MARKERS.get(base) or "vP*<>"[int.from_bytes(hashlib.sha256(base.encode()).digest()[:4], "big") % 5]
        return dict(color=BIASED_COLOUR, ls="--", marker=marker, label=f"{estimator} (biased)")
    return dict(color=colour(base), ls="-", marker="o", label=estimator)


_BIASED_MARKERS = {"naive": "x", "gumbel_softmax": "s", "straight_through": "^", "finite_difference": "D"}


def save_figure(fig, path: Path) -> Path:
    """Save and close ``fig`` as a PNG at ``path``, replacing any earlier one whole. Inside ``rendering()`` (as
    while ``write_report`` runs) the drawing may finish in a worker process after this returns; ``rendering``
    waits for it."""
    for ax in fig.axes:
        for axis, (low, high) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            # Minor ticks on log axes spanning many decades cost seconds per figure and add nothing; on a
            # short log axis they carry the only labels, so they stay there.
            if axis.get_scale() == "log" and low > 0 and high / low > 100:
                axis.set_minor_locator(matplotlib.ticker.NullLocator())
    # Via a temporary file and a rename: an interrupted render leaves the previous plot, not a truncated one.
    temporary = path.with_name(f".{path.name}.tmp")
    plt.close(fig)  # closed first, so that a pickled copy does not register itself with pyplot where it is drawn
    if _renderer is not None and _renderer.submit(fig, temporary, path):
        return path
    try:
        fig.savefig(temporary, dpi=100, format="png")
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


class _Renderer:
    """Draws figures in a pool of worker processes while the caller builds the next ones. A worker runs a pickled
    copy's ``savefig`` into the temporary file (it imports only matplotlib, not the harness); the rename to the final
    name happens here, once the file is complete, so a PNG under its final name is always whole."""

    def __init__(self, workers: int):
        self.workers = workers
        self.pool = None
        self.pending = []  # [future, figure (until it is drawn), temporary, path]

    def submit(self, fig, temporary: Path, path: Path) -> bool:
        """Queue ``fig``; False (draw it here) when no pool can be started."""
        if self.pool is None and self.workers:
            try:
                # spawn, not fork: the parent may hold torch's threads (and their locks). Workers ignore Ctrl-C: it
                # reaches the whole process group, and this process stops them.
                self.pool = concurrent.futures.ProcessPoolExecutor(
                    self.workers, mp_context=multiprocessing.get_context("spawn"),
                    initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN))  # fmt: skip
            except (OSError, ValueError, NotImplementedError):
                self.workers = 0
        if not self.workers:
            return False
        try:
            future = self.pool.submit(fig.savefig, temporary, dpi=100, format="png")
        except RuntimeError:  # a broken pool (a worker died): draw here from now on
            self.workers = 0
            return False
        self.pending.append([future, fig, temporary, path])
        self._collect(block=False)
        return True

    def _collect(self, block: bool) -> None:
        """Rename finished figures into place, in order; with ``block``, wait for all. A figure that could not be
        sent (a user's figure holding something that does not pickle) is drawn here; a worker's error is raised."""
        while self.pending and (block or self.pending[0][0].done()):
            future, fig, temporary, path = self.pending[0]
            try:
                future.result()
            except Exception:  # noqa: BLE001
                # Not sent (a user's figure holding something that does not pickle) or failed in the worker: drawn
                # here, which raises the error itself if drawing fails.
                fig.savefig(temporary, dpi=100, format="png")
            temporary.replace(path)
            self.pending.pop(0)

    def finish(self) -> None:
        """Wait for every queued figure and rename each into place; re-raise the first error."""
        try:
            self._collect(block=True)
        finally:
            self.close()

    def close(self) -> None:
        """Stop: drop queued figures, let running ones end, and remove every temporary file."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        for _, _, temporary, _ in self.pending:
            temporary.unlink(missing_ok=True)
        self.pending = []


_renderer: _Renderer | None = None


def rendering_workers() -> int:
    """Worker processes worth drawing figures in: one per CPU this process may use, at most 2 (beyond that the
    building of the figures, here, is the bottleneck); 1 means draw here."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(2, cpus))


@contextlib.contextmanager
def rendering(workers: int = 1):
    """Within the block, ``save_figure`` hands each figure to one of ``workers`` spawned processes to draw (with 1,
    or nested, it draws at once); on leaving the block every figure is written, or, on an error or interrupt, none
    is left half-written."""
    global _renderer
    if _renderer is not None or workers < 2:
        yield
        return
    _renderer = renderer = _Renderer(workers)
    try:
        yield
    except BaseException:
        _renderer = None
        renderer.close()
        raise
    _renderer = None
    renderer.finish()


def _positive(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    # Zero variance (e.g. naive autograd when θ only enters p: it returns 0 every time) has no log position, and
    # an infinite one no finite position at all.
    finite = ~frame["variance_infinite"].eq(True) if "variance_infinite" in frame else True
    return frame[(frame[column] > 0) & finite]


def variance_vs_n(group: pd.DataFrame, title: str, path: Path) -> Path:
    """Variance of the N-sample estimate vs N (log–log) with 95% intervals, one panel per θ; a thin solid line is
    the exact variance where it is known, a dotted one ∝ 1/N from the smallest N elsewhere."""
    thetas = sorted(group["theta"].unique())
    fig, axes = plt.subplots(1, len(thetas), figsize=(4.2 * len(thetas) + 1, 3.8), squeeze=False, sharey=True, layout="constrained")
    for ax, theta in zip(axes[0], thetas):
        at_theta = _positive(group[group["theta"] == theta], "grad_var")
        for estimator, rows in at_theta.groupby("estimator", sort=False):
            rows = rows.sort_values("n_samples")
            err = [rows["grad_var"] - rows["grad_var_ci_low"], rows["grad_var_ci_high"] - rows["grad_var"]]
            style = estimator_style(estimator, group[group["estimator"] == estimator])
            ax.errorbar(rows["n_samples"], rows["grad_var"], yerr=err, ms=4, capsize=3, **style)
            first = rows.iloc[0]
            ns = rows["n_samples"].to_numpy(dtype=float)
            if _has_exact(rows):
                ax.plot(ns, rows["exact_var"], ls="-", lw=1, alpha=0.6, color=style["color"])
            else:
                ax.plot(ns, first["grad_var"] * first["n_samples"] / ns, ls=":", lw=1, color=style["color"])
        ax.set(xscale="log", yscale="log", xlabel="N (samples per estimate)", title=f"θ = {theta:g}")
    axes[0][0].set_ylabel("variance of the estimate")
    handles, labels = axes[0][0].get_legend_handles_labels()
    handles.append(plt.Line2D([], [], ls=":", color="grey"))
    labels.append("∝ 1/N from N_min")
    if _has_exact(group):
        handles.append(plt.Line2D([], [], ls="-", lw=1, color="grey"))
        labels.append("exact variance")
    fig.legend(handles, labels, loc="outside right center", fontsize=8)
    fig.suptitle(f"{title}: variance vs N", fontsize=10)
    return save_figure(fig, path)


def _has_exact(rows: pd.DataFrame) -> bool:
    """Every row has an exact variance, so a line through them is the exact curve."""
    return "exact_var" in rows and len(rows) > 0 and bool(rows["exact_var"].notna().all() and (rows["exact_var"] > 0).all())


def per_sample_variance_vs(group: pd.DataFrame, x: str, title: str, path: Path) -> Path:
    """Per-sample variance against column ``x`` (θ, or a problem parameter such as k) at the largest N."""
    n_max = group["n_samples"].max()
    rows_all = _positive(group[group["n_samples"] == n_max], "per_sample_var")
    fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
    for estimator, rows in rows_all.groupby("estimator", sort=False):
        rows = rows.sort_values(x)
        err = [(rows["grad_var"] - rows["grad_var_ci_low"]) * n_max, (rows["grad_var_ci_high"] - rows["grad_var"]) * n_max]
        style = estimator_style(estimator, rows)
        ax.errorbar(rows[x], rows["per_sample_var"], yerr=err, ms=4, capsize=3, **style)
        if _has_exact(rows):
            ax.plot(rows[x], rows["exact_var"] * n_max, ls="-", lw=1, alpha=0.6, color=style["color"])
    if _has_exact(rows_all):
        ax.plot([], [], ls="-", lw=1, color="grey", label="exact (lines)")
    label = "θ" if x == "theta" else x
    ax.set(yscale="log", xlabel=label, ylabel=f"per-sample variance (N = {n_max})")
    ax.legend(fontsize=8)
    ax.set_title(f"{title}: variance vs {label}", fontsize=10)
    return save_figure(fig, path)


def variance_vs_dimension(group: pd.DataFrame, title: str, path: Path) -> Path:
    """Per-sample variance against the dimension D (log–log) at the largest N, with 95% intervals; dotted
    guides ∝ D and ∝ D² through the smallest D's score-function point show the growth rates to compare."""
    n_max = group["n_samples"].max()
    rows_all = _positive(group[group["n_samples"] == n_max], "per_sample_var")
    fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
    for estimator, rows in rows_all.groupby("estimator", sort=False):
        rows = rows.sort_values("dim")
        err = [(rows["grad_var"] - rows["grad_var_ci_low"]) * n_max, (rows["grad_var_ci_high"] - rows["grad_var"]) * n_max]
        ax.errorbar(rows["dim"], rows["per_sample_var"], yerr=err, ms=4, capsize=3, **estimator_style(estimator, rows))
    dims = np.sort(rows_all["dim"].unique()).astype(float)
    anchor = rows_all[rows_all["dim"] == dims[0]]["per_sample_var"].max() if len(dims) else np.nan
    for power, style in ((1, ":"), (2, "--")):
        ax.plot(dims, anchor * (dims / dims[0]) ** power, ls=style, lw=1, color="grey", label=f"∝ D{'²' if power == 2 else ''}")
    ax.set(xscale="log", yscale="log", xlabel="D (dimension)", ylabel=f"per-sample variance (N = {n_max})")
    ax.legend(fontsize=8)
    ax.set_title(f"{title}: variance vs dimension", fontsize=10)
    return save_figure(fig, path)


def _bias_panel(ax, rows: pd.DataFrame) -> None:
    rows = rows.reset_index(drop=True)
    for i, row in rows.iterrows():
        flagged = row["biased"] is True
        ax.errorbar(i, row["bias"], yerr=Z95 * row["bias_se"], marker="o", capsize=4,
                    color="tab:red" if flagged else colour(row.get("base", row["estimator"])))  # fmt: skip
        if flagged:
            ax.annotate(f"BIASED {row['bias']:.3g}", (i, row["bias"]), textcoords="offset points", xytext=(5, 5),
                        color="tab:red", fontsize=8, weight="bold")  # fmt: skip
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(rows)), rows["estimator"], rotation=35, ha="right", fontsize=8)


def bias(group: pd.DataFrame, title: str, path: Path) -> Path:
    """Bias at the largest N with its 95% interval, per θ; biased cells are red and labelled.

    When something is biased, a second row zooms in on the others, whose intervals would otherwise be
    squashed to a dot by the biased one's scale.
    """
    n_max = group["n_samples"].max()
    rows = group[group["n_samples"] == n_max].sort_values(["theta", "estimator"])
    thetas = sorted(rows["theta"].unique())
    zoom = bool(rows["biased"].eq(True).any())
    fig, axes = plt.subplots(1 + zoom, len(thetas), figsize=(3.6 * len(thetas) + 0.8, 3.8 * (1 + zoom)),
                             squeeze=False, layout="constrained")  # fmt: skip
    for column, theta in enumerate(thetas):
        at_theta = rows[rows["theta"] == theta]
        _bias_panel(axes[0][column], at_theta)
        axes[0][column].set_title(f"θ = {theta:g}", fontsize=9)
        if zoom:
            _bias_panel(axes[1][column], at_theta[~at_theta["biased"].eq(True)])
            axes[1][column].set_title(f"θ = {theta:g}, estimators not flagged biased", fontsize=9)
    axes[0][0].set_ylabel(f"bias = mean − exact (N = {n_max}), 95% CI")
    fig.suptitle(f"{title}: bias", fontsize=10)
    return save_figure(fig, path)


def relative_cost(group: pd.DataFrame, title: str, path: Path) -> Path:
    """Cost per sample relative to the RNG floor against N (log x), with 95% intervals; one line per estimator
    (θ values that share a cost measurement show it once; otherwise the median over θ)."""
    timed = group[group["relative_cost"].notna()]
    fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
    for estimator, rows in timed.groupby("estimator", sort=False):
        rows = rows.groupby("n_samples")[["relative_cost", "relative_cost_ci_low", "relative_cost_ci_high"]].median()
        err = [rows["relative_cost"] - rows["relative_cost_ci_low"], rows["relative_cost_ci_high"] - rows["relative_cost"]]
        ax.errorbar(rows.index, rows["relative_cost"], yerr=err, ms=4, capsize=3,
                    **estimator_style(estimator, group[group["estimator"] == estimator]))  # fmt: skip
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="N (samples per estimate)",
           ylabel="time per sample / torch.randn's (95% CI; 1 = drawing the samples)")  # fmt: skip
    ax.legend(fontsize=8)
    ax.set_title(f"{title}: cost per sample / RNG floor's", fontsize=10)
    return save_figure(fig, path)


def relaxation_bias_vs_temperature(rows: pd.DataFrame, title: str, path: Path, exact: dict | None = None) -> Path:
    """Bias of the relaxed estimators against temperature (log x), 95% intervals, one panel per θ.

    ``rows`` has columns ``base`` (estimator name), ``temperature``, ``theta``, ``bias``, ``bias_se``, ``n_samples``;
    ``exact`` maps (base, θ) to (temperatures, exact biases) drawn as lines where the exact value is known.
    """
    thetas = sorted(rows["theta"].unique())
    fig, axes = plt.subplots(1, len(thetas), figsize=(4.6 * len(thetas) + 1.5, 3.8), squeeze=False, sharey=True,
                             layout="constrained")  # fmt: skip
    for ax, theta in zip(axes[0], thetas):
        at_theta = rows[rows["theta"] == theta]
        for base, group in at_theta.groupby("base", sort=True):
            group = group.sort_values("temperature")
            ax.errorbar(group["temperature"], group["bias"], yerr=Z95 * group["bias_se"], marker="o", ms=4, capsize=3,
                        ls="none", color=colour(base), label=f"{base} (measured, N = {group['n_samples'].iloc[0]})")  # fmt: skip
            if exact and (base, theta) in exact:
                taus, biases = exact[(base, theta)]
                ax.plot(taus, biases, ls="--", lw=1, color=colour(base), label=f"{base} (exact)")
        ax.axhline(0, color="black", lw=0.8)
        ax.set(xscale="log", xlabel="temperature τ", title=f"θ = {theta:g}")
    axes[0][0].set_ylabel("bias = mean − exact gradient, 95% CI")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8)
    fig.suptitle(f"{title}: bias of the relaxations vs temperature", fontsize=10)
    return save_figure(fig, path)


_LINESTYLES = ("-", "--", ":", "-.")


def variance_reduction_factor(rows: pd.DataFrame, title: str, path: Path) -> Path:
    """Variance of each scheme over plain Monte Carlo's against N (log–log, 95% intervals), one panel per θ.

    ``rows`` are the output of ``report.variance_reduction_factors``: colour = scheme, line style = base estimator.
    """
    thetas = sorted(rows["theta"].unique())
    schemes = sorted(rows["scheme"].unique())
    bases = sorted(rows["base"].unique())
    colours = dict(zip(schemes, sns.color_palette("colorblind", len(schemes))))
    fig, axes = plt.subplots(1, len(thetas), figsize=(4.2 * len(thetas) + 1.5, 3.8), squeeze=False, sharey=True, layout="constrained")
    for ax, theta in zip(axes[0], thetas):
        at_theta = _positive(rows[rows["theta"] == theta], "ratio")
        for (base, scheme), line in at_theta.groupby(["base", "scheme"], sort=True):
            line = line.sort_values("n_samples")
            err = [line["ratio"] - line["ratio_low"], line["ratio_high"] - line["ratio"]]
            ax.errorbar(line["n_samples"], line["ratio"], yerr=err, capsize=3, ms=4, marker="o", color=colours[scheme],
                        ls=_LINESTYLES[bases.index(base) % len(_LINESTYLES)], label=f"{base}+{scheme}")  # fmt: skip
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set(xscale="log", yscale="log", xlabel="N (samples per estimate)", title=f"θ = {theta:g}")
    axes[0][0].set_ylabel("variance / plain Monte Carlo variance")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8)
    fig.suptitle(f"{title}: variance reduction factor (below 1 helps)", fontsize=10)
    return save_figure(fig, path)


def variance_along_training(group: pd.DataFrame, title: str, path: Path) -> Path:
    """Workloads: mean per-coordinate variance (left) and work-normalised variance (right) against the training
    step of the checkpoint, one line per estimator at the largest N, with 95% intervals on the variance."""
    n_max = group["n_samples"].max()
    rows_all = _positive(group[group["n_samples"] == n_max], "grad_var")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for estimator, rows in rows_all.groupby("estimator", sort=False):
        rows = rows.sort_values("theta")
        err = [rows["grad_var"] - rows["grad_var_ci_low"], rows["grad_var_ci_high"] - rows["grad_var"]]
        style = estimator_style(estimator, rows)
        axes[0].errorbar(rows["theta"], rows["grad_var"], yerr=err, ms=4, capsize=3, **style)
        timed = rows[rows["work_normalized_var"] > 0]
        err = [timed["work_normalized_var"] - timed["work_normalized_var_ci_low"],
               timed["work_normalized_var_ci_high"] - timed["work_normalized_var"]]  # fmt: skip
        axes[1].errorbar(timed["theta"], timed["work_normalized_var"], yerr=err, ms=4, capsize=3, **style)
    axes[0].set(yscale="log", xlabel="training step (checkpoint)", ylabel=f"mean per-coordinate variance (N = {n_max})")
    axes[1].set(yscale="log", xlabel="training step (checkpoint)", ylabel="work-normalised variance (RNG-floor units)")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{title}: variance along training", fontsize=10)
    return save_figure(fig, path)


def exact_variance_curves(frame: pd.DataFrame, path: Path) -> Path:
    """Exact per-sample variance against the swept quantity (log y): a row of panels per wrt, a column per problem,
    a line per estimator (Mohamed et al. 2020, Figure 2, for the default request of `varbench exact`)."""
    problems, wrts = list(dict.fromkeys(frame["problem"])), list(dict.fromkeys(frame["wrt"]))
    fig, axes = plt.subplots(len(wrts), len(problems), figsize=(4.2 * len(problems) + 1.5, 3.2 * len(wrts)),
                             squeeze=False, layout="constrained")  # fmt: skip
    for i, wrt in enumerate(wrts):
        for j, problem in enumerate(problems):
            ax = axes[i][j]
            panel = frame[(frame["wrt"] == wrt) & (frame["problem"] == problem)]
            for index, (estimator, rows) in enumerate(panel.groupby("estimator", sort=False)):
                positive = rows["per_sample_var"].where(rows["per_sample_var"] > 0)  # gaps where there is no value
                ax.plot(rows["x"], positive, color=colour(estimator), lw=1.5, ls=("-", "--", "-.", ":")[index % 4],
                        label=estimator)  # fmt: skip
            ax.set(yscale="log", title=f"{problem} wrt {wrt}", xlabel=frame["over"].iloc[0])
            if j == 0:
                ax.set_ylabel(f"exact per-sample variance (N = {frame['n_samples'].iloc[0]})")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8)
    return save_figure(fig, path)
