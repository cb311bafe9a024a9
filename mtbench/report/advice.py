"""The advisor's stored advice, as report sections: the ranking with its evidence and, when it was
validated, the full-budget result beside the proxy and their rank correlations."""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.compute as pc

from mtbench.configs import TrialKind, parse_config
from mtbench.report.frames import Frames
from mtbench.report.leaderboard import done
from mtbench.report.render import Section
from mtbench.results import Phase


def advice_sections(frames: Frames, only: list[str] | None = None) -> list[Section]:
    """One section per stored advice (or only the given advice trials)."""
    advice = done(frames, "advice")
    ids = [i for i in advice["id"].to_pylist() if only is None or i in only] if advice.num_rows else []
    if not ids:
        return []
    configs = {r["id"]: parse_config(TrialKind.ADVICE, r["config"]) for r in _configs(frames, ids)}
    values: dict[str, dict[str, dict[str, float]]] = {}
    for metric in ("rank", "proxy", "proxy_low", "proxy_high", "full", "spearman", "pearson"):
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
                         "95% CI": _interval(m.get("proxy_low"), m.get("proxy_high")), "full": m.get("full")})
        corr = v.get("*", {})
        note = (f"'-' = {cfg.main} trained alone; proxy = main-task {what} on {cfg.proxy_encoder} "
                f"({cfg.proxy_epochs} epochs); full = on {cfg.encoder}")
        if corr:
            note += f"; proxy vs full: Spearman {corr.get('spearman', math.nan):.2f}, " \
                    f"Pearson {corr.get('pearson', math.nan):.2f}"
        sections.append(Section(f"Advice: auxiliary tasks for main task {cfg.main} on {cfg.encoder}, "
                                f"by the {cfg.proxy} proxy (lower is more robust)", rows, note=note))
    return sections


def _configs(frames: Frames, ids: list[str]) -> list[dict]:
    t = frames.trials
    return t.filter(pc.is_in(t["id"], value_set=pa.array(ids, pa.string()))).select(["id", "config"]).to_pylist()


def _interval(low: float | None, high: float | None) -> str | None:
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return None
    return f"[{low:.3g}, {high:.3g}]"
