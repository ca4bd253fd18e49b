"""The benchmark harness's smallest scenario runs in the test command (figures are printed; only counts are asserted)."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

FIGURES = {"wall_s", "graph_http_requests", "graph_operations", "dataverse_requests", "max_concurrency_per_mailbox", "throttled_429", "peak_rss_mb"}


def test_bench_smoke_runs_and_reports_every_figure(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bench", "--scale", "smoke", "--graph-latency-ms", "5", "--dataverse-latency-ms", "5",
                             "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    print(result.stdout)
    report = json.loads((tmp_path / "results-smoke.json").read_text())
    names = [s["name"] for s in report["scenarios"]]
    assert len(names) == 11 and names[0].startswith("bulk test & enable") and all("realistic latency" in n for n in names[5:7])
    doubled = [s for s in report["scenarios"] if s["name"].endswith("(Table double)")]
    assert [s["name"].removesuffix(" (Table double)") for s in doubled] == names[1:5]
    for scenario in doubled:                  # the same work against the double: exactly the calendar writes the changes need
        assert scenario["graph_operations"] == scenario["changed_bookings"] and scenario["table_storage_cpu_s"] >= 0, scenario["name"]
    for scenario in report["scenarios"]:
        assert set(scenario) >= FIGURES, scenario["name"]
        if not scenario["name"].startswith("bulk"):
            assert {"bound", "ratio", "planning_cpu_s", "gc_pause_s", "table_round_trips_per_touched_mailbox", "sync_cpu_ms_per_graph_operation",
                    "mailbox_done_s", "collect_s"} <= set(scenario)
            assert 0 < scenario["collect_s"] <= scenario["wall_s"], scenario["name"]
    moved = next(s for s in report["scenarios"] if s["name"].startswith("cycle with 5 % of bookings moved"))
    assert moved["touched_mailboxes"] > 0 and moved["table_round_trips_per_touched_mailbox"] > 0 and moved["mailbox_done_s"]["max"] > 0
    assert {"function_app_import_s", "planner_bookings_per_s", "mailbox_activity_peak_heap_mb"} <= set(report["micro"])
    assert {"p50_s", "p95_s", "lost"} <= set(report["webhook_latency"])
