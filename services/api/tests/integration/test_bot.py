"""/bot: real status from heartbeats (stale → down), start/stop/config written to control.v1
and audited."""

import time
import uuid

from confluent_kafka import Consumer

from depthflow.common.schemas import CONTROL
from depthflow.common.testing import eventually


def now_us():
    return time.time_ns() // 1000


def _beat(service, state, ts_us, instance="i1"):
    return {
        "schema_version": 1,
        "service": service,
        "instance": instance,
        "state": state,
        "ready": state == "running",
        "detail": {"lag": 0},
        "ts_us": ts_us,
    }


def _status(gateway, token):
    with gateway.client(token) as c:
        r = c.get("/bot/status")
    assert r.status_code == 200, r.text
    return {s["service"]: s for s in r.json()["services"]}


def test_status_from_heartbeats_stale_is_down(gateway, viewer_token):
    gateway.publish("status", "collector:i1", _beat("collector", "running", now_us()))
    gateway.publish("status", "features:i1", _beat("features", "running", now_us() - 60_000_000))
    gateway.publish("status", "strategy:i1", _beat("strategy", "failed", now_us()))

    def seen():
        s = _status(gateway, viewer_token)
        return (
            s
            if s["collector"]["state"] == "running"
            and s["features"]["state"] == "down"
            and s["strategy"]["state"] == "failed"
            else None
        )

    services = eventually(seen, timeout=15, what="heartbeats reflected in /bot/status")
    assert services["collector"]["up"] and services["collector"]["ready"]
    assert not services["features"]["up"]
    assert services["executor"]["state"] == "unknown"  # never heard from

    # a running collector whose heartbeats stop goes down after API_HEARTBEAT_STALE_S (3 s)
    eventually(
        lambda: _status(gateway, viewer_token)["collector"]["state"] == "down",
        timeout=15,
        what="collector goes down once its heartbeat is stale",
    )


def _read_control(gateway):
    consumer = Consumer(
        {
            "bootstrap.servers": gateway.kafka.bootstrap_servers,
            "group.id": f"t-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([gateway.topics["control"]])
    latest = {}
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                if latest:
                    break
                continue
            if msg.error():
                continue
            value = CONTROL.decode(msg.value())
            latest[value.service] = value
    finally:
        consumer.close()
    return latest


def test_start_stop_config_publish_and_audit(gateway, admin_token, viewer_token):
    with gateway.client(admin_token) as c:
        r = c.post("/bot/stop", json={"services": ["strategy", "executor"]})
        assert r.status_code == 200, r.text
        changed = {x["service"]: x for x in r.json()["changed"]}
        assert changed["strategy"]["desired_state"] == "stopped"
        assert changed["strategy"]["updated_by"] == "admin"
        v1 = changed["strategy"]["version"]
        r = c.put(
            "/bot/config/strategy",
            json={
                "config": {"imbalance_buy_threshold": 0.8, "symbols": ["BTCUSDT"]},
                "expected_version": v1,
            },
        )
        assert r.status_code == 200, r.text
        assert r.json()["version"] == v1 + 1
        assert r.json()["desired_state"] == "stopped"  # config change keeps the desired state
        stale = c.put("/bot/config/strategy", json={"config": {}, "expected_version": v1})
        assert stale.status_code == 409
        assert c.post("/bot/start", json={"services": ["strategy"]}).status_code == 200
        assert c.post("/bot/start", json={"services": ["nope"]}).status_code == 400
        assert c.put("/bot/config/nope", json={"config": {}}).status_code == 400

    on_topic = _read_control(gateway)
    strategy = on_topic["strategy"]
    assert (strategy.desired_state, strategy.version) == ("running", v1 + 2)
    assert strategy.config == {"imbalance_buy_threshold": 0.8, "symbols": ["BTCUSDT"]}
    assert on_topic["executor"].desired_state == "stopped"

    with gateway.client(viewer_token) as c:
        config = {s["service"]: s for s in c.get("/bot/config").json()["services"]}
        assert config["strategy"]["version"] == v1 + 2
        assert config["strategy"]["config"]["imbalance_buy_threshold"] == 0.8
        audit = c.get("/bot/audit", params={"service": "strategy"}).json()
        status = _status(gateway, viewer_token)
    assert [a["action"] for a in audit[:3]] == ["set_running", "set_config", "set_stopped"]
    assert all(a["username"] == "admin" for a in audit[:3])
    assert audit[1]["before"]["config"] == {} and audit[1]["after"]["version"] == v1 + 1
    assert status["strategy"]["desired_state"] == "running"
    assert status["executor"]["desired_state"] == "stopped"
