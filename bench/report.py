"""bench/results/transferability.{json,md}: every number, and tables for people."""

import json
from pathlib import Path
from typing import Any

from recdistill_dagster.report.text import fmt, fmt_ci


def write(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "transferability.json.tmp"
    tmp.write_text(json.dumps(results, indent=1, default=str))
    tmp.replace(out / "transferability.json")
    tmp = out / "transferability.md.tmp"
    tmp.write_text(markdown(results))
    tmp.replace(out / "transferability.md")


def _eta(cell: dict[str, Any]) -> str:
    if cell["eta"] is None:
        return "not measurable"
    return f"{cell['eta']:.2f} {fmt_ci(cell['eta_ci'], 2)}"


def _gain(value: float | None, ci: list[float] | None) -> str:
    return f"{fmt(value)} {fmt_ci(ci)}"


def _delta(cell: dict[str, Any]) -> str:
    """The cell against its experiment's reference, paired: Δ student gain [CI]; Δη [CI]."""
    paired = cell.get("vs_reference")
    if not paired:
        return "—"
    eta = "" if paired["value"] is None else f"; Δη {paired['value']:+.2f} {fmt_ci(paired['ci'], 2)}"
    return f"{paired['numerator']:+.4f} {fmt_ci(paired['numerator_ci'])}{eta}"


def _row(cell: dict[str, Any]) -> list[str]:
    auc = cell["auc"]
    params = cell["params"]
    return [
        cell["label"], _gain(cell["teacher_gain"], cell["teacher_gain_ci"]),
        _gain(cell["student_gain"], cell["student_gain_ci"]), _eta(cell), fmt_ci(cell["eta_ci_seed_level"], 2),
        _delta(cell), fmt(auc.get("teacher")), fmt(auc.get("student_raw")), fmt(auc.get("student_distill")),
        fmt(auc.get("student_aux")), fmt(auc.get("bayes")),
        f"{params['served']:,} / {params['teacher']:,} (1:{1 / params['ratio']:.1f})",
        f"{cell['wall_seconds'] / 60:.1f}",
    ]


HEADER = ["cell", "teacher gain [CI]", "student gain [CI]", "η [CI]", "η seed-level (Fieller)",
          "vs reference: Δ student gain [CI]; Δη [CI]", "AUC teacher", "AUC raw", "AUC distilled", "AUC aux",
          "Bayes AUC", "params S (served) / T", "train min"]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows)]


