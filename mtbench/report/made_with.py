"""The "made with" section: the versions (``mtbench.provenance``) the reported trials were made with.

One line when every done trial agrees; otherwise one row per distinct set of versions with its
trial count, so that numbers made under other versions are not compared unawares. Trials stored
before versions were recorded are counted as unknown.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from mtbench.provenance import KEYS, PLUGINS, loads, summary
from mtbench.report.frames import Frames
from mtbench.report.render import Section

TITLE = "Made with"
UNKNOWN = "unknown (stored before mtbench recorded versions)"


def version_sets(frames: Frames) -> list[tuple[dict[str, Any] | None, int]]:
    """(versions or None for unknown, number of done trials), most trials first. Trials are grouped by
    their stored text before any is parsed: 100k trials hold a handful of distinct values."""
    t = frames.trials
    if not t.num_rows or "versions" not in t.column_names:
        return []
    ran = t["trained_as"].to_pylist() if "trained_as" in t.column_names else [None] * t.num_rows
    done = [v for v, s, view in zip(t["versions"].to_pylist(), t["status"].to_pylist(), ran)
            if s == "done" and view is None]  # a model's view under another task order ran as that model
    counts: Counter[str | None] = Counter(done)
    merged: Counter[str | None] = Counter()  # two texts may parse to the same versions (key order)
    parsed: dict[str | None, dict[str, Any] | None] = {}
    for text, n in counts.items():
        versions = loads(text)
        key = None if versions is None else summary(versions)
        parsed.setdefault(key, versions)
        merged[key] += n
    return [(parsed[key], n) for key, n in sorted(merged.items(), key=lambda kv: (-kv[1], kv[0] or ""))]


def made_with(frames: Frames) -> Section:
    """The section: one row (all done trials agree) or one row per distinct set of versions."""
    sets = version_sets(frames)
    if len(sets) == 1:
        versions, n = sets[0]
        return Section(TITLE, [{"trials": n, "versions": summary(versions) if versions else UNKNOWN}])
    with_plugins = any(v and v.get(PLUGINS) for v, _ in sets)
    rows = []
    for versions, n in sets:
        if versions is None:
            rows.append({"trials": n, KEYS[0]: UNKNOWN})
            continue
        row: dict[str, Any] = {"trials": n, **{k: versions.get(k) or "none" for k in KEYS}}
        if with_plugins:
            row[PLUGINS] = ", ".join(f"{d} {v}" for d, v in sorted((versions.get(PLUGINS) or {}).items())) or "none"
        rows.append(row)
    note = (f"the done trials were made with {len(sets)} different sets of versions: compare their numbers "
            "with care" if len(sets) > 1 else "")
    return Section(TITLE, rows, note=note, columns=["trials", *KEYS, *([PLUGINS] if with_plugins else [])])


__all__ = ["made_with", "version_sets"]
