"""Policies: who answers each input (which System 1 exit after how many steps, or System 2).

Every family is a :class:`Policy` in the one :data:`POLICIES` registry, which fitting, evaluation,
checkpoints, calibration and serving iterate (in each family's ``rank`` order). A new family is one
module that subclasses :class:`Policy` and decorates it with :func:`register_policy`. Importing this
package registers every module of it (a file dropped into ``fastslow/policies/`` needs no other
edit) and every installed plugin that declares an entry point in the group ``fastslow.policies``
(``[project.entry-points."fastslow.policies"] mine = "my_package.my_policy"``).
"""

import importlib
import pkgutil
import warnings
from importlib.metadata import entry_points

from fastslow.policies.base import (
    POLICIES,
    Decision,
    FitContext,
    Policy,
    Routing,
    SystemOutputs,
    register_policy,
)
from fastslow.policies.confidence import CONFIDENCE_MEASURES, ConfidencePolicy, confidence_routing, confidence_score
from fastslow.policies.dynamic import CascadeExits, Seenn1
from fastslow.policies.exit_router import ExitRouterPolicy
from fastslow.policies.ponder import Ponder
from fastslow.policies.references import (
    AETOracle,
    Oracle,
    RandomEscalation,
    System1Alone,
    System2Alone,
    oracle_routing,
    random_routing,
)
from fastslow.policies.router import Router, RouterPolicy, router_features, router_loss, share_for_energy_budget, train_router
from fastslow.policies.seenn2 import Seenn2
from fastslow.policies.step_router import StepRouterPolicy

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
for _plugin in entry_points(group="fastslow.policies"):
    try:
        _plugin.load()
    except Exception as err:  # a broken plugin must not break fastslow: say so and go on without it
        warnings.warn(
            f"policy plugin {_plugin.name!r} ({_plugin.value}) failed to load and is not registered: {err}", stacklevel=1
        )

__all__ = [
    "AETOracle",
    "CONFIDENCE_MEASURES",
    "CascadeExits",
    "ConfidencePolicy",
    "Decision",
    "ExitRouterPolicy",
    "FitContext",
    "Oracle",
    "POLICIES",
    "Policy",
    "Ponder",
    "RandomEscalation",
    "Router",
    "RouterPolicy",
    "Routing",
    "Seenn1",
    "Seenn2",
    "StepRouterPolicy",
    "System1Alone",
    "System2Alone",
    "SystemOutputs",
    "confidence_routing",
    "confidence_score",
    "oracle_routing",
    "random_routing",
    "register_policy",
    "router_features",
    "router_loss",
    "share_for_energy_budget",
    "train_router",
]
