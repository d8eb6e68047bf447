"""bench/results/transferability.{json,md}: every number, and tables for people."""

import json
from pathlib import Path
from typing import Any

from recdistill_dagster.report.text import fmt, fmt_ci


def main_entry(profile: str, cell: dict[str, Any]) -> dict[str, Any]:
    """The `main` block of the JSON (the schema issue 4 asks for, plus the AUCs and the ceiling)."""
    return {
        "profile": profile,
        "eta": cell["eta"],
        "eta_ci": cell["eta_ci"],
        "teacher_gain": cell["teacher_gain"],
        "teacher_gain_ci": cell["teacher_gain_ci"],
        "student_gain": cell["student_gain"],
        "student_gain_ci": cell["student_gain_ci"],
        "teacher_gain_significant": cell["teacher_gain_significant"],
        "param_ratio": cell["params"]["ratio"],
        "params": cell["params"],
        "auc": cell["auc"],
        "bayes_auc": cell["auc"].get("bayes"),
        "eta_aux_tower": cell["eta_aux_tower"],
        "seeds": cell["seeds"],
        "n_eval_rows": cell["n_eval_rows"],
        "wall_seconds": cell["wall_seconds"],
    }


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


def _row(cell: dict[str, Any]) -> list[str]:
    auc = cell["auc"]
    params = cell["params"]
    return [
        cell["label"], _eta(cell), f"{fmt(cell['teacher_gain'])} {fmt_ci(cell['teacher_gain_ci'])}",
        f"{fmt(cell['student_gain'])} {fmt_ci(cell['student_gain_ci'])}", fmt(auc.get("teacher")),
        fmt(auc.get("student_raw")), fmt(auc.get("student_distill")), fmt(auc.get("student_aux")),
        fmt(auc.get("bayes")), f"{params['student']:,} / {params['teacher']:,} (1:{1 / params['ratio']:.1f})",
        ",".join(str(s) for s in cell["seeds"]), f"{cell['wall_seconds'] / 60:.1f}",
    ]


HEADER = ["cell", "η [95% CI]", "teacher gain [CI]", "student gain [CI]", "AUC teacher", "AUC raw",
          "AUC distilled", "AUC aux", "Bayes AUC", "params S / T (ratio)", "seeds", "train min"]


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
              "re-trained; `train min` is each cell's own training time summed over seeds).", ""]
    lines += ["η = (AUC distilled − AUC raw) / (AUC teacher − AUC raw), all models after day d scored on the "
              "unsampled log of day d+1 (progressive validation), pooled over every report day. Gains are "
              "means over seeds; the 95% interval is a two-level bootstrap (seeds resampled with "
              "replacement, then paired Poisson row weights within each seed). `AUC aux` is the training-only "
              "auxiliary tower; the served model is the main tower (`AUC distilled`).", ""]
    main = results.get("main")
    if main:
        lines += ["## Main result", "",
                  f"profile `{main['profile']}`: **η = {fmt(main['eta'], 3)} {fmt_ci(main['eta_ci'], 3)}**, "
                  f"teacher gain {fmt(main['teacher_gain'])} {fmt_ci(main['teacher_gain_ci'])}, student gain "
                  f"{fmt(main['student_gain'])} {fmt_ci(main['student_gain_ci'])}, student:teacher parameters "
                  f"{main['param_ratio']:.3f} (1:{1 / main['param_ratio']:.1f}), seeds {main['seeds']}, "
                  f"{main['n_eval_rows']:,} evaluation rows in all.", ""]
    for name, experiment in results["experiments"].items():
        lines += [f"## {experiment['title']} [{experiment['paper']}] (`ONLY={name}`)", ""]
        lines += [f"profile `{experiment['profile']}`" + (f". {experiment['note']}" if experiment.get("note") else ""),
                  ""]
        cells = experiment["cells"]
        lines += _table(HEADER, [_row(c) for c in cells])
        lines.append("")
        kind = experiment["kind"]
        if kind == "alpha":
            lines += _alpha(cells)
        if kind == "streaming":
            lines += _streaming(cells)
        if kind == "calibration":
            lines += _winner(cells)
        if kind == "calibration" or name == "main":
            lines += _calibration(cells)
        if kind == "capacity":
            lines += _capacity(cells)
        per_seed = [[c["label"], *[_seed(s) for s in c["per_seed"]]] for c in cells]
        lines += ["<details><summary>per seed: η (teacher gain, student gain)</summary>", "",
                  *_table(["cell", *[f"seed {s}" for s in cells[0]["seeds"]]], per_seed), "", "</details>", ""]
    if results.get("not_run"):
        lines += ["## Not run in this invocation", "", *[f"- `{n}`" for n in results["not_run"]], ""]
    return "\n".join(lines) + "\n"


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


def _winner(cells: list[dict[str, Any]]) -> list[str]:
    """Which variant transfers most, and its margin over the runner-up (gains are paired: same rows)."""
    ranked = sorted((c for c in cells if c["eta"] is not None), key=lambda c: c["eta"], reverse=True)
    if len(ranked) < 2:
        return []
    best, second = ranked[0], ranked[1]
    return [f"Highest η: **{best['label']}**, η {_eta(best)}, ahead of {second['label']} ({_eta(second)}) by "
            f"Δη = {best['eta'] - second['eta']:+.2f} and a student gain larger by "
            f"{best['student_gain'] - second['student_gain']:+.4f} AUC. Lowest: {ranked[-1]['label']} "
            f"({_eta(ranked[-1])}).", ""]
