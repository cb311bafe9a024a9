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
