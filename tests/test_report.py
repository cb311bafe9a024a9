"""Reports on a database of known values: rankings, the paper's matrices, formats, plots, HTML."""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import shutil
import sqlite3
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from helpers import run_cli

from mtbench.defaults import WGD_OBJECTIVE
from mtbench.errors import MtbenchError
from mtbench.report import Filters, leaderboard, load_frames, paper
from mtbench.storage import Store, export_parquet
from mtbench.storage.fixture import ResultsWriter

S, D, DE = "segment_semantic", "depth_zbuffer", "depth_euclidean"


@pytest.fixture
def known_db(tmp_path) -> Path:
    """s alone, s+d (two seeds), s+D and d alone, attacked with pgd-linf 8/255 (and a few more)."""
    out = tmp_path / "results"
    store = Store(f"sqlite:///{out / 'mtbench.db'}")
    w = ResultsWriter(store)
    s = w.add_model({"s": S}, {"s": 0.5}, const_err={"s": 0.6})
    sd0 = w.add_model({"s": S, "d": D}, {"s": 0.4, "d": 0.01}, seed=0)
    sd1 = w.add_model({"s": S, "d": D}, {"s": 0.42, "d": 0.011}, seed=1)
    sD = w.add_model({"s": S, "D": DE}, {"s": 0.45, "D": 0.02}, parameters=15_000_000)
    d = w.add_model({"d": D}, {"d": 0.01})
    w.add_attack(s, "s", {S: 0.8}, trace={S: [0.5, 0.7, 0.9]})
    w.add_attack(sd0, "s", {S: 0.6, D: 0.1})
    w.add_attack(sd1, "s", {S: 0.7, D: 0.2})
    w.add_attack(sd0, "d", {S: 0.05, D: 1.5})
    w.add_attack(sd0, "sd", {S: 0.3, D: 1.2}, trace={S: [0.4, 0.5, 0.52], D: [0.01, 0.02, 0.022]})
    w.add_attack(sD, "s", {S: 0.9, DE: 0.1}, suspect=True)
    w.add_attack(d, "d", {D: 2.0})
    w.add_attack(s, "s", {S: 0.3}, eps=4 / 255)
    w.add_attack(s, "s", {S: 0.2}, attack="pgd-l2", eps=0.5)
    w.add_attack(sd0, "sd", {S: 0.5, D: 1.4}, attack="apgd-linf")
    w.add_attack(sd0, "sd", {S: 0.45, D: 1.3}, objective=WGD_OBJECTIVE)
    w.flush()
    export_parquet(store, out / "parquet")
    return out


def test_leaderboard_ranks_within_each_main_task(known_db):
    section = leaderboard.leaderboard(load_frames(str(known_db)), Filters())
    assert "pgd-linf eps=8/255" in section.title  # the most common attack, its largest eps
    ranked = [(r["main"], r["rank"], r["model"]) for r in section.rows]
    assert ranked == [("d", 1, "resnet18/d/uniform"), ("s", 1, "resnet18/sd/uniform"),
                      ("s", 2, "resnet18/s/uniform"), ("s", 3, "resnet18/sD/uniform")]
    sd = section.rows[1]
    assert sd["seeds"] == 2 and sd["v"] == pytest.approx(0.65) and sd["std"] == pytest.approx(0.0707, abs=1e-4)
    assert sd["clean_err"] == pytest.approx(0.41)
    assert section.rows[3]["suspect"] is True and section.rows[3]["params_M"] == 15.0
    by_clean = leaderboard.leaderboard(load_frames(str(known_db)), Filters(sort="clean_err"))
    assert [r["model"] for r in by_clean.rows if r["main"] == "s"][0] == "resnet18/sd/uniform"
    multi = leaderboard.leaderboard(load_frames(str(known_db)), Filters(targets="all"))
    assert {r["model"]: r["v"] for r in multi.rows} == {
        "resnet18/s/uniform": 0.8, "resnet18/sd/uniform": 0.3, "resnet18/d/uniform": 2.0}


