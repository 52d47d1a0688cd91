"""Energy model: hardware profiles and per-input operation/energy accounting."""

from fastslow.energy.accounting import (
    ENERGY_TERMS,
    Charge,
    OpCounts,
    charge,
    count_macs,
    escalation_bytes,
    mac_energy_uj,
    memory_bytes,
    s1_op_counts,
)
from fastslow.energy.profile import EnergyProfile, available_profiles, load_profile

__all__ = [
    "ENERGY_TERMS",
    "Charge",
    "EnergyProfile",
    "OpCounts",
    "available_profiles",
    "charge",
    "count_macs",
    "escalation_bytes",
    "load_profile",
    "mac_energy_uj",
    "memory_bytes",
    "s1_op_counts",
]
