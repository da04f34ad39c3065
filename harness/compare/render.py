"""A comparison as text: rich tables for the terminal, CSV (pandas), JSON and markdown.

The verdict table reads: per tuner, the mean normalized regret of its final bests (0 = the
optimum, 1 = the worst value), the IQM of those regrets with its 95% stratified-bootstrap
interval, and the mean rank across seeds (1 = best); below it, the Friedman test over the seeds
and the groups of tuners the Nemenyi critical difference cannot tell apart.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from harness.compare.stats import Comparison
from harness.strict_json import dumps

FORMATS = ("table", "csv", "json", "markdown")


def fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}g}"


def fmt_count(value: float | None) -> str:
    """A count, or a mean of counts: whole numbers as such, others to one decimal."""
    if value is None or not math.isfinite(value):
        return "-"
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


COLUMNS = ["tuner", "sweeps", "seeds", "trials c/p/f", "best mean", "best std", "best median",
           "steps used", "seconds used", "start-up s", "steps to target", "seconds to target",
           "trials to target", "reached", "mean rank"]
VERDICT_COLUMNS = ["tuner", "seeds", "normalized regret", "IQM", "interval of IQM (95% from 5 seeds)",
                   "mean rank", "group"]


def table_rows(comp: Comparison) -> list[list[str]]:
    rows = []
    for r in comp.rows:
        rows.append([
            r.tuner, str(r.sweeps), ",".join(map(str, r.seeds)), f"{r.complete}/{r.pruned}/{r.failed}",
            fmt(r.best_mean), fmt(r.best_std), fmt(r.best_median), fmt_count(r.steps_used),
            fmt(r.seconds_used, 3), fmt(r.startup_seconds, 2),
            fmt_count(r.steps_to_target), fmt(r.seconds_to_target, 3), fmt_count(r.trials_to_target),
            f"{r.reached}/{r.sweeps}", fmt(r.mean_rank, 3),
        ])
    return rows


def verdict_rows(comp: Comparison) -> list[list[str]]:
    """One row per tuner, best mean rank first (the verdict's order)."""
    if comp.verdict is None:
        return []
    v = comp.verdict.verdict
    group = {t: " ".join(chr(ord("A") + i) for i, g in enumerate(v.groups) if t in g) or "-" for t in v.tuners}
    return [[t, str(d["seeds"]), fmt(d["normalized_regret"]), fmt(d["iqm"]), _interval(d),
             fmt(d["mean_rank"], 3), group[t]]
            for t, d in v.tuners.items()]


def _interval(d: dict[str, Any]) -> str:
    """The IQM's interval; from fewer than 5 seeds it is no 95% interval and says so."""
    text = f"[{fmt(d['ci95'][0])}, {fmt(d['ci95'][1])}]"
    return text if d.get("ci_level", 0.95) is not None else f"{text} ({d['seeds']} seeds: not 95%)"


def verdict_lines(comp: Comparison) -> list[str]:
    """The Friedman result, the CD groups, the range used and the one-sentence summary."""
    if comp.verdict is None:
        return []
    rep, v = comp.verdict, comp.verdict.verdict
    lines = [f"regret normalized on [{fmt(rep.optimum, 6)}, {fmt(rep.worst, 6)}] ({rep.range_source})"]
    fr = v.friedman
    pt = getattr(v, "paired", None)
    if pt is not None:
        lines.append(f"two tuners: exact paired test over {pt.pairs} seeds ({pt.n} differ): {pt.name}, "
                     f"p = {fmt(pt.pvalue, 3)} "
                     f"({'the two differ' if pt.pvalue is not None and pt.pvalue < v.alpha else 'no difference shown'} "
                     f"at alpha = {v.alpha}){'; ' + pt.note if pt.note else ''}")
    elif fr is None:
        lines.append(f"Friedman test: not run ({v.paired_seeds} seed(s) common to every tuner, "
                     f"{len(v.tuners)} tuner(s); it needs 2 of each)")
    else:
        lines.append(f"Friedman test over {fr.n} seeds, {fr.k} tuners: chi2 = {fmt(fr.statistic)}, "
                     f"p = {fmt(fr.pvalue, 3)} ({'the ranks differ' if fr.pvalue < v.alpha else 'no difference shown'} "
                     f"at alpha = {v.alpha}); Nemenyi CD = {fmt(v.cd, 3)}")
    groups = "; ".join(f"{chr(ord('A') + i)} = {', '.join(g)}" for i, g in enumerate(v.groups))
    lines.append(f"{'CD groups' if pt is None else 'groups'} (not significantly different): {groups}")
    few = [t for t, d in v.tuners.items() if d.get("ci_level", 0.95) is None]
    if few:
        lines.append(f"intervals of {', '.join(few)}: fewer than 5 seeds, the bootstrap spans about their "
                     "range; not a 95% interval")
    lines.append(f"verdict: {v.summary}")
    return lines


def title(comp: Comparison) -> str:
    what = f"{comp.experiment} / benchmark {comp.benchmark}" if comp.benchmark else f"experiment {comp.experiment}"
    return f"{what}: {comp.metric} ({comp.goal}), {len(comp.sweeps)} sweeps"


def target_line(comp: Comparison) -> str:
    return (f"target {comp.metric} = {fmt(comp.target, 6)} ({comp.target_source}); seconds: wall time "
            "from each sweep's first trial start (the start-up before it is shown apart); means over sweeps")


def tables(comp: Comparison) -> list[Any]:
    """Rich renderables: the per-tuner table, the verdict, then which differences hold."""
    from rich.table import Table

    t = Table(title=title(comp), title_justify="left", caption=target_line(comp), caption_justify="left")
    for i, c in enumerate(COLUMNS):
        t.add_column(c, justify="left" if i < 3 else "right")
    for row in table_rows(comp):
        t.add_row(*row)
    out: list[Any] = [t]
    if comp.verdict is not None:
        v = Table(title="verdict at the final budget (regret 0 = optimum, 1 = worst; rank 1 = best)",
                  title_justify="left", caption="\n".join(_escape(x) for x in verdict_lines(comp)),
                  caption_justify="left")
        for i, c in enumerate(VERDICT_COLUMNS):
            v.add_column(c, justify="left" if i in (0, 6) else "right")
        for row in verdict_rows(comp):
            v.add_row(*row)
        out.append(v)
    if comp.pairs:
        p = Table(title="which differences hold", title_justify="left", show_header=False)
        p.add_column()
        p.add_row(f"[bold]test[/]       {_escape(comp.test)}")
        for pair in comp.pairs:
            style = {"holds": "[green]holds[/]     ", "suggestive": "[yellow]suggestive[/]"}.get(
                pair.verdict, f"[dim]{pair.verdict:<10}[/]")
            p.add_row(f"{style} {_escape(pair.statement)}")
        for note in comp.notes:
            p.add_row(f"[bold]note[/]       {_escape(note)}")
        out.append(p)
    elif comp.notes:
        out += [f"note: {_escape(n)}" for n in comp.notes]
    if comp.plots.get("files"):
        out.append(f"plots: {', '.join(comp.plots['files'])}")
    if comp.plots.get("run_id"):
        out.append(f"logged as comparison run {comp.plots['run_id']} in experiment '{comp.experiment}'")
    return out


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _csv(comp: Comparison) -> str:
    """One line per tuner: the comparison's key, then every field of its row (ci95 as two columns)."""
    import pandas as pd

    records = []
    for r in comp.rows:
        d: dict[str, Any] = {"experiment": comp.experiment, "benchmark": comp.benchmark or "",
                             "metric": comp.metric, "goal": comp.goal,
                             "target": "" if comp.target is None else repr(comp.target)}
        for k, v in asdict(r).items():
            if k == "seeds":
                v = " ".join(map(str, r.seeds))
            if k == "ci95":
                d["ci95_low"], d["ci95_high"] = v if v is not None else (None, None)
                continue
            d[k] = v
        records.append(d)
    if not records:
        return ""
    return pd.DataFrame(records, dtype=object).to_csv(index=False, lineterminator="\n")


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
            + ["| " + " | ".join(row) + " |" for row in rows])


def render_text(comp: Comparison, format: str) -> str:
    """csv, json or markdown text."""
    if format == "json":
        return dumps(comp.to_dict(), indent=2) + "\n"
    if format == "csv":
        return _csv(comp)
    if format == "markdown":
        lines = [f"**{title(comp)}**; {target_line(comp)}", "", *_md_table(COLUMNS, table_rows(comp))]
        if comp.verdict is not None:
            lines += ["", "Verdict at the final budget (normalized regret: 0 = optimum, 1 = worst; rank 1 = best):",
                      "", *_md_table(VERDICT_COLUMNS, verdict_rows(comp)), ""]
            lines += [f"- {x}" for x in verdict_lines(comp)]
        if comp.pairs:
            lines += ["", f"Which differences hold ({comp.test}):", ""]
            lines += [f"- {'**holds**' if p.holds else p.verdict}: {p.statement}" for p in comp.pairs]
        lines += [f"- note: {n}" for n in comp.notes]
        return "\n".join(lines) + "\n"
    raise ValueError(format)