def test_filters(known_db):
    frames = load_frames(str(known_db))
    l2 = leaderboard.leaderboard(frames, Filters(attack="pgd-l2"))
    assert [(r["model"], r["v"]) for r in l2.rows] == [("resnet18/s/uniform", 0.2)]
    low = leaderboard.leaderboard(frames, Filters(attack="pgd-linf", eps=4 / 255))
    assert [(r["model"], r["v"]) for r in low.rows] == [("resnet18/s/uniform", 0.3)]
    only_d = leaderboard.model_rows(frames, Filters(task="d"))
    assert [r["model"] for r in only_d.rows] == ["resnet18/d/uniform", "resnet18/sd/uniform", "resnet18/sd/uniform"]
    assert leaderboard.attack_rows(frames, Filters(encoder="xception")).rows == []


def test_table1_matrix_with_paper_numbers(known_db):
    """The made-up trials are ResNet18 uniform under pgd-linf 8/255, but not S1 (default 64 px synthetic
    data, 10 epochs, Adam, 10 steps): the paper's figure stays out, the footnote says what differs;
    --compare-paper forces it in, labelled (before: '0.8 (paper 0.82)' from encoder, attack and eps alone)."""
    sections = paper.table1(load_frames(str(known_db)), Filters())
    single = next(s for s in sections if "uniform weighting, single" in s.title)
    assert single.title.startswith("Table 1 (resnet18, uniform weighting"), "the encoder is named: its setting"
    assert [r["main"] for r in single.rows] == ["d", "s"]
    row = single.rows[1]
    assert row["-"] == 0.8 and row["d"] == pytest.approx(0.65) and row["D"] == 0.9
    assert "the paper's figures are not shown: " in single.note and "differ from S1" in single.note
    for part in ("data.dataset=synthetic", "data.image_size=64", "epochs=10", "steps=10", "optimizer=adam"):
        assert part in single.note
    forced = paper.table1(load_frames(str(known_db)), Filters(compare_paper=True))
    single = next(s for s in forced if "uniform weighting, single" in s.title)
    assert single.rows[1]["-"] == "0.8 (paper 0.82, forced)"  # ours, beside the shipped reference for ResNet18
    assert single.rows[1]["d"].startswith("0.65 (paper 0.86, forced)") and "FORCED by --compare-paper" in single.note
    multi = next(s for s in forced if "uniform weighting, multi" in s.title)
    assert multi.rows[1]["d"].startswith("0.3 (paper 0.85, forced)")


def test_table2_and_per_encoder(known_db):
    frames = load_frames(str(known_db))
    (t2,) = paper.table2(frames, Filters())
    row = next(r for r in t2.rows if r["main"] == "s" and r["aux"] == "d")
    wgd = f"pgd-linf/{WGD_OBJECTIVE}"
    assert row["pgd-linf/sum"] == 0.3 and row["apgd-linf/sum"] == 0.5 and row[wgd] == 0.45  # not S1's setting
    assert "differ from S1" in t2.note
    (forced,) = paper.table2(frames, Filters(compare_paper=True))
    row = next(r for r in forced.rows if r["main"] == "s" and r["aux"] == "d")
    assert row["apgd-linf/sum"].startswith("0.5 (paper") and row[wgd].startswith("0.45 (paper")
    (enc,) = paper.per_encoder(frames, Filters())
    # seed 0 was attacked on s and on s+d, seed 1 on s only: each row's numbers come from the same
    # trained models (before: seed 0's clean error beside seed 1's v_single, in one row)
    sd = [(r["seeds"], r["clean_err"], r["v_single"], r["v_multi"]) for r in enc.rows if r["tasks"] == "sd"]
    assert sd == [(1, 0.4, 0.6, 0.3), (1, 0.42, 0.7, None)]


