"""contrib/grafana and contrib/prometheus: a dashboard Grafana can load and
alert rules Prometheus accepts, naming only metrics the gateway exports.

- The dashboard is checked against a model of Grafana's dashboard JSON written
  here (the fields Grafana needs to import it, panels on the 24-column grid
  without overlap, one Prometheus datasource variable, every variable used
  defined, refIds, units).
- Every metric name in the dashboard's queries and in the rules is looked up
  in the ``/metrics`` output of a running gateway.
- ``promtool check rules`` checks the rules file, and every dashboard query
  (as recording rules, Grafana's variables filled in); ``promtool test rules``
  runs the alerts' unit tests (``sentry-alerts.test.yml``). Without promtool
  (Debian package ``prometheus``) these are skipped with the reason, or fail
  under ``CI`` / ``SENTRY_REQUIRE_PROMTOOL=1`` (``.ci/run``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from sentry.testing.gateway import DEMO_ROUTING, demo_gateway, demo_pools
from sentry.testing.require import missing

CONTRIB = Path(__file__).parents[1] / "contrib"
DASHBOARD = CONTRIB / "grafana" / "sentry-dashboard.json"
RULES = CONTRIB / "prometheus" / "sentry-alerts.yml"
RULE_TESTS = CONTRIB / "prometheus" / "sentry-alerts.test.yml"

PANEL_TYPES = {"row", "timeseries", "stat", "gauge", "table", "state-timeline", "text", "bargauge"}
UNITS = {"short", "s", "ms", "reqps", "ops", "cps", "percentunit", "bytes", "none"}
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range", "__interval_ms"}
VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")
IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
LABEL_MATCHERS = re.compile(r"\{[^}]*\}")
SERIES = ("sentry_", "process_")


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dash["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows keep theirs inside
    return out


def _queries(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and query variable."""
    out = []
    for p in _panels(dash):
        out += [(f"panel {p['id']} {t['refId']}", t["expr"]) for t in p.get("targets", [])]
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            out.append((f"variable {v['name']}", v["query"]["query"]))
    return out


def _rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def metric_names(promql: str) -> set[str]:
    """The series names a PromQL expression (or ``label_values(...)``) reads."""
    without_labels = LABEL_MATCHERS.sub("", promql)
    return {name for name in IDENTIFIER.findall(without_labels) if name.startswith(SERIES)}