def markdown(results: dict[str, Any]) -> str:
    lines = ["# Transferability benchmark", ""]
    lines += [f"Generated {results['generated_at']} by `{results['command']}` "
              f"({'QUICK: shorter calendar, fewer impressions' if results['quick'] else 'full'}).", ""]
    machine = results["machine"]
    lines += [f"Machine: {machine['cpus']} CPU(s), {machine['platform']}, torch {machine['torch']}, "
              f"dagster {machine['dagster']}. Wall time of this invocation: "
              f"{results['wall_seconds'] / 60:.1f} min (cells reused from earlier invocations are not "
              "re-trained; `train min` is each cell's own training time summed over its runs).", ""]
    lines += ["Every model after day d is scored on the unsampled log of day d+1 (progressive validation). AUC is "
              "computed within each report day and averaged over the days (`mean_daily_auc`; pooling days would "
              "reward day-to-day calibration, so pooled AUC is only a secondary number in the JSON). Gains are "
              "means over worlds (independent synthetic worlds: their own users, items, clicks and evaluation "
              "rows) of the means over model seeds. 95% intervals: a hierarchical bootstrap (worlds resampled, "
              "one Poisson row-weight vector per drawn world shared by every model and model seed that scored its "
              "rows) and, beside it, a seed-level interval over the worlds (Student t on gains, Fieller on "
              "ratios). Differences between cells that share teacher, baseline and rows are paired "
              "(`vs reference`). `AUC aux` is the training-only auxiliary tower; the served model is the main "
              "tower (`AUC distilled`).", ""]
    headline = results.get("headline")
    if headline:
        lines += _headline(headline)
    for name, experiment in results["experiments"].items():
        lines += [f"## {experiment['title']} [{experiment['paper']}] (`ONLY={name}`)", ""]
        reference = next((c["label"] for c in experiment["cells"] if c["name"] == experiment.get("reference")), None)
        note = experiment.get("note", "").rstrip(".")
        lines += [f"profile `{experiment['profile']}`" + (f". {note}" if note else "")
                  + (f". Paired differences against **{reference}**." if reference else ""), ""]
        kept = provenance(experiment, results)
        if kept:
            lines += [kept, ""]
        cells = experiment["cells"]
        lines += _table(HEADER, [_row(c) for c in cells])
        lines.append("")
        kind = experiment["kind"]
        if kind == "alpha":
            lines += _alpha(cells)
        if kind == "streaming":
            lines += _streaming(cells)
        if kind == "calibration" or name == "main":
            lines += _calibration(cells)
        if kind == "capacity":
            lines += _capacity(cells)
        if kind == "matched":
            lines += _matched(experiment)
        if kind == "teacher_sweep":
            lines += _teacher_sweep(experiment)
        per_seed = [[c["label"], *[_seed(s) for s in c["per_seed"]]] for c in cells]
        runs = [f"{s['world'].split(' · ')[0]}, model seed {s['seed']}" for s in cells[0]["per_seed"]]
        lines += ["<details><summary>per run: η (teacher gain, student gain)</summary>", "",
                  *_table(["cell", *runs], per_seed), "", "</details>", ""]
    if results.get("not_run"):
        lines += ["## Not run in this invocation", "", *[f"- `{n}`" for n in results["not_run"]], ""]
    return "\n".join(lines) + "\n"


def invocation_of(results: dict[str, Any]) -> dict[str, str]:
    """What identifies the invocation that produced `results` (stored with each experiment it ran)."""
    return {"generated_at": results["generated_at"], "command": results["command"]}


def provenance(experiment: dict[str, Any], results: dict[str, Any]) -> str:
    """A line for an experiment this invocation kept from an earlier one (empty when it ran here)."""
    invocation = experiment.get("invocation")
    if invocation is None:
        return "*Kept from an earlier invocation (not re-run by this one).*"
    if invocation == invocation_of(results):
        return ""
    return (f"*Kept from an earlier invocation, not re-run by this one: `{invocation['command']}`, "
            f"generated {invocation['generated_at']}.*")


