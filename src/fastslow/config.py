"""The configuration of a fit: validated with pydantic, read from TOML or JSON."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from fastslow.errors import ConfigError, first_validation_problem
from fastslow.spiking import LIFParams
from fastslow.systems.deep import DEEP_ARCHS, DEFAULT_STAGES

SEED_MAX = 2**32 - 1  # numpy's and torch's seeds are 32-bit
DEFAULT_THRESHOLDS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)


def check_seed(seed: int) -> int:
    """``seed`` if numpy and torch can both take it; else a ConfigError naming the range."""
    if not 0 <= seed <= SEED_MAX:
        raise ConfigError(f"seed {seed} is outside 0..{SEED_MAX}: pass a seed in that range")
    return seed


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LIFConfig(_Strict):
    beta: float = Field(0.9, gt=0, le=1, description="per-step membrane decay")
    tau: float | None = Field(None, gt=0, description="membrane time constant in steps; overrides beta (beta = exp(-1/tau))")
    threshold: float = Field(1.0, gt=0)
    reset: Literal["subtract", "zero"] = "subtract"
    surrogate: Literal["fast_sigmoid", "arctan"] = "fast_sigmoid"
    slope: float = Field(25.0, gt=0)

    def params(self) -> LIFParams:
        beta = math.exp(-1.0 / self.tau) if self.tau is not None else self.beta
        return LIFParams(beta=beta, threshold=self.threshold, reset=self.reset, surrogate=self.surrogate, slope=self.slope)


class System1Config(_Strict):
    arch: Literal["auto", "mlp", "conv", "vgg", "resnet"] = "auto"
    # Two hidden layers with an exit head on the first, so every fit shows the cascade family (exits@…) too.
    hidden: list[PositiveInt] = Field(default_factory=lambda: [128, 64], min_length=0)
    conv_channels: list[PositiveInt] = Field(default_factory=lambda: [8, 16])
    stage_channels: list[PositiveInt] | None = Field(
        None, description="vgg/resnet: channels per stage (default VGG-16's or ResNet-19's)"
    )
    stage_blocks: list[PositiveInt] | None = Field(
        None, description="vgg/resnet: conv units (vgg) or basic blocks (resnet) per stage; as many as stage_channels"
    )
    timesteps: int = Field(8, ge=1, le=256)
    # "events": event data (tonic:...) fed frame by frame; chosen by itself for event data when not set.
    encoding: Literal["direct", "rate", "latency", "events"] = "rate"
    readout: Literal["membrane", "spike_count"] = "membrane"
    loss: Literal["tet", "cumulative", "final"] = "tet"
    exit_heads: list[NonNegativeInt] | None = Field(
        None,
        description="hidden-layer indices with an early exit (vgg/resnet: stage indices); default: one on the first "
        "layer where there are two or more (vgg/resnet: one after every stage)",
    )
    checkpoint_steps: int = Field(0, ge=0, description="0: BPTT keeps every step; k: recompute k-step segments (less memory)")
    backend: Literal["auto", "torch", "numba", "triton"] = Field(
        "auto",
        description="kernels that run the LIF layers (fastslow.spiking.backends): auto picks per call; a named one runs or raises",
    )
    lif: LIFConfig = Field(default_factory=LIFConfig)
    epochs: int = Field(30, ge=1)
    lr: float = Field(3e-3, gt=0)
    batch_size: int = Field(64, ge=1)

    def resolved_exit_heads(self, input_shape: tuple[int, ...]) -> list[int]:
        """``exit_heads``, or by default an exit on the first layer when System 1 has two or more."""
        if self.exit_heads is not None:
            return list(self.exit_heads)
        arch = self.resolved_arch(input_shape)
        if arch in DEEP_ARCHS:
            stages = len(self.stage_channels or DEFAULT_STAGES[arch][0])
            return list(range(stages - 1))
        layers = len(self.hidden) + (len(self.conv_channels) if self.resolved_arch(input_shape) == "conv" else 0)
        return [0] if layers > 1 else []

    def resolved_arch(self, input_shape: tuple[int, ...]) -> str:
        """``auto``: resnet (ResNet-19-style) for 3-channel 32×32 images, conv for other colour or large
        images (≥ 3 channels or ≥ 32×32), else an MLP."""
        if self.arch != "auto":
            return self.arch
        if tuple(input_shape) == (3, 32, 32):
            return "resnet"
        if len(input_shape) == 3 and (input_shape[0] >= 3 or min(input_shape[1:]) >= 32):
            return "conv"
        return "mlp"


class System2Config(_Strict):
    arch: Literal["auto", "lenet5", "cnn", "mlp", "resnet18"] = "auto"
    hidden: int = Field(128, ge=1)
    width: int = Field(64, ge=1, description="resnet18: the first stage's channels (64 as published)")
    epochs: int = Field(60, ge=1)
    lr: float = Field(1e-2, gt=0)
    batch_size: int = Field(64, ge=1)


class ConfidenceConfig(_Strict):
    """Confidence thresholds, shared by ``confidence@``, ``seenn1@`` and ``exits@``."""

    measure: Literal["max_softmax", "margin", "neg_entropy"] = "max_softmax"
    thresholds: list[float] = Field(default_factory=lambda: list(DEFAULT_THRESHOLDS), min_length=1)
    temperature: float = Field(1.0, gt=0, description="SEENN-I softmax temperature")

    @model_validator(mode="after")
    def _thresholds_in_range(self) -> "ConfidenceConfig":
        bad = [t for t in self.thresholds if not 0.0 <= t <= 1.0]
        if bad:
            raise ValueError(f"thresholds must lie in [0, 1], got {bad}")
        return self


class Seenn2Config(_Strict):
    betas: list[float] = Field(default_factory=lambda: [0.01, 0.03, 0.1, 0.3])
    hidden: int = Field(32, ge=1)
    pretrain_epochs: int = Field(0, ge=0, description="epochs on oracle labels before REINFORCE (0: none; see docs/policies.md)")
    rl_epochs: int = Field(300, ge=0)
    lr: float = Field(5e-3, gt=0)
    holdout: float = Field(
        0.25, ge=0, lt=1, description="share of the router split held out to pick the epoch kept (0: keep the last)"
    )


class PonderConfig(_Strict):
    lambda_ps: list[float] = Field(default_factory=lambda: [0.2, 0.35, 0.5, 0.8])
    kl_weight: float = Field(0.05, ge=0)
    epochs: int = Field(300, ge=1)
    lr: float = Field(1e-2, gt=0)

    @model_validator(mode="after")
    def _lambda_in_range(self) -> "PonderConfig":
        if any(not 0.0 < v <= 1.0 for v in self.lambda_ps):
            raise ValueError("lambda_ps must lie in (0, 1]")
        return self


class RouterConfig(_Strict):
    # What the learned policies train on: "split" holds val_fraction of the training split out and
    # records both systems there; "crossfit" records every training input out of fold (k models of
    # each system, each trained on the other folds), then trains the final systems on all of it.
    data: Literal["split", "crossfit"] = Field(
        "split",
        description="the learned policies' records: a held-out router split, or out-of-fold outputs on every training input",
    )
    folds: int = Field(5, ge=2, le=50, description="crossfit: folds k (each system trained k more times, on (k−1)/k of the data)")
    shares: list[float] = Field(default_factory=lambda: [0.05, 0.1, 0.2, 0.3, 0.4, 0.5])
    energy_budgets_uj: list[float] = Field(default_factory=list, description="budgets turned into shares on the router split")
    hidden: int = Field(32, ge=1)
    epochs: int = Field(300, ge=1)
    lr: float = Field(1e-2, gt=0)
    kl_weight: float = Field(10.0, ge=0)
    energy_weight: float = Field(0.0, ge=0)
    exit_shares: list[float] = Field(
        default_factory=lambda: [0.05, 0.1, 0.2, 0.3], description="whole-exit-space router shares of System 2"
    )
    exit_energy_budgets_uj: list[float] = Field(
        default_factory=list, description="whole-exit-space routers for these mean µJ per input"
    )
    exit_energy_weight: float = Field(0.1, ge=0, description="λ of the whole-exit-space router")
    exit_epochs: int = Field(400, ge=1)
    step_shares: list[float] = Field(
        default_factory=lambda: [0.01, 0.02, 0.05, 0.1], description="sequential router shares of System 2"
    )
    step_energy_budgets_uj: list[float] = Field(
        default_factory=list, description="sequential routers for these mean µJ per input"
    )
    step_energy_weight: float = Field(0.1, ge=0, description="λ of the sequential router")
    step_kl_weight: float = Field(
        0.0, ge=0, description="β of the sequential router's share term (0: the share is set by calibration alone)"
    )
    step_epochs: int = Field(400, ge=1)

    @model_validator(mode="after")
    def _shares_in_range(self) -> "RouterConfig":
        if any(not 0.0 <= s <= 1.0 for s in self.shares + self.exit_shares + self.step_shares):
            raise ValueError("router shares must lie in [0, 1]")
        if any(not b > 0 for b in self.energy_budgets_uj + self.exit_energy_budgets_uj + self.step_energy_budgets_uj):
            raise ValueError("router energy budgets must be positive (µJ per input)")
        return self


class RuntimeConfig(_Strict):
    threads: Literal["auto"] | PositiveInt = Field(
        "auto",
        description="CPU threads for torch, numba and BLAS: auto (OMP_NUM_THREADS if set, else one) or a count "
        "(fastslow.runtime; a fit repeats bit for bit at a given count, another count rounds differently); "
        "with several processes, the fit's total, shared",
    )
    processes: PositiveInt = Field(
        1,
        description="train System 1 and 2 data-parallel over this many processes (fastslow.distributed): "
        "gloo on CPUs, NCCL on GPUs (one per GPU); routers, evaluation and writing run on rank 0",
    )

    @field_validator("threads", mode="before")
    @classmethod
    def _auto_or_count(cls, value):
        # One message for both wrong kinds (pydantic's own names each branch of the union).
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ValueError(f'threads must be "auto" or a whole number ≥ 1, got {value!r}')


class FitConfig(_Strict):
    data: str = "digits"
    image_size: int | None = Field(
        None, ge=1, le=4096, description="resize folder images to S×S; downscale an event sensor to S×S (default: as stored)"
    )
    skip_bad_images: bool = Field(False, description="skip (and count) unreadable images in a folder instead of refusing")
    seed: int = Field(0, ge=0, le=SEED_MAX)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    val_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description='share of the training split held out to train the router (unused with [router] data = "crossfit")',
    )
    profile: str = "cmos45nm"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    eval_batch_size: int = Field(256, ge=1)
    policies: list[str] | None = Field(
        None, description="policy kinds to fit (default: every registered family; system1 and system2 always)"
    )
    system1: System1Config = Field(default_factory=System1Config)
    system2: System2Config = Field(default_factory=System2Config)
    confidence: ConfidenceConfig = Field(default_factory=ConfidenceConfig)
    router: RouterConfig = Field(default_factory=RouterConfig)
    seenn2: Seenn2Config = Field(default_factory=Seenn2Config)
    ponder: PonderConfig = Field(default_factory=PonderConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)


def load_config(path: str | Path | None = None, **overrides) -> FitConfig:
    """A :class:`FitConfig` from a TOML/JSON file (or defaults), with the command line's overrides
    applied (``epochs`` sets both systems' epochs; the others the top-level key of their name). A bad
    value names the option it came from: ``--epochs 0``, or the config key and file."""
    data: dict = {}
    if path is not None:
        file = Path(path)
        if file.is_dir():
            raise ConfigError(f"config file {file} is a folder: pass a TOML or JSON file")
        if not file.is_file():
            raise ConfigError(f"config file {file} does not exist: pass a TOML or JSON file")
        try:
            text = file.read_text()
            data = json.loads(text) if file.suffix == ".json" else tomllib.loads(text)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
            raise ConfigError(
                f"config file {file} cannot be parsed ({str(err).splitlines()[0]}): fix its TOML/JSON syntax"
            ) from None
        if not isinstance(data, dict):
            raise ConfigError(
                f'config file {file} holds a {type(data).__name__}, not a table of options: write e.g. {{"seed": 1}}'
            )
    flags: dict[str, tuple[str, object, str]] = {}  # config key (dotted) -> the option that set it, its value, what it sets
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "epochs":
            for system in ("system1", "system2"):
                table = data.setdefault(system, {})
                if isinstance(table, dict):  # else the file's own error is the one to report
                    table["epochs"] = value
                    flags[f"{system}.epochs"] = ("--epochs", value, "config options system1.epochs and system2.epochs")
        elif key in ("threads", "processes"):
            data.setdefault("runtime", {})[key] = value
            flags[f"runtime.{key}"] = (f"--{key}", value, f"config option runtime.{key}")
        else:
            data[key] = value
            flags[key] = (f"--{key}", value, f"config option {key}")
    try:
        return FitConfig(**data)
    except ValidationError as err:
        where, message = first_validation_problem(err)
        if where in flags:
            flag, value, sets = flags[where]
            raise ConfigError(f"option {flag} {value}: {message} (it sets {sets}; see `fastslow fit --help`)") from None
        source = "" if path is None else f" in {path}"
        raise ConfigError(
            f"config option {where}{source}: {message} (see `fastslow fit --help` and the README's config section)"
        ) from None
