import aiohttp

from depthflow.common.metrics import HealthServer, ServiceMetrics


async def test_metrics_health_and_readiness_endpoints():
    metrics = ServiceMetrics("demo")
    handled = metrics.counter("messages_handled", "messages handled", ["symbol"])
    handled.labels("BTCUSDT").inc(3)
    ready = {"value": False}
    server = HealthServer(metrics, "127.0.0.1", 0, ready=lambda: ready["value"])
    await server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/metrics") as resp:
                body = await resp.text()
                assert resp.status == 200
            assert 'depthflow_demo_messages_handled_total{symbol="BTCUSDT"} 3.0' in body
            async with http.get(f"{base}/healthz") as resp:
                assert resp.status == 200
            async with http.get(f"{base}/readyz") as resp:
                assert resp.status == 503
            ready["value"] = True
            async with http.get(f"{base}/readyz") as resp:
                assert resp.status == 200
    finally:
        await server.stop()


def test_two_services_in_one_process_do_not_collide():
    a, b = ServiceMetrics("a"), ServiceMetrics("b")
    a.counter("x", "x").inc()
    b.counter("x", "x").inc()
    assert b"depthflow_a_x_total 1.0" in a.render()
    assert b"depthflow_a_x_total" not in b.render()
