"""The tables `superpose eval` prints: per set and model, and per source language of a code-switched set."""
from __future__ import annotations

from superpose.core.text_tables import format_table
from superpose.evaluation.scoring import SWITCH_WINDOW

BOUND_NOTE = "† reads the tokens it scores: a bound, not a usable model"


def eval_table(result: dict) -> str:
    domains = result["domains"]
    best = set(result.get("best", {}).values())
    bounds = set(result.get("reads_answer", []))
    compute = result.get("stacks_per_token", {})
    headers = ["model", *[f"{d} ppl" for d in domains], *[f"{d} acc" for d in domains], "stacks", "tok/s"]
    rows = []
    for name, per_domain in result["models"].items():
        rows.append([name + (" ★" if name in best else "") + (" †" if name in bounds else ""),
                     *[per_domain[d]["ppl"] for d in domains],
                     *[per_domain[d]["accuracy"] for d in domains],
                     compute.get(name, float("nan")),
                     round(result["throughput_tokens_per_s"][name])])
    notes = ["★ = best point of its sweep, chosen on the selection data"] if best else []
    if bounds:
        notes.append(BOUND_NOTE)
    unlabelled = [d for d in domains if result.get("labels", {}).get(d, d) is None]
    title = "evaluation (token-weighted perplexity, next-token accuracy; stacks = model stacks run per token)"
    if unlabelled:
        title += f"; unlabelled sets: {', '.join(unlabelled)}"
    table = format_table(headers, rows, title=title)
    for set_name, sources in result.get("sources", {}).items():
        table += "\n\n" + switch_table(result, set_name, sources)
    return table + "".join(f"\n{note}" for note in notes)


def switch_table(result: dict, set_name: str, sources: list[str]) -> str:
    """Code-switched set: perplexity per source language, right after each switch, and own-weight share."""
    bounds = set(result.get("reads_answer", []))
    headers = ["model", *[f"{s} ppl" for s in sources], f"first {SWITCH_WINDOW} after switch ppl",
               "heaviest weight on own model"]
    rows = []
    for name, per_set in result["models"].items():
        metrics = per_set[set_name]
        share = metrics.get("own_weight_share")
        rows.append([name + (" †" if name in bounds else ""), *[metrics[f"ppl_source:{s}"] for s in sources],
                     metrics["ppl_after_switch"], "" if share is None else f"{share:.3f}"])
    return format_table(headers, rows, title=f"code-switched set {set_name!r}")
