"""The report folder: results.json, report.md, pareto.png, and the console table."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from fastslow import atomic  # noqa: E402
from fastslow.evaluation.evaluate import StrategyResult, is_reference, system1_only_families  # noqa: E402
from fastslow.pareto import pareto_front  # noqa: E402
from fastslow.progress import output_console  # noqa: E402

ENERGY_NOTE = (
    "Energy per input in µJ counts arithmetic only (synaptic accumulates from the real spikes, "
    "MACs, neuron updates) under the named hardware profile; memory traffic is not counted."
)
_REFERENCE_STYLE = {
    "system1": ("s", "tab:blue"),
    "system2": ("*", "tab:red"),
    "oracle": ("D", "tab:green"),
    "aet_oracle": ("P", "tab:olive"),
}


def summary_rows(results: list[StrategyResult]) -> list[tuple[str, StrategyResult]]:
    """The console's short list: references, then per family its cheapest point that keeps accuracy
    (within 0.5 pt of System 2; within 0.2 pt of full-T System 1 for System-1-only families) and
    its most accurate point."""
    by_name = {r.name: r for r in results}
    rows = [("reference", r) for r in results if is_reference(r.family)]
    families = [f for f in dict.fromkeys(r.family for r in results) if not is_reference(f)]
    system1_only = system1_only_families(results)
    for family in families:
        points = [r for r in results if r.family == family]
        s1_only = family in system1_only
        floor = by_name["system1"].accuracy - 0.002 if s1_only else by_name["system2"].accuracy - 0.005
        keeping = [r for r in points if r.accuracy >= floor]
        if keeping:
            rows.append((f"cheapest ≥ {'S1−0.2' if s1_only else 'S2−0.5'}pt", min(keeping, key=lambda r: r.energy_uj)))
        best = max(points, key=lambda r: (r.accuracy, -r.energy_uj))
        if not keeping or best is not rows[-1][1]:
            rows.append(("most accurate", best))
    return rows


def results_table(rows: list[tuple[str, StrategyResult]], title: str) -> Table:
    table = Table(title=title, caption=ENERGY_NOTE + " Every point: report.md / results.json.", caption_justify="left")
    table.add_column("strategy", no_wrap=True)
    table.add_column("pick", no_wrap=True)
    for column in ("acc %", "esc %", "T run", "µJ/in", "×S2"):
        table.add_column(column, justify="right", no_wrap=True)
    for label, r in rows:
        table.add_row(
            r.name,
            label,
            f"{100 * r.accuracy:.2f}",
            f"{100 * r.escalation_rate:.1f}",
            f"{r.mean_timesteps:.2f}",
            f"{r.energy_uj:.4f}",
            f"{r.energy_ratio_vs_s2:.3f}",
        )
    return table


def print_table(results: list[StrategyResult], title: str, console: Console | None = None) -> None:
    console = console or output_console()
    console.print(results_table(summary_rows(results), title))


def figure_png(fig) -> bytes:
    """A finished matplotlib figure as PNG bytes (laid out, then closed)."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


_TAB20_ORDER = [*range(0, 20, 2), *range(1, 20, 2)]  # the ten strong colours first, then their light twins
_MARKERS = ("o", "s", "^", "v", "D", "P", "X")


def _family_style(index: int) -> tuple[tuple[float, float, float], str]:
    """A colour and marker for the ``index``-th family: distinct for up to 20 families (the default
    colour cycle repeats after 10), markers telling them apart in greyscale too."""
    return plt.get_cmap("tab20").colors[_TAB20_ORDER[index % 20]], _MARKERS[index % len(_MARKERS)]


def pareto_png(results: list[StrategyResult], title: str, profile_name: str) -> bytes:
    """Accuracy against µJ/input: each policy family's swept points, its Pareto curve (the points no
    other point of the family beats on both) as a line, the references as large markers, and every
    point on the front of all strategies ringed."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=150)
    families = [f for f in dict.fromkeys(r.family for r in results) if f not in _REFERENCE_STYLE]
    for index, family in enumerate(families):
        points = sorted((r.energy_uj, 100 * r.accuracy) for r in results if r.family == family)
        front = [p for p, kept in zip(points, pareto_front([(acc, uj) for uj, acc in points])) if kept]
        style = "--" if family == "random" else "-"
        colour, marker = _family_style(index)
        ax.plot(*zip(*points), marker, color=colour, markersize=3, alpha=0.35, linestyle="none")
        ax.plot(*zip(*front), style, color=colour, marker=marker, markersize=3.5, linewidth=1.2, label=family)
    for r in results:
        if r.family in _REFERENCE_STYLE:
            marker, colour = _REFERENCE_STYLE[r.family]
            ax.plot([r.energy_uj], [100 * r.accuracy], marker, color=colour, markersize=9, label=r.name, linestyle="none")
    overall = [r for r, kept in zip(results, pareto_front([(r.accuracy, r.energy_uj) for r in results])) if kept]
    ax.plot(
        [r.energy_uj for r in overall],
        [100 * r.accuracy for r in overall],
        "o",
        markersize=11,
        markerfacecolor="none",
        markeredgecolor="black",
        markeredgewidth=0.8,
        linestyle="none",
        label="front of all",
    )
    ax.set_xscale("log")
    ax.set_xlabel(f"energy per input (µJ, profile {profile_name}; arithmetic only)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    return figure_png(fig)


def timesteps_png(results: list[StrategyResult], title: str) -> bytes:
    """Accuracy against mean timesteps for the policies that answer from System 1 alone."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=150)
    system1_only = system1_only_families(results)
    for family in dict.fromkeys(r.family for r in results):
        if family not in system1_only or is_reference(family):
            continue
        points = sorted((r.mean_timesteps, 100 * r.accuracy) for r in results if r.family == family)
        xs, ys = zip(*points)
        ax.plot(xs, ys, "-", marker="o", markersize=3.5, linewidth=1.2, label=family)
    for r in results:
        if r.family in ("system1", "aet_oracle"):
            marker, colour = _REFERENCE_STYLE[r.family]
            ax.plot([r.mean_timesteps], [100 * r.accuracy], marker, color=colour, markersize=9, label=r.name, linestyle="none")
    ax.set_xlabel("mean System 1 timesteps run per input")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return figure_png(fig)


