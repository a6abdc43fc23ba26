"""`GET /metrics`: the hub's state for Prometheus, read when it is scraped.

Read at scrape time from the hub's state (its peers, registry, spool
reports, log writer) and from counters its parts keep as they go: messages by
type (`TrafficLog.counts`, one step per message it logs anyway), sample
batches delivered and errors sent (`Fanout`), command round trips
(`Commands.latencies`). Nothing else is added to the forwarding path.
prometheus-client comes with the `hub` extra; without it the route says
which extra to install.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..protocol import PeerKind
from .auth.guard import bearer
from .auth.permissions import Role
from .commands import LATENCY_BUCKETS_S
from .services import HUB_KEY, Hub

if TYPE_CHECKING:
    from prometheus_client.core import Metric

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HubCollector:
    """A prometheus-client collector over one hub's state."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    def collect(self) -> Iterator[Metric]:
        """Every family, from the hub's state now."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        hub = self._hub
        peers = GaugeMetricFamily("kmz_connections", "Connected peers, by kind.", labels=["kind"])
        for kind in PeerKind:
            peers.add_metric([kind.value], sum(1 for p in hub.peers if p.kind is kind))
        yield peers

        states = GaugeMetricFamily(
            "kmz_instruments", "Instruments the hub knows, by state.", labels=["state"]
        )
        counts = {"online": 0, "offline": 0, "faulted": 0}
        for entry in hub.registry.instruments.values():
            counts[entry.state] = counts.get(entry.state, 0) + 1
        for state, count in counts.items():
            states.add_metric([state], count)
        yield states

        dropped = CounterMetricFamily(
            "kmz_client_dropped_batches",
            "Sample batches dropped for clients that did not keep up (each told with missed).",
            labels=["client"],
        )
        for peer in hub.peers:
            if peer.kind is PeerKind.CLIENT:
                dropped.add_metric([peer.name], peer.missed)
        yield dropped

        yield GaugeMetricFamily(
            "kmz_commands_in_flight",
            "Commands forwarded and not yet answered.",
            value=hub.commands.in_flight,
        )
        yield GaugeMetricFamily(
            "kmz_log_backlog",
            "Traffic-log records appended and not yet committed.",
            value=hub.store.backlog,
        )
        yield GaugeMetricFamily(
            "kmz_log_degraded",
            "1 while the traffic log cannot keep up (see /api/health).",
            value=0 if hub.store.health.state == "ok" else 1,
        )

        committed = getattr(hub.store, "committed_rows", None)
        if committed is not None:
            yield CounterMetricFamily(
                "kmz_log_committed_rows", "Traffic-log rows committed.", value=committed
            )

        priority = getattr(hub.store, "writer_priority", None)
        if priority is not None:
            yield GaugeMetricFamily(
                "kmz_log_writer_idle",
                "1 while the log's writer process runs at idle priority; 0 at nice 10: for"
                " 2 s after it started, while the log is behind, and for 10 min after it"
                " fell behind at idle priority (every core busy, or a slow disk).",
                value=1 if priority == "idle" else 0,
            )

        messages = CounterMetricFamily(
            "kmz_messages",
            "Messages logged, by direction and type (a data message per instrument).",
            labels=["direction", "type"],
        )
        for (direction, message_type), count in sorted(hub.traffic.counts.items()):
            messages.add_metric([direction, message_type], count)
        yield messages
        yield CounterMetricFamily(
            "kmz_sample_deliveries",
            "Sample batches handed to clients: one per subscribed client per batch.",
            value=hub.fanout.deliveries,
        )
        refused = CounterMetricFamily(
            "kmz_refused", "Input refused, by error code.", labels=["code"]
        )
        for code, count in sorted(hub.traffic.refusals.items()):
            refused.add_metric([code], count)
        yield refused
        errors = CounterMetricFamily(
            "kmz_errors_sent", "Error messages the hub sent, by code.", labels=["code"]
        )
        for code, count in sorted(hub.fanout.errors.items()):
            errors.add_metric([code], count)
        yield errors

        latency = HistogramMetricFamily(
            "kmz_command_seconds",
            "Commands' round trips from the hub to the agent and back, by outcome.",
            labels=["outcome"],
        )
        latencies = hub.commands.latencies
        for outcome, per_bucket in sorted(latencies.buckets.items()):
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, n in zip((*LATENCY_BUCKETS_S, float("inf")), per_bucket, strict=True):
                cumulative += n
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            latency.add_metric([outcome], buckets, latencies.sums[outcome])
        yield latency

        spool = GaugeMetricFamily(
            "kmz_agent_spool_samples",
            "Samples an agent holds that the hub has not acknowledged (as it last said).",
            labels=["agent"],
        )
        spool_dropped = CounterMetricFamily(
            "kmz_agent_spool_dropped",
            "Samples an agent's spool dropped since it started (each named by a gap).",
            labels=["agent"],
        )
        offset = GaugeMetricFamily(
            "kmz_agent_clock_offset_seconds",
            "An agent's clock minus the hub's, estimated from its live samples.",
            labels=["agent"],
        )
        for record in hub.registry.agent_records(hub.config.clock_warning_s):
            if record.spool_depth is not None:
                spool.add_metric([record.id], record.spool_depth)
            if record.dropped is not None:
                spool_dropped.add_metric([record.id], record.dropped)
            if record.clock_offset_s is not None:
                offset.add_metric([record.id], record.clock_offset_s)
        yield spool
        yield spool_dropped
        yield offset

        # The agents' own processes, as each last said (`agent_state`).
        uptime = GaugeMetricFamily(
            "kmz_agent_uptime_seconds",
            "Seconds since the agent's process started.",
            labels=["agent"],
        )
        cpu = GaugeMetricFamily(
            "kmz_agent_cpu_percent", "The agent process's CPU use, % of one core.", labels=["agent"]
        )
        rss = GaugeMetricFamily(
            "kmz_agent_rss_bytes", "The agent process's resident memory.", labels=["agent"]
        )
        for agent_id, agent in sorted(hub.registry.agents.items()):
            reported = agent.state
            if reported is None:
                continue
            if reported.uptime_s is not None:
                uptime.add_metric([agent_id], reported.uptime_s)
            if reported.cpu_pct is not None:
                cpu.add_metric([agent_id], reported.cpu_pct)
            if reported.rss_bytes is not None:
                rss.add_metric([agent_id], reported.rss_bytes)
        yield uptime
        yield cpu
        yield rss


async def metrics(request: web.Request) -> web.Response:
    """`GET /metrics`: Prometheus's text format; a viewer token when the hub requires them."""
    hub = request.app[HUB_KEY]
    if hub.auth.required:
        principal = hub.auth.authenticate(bearer(request.headers.get("Authorization")))
        if isinstance(principal, str) or not principal.at_least(Role.VIEWER):
            return web.Response(
                status=401,
                text="a viewer's token is needed: Authorization: Bearer <token>\n",
                headers={"WWW-Authenticate": 'Bearer realm="kmz"'},
            )
    try:
        from prometheus_client import CollectorRegistry, generate_latest
    except ImportError:
        return web.Response(
            status=501,
            text="metrics need prometheus-client: pip install 'kleinmaelzung[hub]'\n",
        )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_as_collector(HubCollector(hub)))
    return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE})


def _as_collector(collector: HubCollector) -> Any:
    # prometheus-client wants an object with collect(); typed loosely there.
    return collector
