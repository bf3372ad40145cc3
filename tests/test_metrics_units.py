"""The per-exchange counters of ``/metrics`` (exchange/server/metrics.py): label values bounded
and never stuck on ``other`` once the configuration registers them."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from exchange.server.metrics import MAX_LABEL_VALUES, ServerMetrics, StateSnapshot
from exchange.server.records import ExchangeRecord

SERVICE = "PS/GOV/MOI/population-registry/persons"


def exchanges(metrics: ServerMetrics) -> dict[tuple[str, str], float]:
    text = metrics.exposition().decode()
    found = {}
    for family in text_string_to_metric_families(text):
        if family.name == "exchange_exchanges":
            for sample in family.samples:
                if sample.name == "exchange_exchanges_total":
                    found[(sample.labels["client"], sample.labels["service"])] = sample.value
    return found


def record(client: str) -> ExchangeRecord:
    return ExchangeRecord(
        side="provider", client=client, service=SERVICE, http_status=200, timings={"total": 900}
    )


def test_a_client_counted_as_other_is_named_once_the_configuration_registers_it() -> None:
    metrics = ServerMetrics(lambda: StateSnapshot(now=0.0, healthy=True, maintenance=False))
    client = "PS/GOV/NEW/desk"
    known = {"yes": False}

    def client_known(value: str) -> bool:
        return known["yes"]

    metrics.exchange(record(client), None, 10, client_known=client_known, service_known=bool)
    known["yes"] = True  # a new global configuration registers the subsystem
    metrics.exchange(record(client), None, 10, client_known=client_known, service_known=bool)
    metrics.exchange(record(client), None, 10, client_known=client_known, service_known=bool)
    assert exchanges(metrics) == {("other", SERVICE): 1.0, (client, SERVICE): 2.0}


def test_known_clients_past_the_bound_are_counted_as_other() -> None:
    metrics = ServerMetrics(lambda: StateSnapshot(now=0.0, healthy=True, maintenance=False))
    for n in range(MAX_LABEL_VALUES + 5):
        metrics.exchange(record(f"PS/GOV/M{n}/desk"), None, 10, client_known=bool,
                         service_known=bool)  # fmt: skip
    counted = exchanges(metrics)
    assert len(counted) == MAX_LABEL_VALUES + 1 and counted[("other", SERVICE)] == 5.0