@pytest.fixture
def two_settings_db(tmp_path) -> Path:
    """s+d on resnet18 (two seeds, 10 epochs; one seed at 20 epochs) and on resnet50, attacked on s,
    on s+d and (10 epochs) with apgd-linf: one setting's seeds to average, others not to mix in."""
    store = Store(f"sqlite:///{tmp_path / 'mtbench.db'}")
    w = ResultsWriter(store)
    for seed, (clean, single, multi, apgd) in enumerate([(0.4, 0.6, 0.3, 0.5), (0.42, 0.7, 0.5, 0.7)]):
        sd = w.add_model({"s": S, "d": D}, {"s": clean, "d": 0.01}, seed=seed)
        w.add_attack(sd, "s", {S: single, D: 0.1}, seed=seed)
        w.add_attack(sd, "sd", {S: multi, D: 1.0}, seed=seed)
        w.add_attack(sd, "sd", {S: apgd, D: 1.0}, attack="apgd-linf", seed=seed)
    long = w.add_model({"s": S, "d": D}, {"s": 0.2, "d": 0.01}, epochs=20)
    w.add_attack(long, "s", {S: 0.1, D: 0.1})
    w.add_attack(long, "sd", {S: 0.05, D: 0.1})
    big = w.add_model({"s": S, "d": D}, {"s": 0.3, "d": 0.01}, encoder="resnet50")
    w.add_attack(big, "s", {S: 0.9, D: 0.1})
    w.flush()
    return tmp_path


def test_paper_tables_average_seeds_of_one_setting_only(two_settings_db):
    frames = load_frames(str(two_settings_db))
    enc = {s.title.split(":")[0]: s for s in paper.per_encoder(frames, Filters())}
    assert list(enc) == ["resnet18", "resnet50"]
    rows = [(r["model"], r["seeds"], r["clean_err"], r["v_single"], r["v_multi"]) for r in enc["resnet18"].rows]
    assert rows == [("resnet18/sd/uniform (epochs=10)", 2, pytest.approx(0.41), pytest.approx(0.65), 0.4),
                    ("resnet18/sd/uniform (epochs=20)", 1, 0.2, 0.1, 0.05)]
    single = [s for s in paper.table1(frames, Filters()) if "uniform weighting, single" in s.title]
    cells = sorted((s.title.split("[")[-1], s.rows[0]["d"]) for s in single)  # one matrix per encoder and epochs
    assert len(cells) == 3 and [c[1] for c in cells] == [pytest.approx(0.65), 0.1, 0.9]
    assert [s.note.split("; ")[-1] for s in sorted(single, key=lambda s: s.title)] == [
        "each cell: mean over 2 seed(s)", "each cell: mean over 1 seed(s)", "each cell: mean over 1 seed(s)"]
    (t2,) = paper.table2(frames, Filters())  # the other settings have no apgd column to compare
    assert [(r["aux"], r["pgd-linf/sum"], r["apgd-linf/sum"]) for r in t2.rows] == [("d", 0.4, pytest.approx(0.6))]
    assert "each cell: mean over 2 seed(s)" in t2.note


def test_parquet_mirror_gives_the_same_leaderboard(known_db):
    a = leaderboard.leaderboard(load_frames(str(known_db)), Filters()).rows
    b = leaderboard.leaderboard(load_frames(str(known_db / "parquet")), Filters()).rows
    assert a == b


@pytest.mark.parametrize("fmt", ["table", "markdown", "json"])
def test_every_format_renders(known_db, fmt):
    result = run_cli("report", "--out", str(known_db), "--view", "all", "--format", fmt)
    assert result.returncode == 0, result.stderr
    assert "resnet18/sd/uniform" in result.stdout
    if fmt == "json":
        data = json.loads(result.stdout)
        assert any(k.startswith("Leaderboard") for k in data) and any(k.startswith("Table 1") for k in data)


