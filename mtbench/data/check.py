"""``mtbench data check``: what a Taskonomy-layout folder holds and what is wrong with it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mtbench.data.layout import DOMAINS, file_name, read_png
from mtbench.data.loader import scan
from mtbench.errors import DataError


@dataclass
class CheckResult:
    buildings: list[str] = field(default_factory=list)
    per_domain: Counter = field(default_factory=Counter)
    samples: int = 0
    problems: list[str] = field(default_factory=list)


def check_folder(root: Path, read_files: bool = True) -> CheckResult:
    """Index the folder; with ``read_files`` also open every PNG and check format and size."""
    index = scan(Path(root))
    result = CheckResult(buildings=list(index))
    for building, samples in index.items():
        for key, domains in samples.items():
            result.samples += 1
            result.per_domain.update(domains)
            if "rgb" not in domains:
                result.problems.append(f"{Path(root) / building}: point {key.point} view {key.view} has no rgb")
            shape = None
            for domain in sorted(domains):
                if not read_files or domain not in DOMAINS:
                    continue
                path = Path(root) / building / domain / file_name(key.point, key.view, domain)
                try:
                    arr = read_png(path, DOMAINS[domain])
                except DataError as exc:
                    result.problems.append(str(exc))
                    continue
                if shape is not None and arr.shape[:2] != shape:
                    result.problems.append(f"{path}: size {arr.shape[1]}x{arr.shape[0]} differs from the sample's other domains")
                shape = shape or arr.shape[:2]
    return result
