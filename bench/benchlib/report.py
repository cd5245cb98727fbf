"""The benchmark's Markdown report: medians with min-max over the
repetitions, ratios, and the targets with PASS/FAIL.

A ratio is computed per repetition from runs made back to back (the targets
are interleaved within a repetition), and its median is what a target is
judged on: that cancels most of the drift of a shared machine.
"""

import statistics


def median(values):
    return statistics.median(values) if values else None


def fmt_number(value):
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def cell(values, fmt=fmt_number, suffix=""):
    """"median (min–max)" of the values; one value alone; "—" for none."""
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    if len(values) == 1:
        return fmt(values[0]) + suffix
    return (f"{fmt(median(values))}{suffix} "
            f"({fmt(min(values))}–{fmt(max(values))})")


def ratio_cell(values):
    return cell(values, fmt=lambda v: f"{v:.2f}", suffix="x")


def rate_cell(results, scenario, target):
    """The rate cell, with the failed runs and the errors the load reported."""
    text = cell(results.values(scenario, target, "rate"))
    failed = results.failures(scenario, target)
    errors = sum(results.values(scenario, target, "errors"))
    if failed:
        text += f" ({failed} failed)"
    if errors:
        text += f" ({errors} errors)"
    return text


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


class Results:
    """samples[scenario][target] = one dict per repetition (None: the run failed)."""

    def __init__(self):
        self.samples = {}

    def add(self, scenario, target, sample):
        self.samples.setdefault(scenario, {}).setdefault(target, []).append(sample)

    def values(self, scenario, target, key):
        return [s[key] for s in self.samples.get(scenario, {}).get(target, [])
                if s is not None and s.get(key) is not None]

    def failures(self, scenario, target):
        return sum(1 for s in self.samples.get(scenario, {}).get(target, []) if s is None)

    def ratios(self, scenario, target, baseline):
        """Per repetition: target's rate / baseline's rate."""
        mine = self.samples.get(scenario, {}).get(target, [])
        theirs = self.samples.get(scenario, {}).get(baseline, [])
        return [a["rate"] / b["rate"] for a, b in zip(mine, theirs)
                if a is not None and b is not None and b["rate"] > 0]

    def to_json(self):
        return self.samples


class Target:
    """One goal of issue 6: `measure(results)` gives (value, text); judged
    only when its scenario ran, if it names one."""

    def __init__(self, title, measure, passes, scenario=None):
        self.title = title
        self.measure = measure
        self.passes = passes
        self.scenario = scenario

    def row(self, results):
        value, text = self.measure(results)
        if value is None:
            return [self.title, text or "no data", "FAIL"]
        return [self.title, text, "PASS" if self.passes(value) else "FAIL"]


def median_target(title, scenario, values, describe, passes):
    """A Target judged on the median of values(results); describe(median,
    values) is what the report says."""
    def measure_it(results):
        found = values(results)
        if not found:
            return None, None
        value = median(found)
        return value, describe(value, found)
    return Target(title, measure_it, passes, scenario)


def ratio_target(title, scenario, target, baseline, minimum):
    """target's rate at least minimum times baseline's, on the median of the
    per-repetition ratios."""
    return median_target(title, scenario, lambda r: r.ratios(scenario, target, baseline),
                         lambda v, found: f"{v:.2f}x (min {min(found):.2f}x)",
                         lambda v: v >= minimum)