def exported_names(text: str) -> set[str]:
    """Every series name a ``/metrics`` page offers, those without samples yet
    included (a labelled metric before its first label set: HELP/TYPE only)."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            if kind == "counter" and not name.endswith("_total"):
                names.add(f"{name}_total")
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


# --- the dashboard model ---


def test_the_dashboard_has_what_grafana_needs_to_import_it():
    dash = _dashboard()
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dash["uid"])
    assert isinstance(dash["title"], str) and dash["title"]
    assert isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 36
    assert dash["time"] == {"from": "now-6h", "to": "now"}
    assert isinstance(dash["panels"], list) and dash["panels"]
    assert isinstance(dash["templating"]["list"], list)
    assert dash.get("editable") in (True, False)
    assert "id" not in dash or dash["id"] is None  # Grafana assigns it


def test_one_prometheus_datasource_variable_and_every_variable_defined():
    dash = _dashboard()
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    used: set[str] = set()
    text = json.dumps(dash["panels"]) + json.dumps(dash["templating"])
    for braced, bare in VARIABLE.findall(text):
        used.add(braced or bare)
    assert used - BUILTIN_VARIABLES <= set(variables), used - set(variables)
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_panels_are_on_the_grid_without_overlap():
    dash = _dashboard()
    panels = _panels(dash)
    ids = [p["id"] for p in panels]
    assert all(isinstance(i, int) for i in ids) and len(ids) == len(set(ids))
    taken: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert all(isinstance(g[k], int) for k in ("x", "y", "w", "h")), p["title"]
        assert g["x"] >= 0 and g["w"] >= 1 and g["x"] + g["w"] <= 24 and g["h"] >= 1, p["title"]
        if p["type"] == "row":
            assert (g["x"], g["w"], g["h"]) == (0, 24, 1)
        cells = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & taken, f"panel {p['id']} ({p['title']}) overlaps another"
        taken |= cells


def test_every_panel_queries_prometheus_with_its_own_ref_ids():
    for p in _panels(_dashboard()):
        assert p["type"] in PANEL_TYPES, p["type"]
        assert p.get("title"), p["id"]
        if p["type"] == "row":
            continue
        assert p.get("description"), p["title"]
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        targets = p["targets"]
        assert targets, p["title"]
        refs = [t["refId"] for t in targets]
        assert len(refs) == len(set(refs)), p["title"]
        for t in targets:
            assert t["datasource"] == p["datasource"] and t["expr"].strip(), p["title"]
        assert p["fieldConfig"]["defaults"].get("unit", "short") in UNITS, p["title"]


def test_the_dashboard_covers_the_gateway():
    used = set().union(*(metric_names(q) for _, q in _queries(_dashboard())))
    for name in (
        "sentry_requests_total",
        "sentry_refusals_total",
        "sentry_request_duration_seconds_bucket",
        "sentry_held_long_polls",
        "sentry_backend_server_up",
        "sentry_backend_pool_healthy_servers",
        "sentry_store_errors_total",
        "sentry_store_healthy",
        "sentry_connections_open",
        "sentry_connections_refused_total",
        "sentry_connection_timeouts_total",
        "sentry_cluster_lag_seconds",
        "sentry_backend_check_failures_total",
        "sentry_backend_marked_down_total",
        "sentry_client_disconnects_total",
    ):
        assert name in used, name


def test_the_rules_have_the_alerts_operators_need():
    rules = {r["alert"]: r for r in _rules()}
    for name in (
        "SentryBackendPoolDown",
        "SentryStoreUnreachable",
        "SentryRefusalSpike",
        "SentryHeldPollsNearConnectionLimit",
        "SentryLogLinesLost",
    ):
        rule = rules[name]
        assert rule["expr"].strip()
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


# --- against a running gateway ---


async def test_every_metric_named_is_exported_by_a_running_gateway(tmp_path: Path):
    async with (
        demo_gateway(tmp_path, demo_pools(), routing=DEMO_ROUTING) as gw,
        aiohttp.ClientSession() as session,
        session.get(gw.admin_url + "/metrics") as resp,
    ):
        assert resp.status == 200
        exported = exported_names(await resp.text())
    queries = _queries(_dashboard()) + [(r["alert"], r["expr"]) for r in _rules()]
    missing = {
        (where, name) for where, q in queries for name in metric_names(q) if name not in exported
    }
    assert not missing, sorted(missing)
    assert "sentry_cluster_lag_seconds" in exported  # HELP/TYPE until the scale-out sets it


def test_metric_names_are_found_in_promql():
    q = 'sum by (le) (rate(sentry_request_duration_seconds_bucket{x="sentry_no"}[5m]))'
    assert metric_names(q) == {"sentry_request_duration_seconds_bucket"}
    assert metric_names("label_values(sentry_build_info, instance)") == {"sentry_build_info"}
    assert metric_names("min(process_max_fds) / on() group_left sum(x)") == {"process_max_fds"}


# --- promtool ---


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is not None:
        return path
    reason = "promtool is not installed (apt-get install prometheus)"
    missing("promtool", reason, "SENTRY_REQUIRE_PROMTOOL")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def test_promtool_accepts_the_rules_and_their_tests_pass():
    promtool = _promtool()
    checked = _run(promtool, "check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _run(promtool, "test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_promtool_accepts_every_dashboard_query(tmp_path: Path):
    promtool = _promtool()
    filled = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}
    rules = []
    for where, query in _queries(_dashboard()):
        if query.startswith("label_values("):
            continue  # a Grafana function, not PromQL: its metric is checked above
        expr = VARIABLE.sub(lambda m: filled.get(m[1] or m[2], ".*"), query)
        name = "dashboard:" + re.sub(r"\W", "_", where)
        rules.append({"record": name, "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = _run(promtool, "check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_exported_names_include_metrics_without_samples():
    text = "\n".join(
        [
            "# HELP a_total x",
            "# TYPE a_total counter",
            'a_total{k="v"} 1.0',
            "# TYPE lag_seconds gauge",
            "# TYPE d_seconds histogram",
            'd_seconds_bucket{le="1"} 0',
        ]
    )
    names = exported_names(text)
    assert {"a_total", "lag_seconds", "d_seconds_bucket", "d_seconds_sum"} <= names
    assert "b_total" not in names


def test_without_promtool_its_tests_skip_unless_required(monkeypatch):
    from _pytest.outcomes import Failed, Skipped

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("SENTRY_REQUIRE_PROMTOOL", raising=False)
    with pytest.raises(Skipped, match="promtool is not installed"):
        _promtool()
    monkeypatch.setenv("SENTRY_REQUIRE_PROMTOOL", "1")
    with pytest.raises(Failed, match="promtool required"):
        _promtool()
