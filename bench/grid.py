"""Sweeps are declared, not scripted: a Sweep is a grid of values per axis; its cells are the product.

A Cell is one (problem, params, wrt, θ, estimator, N, device, dtype) measurement. Its seed is a hash of
the base seed and the cell, so any cell re-run alone gives the same numbers.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field

import torch

from estimators import ESTIMATORS, get_estimator, make_problem
from estimators.problems import Problem

from .environment import resolve_devices

DTYPES = {"float32": torch.float32, "float64": torch.float64}
MIN_REPLICATES = 10


class GridError(ValueError):
    """An invalid sweep axis value; the message names it and what is allowed."""


@dataclass(frozen=True)
class Cell:
    problem: str
    params: tuple[tuple[str, float], ...]
    wrt: str
    theta: float
    estimator: str
    n_samples: int
    device: str
    dtype: str = "float32"
    replicates: int | None = None  # None: chosen from a pilot run's kurtosis

    @property
    def params_json(self) -> str:
        return json.dumps(dict(self.params), sort_keys=True)

    @property
    def identity(self) -> str:
        return "|".join(
            [self.problem, self.params_json, self.wrt, repr(float(self.theta)), self.estimator,
             str(self.n_samples), self.device, self.dtype]
        )  # fmt: skip

    @property
    def cell_id(self) -> str:
        return hashlib.sha256(self.identity.encode()).hexdigest()[:16]

    def seed(self, base_seed: int) -> int:
        """Per-cell torch seed: a hash of (base seed, cell identity); 63 bits so it is a valid torch seed."""
        digest = hashlib.sha256(f"{base_seed}|{self.identity}".encode()).digest()
        return int.from_bytes(digest[:8], "big") >> 1

    def build_problem(self) -> Problem:
        return make_problem(self.problem, self.wrt, dict(self.params))


@dataclass(frozen=True)
class Sweep:
    """A grid over one problem family: every combination of the listed values is one cell."""

    problem: str
    thetas: tuple[float, ...]
    estimators: tuple[str, ...] = tuple(ESTIMATORS)
    n_samples: tuple[int, ...] = (1, 10, 100, 1000)
    devices: tuple[str, ...] = ("cpu",)
    wrt: str | None = None
    # Each parameter may list several values; the sweep takes their product.
    params: dict[str, tuple[float, ...]] = field(default_factory=dict)
    dtype: str = "float32"
    replicates: int | None = None

    def cells(self) -> list[Cell]:
        """Validate every axis and expand the grid; raises before anything runs."""
        if self.dtype not in DTYPES:
            raise GridError(f"unknown dtype {self.dtype!r}; allowed: {', '.join(DTYPES)}")
        if self.replicates is not None and self.replicates < MIN_REPLICATES:
            raise GridError(f"replicates must be >= {MIN_REPLICATES} (or auto), got {self.replicates}")
        for n in self.n_samples:
            if int(n) != n or n < 1:
                raise GridError(f"N (samples per estimate) must be an integer >= 1, got {n}")
        for name in self.estimators:
            get_estimator(name)
        devices = resolve_devices(",".join(self.devices))
        keys = sorted(self.params)
        cells = []
        for values in itertools.product(*(self.params[k] for k in keys)):
            params = dict(zip(keys, values))
            problem = make_problem(self.problem, self.wrt, params)
            for theta in self.thetas:
                problem.check_theta(theta)
            resolved = tuple(sorted(problem.params.items()))
            for theta, estimator, n, device in itertools.product(
                self.thetas, self.estimators, self.n_samples, devices
            ):
                cells.append(
                    Cell(problem.name, resolved, problem.wrt, float(theta), estimator, int(n), device,
                         self.dtype, self.replicates)
                )  # fmt: skip
        return cells


def expand(sweeps: list[Sweep]) -> list[Cell]:
    """All cells of several sweeps, duplicates removed, order kept."""
    return list(dict.fromkeys(cell for sweep in sweeps for cell in sweep.cells()))


def _gaussian_sweeps(**common) -> list[Sweep]:
    """Mohamed et al. (2020) Fig. 2-style cells: μ = σ = 1 across k, plus a θ sweep at k = 1."""
    k_values = {"gaussian_quadratic": (-3.0, -1.0, 1.0, 3.0), "gaussian_exp": (0.5, 1.0, 2.0),
                "gaussian_cos": (0.5, 1.0, 2.0, 3.0)}  # fmt: skip
    sweeps = []
    for name, ks in k_values.items():
        sweeps.append(Sweep(name, thetas=(1.0,), wrt="mu", params={"k": ks, "sigma": (1.0,)}, **common))
        sweeps.append(Sweep(name, thetas=(1.0,), wrt="sigma", params={"k": ks, "mu": (1.0,)}, **common))
        sweeps.append(Sweep(name, thetas=(-1.0, 0.0, 2.0), wrt="mu", params={"k": (1.0,)}, **common))
        sweeps.append(Sweep(name, thetas=(0.5, 2.0), wrt="sigma", params={"k": (1.0,)}, **common))
    return sweeps


def preset(name: str, devices: tuple[str, ...] = ("cpu",)) -> list[Sweep]:
    """Named sweeps: ``default`` (make bench, <= 10 min on 2 cores) and ``quick`` (make quick, <= 1 min)."""
    if name == "default":
        common = {"devices": devices, "n_samples": (1, 10, 100, 1000)}
        return [
            Sweep("seed_dependent", thetas=(0.0, 1.0, 2.0, 3.0), **common),
            Sweep("seed_fixed", thetas=(1.0, 3.0), **common),
            *_gaussian_sweeps(**common),
        ]
    if name == "quick":
        common = {"devices": devices, "n_samples": (1, 10, 100)}
        return [
            Sweep("seed_dependent", thetas=(1.0, 3.0), **common),
            Sweep("seed_fixed", thetas=(3.0,), **common),
            Sweep("gaussian_cos", thetas=(1.0,), wrt="mu", params={"k": (1.0,)}, **common),
            Sweep("gaussian_quadratic", thetas=(1.0,), wrt="sigma", params={"k": (1.0,)}, **common),
        ]
    raise GridError(f"unknown preset {name!r}; allowed: {', '.join(PRESETS)}")


PRESETS = ("default", "quick")
