"""Energy model: hardware profiles and per-input operation/energy accounting."""

from fastslow.energy.accounting import ENERGY_TERMS, OpCounts, count_macs, memory_bytes, s1_op_counts
from fastslow.energy.profile import EnergyProfile, available_profiles, load_profile

__all__ = [
    "ENERGY_TERMS",
    "EnergyProfile",
    "OpCounts",
    "available_profiles",
    "count_macs",
    "load_profile",
    "memory_bytes",
    "s1_op_counts",
]
