"""The docs cannot drift: generated pages match the code, and the guide's examples run and pass the kit."""

from __future__ import annotations

import re
import tomllib

import torch
from helpers import REPO

from mtbench import docgen
from mtbench.settings import GridModel


def test_generated_pages_are_up_to_date():
    assert docgen.main(["--check"]) == 0, "run `python -m mtbench.docgen` and commit docs/"


def test_grid_reference_lists_every_key():
    text = (REPO / "docs" / "grid.md").read_text()
    for _, section in docgen.GRID_SECTIONS:
        for key in section.model_fields:
            assert f"| `{key}` |" in text


def test_plugin_guide_examples_run_and_pass_the_kit():
    guide = (REPO / "docs" / "plugins.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", guide, re.S)
    assert len(blocks) >= 6
    namespace: dict = {}
    for block in blocks:  # in order, as a reader would paste them; the last one runs the checks
        exec(compile(block, "docs/plugins.md", "exec"), namespace)
    objective = namespace["MAX"].make(("a", "b"), None)
    assert torch.equal(objective({"a": torch.tensor([1.0, 5.0]), "b": torch.tensor([2.0, 3.0])}),
                       torch.tensor([2.0, 5.0]))


def test_readme_grid_examples_are_valid():
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", readme, re.S)
    assert blocks
    for block in blocks:  # a whole grid, or tables to add to one
        GridModel.model_validate({"train": {"encoders": ["resnet18"], "task_sets": ["s"]}, **tomllib.loads(block)})


def test_the_licence_file_and_the_citation_match_the_package():
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"]["text"]
    assert (REPO / "LICENSE").read_text().splitlines()[0] == f"{declared} License"
    citation = (REPO / "CITATION.cff").read_text()
    assert f"license: {declared}" in citation and 'doi: "10.1609/aaai.v36i1.19950"' in citation
    assert "Adversarial Robustness in Multi-Task Learning: Promises and Illusions" in citation


def test_every_docs_page_is_in_the_index():
    index = (REPO / "docs" / "README.md").read_text()
    assert all(f"]({page.name})" in index for page in (REPO / "docs").glob("*.md") if page.name != "README.md")


def _python_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / "docs" / page).read_text(), re.S)


def test_api_and_results_examples_run_as_written(tmp_path):
    """docs/api.md's examples in order in a fresh folder, then docs/results.md's recipes (pandas, polars,
    DuckDB, the raw join, a checkpoint) on the results they made."""
    import os
    import subprocess
    import sys

    api, results = _python_blocks("api.md"), _python_blocks("results.md")
    assert len(api) == 3 and len(results) == 5
    script = "\n".join(api) + "\nimport os\nos.symlink('results-api', 'results')\n" + "\n".join(results)
    ran = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"}, timeout=900)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    out = ran.stdout
    assert "5 trials run, 0 failed" in out  # 2 models, 3 attacks (d on d; s and d on sd)
    assert "max |delta| = 8.00/255" in out
    assert "rel_vuln" in out and "trials" in out and "error" in out
    assert "{'segment_semantic': (1, 17, 32, 32), 'depth_zbuffer': (1, 1, 32, 32)}" in out or \
        "{'depth_zbuffer': (1, 1, 32, 32)}" in out


def test_the_task_code_table_matches_the_built_in_tasks(plugins):
    text = (REPO / "docs" / "results.md").read_text()
    for name in plugins.tasks.names():
        task = plugins.tasks.get(name)
        if plugins.tasks.provider(name).startswith("mtbench"):
            error = "1 - mIoU" if task.error_metric == "error" else task.error_metric.upper()
            assert f"| {task.code} | {name} | {error} |" in text