def _headline(h: dict[str, Any]) -> list[str]:
    """Absolute gains and the ceiling first, then η; intervals beside every number."""
    auc = h["auc"]
    lines = ["## Headline", "",
             f"profile `{h['profile']}`, worlds {h['world_seeds']} × model seeds {h['model_seeds']}, "
             f"{h['n_distinct_eval_rows']:,} distinct evaluation rows, AUC aggregation `{h['auc_aggregation']}`.", "",
             "| quantity | value | 95% CI (hierarchical bootstrap) | 95% CI (seed level) |", "|---|---|---|---|",
             f"| teacher gain (AUC teacher − AUC raw student) | {fmt(h['teacher_gain'])} "
             f"| {fmt_ci(h['teacher_gain_ci'])} | {fmt_ci(h['teacher_gain_ci_seed_level'])} |",
             f"| distillation gain (AUC distilled − AUC raw) | {fmt(h['student_gain'])} "
             f"| {fmt_ci(h['student_gain_ci'])} | {fmt_ci(h['student_gain_ci_seed_level'])} |"]
    ceiling = h.get("ceiling")
    if ceiling:
        rho = ceiling["rho"]
        lines += [f"| oracle gain G* (distilled from p_true − raw) | {fmt(ceiling['oracle_gain'])} "
                  f"| {fmt_ci(ceiling['oracle_gain_ci'])} | {fmt_ci(ceiling['oracle_gain_ci_seed_level'])} |",
                  f"| ρ = distillation gain / G* | {fmt(rho['value'], 3)} | {fmt_ci(rho['ci'], 3)} "
                  f"| {fmt_ci(rho['ci_seed_level'], 3)} |"]
        if ceiling.get("eta_star"):
            star = ceiling["eta_star"]
            lines += [f"| Bayes gain (AUC p_true − raw) | {fmt(ceiling['bayes_gain'])} | | |",
                      f"| η* = G* / Bayes gain | {fmt(star['value'], 3)} | {fmt_ci(star['ci'], 3)} "
                      f"| {fmt_ci(star['ci_seed_level'], 3)} |"]
    lines += [f"| **η = distillation gain / teacher gain** | **{fmt(h['eta'], 3)}** | {fmt_ci(h['eta_ci'], 3)} "
              f"| {fmt_ci(h['eta_ci_seed_level'], 3)} |",
              f"| served student (backbone + main tower) / teacher parameters | {h['param_ratio']:.3f} "
              f"(1:{1 / h['param_ratio']:.1f}; {h['params']['served']:,} / {h['params']['teacher']:,}) | | |",
              "",
              f"AUC (within-day): teacher {fmt(auc.get('teacher'))}, raw student {fmt(auc.get('student_raw'))}, "
              f"distilled {fmt(auc.get('student_distill'))}"
              + (f", distilled from the oracle {fmt(ceiling['auc_oracle_distilled'])}" if ceiling else "")
              + f", Bayes (p_true) {fmt(auc.get('bayes'))}. Seed-level intervals over {h['seed_level_units']}.", ""]
    if h.get("eta_note"):
        lines += [f"η: {h['eta_note']}", ""]
    return lines


def _seed(s: dict[str, Any]) -> str:
    eta = "n/a" if s["eta"] is None else f"{s['eta']:.2f}"
    return f"{eta} ({s['teacher_gain']:+.4f}, {s['distill_gain']:+.4f})"


def _alpha(cells: list[dict[str, Any]]) -> list[str]:
    rows = []
    for c in cells:
        loss = c.get("losses") or {}
        rows.append([c["label"], fmt(loss.get("task_loss")), fmt(loss.get("distill_ce")),
                     fmt(loss.get("distill_kl"), 5), fmt(loss.get("alpha_ce_over_task"), 3),
                     fmt(loss.get("alpha_kl_over_task"), 4), _eta(c)])
    return ["Loss magnitudes (last epoch of each training partition, mean over partitions and seeds; the KL part "
            "is the distillation cross-entropy minus the entropy of the teacher targets, i.e. the part with a "
            "gradient):", "",
            *_table(["α", "L_task", "L_distill (CE)", "KL part", "α·CE / L_task", "α·KL / L_task", "η"], rows), ""]


def _streaming(cells: list[dict[str, Any]]) -> list[str]:
    days = [d["day"] for d in cells[0]["per_day"]]
    header = ["report day", "AUC raw", *[f"distilled: {c['label']}" for c in cells]]
    base = cells[0]
    rows = []
    for i, day in enumerate(days):
        row = [day, fmt(base["per_day"][i].get("student_raw"))]
        for c in cells:
            value = c["per_day"][i].get("student_distill")
            gap = value - c["per_day"][i]["student_raw"] if value is not None else None
            row.append(f"{fmt(value)} ({gap:+.4f})" if gap is not None else "n/a")
        rows.append(row)
    return ["Per report day (mean over seeds; in brackets the gap to the raw student of the same day). The "
            "first report day follows the batch phase; every later day is one more streaming day:", "",
            *_table(header, rows), ""]


