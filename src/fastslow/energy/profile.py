"""Hardware energy profiles: per-operation energies as data (TOML files).

Shipped profiles live in ``fastslow/energy/profiles/``; users pass a path to their own.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fastslow.errors import ProfileError, first_validation_problem


class EnergyProfile(BaseModel):
    """Energy per operation in picojoules, bit widths for memory footprint, and sources."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    E_MAC_pJ: float = Field(ge=0, description="one multiply-accumulate (ANN layers, dense S1 layers, policy)")
    E_AC_pJ: float = Field(ge=0, description="one accumulate: a spike reaching one synapse")
    E_NEURON_pJ: float = Field(ge=0, description="one neuron state update")
    weight_bits: int = Field(gt=0)
    state_bits: int = Field(gt=0)
    E_TX_BYTE_pJ: float | None = Field(default=None, ge=0, description="the link: one byte sent by the System 1 side")
    E_RX_BYTE_pJ: float | None = Field(default=None, ge=0, description="the link: one byte received by the System 1 side")
    sources: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _link_whole(self) -> "EnergyProfile":
        if (self.E_TX_BYTE_pJ is None) != (self.E_RX_BYTE_pJ is None):
            raise ValueError("a link needs both E_TX_BYTE_pJ and E_RX_BYTE_pJ (or neither)")
        return self

    @property
    def has_link(self) -> bool:
        """Whether the profile prices the link to System 2 (then escalations pay the ``tx`` term)."""
        return self.E_TX_BYTE_pJ is not None

    def summary(self) -> dict:
        return self.model_dump(exclude_none=True)  # a profile without a link shows no link fields


def available_profiles() -> list[str]:
    folder = resources.files("fastslow.energy") / "profiles"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_profile(name_or_path: str | Path = "cmos45nm") -> EnergyProfile:
    """A shipped profile by name (e.g. ``cmos45nm``) or a user's TOML/JSON file by path."""
    text_source = str(name_or_path)
    path = Path(text_source)
    if text_source in available_profiles():
        raw = (resources.files("fastslow.energy") / "profiles" / f"{text_source}.toml").read_text()
        origin = text_source
    elif path.suffix in (".toml", ".json") or path.exists():
        if not path.is_file():
            raise ProfileError(
                f"energy profile file {path} does not exist: pass a shipped profile ({', '.join(available_profiles())}) or a path to a TOML file"
            )
        raw = path.read_text(errors="replace")
        origin = str(path)
    else:
        raise ProfileError(
            f"unknown energy profile {text_source!r}: use one of {', '.join(available_profiles())} or a path to a TOML file"
        )
    try:
        if origin.endswith(".json"):
            import json

            data = json.loads(raw)
        else:
            data = tomllib.loads(raw)
        return EnergyProfile(**data)
    except ValidationError as err:
        where, message = first_validation_problem(err)
        raise ProfileError(
            f"energy profile {origin} is malformed ({where}: {message}): it needs name, E_MAC_pJ, E_AC_pJ, E_NEURON_pJ, "
            f"weight_bits, state_bits"
        ) from None
    except (tomllib.TOMLDecodeError, ValueError, TypeError) as err:
        first = str(err).replace("\n", " ")
        raise ProfileError(
            f"energy profile {origin} is malformed ({first[:200]}): it needs name, E_MAC_pJ, E_AC_pJ, E_NEURON_pJ, weight_bits, state_bits"
        ) from None
