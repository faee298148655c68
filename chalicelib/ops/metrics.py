"""Process-wide metrics: counters and histograms kept as plain numbers, rendered as Prometheus
text (GET /metrics locally) and as CloudWatch Embedded Metric Format lines on Lambda.

Recording is a dict update under a lock (~1 µs), so tools, the writer thread and the replica
may record on every call. Imports nothing of the project: every layer may record here.
"""

import bisect
import threading
from typing import Iterable

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Counter:
    def __init__(self, name: str, help: str, labels: tuple[str, ...] = ()) -> None:
        self.name, self.help, self.labels = name, help, labels
        self.values: dict[tuple, float] = {}
        self.lock = threading.Lock()

    def inc(self, *label_values: str, by: float = 1) -> None:
        with self.lock:
            self.values[label_values] = self.values.get(label_values, 0) + by

    def samples(self) -> Iterable[tuple[str, tuple, float]]:
        with self.lock:
            items = list(self.values.items())
        for label_values, value in items:
            yield self.name + "_total", label_values, value


class Histogram:
    def __init__(self, name: str, help: str, labels: tuple[str, ...] = (), buckets: tuple = LATENCY_BUCKETS) -> None:
        self.name, self.help, self.labels, self.buckets = name, help, labels, buckets
        self.values: dict[tuple, list] = {}  # label values -> [count per bucket..., +Inf count, sum]
        self.lock = threading.Lock()

    def observe(self, value: float, *label_values: str) -> None:
        index = bisect.bisect_left(self.buckets, value)
        with self.lock:
            row = self.values.get(label_values)
            if row is None:
                row = self.values[label_values] = [0] * (len(self.buckets) + 2)
            row[index] += 1
            row[-1] += value

    def samples(self) -> Iterable[tuple[str, tuple, float]]:
        with self.lock:
            items = [(labels, list(row)) for labels, row in self.values.items()]
        for label_values, row in items:
            cumulative = 0
            for bound, count in zip((*self.buckets, "+Inf"), row[:-1]):
                cumulative += count
                yield self.name + "_bucket", (*label_values, _number(bound)), cumulative
            yield self.name + "_count", label_values, cumulative
            yield self.name + "_sum", label_values, row[-1]

    def label_names(self, sample: str) -> tuple[str, ...]:
        return (*self.labels, "le") if sample.endswith("_bucket") else self.labels


class Gauge:
    """A value set when known (the archive's gauges: when /metrics is scraped)."""

    def __init__(self, name: str, help: str) -> None:
        self.name, self.help, self.labels, self.value = name, help, (), None

    def set(self, value: float) -> None:
        self.value = value

    def samples(self) -> Iterable[tuple[str, tuple, float]]:
        if self.value is not None:
            yield self.name, (), self.value


tool_calls = Counter("agent_mail_tool_calls", "Tool calls by tool and outcome (ok or the error code).", ("tool", "outcome"))
tool_seconds = Histogram("agent_mail_tool_duration_seconds", "Tool call latency, queueing for the writer included.", ("tool",))
write_batch = Histogram("agent_mail_write_batch_size", "Writes committed together by the writer thread.", (), SIZE_BUCKETS)
replica_seconds = Histogram("agent_mail_replica_sync_duration_seconds", "Turso replica pulls and pushes.", ("op",))
replica_failures = Counter("agent_mail_replica_sync_failures", "Turso replica pulls and pushes that failed for good.", ("op",))
rate_limited = Counter("agent_mail_rate_limited", "Requests refused with 429, by budget.", ("budget",))
http_responses = Counter("agent_mail_http_responses", "HTTP responses by status.", ("status",))
archive_backlog = Gauge("agent_mail_archive_backlog", "Outbox entries not yet in the git archive.")
archive_failed = Gauge("agent_mail_archive_failed", "Pending archive entries that failed at least once.")
archive_lag = Gauge("agent_mail_archive_lag_seconds", "Age of the oldest entry not yet archived.")
archive_worker_up = Gauge("agent_mail_archive_worker_up", "1 while the local archive worker's heartbeat is recent.")

REGISTRY = [tool_calls, tool_seconds, write_batch, replica_seconds, replica_failures, rate_limited, http_responses,
            archive_backlog, archive_failed, archive_lag, archive_worker_up]


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def set_archive_gauges(status: dict, settings) -> None:
    """The archive's gauges from an archive_status answer (read when /metrics is scraped)."""
    archive_backlog.set(status["pending"])
    archive_failed.set(status["failed"])
    archive_lag.set(status["lag_seconds"])
    worker = status.get("worker")
    archive_worker_up.set(int(worker is not None and worker["age_seconds"] <= 3 * settings.archive_heartbeat_seconds))


def tool_done(tool: str, outcome: str, seconds: float) -> None:
    tool_calls.inc(tool, outcome)
    tool_seconds.observe(seconds, tool)


def prometheus_text(metrics: Iterable = REGISTRY) -> str:
    """The text exposition format (version 0.0.4)."""
    lines = []
    for metric in metrics:
        kind = {Counter: "counter", Histogram: "histogram", Gauge: "gauge"}[type(metric)]
        lines += [f"# HELP {metric.name} {metric.help}", f"# TYPE {metric.name} {kind}"]
        for sample, label_values, value in metric.samples():
            names = metric.label_names(sample) if isinstance(metric, Histogram) else metric.labels
            labels = ",".join(f'{name}="{_escape(value)}"' for name, value in zip(names, label_values))
            lines.append(f"{sample}{{{labels}}} {_number(value)}" if labels else f"{sample} {_number(value)}")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value) -> str:
    if isinstance(value, str):
        return value
    return repr(float(value)) if isinstance(value, float) and not value.is_integer() else str(int(value))
