"""The CLI stays thin: its functions are short (the work is in the library), and every command's
help still loads."""

from __future__ import annotations

import ast
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