def _calibration(cells: list[dict[str, Any]]) -> list[str]:
    rows = []
    for c in cells:
        for source, block in c["calibration"].items():
            rows.append([c["label"], source, f"{block['rows']:,}", f"{block['observed']:.4f}",
                         fmt(block.get("p_true")), fmt(block.get("teacher")), fmt(block.get("student_raw")),
                         fmt(block.get("student_distill")), fmt(block.get("student_aux"))])
    return ["Calibration on the unsampled evaluation log (mean predicted click rate after the debias "
            "correction, vs observed and vs the mean of `p_true`):", "",
            *_table(["cell", "traffic", "rows", "observed", "mean p_true", "teacher", "raw", "distilled",
                     "aux"], rows), ""]


def _capacity(cells: list[dict[str, Any]]) -> list[str]:
    rows = [[c["label"], f"{c['params']['student']:,}", f"{c['params']['ratio']:.3f}", _eta(c)] for c in cells]
    return ["Student size (the teacher is the same in every row):", "",
            *_table(["student", "parameters", "student / teacher", "η"], rows), ""]


def _matched(experiment: dict[str, Any]) -> list[str]:
    """Each variant at its own best α, paired with the reference variant at its best."""
    rows = []
    for m in experiment["matched"]:
        paired = m["vs_reference_best"]
        delta = "reference" if paired is None else (
            f"{paired['numerator']:+.4f} {fmt_ci(paired['numerator_ci'])}"
            + ("" if paired["value"] is None else f"; Δη {paired['value']:+.2f} {fmt_ci(paired['ci'], 2)}"))
        edge = " (grid edge)" if m["at_grid_edge"] else ""
        rows.append([m["group"], f"{m['alpha']:g}{edge} of {', '.join(f'{a:g}' for a in m['alphas'])}",
                     _gain(m["student_gain"], m["student_gain_ci"]),
                     "not measurable" if m["eta"] is None else f"{m['eta']:.2f} {fmt_ci(m['eta_ci'], 2)}",
                     fmt_ci(m["eta_ci_seed_level"], 2), delta])
    return ["Each variant at its own best α (highest distillation gain on the grid), paired with the reference "
            "variant at its own best: the Δ is what the variant costs once each runs at the α that suits it.", "",
            *_table(["variant", "best α", "student gain [CI]", "η [CI]", "η seed-level (Fieller)",
                     "vs reference at its best α: Δ student gain [CI]; Δη [CI]"], rows), ""]


def _paired(delta: dict[str, Any] | None) -> str:
    if delta is None:
        return "n/a"
    seed_level = f"; seed level {fmt_ci(delta['ci_seed_level'])}" if delta["ci_seed_level"] else ""
    return f"{delta['value']:+.4f} {fmt_ci(delta['ci'])}{seed_level}"


def _teacher_sweep(experiment: dict[str, Any]) -> list[str]:
    """Each teacher against the reference teacher on the same rows: what it buys and what reaches the student."""
    sweep = experiment.get("teacher_sweep") or {}
    if not sweep:
        return ["The cells do not share the baseline's predictions: no paired teacher comparison.", ""]
    rows = []
    for c in sorted(experiment["cells"], key=lambda c: c["params"]["teacher"]):
        paired = sweep.get(c["name"])
        if paired is None:
            continue
        reference = c["name"] == experiment["reference"]
        rows.append([c["label"], f"{c['params']['teacher']:,}", fmt(paired["teacher_auc"]),
                     "reference" if reference else _paired(paired["teacher_delta"]),
                     _gain(c["student_gain"], c["student_gain_ci"]),
                     "reference" if reference else _paired(paired["distilled_delta"])])
    return ["Teachers by parameter count, each paired with the reference teacher on the same evaluation rows "
            "(one shared row-weight vector per bootstrap draw):", "",
            *_table(["teacher", "parameters", "AUC teacher", "Δ AUC teacher vs reference [CI]",
                     "distillation gain [CI]", "Δ AUC distilled vs reference [CI]"], rows), ""]
