"""What a dataset reader or converter skipped or changed, and the error for input it
cannot read at all.

Readers never stop at the first bad object: they record each one in a
:class:`ConversionReport` under a reason (``"malformed bbox (object skipped)"``) with
an item naming the file, line or entry, and go on. Reasons marked as notes record
what was kept as it is (difficult objects, images without objects); they appear in
the converters' summaries but not among the problems a training or evaluation run
lists.
"""

from utils.run_dir import write_text_atomic


class DatasetError(ValueError):
    """A dataset that cannot be read at all (missing file, unreadable JSON or YAML,
    inconsistent class lists); the message names the file and the offending value."""


class ConversionReport:
    """Every file or object skipped or changed while reading or converting, by reason.

    Args:
        order: reasons in the order the summary lists them (others follow in the
            order they were first recorded).
        notes: reasons that record what was kept unchanged rather than a problem.
    """

    def __init__(self, order=(), notes=()):
        self.order = tuple(order)
        self.notes = set(notes)
        self.items = {}

    def add(self, reason, item):
        """Records one item (a readable description) under a reason."""
        self.items.setdefault(reason, []).append(item)

    def count(self, reason):
        """Number of items recorded under a reason."""
        return len(self.items.get(reason, []))

    def __len__(self):
        return sum(len(v) for v in self.items.values())

    def extend(self, other):
        """Adds every item of another report (its notes stay notes)."""
        self.notes |= other.notes
        for reason in other._ordered():
            for item in other.items[reason]:
                self.add(reason, item)

    def _ordered(self):
        known = [r for r in self.order if r in self.items]
        return known + [r for r in self.items if r not in self.order]

    def messages(self, include_notes=False):
        """One ``"<item>: <reason>"`` line per item, problems only unless ``include_notes``."""
        return [
            f"{item}: {reason}"
            for reason in self._ordered()
            if include_notes or reason not in self.notes
            for item in self.items[reason]
        ]

    def format(self, limit=None):
        """Formats the summary: a count per reason, then the items of each reason.

        Args:
            limit: list at most this many items per reason (None or 0: all).

        Returns:
            multi-line str.
        """
        if not self.items:
            return "Nothing was skipped or changed."
        reasons = self._ordered()
        width = max(len(str(len(self.items[r]))) for r in reasons)
        lines = ["Skipped or changed, by reason:"]
        lines += [f"  {len(self.items[r]):>{width}}  {r}" for r in reasons]
        for reason in reasons:
            items = self.items[reason]
            shown = items if not limit else items[:limit]
            lines.append("")
            lines.append(f"{reason}: {len(items)}")
            lines += [f"  - {item}" for item in shown]
            if len(shown) < len(items):
                lines.append(f"  ... and {len(items) - len(shown)} more (see the full report file)")
        return "\n".join(lines)

    def write(self, path):
        """Writes the full summary (every item) to a text file, atomically."""
        write_text_atomic(path, self.format() + "\n")
