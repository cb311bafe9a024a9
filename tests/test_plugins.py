"""The plugin core: entry-point loading, registries, clear failures for broken plugins."""

from __future__ import annotations

import dataclasses
import json
import sys
import textwrap
import typing
from pathlib import Path

import pytest
from helpers import TINY_GRID, run_cli

from mtbench import hookspecs
from mtbench.defaults import PAPER_ATTACK, check_defaults
from mtbench.errors import PluginError
from mtbench.kinds import KINDS
from mtbench.plugins import Entry, Plugins, Registry, load_plugins
from mtbench.specs import ObjectiveSpec


def test_builtins_register_everything(plugins):
    assert plugins.encoders.names() == ["resnet152", "resnet152_unet", "resnet18", "resnet18_unet", "resnet50",
                                        "resnet50_unet", "wide_resnet50_2", "wide_resnet50_2_unet", "xception"]
    assert sorted(s.spec.code for s in plugins.tasks) == sorted("sdDnkKeEprA")
    assert {"pgd-linf", "pgd-l2", "fgsm"} <= set(plugins.attacks.names())
    assert {"single", "sum", "mean", "weighted"} <= set(plugins.objectives.names())
    assert {"synthetic", "taskonomy"} <= set(plugins.datasets.names())
    assert all(e.provider.startswith("mtbench ") for e in plugins.encoders)


def test_registry_sorts_and_suggests():
    make = lambda n: Entry(ObjectiveSpec(n, lambda a, w: None), "dist-a")  # noqa: E731
    reg = Registry("objective", [make("sum"), make("mean"), make("single")])
    assert reg.names() == ["mean", "single", "sum"]
    with pytest.raises(PluginError, match="did you mean 'sum'"):
        reg.get("summ")


def test_duplicate_names_name_both_providers():
    a = Entry(ObjectiveSpec("sum", lambda a, w: None), "dist-a 1.0")
    b = Entry(ObjectiveSpec("sum", lambda a, w: None), "dist-b 2.0")
    with pytest.raises(PluginError, match="dist-a 1.0.*dist-b 2.0"):
        Registry("objective", [a, b])


def test_task_codes_resolve(plugins):
    assert plugins.tasks.resolve("s") == "segment_semantic"
    assert plugins.tasks.resolve("normal") == "normal"
    with pytest.raises(PluginError, match="unknown task 'normals'; did you mean 'normal'"):
        plugins.tasks.resolve("normals")


