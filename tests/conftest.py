"""Shared fixtures: the real plugin set, a small synthetic dataset on disk, grid writers."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from helpers import TINY_GRID, run_cli

from mtbench.data.synthetic import SynthConfig, generate
from mtbench.plugins import get_plugins


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory) -> Path:
    """The tests' own user cache folder: the step times a dry-run measures (mtbench.calibrate) go
    there, shared by the session's tests, never into the cache of the user who runs them."""
    folder = tmp_path_factory.mktemp("cache")
    os.environ["XDG_CACHE_HOME"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def plugins():
    return get_plugins()


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """16 train + 8 test samples at 32 px, in the official layout."""
    root = tmp_path_factory.mktemp("synth") / "data"
    generate(root, SynthConfig(size=32, train=16, test=8, seed=0, samples_per_building=8), workers=1)
    return root


@pytest.fixture
def write_grid(tmp_path):
    def write(text: str = TINY_GRID, name: str = "grid.toml", **fmt) -> Path:
        fmt.setdefault("task_sets", '["s", "sd"]')
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).format(**fmt) if fmt else text)
        return path
    return write


def _postgres_bin() -> Path | None:
    """Where initdb and pg_ctl are: on PATH, or Debian's /usr/lib/postgresql/<version>/bin."""
    import shutil

    if shutil.which("initdb") and shutil.which("pg_ctl"):
        return Path(shutil.which("initdb")).parent
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server in a temp dir (unix socket, no TCP), for this test session.

    Skipped where PostgreSQL is not installed, unless MTBENCH_REQUIRE_POSTGRES is set (as .ci/run
    does after installing Debian's package): then its absence is an error."""
    import getpass
    import shutil

    bin_dir = _postgres_bin()
    if bin_dir is None:
        if os.environ.get("MTBENCH_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL is required (MTBENCH_REQUIRE_POSTGRES) but initdb/pg_ctl were not found")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="mtbench-pg-"))  # not under pytest's 0700 folder: postgres must enter
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: use its own system user
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
    user = "postgres" if as_user else getpass.getuser()
    port = 5432 + os.getpid() % 1000
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", user, "-A", "trust"], check=True,
                   capture_output=True)
    subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"), "-o",
                    f"-k {sock} -p {port} -c listen_addresses=''", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://{user}@/postgres?host={sock}&port={port}"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """The same test on a SQLite file and on a real PostgreSQL database (a fresh schema each time)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mtbench.db'}"
        return
    url = request.getfixturevalue("postgres_url")
    from sqlalchemy import create_engine

    engine = create_engine(url)
    from mtbench.storage.schema import metadata

    metadata.drop_all(engine)
    engine.dispose()
    yield url


REAL_GRID = """
[run]
name = "real-tiny"
seed = 0
device = "cpu"

[data]
dataset = "synthetic"
image_size = 32
train_samples = 8
test_samples = 4

[train]
encoders = ["resnet18"]
task_sets = ["d", "ds"]
epochs = 1
batch_size = 4
seeds = [0, 1]
lr = 0.01  # one epoch moves the outputs enough for a 2-step attack to find something

[[attack]]
name = "pgd-linf"
eps = ["8/255"]
steps = 2
targets = [["d"], ["d", "s"]]
step_size = "8/255"
"""
"""Two seeds of depth alone and depth + segmentation, attacked on depth alone and (d+s) on both
tasks: seed averaging, the single- and multi-task threats and the claims that pair them all get
real trials."""


@pytest.fixture(scope="session")
def real_results(tmp_path_factory) -> Path:
    """A results folder written by real tiny trials of ``REAL_GRID`` (run once per session, about
    40 s on 2 cores), so report and claims tests read what training and attacks really store."""
    root = tmp_path_factory.mktemp("real")
    (root / "grid.toml").write_text(REAL_GRID)
    result = run_cli("run", str(root / "grid.toml"), "--out", str(root / "results"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return root / "results"
