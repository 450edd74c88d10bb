"""A minimal faust-streaming worker: counts messages per key in a changelog-backed table and
exits once it has seen FAUST_PROBE_COUNT messages (used to prove the broker version works)."""

import os
import sys

import faust

APP_ID = os.environ["FAUST_PROBE_ID"]
EXPECTED = int(os.environ.get("FAUST_PROBE_COUNT", "10"))

app = faust.App(
    APP_ID,
    broker=f"kafka://{os.environ['FAUST_PROBE_BROKER']}",
    store="memory://",
    topic_partitions=3,
    web_enabled=False,
)
source = app.topic(os.environ["FAUST_PROBE_TOPIC"], value_serializer="raw", key_serializer="raw")
counts = app.Table("counts", default=int, partitions=3)
seen: list[bytes] = []


@app.agent(source)
async def count(stream):
    async for key, value in stream.items():
        counts[key.decode()] += 1
        seen.append(value)
        if len(seen) >= EXPECTED:
            print("COUNTS", sorted(counts.items()), flush=True)
            sys.stdout.flush()
            os._exit(0)


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", "-l", "warn", "--without-web"]
    app.main()