def test_csv_is_one_table_per_call_or_a_file_per_table(known_db, tmp_path):
    several = run_cli("report", "--out", str(known_db), "--view", "all", "--format", "csv")
    assert several.returncode == 2 and "a CSV holds one: choose it with --view" in several.stderr, several.stderr
    one = run_cli("report", "--out", str(known_db), "--view", "leaderboard", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(one.stdout)))  # a plain CSV: no title line
    assert rows and all(r["model"] and r["eps_value"] and r["objective"] and r["encoder"] for r in rows)
    folder = tmp_path / "tables"
    written = run_cli("report", "--out", str(known_db), "--view", "all", "--format", "csv", "-o", str(folder))
    assert written.returncode == 0, written.stderr
    names = sorted(p.name for p in folder.glob("*.csv"))
    assert "leaderboard.csv" in names and "models.csv" in names and any(n.startswith("table-1") for n in names)
    for path in folder.glob("*.csv"):
        assert list(csv.DictReader(io.StringIO(path.read_text()))), path
    one_file = run_cli("report", "--out", str(known_db), "--view", "all", "--format", "csv", "-o",
                       str(tmp_path / "all.csv"))
    assert one_file.returncode == 2 and not (tmp_path / "all.csv").exists()
    again = run_cli("report", "--out", str(known_db), "--view", "all", "--format", "csv", "-o", str(folder))
    assert again.returncode == 0, again.stderr  # its own tables: replaced


def test_csv_tables_never_replace_a_users_file(known_db, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "leaderboard.csv").write_text("my own numbers")
    result = run_cli("report", "--out", str(known_db), "--view", "all", "--format", "csv", "-o", str(mine))
    assert result.returncode == 2 and "leaderboard.csv, which mtbench did not write" in result.stderr, result.stderr
    assert (mine / "leaderboard.csv").read_text() == "my own numbers" and len(list(mine.iterdir())) == 1


def test_json_rows_carry_their_settings_and_tables_show_them_in_words(known_db):
    board = run_cli("report", "--out", str(known_db), "--view", "leaderboard", "--format", "json")
    (rows,) = json.loads(board.stdout).values()
    for r in rows:
        assert {"encoder", "codes", "weighting", "objective", "attacked", "eps_value", "metric"} <= r.keys()
        assert r["eps_value"] == pytest.approx(8 / 255) and r["eps"] == "8/255"
    table = run_cli("report", "--out", str(known_db), "--view", "leaderboard", "--format", "markdown")
    header = next(line for line in table.stdout.splitlines() if line.startswith("| main"))
    assert "eps_value" not in header and "objective" not in header  # the title says them in words


def test_an_html_page_leaves_no_temporary_folder(known_db, tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    page = run_cli("report", "--out", str(known_db), "--format", "html", "-o", str(tmp_path / "r.html"),
                   env={"TMPDIR": str(scratch)})
    assert page.returncode == 0, page.stderr
    assert "<svg" in (tmp_path / "r.html").read_text() and list(scratch.iterdir()) == []


def test_bad_report_options_exit_2(known_db):
    for args in (["--metric", "accuracy"], ["--eps", "eight"]):
        result = run_cli("report", "--out", str(known_db), *args)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    missing = run_cli("report", "--out", str(known_db / "nowhere"))
    assert missing.returncode == 2 and "nowhere" in missing.stderr


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in ("img", "meta", "br"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()


def test_plots_and_self_contained_html(known_db, tmp_path):
    plots = tmp_path / "plots"
    result = run_cli("report", "--out", str(known_db), "--view", "all", "--format", "html", "--plots", str(plots))
    assert result.returncode == 0, result.stderr
    names = {p.name for p in plots.iterdir()}
    for stem in ("steps_resnet18_sd_uniform_*_pgd-linf_8_255", "transfer_resnet18_sd_uniform_*_pgd-linf_8_255",
                 "vulnerability_vs_tasks", "vulnerability_vs_eps", "clean_vs_robust"):
        assert any(fnmatch.fnmatch(n, f"{stem}.svg") for n in names) and any(
            fnmatch.fnmatch(n, f"{stem}.png") for n in names), stem
    page = (known_db / "report.html").read_text()
    parser = _Collector()
    parser.feed(page)
    assert not parser.stack, f"unclosed tags {parser.stack}"
    assert parser.tags.count("table") >= 4 and parser.tags.count("svg") >= 5
    assert "img" not in parser.tags  # the figures themselves, inline SVG (a heat map's pixels inside it)
    assert "Table 1" in page and "differ from S1" in page and "(paper 0.82" not in page
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser:  # render it in a real headless browser when one is installed
        dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                              (known_db / "report.html").as_uri()], capture_output=True, text=True, timeout=120)
        assert "resnet18/sd/uniform" in dom.stdout and dom.stdout.count("<svg") >= 5


