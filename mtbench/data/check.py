"""``mtbench data check``: what a Taskonomy-layout folder holds and what is wrong with it.

A sample is expected to have every domain found anywhere in the folder (and rgb, which every
model reads): the loader fails on the first missing file, so the check lists them all up front.
Each problem names its file or folder whole.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mtbench.data.layout import DOMAINS, file_name, read_png
from mtbench.data.loader import SampleKey, scan
from mtbench.errors import DataError

LAYOUT = "<root>/<building>/<domain>/point_<P>_view_<V>_domain_<domain>.png"


@dataclass
class CheckResult:
    buildings: list[str] = field(default_factory=list)
    per_domain: Counter = field(default_factory=Counter)
    samples: int = 0
    problems: list[str] = field(default_factory=list)


def check_folder(root: Path, read_files: bool = True) -> CheckResult:
    """Index the folder and list missing files; with ``read_files`` also open every PNG and check format and size."""
    root = Path(root)
    index = scan(root)
    result = CheckResult(buildings=list(index))
    if not index:
        result.problems.append(f"{root}: no building folders (expected {LAYOUT})")
    expected = {"rgb"}.union(*(domains for samples in index.values() for domains in samples.values()))
    for building, samples in index.items():
        _check_building(root, building, samples, expected, read_files, result)
    return result


def _check_building(root: Path, building: str, samples: dict[SampleKey, set[str]], expected: set[str],
                    read_files: bool, result: CheckResult) -> None:
    """Count one building's samples into ``result`` and add its problems."""
    if not samples:
        result.problems.append(f"{root / building}: no sample files (expected {LAYOUT})")
    absent = expected.difference(*samples.values()) if samples else set()  # reported once per folder
    result.problems += [f"{root / building / domain}: no {domain} files (all {len(samples)} sample(s) of "
                        f"the building lack them)" for domain in sorted(absent)]
    for key, domains in samples.items():
        result.samples += 1
        result.per_domain.update(domains)
        result.problems += [f"{_path(root, key, domain)}: file missing (point {key.point} view {key.view} has "
                            "other domains)" for domain in sorted(expected - domains - absent)]
        if read_files:
            result.problems += _read_sample(root, key, domains)


def _path(root: Path, key: SampleKey, domain: str) -> Path:
    return root / key.building / domain / file_name(key.point, key.view, domain)


def _read_sample(root: Path, key: SampleKey, domains: set[str]) -> list[str]:
    """Problems of the sample's files: unreadable, wrong format, or a size unlike its other domains."""
    problems, shape = [], None
    for domain in sorted(d for d in domains if d in DOMAINS):
        path = _path(root, key, domain)
        try:
            arr = read_png(path, DOMAINS[domain])
        except DataError as exc:
            problems.append(str(exc))
            continue
        if shape is not None and arr.shape[:2] != shape:
            problems.append(f"{path}: size {arr.shape[1]}x{arr.shape[0]} differs from the sample's other domains")
        shape = shape or arr.shape[:2]
    return problems
