"""The advisor's stored advice, as report sections: the ranking with its evidence and, when it was
validated, the full-budget result beside the proxy and their correlations over the paired candidates,
with bootstrap intervals, and a warning when those pairs are only part of the candidates (the k best
and k worst: an inflated r, not comparable with the paper's r over all pairs)."""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.compute as pc

from mtbench.configs import TrialKind, parse_config
from mtbench.records import Phase
from mtbench.report.frames import Frames
from mtbench.report.leaderboard import done
from mtbench.report.render import Section


def advice_sections(frames: Frames, only: list[str] | None = None) -> list[Section]:
    """One section per stored advice (or only the given advice trials)."""
    advice = done(frames, "advice")
    ids = [i for i in advice["id"].to_pylist() if only is None or i in only] if advice.num_rows else []
    if not ids:
        return []
    configs = {r["id"]: parse_config(TrialKind.ADVICE, r["config"]) for r in _configs(frames, ids)}
    values: dict[str, dict[str, dict[str, float]]] = {}
    for metric in ("rank", "proxy", "proxy_low", "proxy_high", "full", *CORRELATION_METRICS):
        table = frames.read_metrics(Phase.ADVICE, metric, ids).to_pydict()
        for tid, task, value in zip(table["trial_id"], table["task"], table["value"]):
            values.setdefault(tid, {}).setdefault(task, {})[metric] = value
    sections = []
    for tid in ids:
        cfg, v = configs[tid], values.get(tid, {})
        what = "clean error" if cfg.proxy == "clean" else f"vulnerability under {cfg.attack}"
        rows = []
        for aux, m in sorted(v.items(), key=lambda kv: kv[1].get("rank", math.inf)):
            if aux == "*":
                continue
            rows.append({"rank": int(m["rank"]) if "rank" in m else None, "auxiliary": aux, "proxy": m.get("proxy"),
                         "95% CI": _interval(m.get("proxy_low"), m.get("proxy_high")), "full": m.get("full"),
                         "low": m.get("proxy_low"), "high": m.get("proxy_high")})
        note = (f"'-' = {cfg.main} trained alone; proxy = main-task {what} on {cfg.proxy_encoder} "
                f"({cfg.proxy_epochs} epochs); full = on {cfg.encoder}")
        if "*" in v:
            note += "; " + correlation_note(v["*"], ranked=sum(1 for a, m in v.items() if a != "*" and "rank" in m),
                                            paired=sum(1 for a, m in v.items() if a != "*" and "full" in m),
                                            main=cfg.main)
        sections.append(Section(f"Advice: auxiliary tasks for main task {cfg.main} on {cfg.encoder}, "
                                f"by the {cfg.proxy} proxy (lower is more robust)", rows, note=note,
                                machine=("low", "high")))  # the interval as numbers, for programs
    return sections


CORRELATION_METRICS = ("spearman", "pearson", "spearman_low", "spearman_high", "pearson_low", "pearson_high",
                       "pairs", "candidates")


def correlation_note(corr: dict[str, float], ranked: int, paired: int, main: str) -> str:
    """Proxy vs full r with intervals, over how many candidates; a warning when that is not all of them.
    Advice stored before the intervals has neither the counts nor the intervals: they come from its rows."""
    pairs, candidates = int(corr.get("pairs", paired)), int(corr.get("candidates", ranked))
    parts = []
    for name in ("spearman", "pearson"):
        interval = _interval(corr.get(f"{name}_low"), corr.get(f"{name}_high"))
        parts.append(f"{name.capitalize()} {corr.get(name, math.nan):.2f}" + (f" {interval}" if interval else ""))
    note = f"proxy vs full over {pairs} of {candidates} candidates: " + ", ".join(parts)
    if pairs < candidates:
        note += (f". WARNING: r over a subset (the k best and k worst) is inflated and not comparable with the "
                 f"paper's r over all pairs; `mtbench advise --main {main} ... --validate-all` trains every "
                 "candidate at the full budget")
    return note


def _configs(frames: Frames, ids: list[str]) -> list[dict]:
    t = frames.trials
    return t.filter(pc.is_in(t["id"], value_set=pa.array(ids, pa.string()))).select(["id", "config"]).to_pylist()


def _interval(low: float | None, high: float | None) -> str | None:
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return None
    return f"[{low:.3g}, {high:.3g}]"
