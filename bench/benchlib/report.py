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
    """One goal of issue 6: `measure(results)` gives (value, text)."""

    def __init__(self, title, measure, passes):
        self.title = title
        self.measure = measure
        self.passes = passes

    def row(self, results):
        value, text = self.measure(results)
        if value is None:
            return [self.title, text or "no data", "FAIL"]
        return [self.title, text, "PASS" if self.passes(value) else "FAIL"]