def _fake_distribution(site: Path, dist: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    """A real installed distribution as importlib.metadata sees it: a dist-info folder on sys.path."""
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = ["[mtbench]"] + [f"{k} = {v}" for k, v in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for name, source in modules.items():
        (site / f"{name}.py").write_text(textwrap.dedent(source))


PLUGIN = """
from mtbench import ObjectiveSpec, hookimpl

@hookimpl
def mtbench_register_objectives():
    return [ObjectiveSpec("{name}", lambda attacked, weights: None, description="from a test plugin")]
"""


@pytest.fixture
def site(tmp_path, monkeypatch):
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    yield path
    for mod in [m for m in sys.modules if m.startswith("thirdparty_")]:
        del sys.modules[mod]


def test_third_party_entry_point_is_loaded(site):
    _fake_distribution(site, "mtbench_extra", {"extra": "thirdparty_extra"},
                       {"thirdparty_extra": PLUGIN.format(name="max-loss")})
    p = load_plugins()
    assert "max-loss" in p.objectives
    assert p.objectives.provider("max-loss") == "mtbench_extra 1.0"


def test_entry_point_name_clash_is_detected(site):
    _fake_distribution(site, "mtbench_clash", {"tasks": "thirdparty_clash"},
                       {"thirdparty_clash": PLUGIN.format(name="other")})
    with pytest.raises(PluginError, match="entry point 'tasks'.*mtbench_clash 1.0"):
        load_plugins()


def test_spec_name_clash_with_builtin(site):
    _fake_distribution(site, "mtbench_dup", {"dup": "thirdparty_dup"}, {"thirdparty_dup": PLUGIN.format(name="sum")})
    with pytest.raises(PluginError, match="objective 'sum'.*mtbench 0.*mtbench_dup 1.0"):
        load_plugins()


def test_import_failure_names_distribution(site):
    _fake_distribution(site, "mtbench_broken", {"broken": "thirdparty_broken"},
                       {"thirdparty_broken": "import does_not_exist_anywhere\n"})
    with pytest.raises(PluginError, match="'broken' from 'mtbench_broken 1.0' failed to import"):
        load_plugins()


def test_typo_in_hook_name_is_reported(site):
    source = "from mtbench import hookimpl\n\n@hookimpl\ndef mtbench_register_attack():\n    return []\n"
    _fake_distribution(site, "mtbench_typo", {"typo": "thirdparty_typo"}, {"thirdparty_typo": source})
    with pytest.raises(PluginError, match="mtbench_typo 1.0.*invalid.*mtbench_register_attack.*must be named one of"):
        load_plugins()


def test_spec_missing_a_field_is_reported(site):
    source = ("from mtbench import AttackSpec, hookimpl\n\n@hookimpl\ndef mtbench_register_attacks():\n"
              "    return [AttackSpec(name='half', norm='linf')]\n")
    _fake_distribution(site, "mtbench_half", {"half": "thirdparty_half"}, {"thirdparty_half": source})
    with pytest.raises(PluginError, match="mtbench_half 1.0.*TypeError.*'run'.*docs/hooks.md"):
        load_plugins()


def test_wrong_spec_type_is_reported(site):
    source = "from mtbench import hookimpl\n\n@hookimpl\ndef mtbench_register_attacks():\n    return ['pgd']\n"
    _fake_distribution(site, "mtbench_wrong", {"wrong": "thirdparty_wrong"}, {"thirdparty_wrong": source})
    with pytest.raises(PluginError, match="mtbench_wrong 1.0.*returned str, expected mtbench.AttackSpec"):
        load_plugins()


def test_plugins_command_lists_items_with_providers():
    result = run_cli("plugins", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    tasks = {r["name"]: r for r in rows if r["kind"] == "task"}
    assert len(tasks) == 11 and "code s, 17 ch" in tasks["segment_semantic"]["details"]
    assert {r["kind"] for r in rows} == {"encoder", "task", "attack", "objective", "dataset", "defense"}
    assert {r["name"] for r in rows if r["kind"] == "defense"} >= {"none", "pgd-at", "gat"}
    assert all(r["provider"].startswith("mtbench") for r in rows)
    table = run_cli("plugins")
    assert table.returncode == 0 and "wide_resnet50_2" in table.stdout


def test_kinds_table_matches_hooks_and_registries(plugins):
    hooks = {name: fn for name, fn in vars(hookspecs).items() if name.startswith("mtbench_")}
    assert sorted(hooks) == sorted(kind.hook for kind in KINDS)
    for kind in KINDS:  # each hook returns a list of the kind's spec, held by the registry the table names
        assert typing.get_type_hints(hooks[kind.hook])["return"] == list[kind.spec], kind.name
        assert all(isinstance(entry.spec, kind.spec) for entry in getattr(plugins, kind.registry)), kind.name
    assert [f.name for f in dataclasses.fields(Plugins)] == [kind.registry for kind in KINDS] + ["distributions"]
    assert list(plugins.by_kind()) == [kind.name for kind in KINDS]


def _without_paper_attack(plugins: Plugins) -> Plugins:
    kept = [entry for entry in plugins.attacks if entry.spec.name != PAPER_ATTACK]
    return dataclasses.replace(plugins, attacks=Registry("attack", kept))


def test_a_plugin_set_without_the_builtin_attack_is_refused_before_any_work(plugins, tmp_path):
    from mtbench.grid import load_grid_text
    from mtbench.runner import run_grid
    from mtbench.storage import Store

    check_defaults(plugins)  # the built-ins provide every default
    partial = _without_paper_attack(plugins)
    with pytest.raises(PluginError, match=f"defaults of mtbench need attack '{PAPER_ATTACK}'.*reinstall"):
        check_defaults(partial)
    grid = load_grid_text(TINY_GRID.format(task_sets='["d"]').replace(f'"{PAPER_ATTACK}"', '"fgsm"'),
                          tmp_path / "grid.toml", partial)  # a grid that names only installed plugins
    out = tmp_path / "out"
    with pytest.raises(PluginError, match=f"attack '{PAPER_ATTACK}'"):
        run_grid(grid, Store(f"sqlite:///{tmp_path / 'db'}"), out, partial, export=False)
    assert not out.exists()
