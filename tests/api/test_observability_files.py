"""The Prometheus rules and the Grafana dashboard of `deploy/observability/` name only metrics and labels
that a running server exports on `/metrics`: a renamed metric or label fails here, not silently on a
team's dashboards. Also the rules' shape (what Alertmanager routes on) and, where `promtool` is installed,
Prometheus's own parser over the rules and over every dashboard query."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families
from tests.api.conftest import Api

from inferline.metrics import SCRAPE_TIME_FAMILIES

OBSERVABILITY = Path(__file__).resolve().parents[2] / "deploy" / "observability"
RULES = OBSERVABILITY / "prometheus" / "inferline-rules.yml"
DASHBOARD = OBSERVABILITY / "grafana" / "inferline-dashboard.json"

SEVERITIES = {"critical", "warning", "info"}
# Series and labels that Prometheus adds itself: `up` per target, `job` and `instance` on every series.
PROMETHEUS_SERIES: dict[str, frozenset[str]] = {"up": frozenset()}
TARGET_LABELS = {"job", "instance"}
# Names a sample may have per family type (the text format's suffixes).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
}
FUNCTIONS = {
    "abs", "absent", "absent_over_time", "avg", "avg_over_time", "bottomk", "ceil", "changes", "clamp",
    "clamp_max", "clamp_min", "count", "count_over_time", "count_values", "delta", "deriv", "floor",
    "group", "histogram_quantile", "idelta", "increase", "irate", "label_replace", "last_over_time", "max",
    "max_over_time", "min", "min_over_time", "predict_linear", "quantile", "quantile_over_time", "rate",
    "resets", "round", "scalar", "sort", "sort_desc", "stddev", "stdvar", "sum", "sum_over_time", "time",
    "timestamp", "topk", "vector",
}  # fmt: skip
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
            "group_right", "inf", "nan"}  # fmt: skip

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_MATCHERS = re.compile(r"\{([^{}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_IDENTIFIER = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(\s*\()?")
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*([A-Za-z_]\w*)\s*\)\s*$", re.DOTALL)


@dataclass
class Names:
    """What one PromQL expression refers to."""

    metrics: set[str] = field(default_factory=set)
    labels: set[str] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)


def names_in(expr: str) -> Names:
    """Metric, label and function names of a PromQL expression (Grafana's `$variables` allowed), by
    taking out in turn what could hide or mimic a name: strings, `$variables`, label matchers (their
    label names kept), ranges and `offset` durations, and grouping clauses (their labels kept)."""
    found = Names()
    text = _GRAFANA_VARIABLE.sub("", _STRING.sub('""', expr))
    for matchers in _MATCHERS.findall(text):
        found.labels.update(_MATCHER_LABEL.findall(matchers))
    text = _RANGE.sub(" ", _MATCHERS.sub(" ", text))
    for grouping in _GROUPING.findall(text):
        found.labels.update(label.strip() for label in grouping.split(",") if label.strip())
    text = _GROUPING.sub(" ", text)
    for name, call in _IDENTIFIER.findall(text):
        if name.lower() in KEYWORDS:
            continue
        (found.functions if call else found.metrics).add(name)
    return found


@dataclass(frozen=True)
class Exported:
    """The series names a server exports, each with its family's label names."""

    labels_of: dict[str, frozenset[str]]

    def problems(self, expr: str) -> list[str]:
        found = names_in(expr)
        problems = [f"unknown function {name}()" for name in sorted(found.functions - FUNCTIONS)]
        known = set(TARGET_LABELS)
        for metric in sorted(found.metrics):
            if metric not in self.labels_of:
                problems.append(f"metric {metric} is not exported")
                continue
            known |= self.labels_of[metric]
        problems += [f"label {label} is on none of {sorted(found.metrics)}" for label in sorted(found.labels - known)]
        if not found.metrics:
            problems.append("names no metric")
        return problems


async def exported(api: Api) -> Exported:
    """Family names and types from the server's own `/metrics` text (every family has its TYPE line
    there, sampled or not yet); label names from the same families in the app's registry, since the
    text format only shows them on samples."""
    response = await api.anonymous.get("/metrics")
    assert response.status_code == 200
    types = {family.name: family.type for family in text_string_to_metric_families(response.text)}
    label_names: dict[str, frozenset[str]] = {}
    for metric in vars(api.services.metrics).values():
        if isinstance(metric, MetricWrapperBase):
            # No public accessor: `_labelnames` is what `.labels()` checks its arguments against.
            label_names[metric._name] = frozenset(metric._labelnames)
    label_names |= {name: frozenset(labels) for name, labels in SCRAPE_TIME_FAMILIES.items()}
    assert set(label_names) == set(types), "the registry and /metrics disagree"
    labels_of = dict(PROMETHEUS_SERIES)
    for family, kind in types.items():
        extra = {"le"} if kind == "histogram" else set()
        for suffix in SUFFIXES[kind]:
            labels_of[family + suffix] = label_names[family] | extra if suffix == "_bucket" else label_names[family]
    return Exported(labels_of)


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    return [nested for panel in board["panels"] for nested in [panel, *panel.get("panels", [])]]


def dashboard_queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of each panel target and each query variable (`label_values(<selector>, <label>)`
    checked as the selector with the label added to it)."""
    queries = [
        (f"panel {panel['title']!r}", target["expr"]) for panel in panels(board) for target in panel.get("targets", [])
    ]
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        match = _LABEL_VALUES.match(query)
        assert match, f"variable {variable['name']}: {query}"
        queries.append((f"variable {variable['name']}", f"count by ({match[2]}) ({match[1]})"))
    return queries


def test_the_name_finder_sees_metrics_labels_and_functions() -> None:
    """The finder the other checks rest on: strings, ranges, offsets, `$variables` and keywords are not
    taken for metrics, labels inside matchers and grouping clauses are found."""
    found = names_in(
        'sum by (kind) (rate(inferline_jobs_finished_total{status=~"failed|x{y}", kind=~"$kind"}[$__rate_interval]))'
        " / on (kind) group_left sum(inferline_queue_depth offset 15m) > bool 0.1e3"
        " or histogram_quantile(0.95, sum by (le) (rate(inferline_job_duration_seconds_bucket[5m:1m])))"
    )
    assert found.metrics == {
        "inferline_jobs_finished_total",
        "inferline_queue_depth",
        "inferline_job_duration_seconds_bucket",
    }
    assert found.labels == {"kind", "status", "le"}
    assert found.functions == {"sum", "rate", "histogram_quantile"}


async def test_every_metric_and_label_they_name_is_exported(idle_api: Api) -> None:
    server = await exported(idle_api)
    queries = [(f"rule {rule['alert']}", rule["expr"]) for rule in alert_rules()] + dashboard_queries(dashboard())
    assert len(queries) > 40
    problems = [f"{where}: {problem}" for where, expr in queries for problem in server.problems(expr)]
    assert not problems, "\n".join(problems)
    # The same check catches a renamed metric, a renamed label and a misspelt function.
    assert server.problems("rate(inferline_jobs_finishd_total[5m])") == [
        "metric inferline_jobs_finishd_total is not exported"
    ]
    assert server.problems('inferline_queue_depth{state="queued"}') == [
        "label state is on none of ['inferline_queue_depth']"
    ]
    assert server.problems("rat(inferline_active_workers[5m])") == ["unknown function rat()"]
    # Families the rules lean on must stay of the type the rules assume.
    assert "inferline_model_rejected_total" in server.labels_of  # a counter
    assert "inferline_http_request_seconds_bucket" in server.labels_of  # a histogram


def test_alert_rules_have_what_alertmanager_routes_on() -> None:
    rules = alert_rules()
    names = [rule.get("alert") for rule in rules]
    assert len(names) == len(set(names)), "alert names repeat"
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule.get("alert")
        assert re.fullmatch(r"Inferline[A-Z]\w+", rule["alert"])
        assert isinstance(rule["expr"], str) and rule["expr"].strip(), rule["alert"]
        assert re.fullmatch(r"\d+[smh]", str(rule["for"])), rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert rule["annotations"]["summary"].strip() and rule["annotations"]["description"].strip(), rule["alert"]


def test_dashboard_is_one_grafana_can_import_on_any_prometheus() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 39
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    everything = panels(board)
    ids = [panel["id"] for panel in everything]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    rows = [panel["title"] for panel in everything if panel["type"] == "row"]
    assert rows == ["Jobs", "API", "Models", "Search", "Monitor, notifications and webhooks", "Events to the broker"]
    for panel in everything:
        if panel["type"] in {"row", "text"}:
            continue
        assert panel["targets"], panel["title"]
        for source in [panel["datasource"], *(target["datasource"] for target in panel["targets"])]:
            assert source == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_prometheus_parses_the_rules_and_every_dashboard_query(tmp_path: Path) -> None:
    """Prometheus's own parser, where installed (Debian's `prometheus` package has it): the rules as
    shipped, and the dashboard's queries as recording rules with Grafana's variables filled in."""
    promtool = shutil.which("promtool")
    assert promtool is not None
    subprocess.run([promtool, "check", "rules", str(RULES)], check=True, capture_output=True, timeout=30)
    filled = {"$__rate_interval": "5m", "$kind": ".*", "$model": ".*"}
    records = []
    for index, (_, expr) in enumerate(dashboard_queries(dashboard())):
        for variable, value in filled.items():
            expr = expr.replace(variable, value)
        records.append({"record": f"dashboard:query_{index}", "expr": expr})
    queries = tmp_path / "dashboard-queries.yml"
    queries.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}), encoding="utf-8")
    subprocess.run([promtool, "check", "rules", str(queries)], check=True, capture_output=True, timeout=30)


async def test_the_data_dirs_free_disk_is_read_when_scraped(idle_api: Api) -> None:
    text = (await idle_api.anonymous.get("/metrics")).text
    [ratio] = [
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "inferline_data_dir_free_ratio"
        for sample in family.samples
    ]
    usage = shutil.disk_usage(idle_api.services.settings.data_dir)
    assert 0 < ratio < 1 and abs(ratio - usage.free / usage.total) < 0.01
