"""``--set KEY=VALUE``: change any value of a grid from the command line, without editing the file.

A key is the dotted path that grid error messages print: ``train.epochs``, ``data.image_size``,
``attack[0].eps`` (the first ``[[attack]]`` table), ``train.weighting[0].d``. A missing table is
created; an index one past the end of an array appends to it (``attack[2].name=pgd-l2`` adds a third
``[[attack]]``). The value is read as a TOML value (``2``, ``1e-3``, ``true``, ``"x"``,
``["s", "d"]``, ``{encoder = "resnet50"}``); text that is no TOML value is taken as a string, so
``--set train.optimizer=sgd`` needs no quotes (quote a string that reads as something else:
``--set 'run.name="2024"'``).

The overrides change the parsed file, which is then written back as TOML (:func:`render_toml`): this
*effective grid* is what gets validated (an unknown key or a wrong type is a grid error like any
other), expanded, stored with the run (``runs.grid_text``) and read by every other worker (helper
processes and scheduler jobs get it as a file under ``<out>/grids/``, never the user's file).
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import math
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtbench.errors import ConfigError

if TYPE_CHECKING:
    from mtbench.grid import Grid
    from mtbench.plugins import Plugins

Key = list[str | int]
"""A parsed key: table keys (str) and array indexes (int), outermost first."""

SEGMENT = re.compile(r"([A-Za-z0-9_-]+)((?:\[\d+\])*)")
BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
"""What a TOML comment cannot hold."""
GRIDS = "grids"
"""The folder of the results folder that holds effective grids handed to other workers."""


def parse_key(key: str) -> Key:
    """``attack[0].eps`` -> ``["attack", 0, "eps"]``; a ValueError says what a key looks like."""
    parts: Key = []
    for segment in key.split("."):
        found = SEGMENT.fullmatch(segment.strip())
        if found is None:
            raise ValueError("expected a key such as train.epochs or attack[0].eps (table names, array indexes "
                             "in brackets, joined by dots)")
        parts.append(found[1])
        parts += [int(i) for i in re.findall(r"\d+", found[2])]
    return parts


def parse_value(text: str) -> Any:
    """A TOML value (``2``, ``"x"``, ``[1, 2]``, ``true``); anything else is the text itself."""
    try:
        parsed = tomllib.loads(f"value = {text}")
    except tomllib.TOMLDecodeError:
        return text
    return parsed["value"] if parsed.keys() == {"value"} else text  # "2\nother = 3" sets no second key


def parse_override(spec: str) -> tuple[str, Key, Any]:
    """``KEY=VALUE`` -> (the key as written, the parsed key, the value); ConfigError names ``--set``."""
    key, sep, value = spec.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError([(f"--set {spec}", "expected KEY=VALUE, e.g. train.epochs=2")])
    try:
        return key, parse_key(key), parse_value(value.strip())
    except ValueError as exc:
        raise ConfigError([(f"--set {key}", str(exc))]) from None


def apply_overrides(raw: dict[str, Any], specs: Sequence[str]) -> dict[str, Any]:
    """A copy of the parsed grid with every ``KEY=VALUE`` applied in order (a later one wins)."""
    doc = copy.deepcopy(raw)
    problems = []
    for spec in specs:
        key, parts, value = parse_override(spec)
        problem = _assign(doc, parts, value)
        if problem:
            problems.append((f"--set {key}", problem))
    if problems:
        raise ConfigError(problems)
    return doc


def _assign(doc: dict[str, Any], parts: Key, value: Any) -> str | None:
    """Set ``value`` at ``parts`` inside ``doc``, creating missing tables and arrays; why not, or None."""
    node: Any = doc
    for depth, part in enumerate(parts):
        here = _key_text(parts[:depth]) or "the grid"
        last = depth == len(parts) - 1
        empty = None if last else [] if isinstance(parts[depth + 1], int) else {}
        if isinstance(part, str):
            if not isinstance(node, dict):
                return f"{here} is {_kind(node)}, not a table: it has no key {part!r}"
            if last or part not in node:
                node[part] = value if last else empty
        else:
            if not isinstance(node, list):
                return f"{here} is {_kind(node)}, not an array: it has no index [{part}]"
            if part > len(node):
                return (f"{here} has {len(node)} entr{'y' if len(node) == 1 else 'ies'}: [{part}] is out of range "
                        f"([{len(node)}] appends one)")
            if part == len(node):
                node.append(value if last else empty)
            elif last:
                node[part] = value
        node = node[part]
    return None


def _kind(node: Any) -> str:
    if isinstance(node, dict):
        return "a table"
    return "an array" if isinstance(node, list) else f"a value ({_value(node)})"


def _key_text(parts: Key) -> str:
    """``["attack", 0, "eps"]`` -> ``attack[0].eps``, as grid errors print keys."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else ("." if text else "") + part
    return text


