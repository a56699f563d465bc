"""GET /metrics: what each model and replica served, in Prometheus format."""

from __future__ import annotations

import subprocess
import sys
import threading

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from xinf.testing.server import ServerProcess
from xinf.testing.wait import wait_for


def scrape(server: ServerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{server.url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples: dict, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and all((k, w) in ls for k, w in labels.items()))


def test_requests_tokens_errors_and_latency(server: ServerProcess) -> None:
    server.launch(model_name="xinf-test-chat", model_uid="m", replica=2, context_length=50)
    client = server.openai()
    prompt_tokens = completion_tokens = 0
    for i in range(3):
        reply = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": f"count the words {i}"}], max_tokens=4 + i
        )
        prompt_tokens += reply.usage.prompt_tokens
        completion_tokens += reply.usage.completion_tokens
    stream = client.completions.create(
        model="m", prompt="one two", max_tokens=5, stream=True, stream_options={"include_usage": True}
    )
    usage = next(c.usage for c in stream if c.usage)
    prompt_tokens += usage.prompt_tokens
    completion_tokens += usage.completion_tokens
    with pytest.raises(openai.BadRequestError):  # over the test engine's context_length of 50 words
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "w " * 60}])

    client.close()
    samples = scrape(server)
    assert total(samples, "xinf_requests_total", model="m") == 5
    assert total(samples, "xinf_prompt_tokens_total", model="m") == prompt_tokens
    assert total(samples, "xinf_prompt_cached_tokens_total", model="m") == 0  # the test engine has no prefix cache
    assert total(samples, "xinf_completion_tokens_total", model="m") == completion_tokens == 4 + 5 + 6 + 5
    assert total(samples, "xinf_request_errors_total", model="m", type="invalid_request_error") == 1
    assert total(samples, "xinf_time_to_first_token_seconds_count", model="m") == 4
    assert total(samples, "xinf_request_latency_seconds_count", model="m") == 4
    assert total(samples, "xinf_request_latency_seconds_sum", model="m") > 0
    # The least-busy router spread the requests over both replicas.
    per_replica = [total(samples, "xinf_requests_total", model="m", replica=r) for r in ("0", "1")]
    assert sum(per_replica) == 5 and min(per_replica) >= 1
    for replica in ("0", "1"):
        assert samples[("xinf_replica_up", (("model", "m"), ("replica", replica)))] == 1
        assert samples[("xinf_replica_status", (("model", "m"), ("replica", replica), ("status", "ready")))] == 1
        assert samples[("xinf_replica_status", (("model", "m"), ("replica", replica), ("status", "dead")))] == 0
    assert total(samples, "process_resident_memory_bytes") > 0


def test_running_and_waiting_requests(server: ServerProcess) -> None:
    # 1.5 s before each chunk: a request first waits for its first token, then runs.
    server.launch(model_name="xinf-test-chat", model_uid="slow", token_delay=1.5)
    done = threading.Event()

    def ask() -> None:
        with server.openai() as client:
            client.chat.completions.create(model="slow", messages=[{"role": "user", "content": "x"}], max_tokens=2)
        done.set()

    worker = threading.Thread(target=ask)
    worker.start()
    try:
        wait_for(lambda: total(scrape(server), "xinf_requests_waiting", model="slow") == 1)
        wait_for(lambda: total(scrape(server), "xinf_requests_running", model="slow") == 1)
        assert total(scrape(server), "xinf_requests_waiting", model="slow") == 0
    finally:
        worker.join(30)
    assert done.is_set()
    samples = scrape(server)
    assert total(samples, "xinf_requests_running", model="slow") == 0
    assert total(samples, "xinf_time_to_first_token_seconds_bucket", model="slow", le="1.0") == 0
    assert total(samples, "xinf_time_to_first_token_seconds_bucket", model="slow", le="+Inf") == 1


def test_restarted_replica_is_counted(server: ServerProcess) -> None:
    server.launch(model_name="xinf-test-chat", model_uid="c", crash_after=1)
    with server.openai() as client, pytest.raises(openai.APIError):
        client.chat.completions.create(model="c", messages=[{"role": "user", "content": "x"}], max_tokens=5)
    wait_for(lambda: total(scrape(server), "xinf_replica_restarts_total", model="c") == 1)
    samples = scrape(server)
    assert total(samples, "xinf_request_errors_total", model="c", type="replica_died") == 1


def test_disable_metrics_removes_the_route(start_server) -> None:
    server: ServerProcess = start_server(env={"XINFERENCE_DISABLE_METRICS": "1"})
    response = httpx.get(f"{server.url}/metrics")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "route_not_found"


def test_prometheus_client_is_imported_on_first_scrape_only(tmp_path) -> None:
    code = (
        "import sys; from xinf.server.app import create_app; from xinf.settings import Settings; "
        f"create_app(Settings.from_env({{'XINFERENCE_HOME': {str(tmp_path)!r}}})); "
        "print('prometheus_client' in sys.modules, 'huggingface_hub' in sys.modules, 'modelscope' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "False", "False"], out.stderr
