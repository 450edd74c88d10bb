"""The broker version is proven against every Kafka client on the design card:
confluent-kafka (producer, admin: the other tests), aiokafka (consumer loop: the other tests)
and faust-streaming (a real worker with a changelog-backed table, here)."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

from depthflow.common.kafka import Producer


def test_faust_worker_consumes_and_keeps_a_table(kafka_settings, topic_factory, tmp_path):
    topic = topic_factory("faust", partitions=3)
    producer = Producer(kafka_settings, client_id="test")
    for i in range(10):
        producer.produce(topic, f"v{i}".encode(), key=f"k{i % 2}".encode())
    producer.flush()
    env = {
        **os.environ,
        "FAUST_PROBE_ID": f"probe-{uuid.uuid4().hex[:8]}",
        "FAUST_PROBE_TOPIC": topic,
        "FAUST_PROBE_BROKER": kafka_settings.bootstrap_servers,
        "FAUST_PROBE_COUNT": "10",
    }
    app = Path(__file__).parent / "apps" / "faust_probe.py"
    proc = subprocess.run(
        [sys.executable, str(app)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # faust redirects print() to its logger (stderr)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "[('k0', 5), ('k1', 5)]" in output, output[-3000:]