def override_text(text: str, specs: Sequence[str], path: Path) -> str:
    """The effective grid: the grid's text with the overrides applied, as TOML (``text`` unchanged
    where there are none; the overrides are listed in its first lines)."""
    if not specs:
        return text
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([(str(path), f"not valid TOML: {exc}")]) from None
    head = [f"# {path.name} with {len(specs)} override(s) from the command line (--set):",
            *(f"#   --set {CONTROL.sub(_escaped_char, s)}" for s in specs)]
    return "\n".join(head) + "\n\n" + render_toml(anchored(apply_overrides(raw, specs), path))


def anchored(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """``raw`` with the paths a grid gives relative to its own file (``[[model]] weights``) made absolute
    against ``path``: the effective grid is read from another folder (``<out>/grids/``)."""
    models = raw.get("model")
    for m in models if isinstance(models, list) else []:
        if isinstance(m, dict) and isinstance(m.get("weights"), str) and not Path(m["weights"]).is_absolute():
            m["weights"] = str((Path(path).parent / m["weights"]).resolve())
    return raw


def overridden_keys(specs: Sequence[str]) -> list[str]:
    """The keys the overrides set, as grid errors print them."""
    return [_key_text(parse_override(s)[1]) for s in specs]


def load_overridden(text: str, path: Path, plugins: Plugins, specs: Sequence[str]) -> Grid:
    """The grid of ``text`` (read from ``path``) with the overrides applied; problems at an
    overridden key say "(from --set)"."""
    from mtbench.grid import load_grid_text

    effective = override_text(text, specs, path)
    try:
        return load_grid_text(effective, path, plugins)
    except ConfigError as exc:
        raise mark_overridden(exc, path, specs) from None


def mark_overridden(exc: ConfigError, path: Path, specs: Sequence[str]) -> ConfigError:
    """The same problems, those at a key set by ``--set`` (or inside it) marked so: the file does not
    hold that value."""
    keys = overridden_keys(specs)

    def mark(loc: str) -> str:
        inner = loc.removeprefix(f"{path.name}: ")
        hit = any(inner == k or inner.startswith((k + ".", k + "[")) for k in keys)
        return f"{loc} (from --set)" if hit else loc
    return ConfigError([(mark(loc), msg) for loc, msg in exc.problems])


def write_effective_grid(text: str, path: Path, out: Path) -> Path:
    """The effective grid as a file for other workers: ``<out>/grids/<stem>-<hash>.toml`` (the same
    overrides give the same file, so a rerun reuses it)."""
    from mtbench.storage.files import write_text

    target = Path(out) / GRIDS / f"{path.stem}-{hashlib.sha256(text.encode()).hexdigest()[:12]}.toml"
    if not (target.is_file() and target.read_text() == text):
        target.parent.mkdir(parents=True, exist_ok=True)
        write_text(target, text, "the effective grid", ConfigError)
    return target


# --- a TOML writer for what tomllib reads: tables, arrays (of tables), strings, numbers, booleans, dates

def render_toml(doc: dict[str, Any]) -> str:
    """``doc`` as TOML that ``tomllib`` reads back equal: top-level values, then ``[table]`` and
    ``[[array of tables]]`` sections; anything deeper as inline tables and arrays."""
    lines = [f"{_key(k)} = {_value(v)}" for k, v in doc.items() if not _is_table(v) and not _is_table_array(v)]
    for k, v in doc.items():
        if _is_table(v):
            lines += ["", f"[{_key(k)}]", *(f"{_key(ik)} = {_value(iv)}" for ik, iv in v.items())]
        elif _is_table_array(v):
            for table in v:
                lines += ["", f"[[{_key(k)}]]", *(f"{_key(ik)} = {_value(iv)}" for ik, iv in table.items())]
    return "\n".join(lines).lstrip("\n") + "\n"


def _is_table(v: Any) -> bool:
    return isinstance(v, dict)


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _key(k: str) -> str:
    return k if BARE_KEY.fullmatch(k) else _escape(k)


def _escape(s: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's, and DEL must be escaped too."""
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def _escaped_char(found: re.Match) -> str:
    return f"\\u{ord(found[0]):04x}"


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")) if not math.isfinite(v) else repr(v)
    if isinstance(v, str):
        return _escape(v)
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"no TOML for {type(v).__name__}")
