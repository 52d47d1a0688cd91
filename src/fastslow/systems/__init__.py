"""The two systems: a spiking System 1 and a conventional System 2, and their training."""

from fastslow.systems.cuda_graphs import GraphedSystem1
from fastslow.systems.records import S1Record
from fastslow.systems.system1 import System1, System1Spec
from fastslow.systems.system2 import System2Spec, build_system2

__all__ = ["GraphedSystem1", "S1Record", "System1", "System1Spec", "System2Spec", "build_system2"]