def stored(results: Path) -> tuple[dict[str, dict], dict[tuple[str, str, str, str], float]]:
    """Straight from the SQLite file, past the report code: done trials' configs by id, and
    ``{(trial, phase, metric, task): value}`` at each trial's last step."""
    with sqlite3.connect(results / "mtbench.db") as c:
        configs = {i: json.loads(cfg) for i, cfg in c.execute("select id, config from trials where status = 'done'")}
        values = {row[:4]: row[4] for row in c.execute(
            "select trial_id, phase, metric, task, value from metrics order by step")}
    return configs, values


def expected_rows(results: Path) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """(model task codes, attacked codes) -> per seed, (clean error, vulnerability) of the main task."""
    configs, values = stored(results)
    out: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for tid, cfg in configs.items():
        if cfg["kind"] == "attack":
            model = configs[cfg["model"]]
            main = model["tasks"][0]
            out.setdefault(("".join(model["codes"]), "".join(cfg["targets_codes"])), []).append(
                (values[(cfg["model"], "clean", "error", main)],
                 values[(tid, "vulnerability", "rel_vuln_ratio_of_means", main)]))
    return out


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def test_real_trials_leaderboard_has_one_row_per_model_with_its_seeds(real_results):
    result = run_cli("report", "--out", str(real_results), "--view", "leaderboard", "--format", "json")
    assert result.returncode == 0, result.stderr
    (rows,) = json.loads(result.stdout).values()
    expected = expected_rows(real_results)
    assert sorted(r["model"] for r in rows) == ["resnet18/d/uniform", "resnet18/ds/uniform"]
    for r in rows:
        per_seed = expected[(r["model"].split("/")[1], "d")]
        assert r["seeds"] == len(per_seed) == 2
        assert r["clean_err"] == pytest.approx(mean(c for c, _ in per_seed))
        assert r["v"] == pytest.approx(mean(v for _, v in per_seed))
        assert len({v for _, v in per_seed}) == 2  # the seeds differ, so a mean is not one seed's number


def test_real_trials_paper_tables_average_seeds_consistently(real_results):
    frames = load_frames(str(real_results))
    expected = expected_rows(real_results)
    (enc,) = paper.per_encoder(frames, Filters())
    rows = {r["tasks"]: r for r in enc.rows}
    assert sorted(rows) == ["d", "ds"] and len(enc.rows) == 2  # one row per model: seeds are not split or mixed
    ds = rows["ds"]
    assert ds["seeds"] == 2 and ds["clean_err"] == pytest.approx(mean(c for c, _ in expected[("ds", "d")]))
    assert ds["v_single"] == pytest.approx(mean(v for _, v in expected[("ds", "d")]))
    assert ds["v_multi"] == pytest.approx(mean(v for _, v in expected[("ds", "ds")]))
    single = next(s for s in paper.table1(frames, Filters()) if "uniform weighting, single" in s.title)
    assert "mean over 2 seed(s)" in single.note
    cell = single.rows[0]["s"]  # synthetic 32 px data, 1 epoch: no paper figure beside it
    assert cell == pytest.approx(mean(v for _, v in expected[("ds", "d")]))
    parquet = load_frames(str(real_results / "parquet"))
    assert paper.per_encoder(parquet, Filters())[0].rows == enc.rows


def test_real_trials_of_two_seeds_share_one_setting(real_results):
    configs, _ = stored(real_results)
    ids = [i for i, c in configs.items() if c["kind"] == "attack" and c["targets_codes"] == ["d", "s"]]
    frames = load_frames(str(real_results))
    assert len(ids) == 2 and configs[ids[0]]["seed"] != configs[ids[1]]["seed"]
    assert len({leaderboard.key(s) for s in leaderboard.settings(frames, ids).values()}) == 1
    assert len({leaderboard.key(s) for s in leaderboard.settings(frames, ids, with_seeds=True).values()}) == 2


