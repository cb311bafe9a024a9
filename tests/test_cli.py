"""The CLI stays thin: its functions are short (the work is in the library), and every command's
help still loads."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import mtbench.cli

CLI = Path(mtbench.cli.__file__).parent
MAX_LINES = 40
COMMANDS = ["run", "worker", "plugins", "report", "claims", "advise", "export", "data", "data synth", "data check",
            "data show", "models", "models info"]


def functions(path: Path) -> list[ast.FunctionDef]:
    return [node for node in ast.walk(ast.parse(path.read_text(), str(path)))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


@pytest.mark.parametrize("module", sorted(p.name for p in CLI.glob("*.py")))
def test_no_cli_function_is_over_40_lines(module):
    """Counted from the ``def`` (or its first decorator) to its last line, signature included."""
    long = {f.name: f.end_lineno - min([f.lineno] + [d.lineno for d in f.decorator_list]) + 1
            for f in functions(CLI / module)}
    assert {name: n for name, n in long.items() if n > MAX_LINES} == {}


def test_the_check_counts_lines(tmp_path):
    """The measure above sees a long function (a check that passes everything would prove nothing)."""
    source = tmp_path / "long.py"
    source.write_text("@decorated\ndef f():\n" + "    pass\n" * MAX_LINES)
    (f,) = functions(source)
    assert f.end_lineno - f.decorator_list[0].lineno + 1 == MAX_LINES + 2


def test_every_command_is_registered():
    from typer.main import get_command

    group = get_command(mtbench.cli.app)
    assert sorted(group.commands) == sorted(c for c in COMMANDS if " " not in c)
    assert sorted(group.commands["data"].commands) == ["check", "show", "synth"]
    assert sorted(group.commands["models"].commands) == ["info"]


@pytest.mark.parametrize("command", [""] + COMMANDS)
def test_help_works(command):
    result = CliRunner().invoke(mtbench.cli.app, [*command.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_python_m_mtbench_cli_starts_workers():
    """Helper workers are started as ``python -m mtbench.cli worker ...`` (:mod:`mtbench.workers`)."""
    result = subprocess.run([sys.executable, "-m", "mtbench.cli", "worker", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "Join a grid" in result.stdout, result.stderr


def test_version_prints_the_installed_version_without_importing_torch():
    code = ("import sys; sys.argv = ['mtbench', '--version']\nfrom mtbench.cli import main\ntry:\n    main()\n"
            "except SystemExit as exc:\n    assert exc.code in (0, None), exc.code\nprint('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"mtbench {mtbench.__version__}", "False"]


def help_text(command: str) -> str:
    """A command's --help on one line (wrapping may split a ``[default: ...]``)."""
    result = CliRunner().invoke(mtbench.cli.app, [*command.split(), "--help"], prog_name="mtbench")
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_every_default_shows_in_help():
    """Each option with a default (not None, not an off flag) says it in --help."""
    import inspect
    from enum import Enum

    from mtbench.cli import advise, data, models, plugins, report, run

    commands = {"run": run.run, "worker": run.worker, "report": report.report, "claims": report.claims,
                "advise": advise.advise, "export": report.export, "plugins": plugins.plugins, "data synth": data.synth,
                "data check": data.check, "data show": data.show, "models info": models.info}
    checked = 0
    for command, function in commands.items():
        text = help_text(command)
        for p in inspect.signature(function).parameters.values():
            if p.default in (None, False, inspect.Parameter.empty):
                continue
            shown = p.default.value if isinstance(p.default, Enum) else p.default
            assert f"[default: {shown}]" in text or f"[default: {shown};" in text, (command, p.name)
            checked += 1
    assert checked >= 20


@pytest.mark.parametrize("command, option, choices", [
    ("run", "--format", "table|json"), ("run", "--executor", "slurm|local"),
    ("report", "--format", "table|markdown|csv|json|html"),
    ("report", "--metric", "rel_vuln_ratio_of_means|rel_vuln_mean_of_ratios|delta_loss|error_adv"),
    ("report", "--sort", "v|std|adv_err|clean_err|const_err|params_M|MACs_G|epochs|steps|seeds|model"),
    ("report", "--view", "leaderboard|models|attacks|paper|advice|theory|claims|defenses|all"),
    ("claims", "--format", "table|markdown|csv|json|html"), ("advise", "--proxy", "surrogate|early-stop|clean"),
])
def test_fixed_choices_show_in_help_and_others_are_refused(command, option, choices):
    text = help_text(command)
    assert f"{option} <{choices}>" in text or f"{option} <list[{choices}]>" in text  # --view is repeatable
    args = {"run": ["grid.toml"], "advise": ["--main", "s", "--candidates", "d"]}.get(command, [])
    wrong = CliRunner().invoke(mtbench.cli.app, [command, *args, option, "nonsense"])
    assert wrong.exit_code == 2 and f"'{option}'" in wrong.output and "'nonsense' is not one of" in wrong.output


def test_cli_choices_are_the_library_s():
    """Lists the CLI keeps (the library's modules are too heavy to load for --help) match the library's."""
    from mtbench.advise import PROXIES
    from mtbench.cli.advise import Proxy
    from mtbench.cli.report import Metric
    from mtbench.report.leaderboard import VULNERABILITY_METRICS

    assert [p.value for p in Proxy] == list(PROXIES)
    assert [m.value for m in Metric] == list(VULNERABILITY_METRICS)


def test_shell_completion_completes_choices_without_torch():
    """`mtbench --install-completion` installs what this protocol answers: the choices of an option."""
    code = ("import sys\nfrom mtbench.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, file=sys.stderr)")
    env = {**os.environ, "_MTBENCH_COMPLETE": "complete_bash", "COMP_WORDS": "mtbench report --format ",
           "COMP_CWORD": "3"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.stdout.split() == ["table", "markdown", "csv", "json", "html"], done
    assert done.stderr.strip() == "False"
    shown = subprocess.run([sys.executable, "-m", "mtbench.cli", "--show-completion", "bash"], capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0 and "_MTBENCH_COMPLETE=complete_bash" in shown.stdout, shown.stderr
    assert "--install-completion" in help_text("")