def _training_line(distributed: dict | None) -> str:
    """How the systems were trained: one process, or N data-parallel ones (results.json's ``distributed``)."""
    if not distributed or distributed.get("world_size", 1) == 1 and distributed.get("backend") is None:
        return "1 process"
    n = distributed["world_size"]
    line = f"{n} process{'es' if n != 1 else ''}, data-parallel ({distributed.get('backend')}, launched by {distributed.get('launcher')})"
    batch = distributed.get("global_batch")
    if batch:
        line += f", global batch {batch['system1']} (System 1) and {batch['system2']} (System 2)"
    return line


def report_markdown(payload: dict) -> str:
    """report.md: what ran, the systems, every strategy, the routing metrics and the plot."""
    profile = payload["profile"]
    s1, s2 = payload["systems"]["system1"], payload["systems"]["system2"]
    link = profile.get("E_TX_BYTE_pJ") is not None  # the link is priced: a tx column
    lines = [
        f"# fastslow report — {payload['dataset']}",
        "",
        f"- Data: {payload['data_note']}; split sizes {', '.join(f'{part} {size}' for part, size in payload['split'].items())}; "
        f"run seed {payload['seed']}."
        + (f" The learned policies trained on {payload['router_data']['note']}." if "router_data" in payload else ""),
        f"- Hardware profile: `{profile['name']}` — E_MAC {profile['E_MAC_pJ']} pJ, E_AC {profile['E_AC_pJ']} pJ, "
        f"E_NEURON {profile['E_NEURON_pJ']} pJ"
        + (
            f", link {profile['E_TX_BYTE_pJ']:g} pJ per byte sent, {profile['E_RX_BYTE_pJ']:g} received"
            if profile.get("E_TX_BYTE_pJ") is not None
            else ""
        )
        + f" ({profile['description']})",
        f"- {ENERGY_NOTE}",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in payload['versions'].items())}.",
        f"- Training: {_training_line(payload.get('distributed'))}.",
        "",
        "## Systems",
        "",
        "| system | architecture | parameters | per-input work | memory (bytes) |",
        "| --- | --- | ---: | --- | ---: |",
        f"| System 1 | {s1['description']} | {s1['parameters']:,} | {s1['mean_synaptic_ops']:,.0f} synaptic ops, "
        f"{s1['mean_dense_macs']:,.0f} dense MACs, {s1['neuron_updates']:,.0f} neuron updates over T={s1['timesteps']} | {s1['memory_bytes']:,} |",
        f"| System 2 | {s2['description']} | {s2['parameters']:,} | {s2['macs']:,} MACs | {s2['memory_bytes']:,} |",
        "",
        "## Strategies",
        "",
        "| strategy | accuracy % | escalated % | mean T | µJ/input | s1_synaptic µJ | s1_dense µJ | s1_neuron µJ | policy µJ | s2 µJ |"
        + (" tx µJ |" if link else "")
        + " × S2 energy |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |" + (" ---: |" if link else "") + " ---: |",
    ]
    for r in payload["strategies"]:
        t = r["energy_terms_uj"]
        lines.append(
            f"| {r['name']} | {100 * r['accuracy']:.2f} | {100 * r['escalation_rate']:.1f} | {r['mean_timesteps']:.2f} | "
            f"{r['energy_uj']:.4f} | {t['s1_synaptic']:.4f} | {t['s1_dense']:.4f} | {t['s1_neuron']:.4f} | {t['policy']:.5f} | "
            f"{t['s2']:.4f} |" + (f" {t['tx']:.4f} |" if link else "") + f" {r['energy_ratio_vs_s2']:.3f} |"
        )
    lines += [
        "",
        "## Routing metrics (RouteLLM, per family)",
        "",
        "| family | APGR | CPT(50%) | CPT(80%) | note |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    for family, m in payload["routing_metrics"].items():
        lines.append(f"| {family} | {fmt(m['APGR'])} | {fmt(m['CPT(50%)'])} | {fmt(m['CPT(80%)'])} | {m['note']} |")
    best = payload.get("best_within_half_point_of_system2", {})
    if best:
        lines += [
            "",
            "Cheapest point per family within 0.5 accuracy points of System 2: "
            + ", ".join(f"{k}: `{v}`" for k, v in best.items())
            + ".",
        ]
    lines += [
        "",
        "## Accuracy vs energy",
        "",
        "![accuracy vs energy](pareto.png)",
        "",
        "## System 1 alone: accuracy vs timesteps",
        "",
        "![accuracy vs timesteps](timesteps.png)",
        "",
    ]
    return "\n".join(lines)


def write_report(folder: Path, payload: dict, results: list[StrategyResult]) -> None:
    """Write pareto.png, timesteps.png, report.md, then results.json (each atomically)."""
    title = f"{payload['dataset']}: accuracy vs energy ({payload['profile']['name']})"
    atomic.write_bytes(folder / "pareto.png", pareto_png(results, title, payload["profile"]["name"]))
    atomic.write_bytes(folder / "timesteps.png", timesteps_png(results, f"{payload['dataset']}: System 1 timesteps"))
    atomic.write_text(folder / "report.md", report_markdown(payload))
    atomic.write_json(folder / "results.json", payload)
