"""Plugin manager and registries: load entry points, validate what plugins return, look up by name.

Why not ``pm.load_setuptools_entrypoints``: pluggy silently skips a second entry point whose
name is already registered and lets an import error escape without saying which distribution
failed. We walk the entry points ourselves so both become clear messages.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

import pluggy

from mtbench import hookspecs
from mtbench.errors import PluginError
from mtbench.kinds import KINDS, Kind
from mtbench.specs import AttackSpec, DatasetSpec, DefenseSpec, EncoderSpec, ObjectiveSpec, TaskSpec

GROUP = "mtbench"

S = TypeVar("S")


@dataclass(frozen=True)
class Entry(Generic[S]):
    """A registered spec and the distribution that provided it."""

    spec: S
    provider: str


class Registry(Generic[S]):
    """Specs of one kind, sorted by name; unknown names get a "did you mean"."""

    def __init__(self, kind: str, entries: Iterable[Entry[S]]):
        self.kind = kind
        self._entries: dict[str, Entry[S]] = {}
        for entry in entries:
            name = entry.spec.name  # type: ignore[attr-defined]
            if name in self._entries:
                other = self._entries[name].provider
                raise PluginError(
                    f"two plugins register the {kind} {name!r}: {other!r} and {entry.provider!r}; "
                    f"uninstall one of them or rename its {kind}"
                )
            self._entries[name] = entry
        self._entries = dict(sorted(self._entries.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[S]]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def get(self, name: str) -> S:
        try:
            return self._entries[name].spec
        except KeyError:
            raise PluginError(self.unknown_message(name)) from None

    def provider(self, name: str) -> str:
        return self._entries[name].provider

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(str(name), self.names(), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        known = ", ".join(self.names()) or "none installed"
        return f"unknown {self.kind} {name!r}{hint} (known: {known})"


class TaskRegistry(Registry[TaskSpec]):
    """Tasks are also looked up by their one-letter code."""

    def __init__(self, entries: Iterable[Entry[TaskSpec]]):
        super().__init__("task", entries)
        self._by_code: dict[str, str] = {}
        for entry in self:
            code = entry.spec.code
            if code in self._by_code:
                other = self._by_code[code]
                raise PluginError(
                    f"tasks {other!r} ({self.provider(other)}) and {entry.spec.name!r} "
                    f"({entry.provider}) both use the code {code!r}"
                )
            self._by_code[code] = entry.spec.name

    def resolve(self, name_or_code: str) -> str:
        """Full task name for a name or one-letter code."""
        if name_or_code in self:
            return name_or_code
        if name_or_code in self._by_code:
            return self._by_code[name_or_code]
        raise PluginError(self.unknown_message(name_or_code))


@dataclass
class Plugins:
    """Everything registered: one registry per kind (named in :data:`mtbench.kinds.KINDS`), plus the
    distributions that were loaded."""

    encoders: Registry[EncoderSpec]
    tasks: TaskRegistry
    attacks: Registry[AttackSpec]
    objectives: Registry[ObjectiveSpec]
    datasets: Registry[DatasetSpec]
    defenses: Registry[DefenseSpec]
    distributions: dict[str, str]  # plugin name -> distribution

    def by_kind(self) -> dict[str, Registry[Any]]:
        """Kind name -> its registry, in the order of :data:`mtbench.kinds.KINDS`."""
        return {kind.name: getattr(self, kind.registry) for kind in KINDS}


def _distribution_name(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else f"entry point {ep.value}"


def make_plugin_manager(extra: Iterable[tuple[str, object]] = ()) -> tuple[pluggy.PluginManager, dict[str, str]]:
    """Load every ``mtbench`` entry point (plus ``extra`` (name, plugin) pairs, for tests)."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    providers: dict[str, str] = {}
    for ep in sorted(entry_points(group=GROUP), key=lambda e: (e.name, e.value)):
        dist = _distribution_name(ep)
        if ep.name in providers:
            raise PluginError(
                f"two distributions declare the mtbench entry point {ep.name!r}: {providers[ep.name]!r} and "
                f"{dist!r}; pluggy would silently ignore one of them. Rename the entry point in one "
                "pyproject.toml ([project.entry-points.mtbench])."
            )
        try:
            plugin = ep.load()
        except Exception as exc:  # any import-time failure of third-party code
            raise PluginError(
                f"the mtbench plugin {ep.name!r} from {dist!r} failed to import ({ep.value}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        _register(pm, plugin, ep.name, dist)
        providers[ep.name] = dist
    for name, plugin in extra:
        _register(pm, plugin, name, name)
        providers[name] = name
    return pm, providers


def _register(pm: pluggy.PluginManager, plugin: object, name: str, dist: str) -> None:
    try:
        pm.register(plugin, name=name)
        pm.check_pending()  # a hookimpl whose name matches no hook (a typo) fails here
    except pluggy.PluginValidationError as exc:
        pm.unregister(name=name)
        hooks = ", ".join(kind.hook for kind in KINDS)
        raise PluginError(f"the mtbench plugin {name!r} from {dist!r} is invalid: {exc}. "
                          f"Hook implementations must be named one of: {hooks}") from exc


def _collect(pm: pluggy.PluginManager, providers: dict[str, str], kind: Kind) -> list[Entry[Any]]:
    hook_name, spec_type = kind.hook, kind.spec
    entries: list[Entry[Any]] = []
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        provider = providers.get(impl.plugin_name, impl.plugin_name)
        try:
            specs = impl.function()
        except Exception as exc:
            hint = (f"; the fields of mtbench.{spec_type.__name__} are listed in docs/hooks.md"
                    if isinstance(exc, TypeError) else "")
            raise PluginError(f"{hook_name} of {provider!r} raised {type(exc).__name__}: {exc}{hint}") from exc
        for spec in specs or ():
            if not isinstance(spec, spec_type):
                raise PluginError(
                    f"{hook_name} of {provider!r} returned {type(spec).__name__}, expected "
                    f"mtbench.{spec_type.__name__}"
                )
            missing = [f.name for f in dataclasses.fields(spec) if getattr(spec, f.name) is None
                       and f.default is dataclasses.MISSING]
            if missing:
                raise PluginError(f"{kind.name} spec {getattr(spec, 'name', '?')!r} from {provider!r} lacks {missing}")
            entries.append(Entry(spec, provider))
    return entries


def load_plugins(extra: Iterable[tuple[str, object]] = ()) -> Plugins:
    """Load and validate every installed plugin (uncached: use :func:`get_plugins` normally)."""
    pm, providers = make_plugin_manager(extra)
    registries: dict[str, Registry[Any]] = {kind.registry: Registry(kind.name, _collect(pm, providers, kind))
                                            for kind in KINDS}
    registries["tasks"] = TaskRegistry(registries["tasks"])  # tasks are also looked up by their code
    return Plugins(**registries, distributions=providers)


@functools.cache
def get_plugins() -> Plugins:
    """The process-wide plugin set, loaded once."""
    return load_plugins()
