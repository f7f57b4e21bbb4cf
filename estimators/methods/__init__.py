"""The estimators varbench ships, registered in ``ESTIMATORS`` with tags, and ``get_estimator`` by name.

Tags: ``core`` (naive, score function, RLOO, pathwise, measure-valued), ``discrete`` (ARM, DisARM, the
relaxations, REBAR, RELAX, and since 2020 ReinMax, Gumbel-Rao, IndeCateR, double control variates, ARMS), ``policy``
(the group baselines GRPO and Dr. GRPO), ``episodic`` (policy gradients on episodes of an environment: REINFORCE,
reward-to-go, constant and value baselines, GAE), ``reference`` (the finite difference), ``peer`` (Pyro's and
Storchastic's, when those libraries import; ``PEER_STATUS`` says why not).
A user's estimator is ``module:attribute`` or an installed plug-in (entry-point group ``varbench.estimators``),
and goes through the same registry.
"""

from __future__ import annotations

from ..core.estimator import Estimator, EstimatorError, adopt_estimator
from ..core.registry import Registry
from .arms import ARMS
from .basic import BASIC
from .discrete import DISCRETE
from .double_cv import DOUBLE_CV
from .episodic import EPISODIC
from .group_baselines import GROUP_BASELINES
from .gumbel_rao import GUMBEL_RAO
from .indecater import INDECATER
from .peers import PEER_ESTIMATORS, PEER_STATUS
from .reference import REFERENCE_ESTIMATORS
from .reinmax import REINMAX

ESTIMATORS: Registry[Estimator] = Registry("estimator", EstimatorError, entry_point_group="varbench.estimators",
                                           adopt=adopt_estimator)  # fmt: skip

for _tag, _estimators in (("core", BASIC), ("discrete", (*DISCRETE, *REINMAX, *GUMBEL_RAO, INDECATER, DOUBLE_CV, ARMS)),
                          ("policy", GROUP_BASELINES), ("episodic", EPISODIC), ("reference", tuple(REFERENCE_ESTIMATORS.values())),
                          ("peer", tuple(PEER_ESTIMATORS.values()))):  # fmt: skip
    for _estimator in _estimators:
        ESTIMATORS.register(_estimator.name, _estimator, _tag)


def get_estimator(name: str) -> Estimator:
    """The estimator ``name``: shipped, a plug-in's, or ``module:attribute``; EstimatorError naming what is allowed."""
    return ESTIMATORS.get(name)


__all__ = ["ESTIMATORS", "PEER_STATUS", "get_estimator"]