def test_figures_average_seeds_of_one_setting_only(tmp_path):
    """Two attacks of one model that differ in their steps are two lines of the eps sweep, not one mean;
    two seeds of one setting are one point, their mean."""
    from mtbench.report import plots

    store = Store(f"sqlite:///{tmp_path / 'mtbench.db'}")
    w = ResultsWriter(store)
    for seed, v in ((0, 0.2), (1, 0.4)):
        s = w.add_model({"s": S}, {"s": 0.5}, seed=seed)
        for eps, steps, scale in ((4 / 255, 10, 1.0), (8 / 255, 10, 2.0), (4 / 255, 25, 3.0), (8 / 255, 25, 4.0)):
            w.add_attack(s, "s", {S: v * scale}, eps=eps, steps=steps, seed=seed)
    w.flush()
    lines, _, _, _ = plots._sweep(load_frames(str(tmp_path)), Filters(), "eps")
    assert sorted(name for _, _, name in lines) == ["resnet18/s/uniform (steps=10)", "resnet18/s/uniform (steps=25)"]
    by_name = {name: {round(x * 255): vs for x, vs in points.items()} for (_, _, name), points in lines.items()}
    assert by_name["resnet18/s/uniform (steps=10)"] == {4: [0.2, 0.4], 8: [0.4, 0.8]}  # the two seeds
    assert by_name["resnet18/s/uniform (steps=25)"] == {4: [pytest.approx(0.6), pytest.approx(1.2)],
                                                       8: [0.8, 1.6]}


def test_json_on_stdout_stays_valid_with_plots(real_results, tmp_path):
    """Status lines go to stderr: `--format json --plots DIR` pipes into a JSON parser as it is."""
    result = run_cli("report", "--out", str(real_results), "--format", "json", "--plots", str(tmp_path / "figs"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) and "figure(s) written to" in result.stderr
    assert any((tmp_path / "figs").glob("*.png"))


@pytest.mark.parametrize("column, code", [("bogus", 2), ("clean_err", 0)])
def test_sort_takes_only_a_leaderboard_column(real_results, column, code):
    result = run_cli("report", "--out", str(real_results), "--sort", column, "--format", "json")
    assert result.returncode == code and "Traceback" not in result.stderr
    if code:
        assert "'--sort'" in result.stderr and "'bogus' is not one of" in result.stderr and "clean_err" in result.stderr
    else:
        (rows, *_) = json.loads(result.stdout).values()
        errors = [r["clean_err"] for r in rows if r["main"] == rows[0]["main"] and r["learnt"] == rows[0]["learnt"]]
        assert errors == sorted(errors)


def test_html_is_written_beside_its_source_never_into_the_current_folder(real_results, tmp_path):
    """Read from a SQLite file, a Parquet folder or a server URL: the page lands next to the file, in the
    folder, or nowhere without -o (a clear error, exit 2); the current folder stays empty."""
    from mtbench.cli.report import html_beside

    here = tmp_path / "cwd"
    here.mkdir()
    db_copy = tmp_path / "copy" / "my.db"
    db_copy.parent.mkdir()
    for suffix in ("", "-wal", "-shm"):  # a WAL database: its recent pages are in the -wal file
        if (real_results / f"mtbench.db{suffix}").exists():
            shutil.copy(real_results / f"mtbench.db{suffix}", f"{db_copy}{suffix}")
    done = run_cli("report", str(db_copy), "--format", "html", cwd=here, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (db_copy.parent / "report.html").is_file() and not any(here.iterdir())
    assert html_beside(str(real_results / "parquet")) == real_results / "parquet" / "report.html"
    assert html_beside(f"sqlite:///{db_copy}") == db_copy.parent / "report.html"
    with pytest.raises(MtbenchError, match="needs -o FILE"):
        html_beside("postgresql://user@host/db")
    again = run_cli("report", str(db_copy), "--format", "html", cwd=here, timeout=300)
    assert again.returncode == 0, again.stderr  # its own page, replaced
    (db_copy.parent / "report.html").write_text("the user's own page")
    refused = run_cli("report", str(db_copy), "--format", "html", cwd=here, timeout=300)
    assert refused.returncode == 2 and "not a report of mtbench's" in refused.stderr
    assert (db_copy.parent / "report.html").read_text() == "the user's own page"
