"""User and code text is printed as written: rich never reads ``[...]`` in it as markup.

Names, paths and messages here are full of brackets that rich would take as tags (``[bold]``,
``[/]``, ``[data]``): printed as markup they would crash the command or silently lose words.
"""

from __future__ import annotations

import io
import json
import textwrap

import pytest
from helpers import TINY_GRID, run_cli
from rich.console import Console

from mtbench.console import LiteralTable, say
from mtbench.report.render import Section, render

NAME = "[bold]x[/]"
TASKONOMY_GRID = """
[run]
name = "{name}"
device = "cpu"
[data]
dataset = "taskonomy"
root = "{root}"
[train]
encoders = ["resnet18"]
task_sets = ["s", "sd"]
epochs = 1
[[attack]]
name = "pgd-linf"
eps = ["8/255"]
"""


def lines(text: str) -> list[str]:
    return text.splitlines()


def has_line_with(text: str, *parts: str) -> bool:
    """True if one line holds every part: a message was printed whole, not wrapped over lines."""
    return any(all(p in line for p in parts) for line in lines(text))


def test_say_and_tables_are_literal():
    buf = io.StringIO()
    console = Console(file=buf, width=40)
    say(console, ("error:", "bold red"), " missing [data] root [/] " + "p" * 60)
    table = LiteralTable(title=NAME, caption="[first 5]")
    table.add_column("[c]")
    table.add_row("[red]y[/]")
    console.print(table)
    out = buf.getvalue()
    assert has_line_with(out, "error: missing [data] root [/] " + "p" * 60)
    assert all(s in out for s in (NAME, "[first 5]", "[c]", "[red]y[/]"))


def test_report_tables_are_literal():
    buf = io.StringIO()
    sections = [Section("Leaderboard [main]", [{"model [x]": "resnet18/[bold]s[/]", "v": 1.5}], note="[note]"),
                Section("Empty [/]", [])]
    render(sections, "table", Console(file=buf, width=200))
    out = buf.getvalue()
    assert all(s in out for s in ("Leaderboard [main]", "model [x]", "resnet18/[bold]s[/]", "[note]",
                                  "Empty [/]: nothing yet"))


def test_dry_run_shows_run_name_and_task_sets(write_grid, tmp_path):
    folder = tmp_path / "grids[red]"
    folder.mkdir()
    grid = write_grid(TINY_GRID.replace('name = "tiny"', f'name = "{NAME}"'), name="grids[red]/grid.toml")
    result = run_cli("run", str(grid), "--out", str(tmp_path / "out[1]"), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert f"{NAME}: 5 trials" in result.stdout
    assert "train resnet18 [s] uniform" in result.stdout and "train resnet18 [s+d] uniform" in result.stdout
    assert "on [d]" in result.stdout


def test_grid_path_with_brackets_is_named_whole(tmp_path):
    missing = tmp_path / ("g[bold]" + "x" * 120) / ("[/]" + "y" * 100) / "grid.toml"
    result = run_cli("run", str(missing))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert has_line_with(result.stderr, str(missing))


def test_error_mentioning_data_section_reads_literally(tmp_path):
    root = tmp_path / ("data[1]" + "d" * 200)
    root.mkdir()
    grid = tmp_path / "grid.toml"
    grid.write_text(TASKONOMY_GRID.format(name=NAME, root=root))
    result = run_cli("run", str(grid), "--out", str(tmp_path / "out[1]"))
    assert result.returncode in (1, 2) and "Traceback" not in result.stderr, result.stderr
    mentions = [line for line in lines(result.stderr) if "split file missing" in line]
    assert mentions and all(str(root / "splits.json") in line and "give [data] train_buildings" in line
                            for line in mentions), result.stderr
    if result.returncode == 1:  # found by the trials: each failure line names its trial as labelled
        assert has_line_with(result.stderr, "failed train resnet18 [s+d] uniform", "[data]")


def test_failed_trial_and_progress_are_literal(write_grid, tmp_path, plugins, monkeypatch):
    from mtbench import runner
    from mtbench.context import TrialContext
    from mtbench.grid import load_grid
    from mtbench.storage import Store

    def fail(config, trial_id, ctx):
        raise RuntimeError("bad value [/] in [data] root " + "z" * 150)

    monkeypatch.setattr(runner, "executor_for", lambda kind: fail)
    monkeypatch.setattr(TrialContext, "dataset_root", lambda self, data: tmp_path)
    grid = load_grid(write_grid(TINY_GRID.replace('name = "tiny"', f'name = "{NAME}"')), plugins)
    buf = io.StringIO()
    summary = runner.run_grid(grid, Store(f"sqlite:///{tmp_path / 'db'}"), tmp_path / "out", plugins,
                              Console(file=buf, width=80), export=False)
    out = buf.getvalue()
    assert len(summary.failed) == 5
    assert has_line_with(out, "failed train resnet18 [s+d] uniform", "bad value [/] in [data] root " + "z" * 150)
    assert "attack pgd-linf" in out or "train resnet18 [s" in out  # the progress bar's last description


def test_results_folder_with_brackets(tmp_path):
    out = tmp_path / "out[1]"
    out.mkdir()
    result = run_cli("export", "--out", str(out))  # no database yet: refused, the path named literally
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert has_line_with(result.stderr, str(out / "mtbench.db"))
    assert list(out.iterdir()) == [], "a reading command created something"
    report = run_cli("report", str(tmp_path / "none[/]"))
    assert report.returncode == 2 and "Traceback" not in report.stderr
    assert "none[/]" in report.stderr


def test_help_texts_are_literal():
    result = run_cli("report", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "[default: leaderboard + models]" in text and "[default: the most common one]" in text
    worker = " ".join(run_cli("worker", "--help").stdout.split())
    assert "[default: the latest run's grid in the database]" in worker


PLUGIN = '''
from mtbench import ObjectiveSpec, hookimpl

@hookimpl
def mtbench_register_objectives():
    return [ObjectiveSpec("[bold]loud[/]", lambda attacked, weights: None, description="[red]a [b] c")]
'''


def test_plugins_table_is_literal(tmp_path):
    site = tmp_path / "site"
    info = site / "mtbench_markup-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mtbench_markup\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[mtbench]\nmarkup = thirdparty_markup\n")
    (site / "thirdparty_markup.py").write_text(textwrap.dedent(PLUGIN))
    env = {"PYTHONPATH": str(site)}
    table = run_cli("plugins", env=env)
    assert table.returncode == 0, table.stderr
    assert has_line_with(table.stdout, "[bold]loud[/]", "mtbench_markup 1.0")
    rows = json.loads(run_cli("plugins", "--json", env=env).stdout)
    assert {"name": "[bold]loud[/]", "description": "[red]a [b] c"}.items() <= \
        next(r for r in rows if r["name"] == "[bold]loud[/]").items()


@pytest.mark.parametrize("markup", [False, True])
def test_has_line_with_can_fail(markup):
    """The helper that the tests above rely on tells a wrapped or mangled line from a whole one."""
    buf = io.StringIO()
    text = "[data] " + "w" * 100
    Console(file=buf, width=40).print(text, markup=markup)
    assert not has_line_with(buf.getvalue(), text)
