"""CloudWatch Embedded Metric Format: a JSON log line that CloudWatch also reads as metrics.

On Lambda each request's log line is one of these (tool latency and errors, per tool and in
all), and the archive sweep reports the archive's backlog and lag; infra/template.yaml
alarms on them. Written by hand: the format is four keys, and AWS Lambda Powertools, its
usual writer, added 35-96 ms to a cold start here (docs/operations.md).
"""

import os
import time

import orjson

NAMESPACE = "AgentMail"
# The Service dimension: the stack's name on AWS (infra/template.yaml sets METRICS_SERVICE), so
# that two stages in one account and region do not feed each other's alarms.
SERVICE = os.environ.get("METRICS_SERVICE") or "agent-mail"


def line(metrics: dict[str, tuple[float, str]], dimensions: list[list[str]], **properties) -> bytes:
    """One EMF log line: `metrics` maps a name to (value, unit); `dimensions` lists the sets of
    property names to aggregate by (each also gets Service); `properties` go in as they are."""
    return orjson.dumps(
        {
            "_aws": {
                "Timestamp": int(time.time() * 1000),
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [["Service", *names] for names in dimensions],
                    "Metrics": [{"Name": name, "Unit": unit} for name, (_, unit) in metrics.items()],
                }],
            },
            "Service": SERVICE,
            **properties,
            **{name: value for name, (value, _) in metrics.items()},
        },
        option=orjson.OPT_APPEND_NEWLINE,
    )
