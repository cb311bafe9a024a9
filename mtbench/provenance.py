"""Which versions are in effect, as a plain dict stored with each finished trial, and how two differ.

A trial's numbers can change with mtbench, torch, torchvision, CUDA, the device and any plugin
distribution, while its id (its configuration) stays the same: the versions are what tells a user
that a stored trial was made under other conditions than a rerun would be. Reading them is cheap
and imports no torch: torch's own values (its CUDA build) are read only where torch is already
imported, as it is in a process that runs trials; elsewhere they come from the installed metadata.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, entry_points, version
from typing import Any

GROUP = "mtbench"  # the entry-point group plugins register under (mtbench.plugins.GROUP)
KEYS = ("mtbench", "torch", "torchvision", "cuda", "device")
"""The versions every trial records, in the order they are shown; then ``plugins``."""
PLUGINS = "plugins"
"""Key of the plugin distributions: {distribution name: version}."""
MISSING = "none"
"""How a version that is absent (a CPU build's CUDA, a plugin not installed) is shown."""

Versions = dict[str, Any]
"""``{"mtbench": "0.1.0", "torch": "2.4.0", "torchvision": "0.19.0", "cuda": "12.1" | None,
"device": "cpu" | "NVIDIA H100 ...", "plugins": {"mtbench-foo": "1.2"}}``"""


def _installed(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


@functools.cache
def plugin_distributions() -> dict[str, str]:
    """Every distribution that registers mtbench plugins (the entry points ``mtbench.plugins`` loads),
    except mtbench itself, whose version is recorded on its own. Cached: installing a plugin needs a
    new process anyway."""
    found: dict[str, str] = {}
    for ep in entry_points(group=GROUP):
        dist = getattr(ep, "dist", None)
        if dist is not None and dist.name != "mtbench":
            found[dist.name] = dist.version
    return dict(sorted(found.items()))


def device_name(device: Any) -> str:
    """A torch device as the name that matters for numbers: the GPU's model for CUDA, else its type."""
    kind = getattr(device, "type", str(device))
    if kind == "cuda" and "torch" in sys.modules:
        try:
            return sys.modules["torch"].cuda.get_device_name(device)
        except (RuntimeError, AssertionError):
            return "cuda"
    return kind


def current(device: Any = None) -> Versions:
    """The versions in effect in this process; ``device`` is where trials run (a torch device or a name;
    None: not known here, and the key is left out, so :func:`differences` does not compare it).
    torch's CUDA build is read from torch itself only if torch is already imported (else left out too)."""
    from mtbench import __version__

    torch = sys.modules.get("torch")
    versions: Versions = {
        "mtbench": __version__,
        # the installed distributions' versions, the same whether or not torch is imported here
        "torch": _installed("torch"),
        "torchvision": _installed("torchvision"),
        "cuda": torch.version.cuda if torch is not None else None,
        "device": device_name(device) if device is not None else None,
        PLUGINS: plugin_distributions(),
    }
    if torch is None:  # its CUDA build is not known without importing it: not compared
        del versions["cuda"]
    if device is None:
        del versions["device"]
    return versions


def dumps(versions: Mapping[str, Any] | None) -> str | None:
    """The stored form: JSON with sorted keys, so that equal versions are equal strings."""
    return None if versions is None else json.dumps(versions, sort_keys=True)


def loads(text: str | None) -> Versions | None:
    """The stored form read back; None (unknown: stored before versions were recorded) stays None."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def flat(versions: Mapping[str, Any]) -> dict[str, str | None]:
    """One level: the ``KEYS``, then each plugin distribution by its name."""
    out: dict[str, str | None] = {k: versions.get(k) for k in KEYS}
    for name, v in sorted((versions.get(PLUGINS) or {}).items()):
        out[name] = v
    return out


def differences(stored: Mapping[str, Any], now: Mapping[str, Any]) -> list[tuple[str, str | None, str | None]]:
    """(what, stored version, current version) for each version that differs, in ``KEYS`` order then
    plugins by name. A plugin present on one side only differs (None on the other side); a key of ``KEYS``
    that ``now`` lacks (the device where it is not known) is not compared."""
    old, new = flat(stored), flat(now)
    keys = [k for k in KEYS if k in now] + sorted({*old, *new} - set(KEYS))
    return [(key, old.get(key), new.get(key)) for key in keys if old.get(key) != new.get(key)]


def describe(diffs: list[tuple[str, str | None, str | None]]) -> str:
    """``torch 2.4.0 -> 2.5.1, cuda none -> 12.1``."""
    return ", ".join(f"{key} {old or MISSING} -> {new or MISSING}" for key, old, new in diffs)


def summary(versions: Mapping[str, Any]) -> str:
    """One line: ``mtbench 0.1.0, torch 2.4.0, torchvision 0.19.0, cuda none, device cpu, plugins: a 1.0``."""
    parts = [f"{k} {versions.get(k) or MISSING}" for k in KEYS]
    plugins = versions.get(PLUGINS) or {}
    if plugins:
        parts.append("plugins: " + ", ".join(f"{n} {v}" for n, v in sorted(plugins.items())))
    return ", ".join(parts)


def other_versions(stored: Mapping[str, tuple[str | None, Versions | None]], now: Mapping[str, Any],
                   shown: int = 5) -> str | None:
    """A warning naming the done trials made with other versions than ``now``, grouped by what differs,
    or None if all match. ``stored``: trial id -> (label, versions or None: unknown), as
    ``Store.versions`` reads them; at most ``shown`` trials are named per group."""
    groups: dict[str, list[str]] = {}
    for tid, (label, versions) in sorted(stored.items(), key=lambda kv: (kv[1][0] or "", kv[0])):
        if versions is None:
            what = "unknown versions (stored before mtbench recorded them)"
        else:
            diffs = differences(versions, now)
            if not diffs:
                continue
            what = describe(diffs)
        groups.setdefault(what, []).append(f"{tid[:8]} {label or ''}".strip())
    if not groups:
        return None
    count = sum(len(g) for g in groups.values())
    lines = [f"{count} of the {len(stored)} done trials of this grid were made with other versions than this "
             "run's; they are kept as they are and not run again (to redo them, delete them or use another "
             "results folder):"]
    for what, trials in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        more = f", and {len(trials) - shown} more" if len(trials) > shown else ""
        lines.append(f"  {len(trials)} with {what}: {', '.join(trials[:shown])}{more}")
    return "\n".join(lines)


__all__ = ["KEYS", "PLUGINS", "Versions", "current", "describe", "device_name", "differences", "dumps", "flat",
           "loads", "other_versions", "plugin_distributions", "summary"]
