"""``/metrics``: Prometheus text format, read back with prometheus-client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from broker.store import Store
from tests.orders import order
from tests.web.support import Client, add_mpps, add_outbox, app_for, receive


def scrape(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_metrics_come_from_the_tables(store: Store, anonymous: Client) -> None:
    receive(store, order(), order(control_id="BAD", version="9.9"))
    add_mpps(store, [1], status="IN PROGRESS")
    add_outbox(store, state="pending", attempts=2)
    add_outbox(store, state="dead", attempts=4)
    add_outbox(store, state="sent", attempts=3)
    add_outbox(store, state="pending", destination="pacs", attempts=0)
    samples = scrape(anonymous)  # public: no patient data
    assert samples[("mwl_database_up", ())] == 1
    messages = "mwl_hl7_messages_total"
    assert samples[(messages, (("ack_code", "AA"), ("message_type", "ORM^O01")))] == 1
    assert samples[(messages, (("ack_code", "AR"), ("message_type", "ORM^O01")))] == 1
    assert samples[("mwl_mpps_instances", (("status", "IN PROGRESS"),))] == 1
    ris = (("destination", "ris"),)
    assert samples[("mwl_outbox_messages", (*ris, ("state", "pending")))] == 1
    assert samples[("mwl_outbox_messages", (*ris, ("state", "dead")))] == 1
    assert samples[("mwl_outbox_oldest_pending_age_seconds", ris)] == 300
    assert samples[("mwl_outbox_delivery_failures", ris)] == 2 + 4 + 2
    assert samples[("mwl_outbox_delivery_failures", (("destination", "pacs"),))] == 0
    assert samples[("mwl_worklist_steps_today", (("modality", "CT"), ("status", "SCHEDULED")))] == 1
    assert samples[("mwl_hl7_connections_open", ())] == 0
    assert samples[("mwl_dicom_associations_open", ())] == 0
    assert samples[("mwl_cfind_duration_seconds_count", ())] == 0


def test_the_message_counter_only_grows(store: Store, anonymous: Client) -> None:
    key = ("mwl_hl7_messages_total", (("ack_code", "AA"), ("message_type", "ORM^O01")))
    receive(store, order(control_id="A"))
    assert scrape(anonymous)[key] == 1
    receive(store, order(control_id="B"), order(control_id="C"))
    assert scrape(anonymous)[key] == 3
    assert scrape(anonymous)[key] == 3


def test_each_application_has_its_own_registry(store: Store, anonymous: Client) -> None:
    receive(store, order())
    first, second = scrape(anonymous), scrape(Client(app_for(store)))
    key = ("mwl_hl7_messages_total", (("ack_code", "AA"), ("message_type", "ORM^O01")))
    assert first[key] == second[key] == 1
