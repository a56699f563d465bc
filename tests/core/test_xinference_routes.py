"""Every public method of xinference-client 4.x against a real `xinf serve`: no 404, no 405, Xinference's shapes.

The methods are introspected from the installed package: a method added by a
new client release fails ``test_every_method_is_covered`` until it is called here.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from xinf.testing.server import ServerProcess

xc = pytest.importorskip("xinference_client")
from xinference_client.client.restful import async_restful_client as amod  # noqa: E402
from xinference_client.client.restful import restful_client as smod  # noqa: E402

ERROR = "error"  # the call must fail with a 4xx other than 404/405 (a route with no meaning here)


def public(cls: type) -> set[str]:
    return {
        name
        for klass in cls.__mro__[:-1]
        for name, value in vars(klass).items()
        if inspect.isfunction(value) and not name.startswith("_")
    }


def handle_classes(module: Any, base: type) -> list[type]:
    return [c for _, c in inspect.getmembers(module, inspect.isclass) if issubclass(c, base) and c is not base]


class Recorder:
    """Every HTTP status the clients got, by method and path."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int]] = []

    def hook(self, response: Any, *args: Any, **kwargs: Any) -> None:
        self.seen.append((response.request.method, response.request.path_url, response.status_code))

    def attach(self, session: Any) -> None:
        session.hooks["response"].append(self.hook)

    def since(self, mark: int) -> list[tuple[str, str, int]]:
        return self.seen[mark:]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("routes")
    cached = home / "cache" / "huggingface" / "acme--tiny"  # a download, as the cache keeps it
    cached.mkdir(parents=True)
    (cached / "config.json").write_text("{}")
    with ServerProcess(home) as srv:
        srv.launch(model_name="xinf-test-chat", model_uid="chat", replica=2)
        srv.launch(model_name="xinf-test-embed", model_uid="embed")
        yield srv


def is_list_of_dicts(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, dict) for v in value)


# name -> (call(ctx), expected shape check or ERROR); in call order.
def sync_calls(ctx: dict[str, Any]) -> list[tuple[str, Callable[[], Any], Any]]:
    c = ctx["client"]
    entry = {"launch": {"model_name": "xinf-test-chat", "model_uid": "auto1", "model_engine": "test"}}
    llm = json.dumps({"version": 2, "model_name": "reg-x", "model_ability": ["chat"], "model_family": "x",
                      "model_specs": [{"model_format": "pytorch", "model_size_in_billions": 1,
                                       "quantization": "none", "model_uri": "file:///nonexistent/x"}]})  # fmt: skip
    return [
        ("vllm_models", lambda: c.vllm_models(), lambda r: set(r) == {"chat", "generate"}),
        ("login", lambda: c.login("user", "pass"), lambda r: r is None),
        ("list_models", lambda: c.list_models(), lambda r: r["chat"]["model_type"] == "LLM"),
        ("launch_model", lambda: c.launch_model(model_name="xinf-test-chat", model_uid="extra"), "extra".__eq__),
        ("describe_model", lambda: c.describe_model("extra"), lambda r: r["model_ability"] == ["chat", "generate"]),
        ("add_model_replica", lambda: c.add_model_replica("extra"), lambda r: isinstance(r, dict)),
        ("terminate_model_replica", lambda: c.terminate_model_replica("extra", 1), lambda r: r is None or r == 1),
        ("get_launch_model_progress", lambda: c.get_launch_model_progress("extra"), lambda r: r["progress"] == 1.0),
        ("cancel_launch_model", lambda: c.cancel_launch_model("extra"), ERROR),  # ready: nothing to cancel (409)
        (
            "get_instance_info",
            lambda: c.get_instance_info("xinf-test-chat", "chat"),
            lambda r: [i["model_uid"] for i in r] == ["chat"] and r[0]["replica"] == 2,
        ),
        ("get_model", lambda: c.get_model("chat"), lambda r: type(r).__name__ == "RESTfulChatModelHandle"),
        ("get_autostart_config", lambda: c.get_autostart_config(), lambda r: r == {"models": []}),
        (
            "upsert_autostart_model",
            lambda: c.upsert_autostart_model(entry),
            lambda r: r["models"][0]["launch"]["model_uid"] == "auto1",
        ),
        (
            "get_autostart_model_summary",
            lambda: c.get_autostart_model_summary(),
            lambda r: r == {"models": [{"enabled": True, "model_uid": "auto1"}]},
        ),
        ("remove_autostart_model", lambda: c.remove_autostart_model("auto1"), lambda r: r == {"models": []}),
        ("reload_model", lambda: c.reload_model("extra", {"token_delay": 0.001}), lambda r: r["stage"] == "draining"),
        ("get_model_reload_status", lambda: wait_reload(c, "extra"), lambda r: r["stage"] == "ready"),
        (
            "get_model_reload_config",
            lambda: c.get_model_reload_config("extra"),
            lambda r: r["values"]["token_delay"] == 0.001 and "replica" in r["parameters"],
        ),
        ("terminate_model", lambda: c.terminate_model("extra"), lambda r: r is None),
        ("register_model", lambda: c.register_model("LLM", llm, persist=False), lambda r: r["model_name"] == "reg-x"),
        ("list_model_registrations", lambda: c.list_model_registrations("rerank"), lambda r: r == []),
        (
            "get_model_registration",
            lambda: c.get_model_registration("LLM", "reg-x"),
            lambda r: r["name"] == "reg-x" and r["model_type"] == "LLM",
        ),
        ("unregister_model", lambda: c.unregister_model("LLM", "reg-x"), lambda r: r["model_name"] == "reg-x"),
        ("list_cached_models", lambda: c.list_cached_models(), lambda r: r[0]["model_version"] == ctx["cached"]),
        (
            "list_deletable_models",
            lambda: c.list_deletable_models(ctx["cached"]),
            lambda r: r["paths"][0].endswith("acme--tiny"),
        ),
        ("confirm_and_remove_model", lambda: c.confirm_and_remove_model(ctx["cached"]), lambda r: r is True),
        (
            "query_engine_by_model_name",
            lambda: c.query_engine_by_model_name("xinf-test-chat"),
            lambda r: (
                r["test"]
                == [
                    {
                        "model_name": "xinf-test-chat",
                        "model_format": "test",
                        "model_size_in_billions": None,
                        "quantizations": ["none"],
                    }
                ]
            ),
        ),
        ("abort_request", lambda: c.abort_request("chat", "no-such-request", 0), lambda r: r == {"msg": "NO_OP"}),
        ("get_progress", lambda: c.get_progress(ctx["finished_request"]), lambda r: r == {"progress": 1.0}),
        ("get_workers_info", lambda: c.get_workers_info(), lambda r: {"chat", "embed"} <= set(r[0]["models"])),
        ("get_supervisor_info", lambda: c.get_supervisor_info(), lambda r: ":" in r["supervisor_ip"]),
        ("list_api_relaunches", lambda: c.list_api_relaunches(), lambda r: r == []),
        ("list_supervisor_relaunches", lambda: c.list_supervisor_relaunches(), lambda r: r == []),
        ("list_worker_relaunches", lambda: c.list_worker_relaunches(), lambda r: r == []),
        ("relaunch_api", lambda: c.relaunch_api(), ERROR),
        ("relaunch_supervisor", lambda: c.relaunch_supervisor(), ERROR),
        ("relaunch_worker", lambda: c.relaunch_worker("127.0.0.1:1"), ERROR),
        ("get_api_relaunch", lambda: c.get_api_relaunch("op"), ERROR),
        ("get_supervisor_relaunch", lambda: c.get_supervisor_relaunch("op"), ERROR),
        ("get_worker_relaunch", lambda: c.get_worker_relaunch("op"), ERROR),
    ]  # abort_cluster and close: last, in the test itself


def wait_reload(client: Any, uid: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        status = client.get_model_reload_status(uid)
        if status["stage"] in ("ready", "error") or time.monotonic() > deadline:
            return status  # type: ignore[no-any-return]
        time.sleep(0.05)


def handle_calls(handle: Any) -> list[tuple[str, Callable[[], Any], Any]]:
    """Every handle method: the chat/generate/embedding ones answer, the types xinf does not serve are 400s."""
    png = b"\x89PNG\r\n\x1a\n"
    calls = {
        "chat": (lambda: handle.chat([{"role": "user", "content": "hi"}], generate_config={"max_tokens": 3}),
                 lambda r: r["object"] == "chat.completion" and r["usage"]["completion_tokens"] == 3),
        "generate": (lambda: handle.generate("hello", generate_config={"max_tokens": 2}),
                     lambda r: r["object"] == "text_completion"),
        "create_embedding": (lambda: handle.create_embedding("hello"),
                             lambda r: r["object"] == "list" and len(r["data"][0]["embedding"]) == 8),
        "convert_ids_to_tokens": (lambda: handle.convert_ids_to_tokens([0, 2, 1]),
                                  lambda r: r == ["alpha", "charlie", "bravo"]),
        "rerank": (lambda: handle.rerank(["a", "b"], "q"), ERROR),
        "text_to_image": (lambda: handle.text_to_image("a cat"), ERROR),
        "image_to_image": (lambda: handle.image_to_image(png, "a cat"), ERROR),
        "image_edit": (lambda: handle.image_edit(png, "a cat"), ERROR),
        "inpainting": (lambda: handle.inpainting(png, png, "a cat"), ERROR),
        "ocr": (lambda: handle.ocr(png), ERROR),
        "transcriptions": (lambda: handle.transcriptions(b"RIFF"), ERROR),
        "translations": (lambda: handle.translations(b"RIFF"), ERROR),
        "speech": (lambda: handle.speech("hello"), ERROR),
        "text_to_video": (lambda: handle.text_to_video("a cat"), ERROR),
        "image_to_video": (lambda: handle.image_to_video(png, "a cat"), ERROR),
        "flf_to_video": (lambda: handle.flf_to_video(png, png, "a cat"), ERROR),
        "infer": (lambda: handle.infer(x=1), ERROR),
    }  # fmt: skip
    if type(handle).__name__.endswith("WorldModelHandle"):
        calls["generate"] = (lambda: handle.generate("a world"), ERROR)
    if type(handle).__name__.endswith("AudioModelHandle"):
        calls["create_embedding"] = (lambda: handle.create_embedding(b"RIFF"), ERROR)
    names = public(type(handle)) - {"close"}
    assert names <= set(calls), f"handle methods not covered here: {sorted(names - set(calls))}"
    return [(n, *calls[n]) for n in sorted(names)]


HANDLE_MODEL = {"Chat": "chat", "Generate": "chat", "Embedding": "embed"}  # the rest get the chat model


def model_for(cls: type) -> str:
    return next((uid for kind, uid in HANDLE_MODEL.items() if kind in cls.__name__), "chat")


def run_checked(recorder: Recorder, name: str, call: Callable[[], Any], expect: Any) -> None:
    mark = len(recorder.seen)
    if expect is ERROR:
        with pytest.raises(RuntimeError):
            call()
        statuses = [s for _, _, s in recorder.since(mark)]
        assert statuses and all(400 <= s < 500 for s in statuses), (name, recorder.since(mark))
    else:
        result = call()
        assert expect(result), (name, result)
    bad = [(m, p, s) for m, p, s in recorder.since(mark) if s in (404, 405)]
    assert not bad, (name, bad)


def test_every_method_is_covered() -> None:
    ctx: dict[str, Any] = {"client": None}
    covered = {n for n, _, _ in sync_calls(ctx)} | {"abort_cluster", "close"}
    assert public(xc.RESTfulClient) == covered, sorted(public(xc.RESTfulClient) ^ covered)
    assert public(xc.AsyncRESTfulClient) <= covered, sorted(public(xc.AsyncRESTfulClient) - covered)
    assert len(handle_classes(smod, smod.RESTfulModelHandle)) >= 8


def test_every_sync_method(server: ServerProcess) -> None:
    recorder = Recorder()
    client = xc.RESTfulClient(server.url)
    recorder.attach(client.session)
    handle = client.get_model("chat")
    handle.chat([{"role": "user", "content": "x"}], generate_config={"max_tokens": 2, "request_id": "done-1"})
    ctx = {"client": client, "finished_request": "done-1", "cached": "huggingface/acme/tiny"}
    for name, call, expect in sync_calls(ctx):
        run_checked(recorder, name, call, expect)
    for cls in handle_classes(smod, smod.RESTfulModelHandle):
        handle = cls(model_for(cls), server.url, auth_headers={})
        recorder.attach(handle.session)
        for name, call, expect in handle_calls(handle):
            run_checked(recorder, f"{cls.__name__}.{name}", call, expect)
        handle.close()
    client.close()


def test_every_async_method(server: ServerProcess) -> None:
    import aiohttp

    seen: list[tuple[str, str, int]] = []

    async def on_end(session: Any, ctx: Any, params: Any) -> None:
        seen.append((params.method, params.url.path, params.response.status))

    async def traced(owner: Any) -> None:
        await owner.session.close()  # the client's own session, replaced by one that records statuses
        trace = aiohttp.TraceConfig()
        trace.on_request_end.append(on_end)
        owner.session = aiohttp.ClientSession(trace_configs=[trace], connector=aiohttp.TCPConnector(force_close=True))

    async def check(name: str, call: Callable[[], Any], expect: Any) -> None:
        mark = len(seen)
        if expect is ERROR:
            with pytest.raises(RuntimeError):
                await call()
            assert seen[mark:] and all(400 <= s < 500 for _, _, s in seen[mark:]), (name, seen[mark:])
        else:
            result = await call()
            assert expect(result), (name, result)
        assert not [s for s in seen[mark:] if s[2] in (404, 405)], (name, seen[mark:])

    async def main() -> None:
        client = xc.AsyncRESTfulClient(server.url)
        await traced(client)
        ctx = {"client": client, "finished_request": "done-2", "cached": "huggingface/acme/tiny2"}
        cached = Path(server.home) / "cache" / "huggingface" / "acme--tiny2"
        cached.mkdir(parents=True)
        (cached / "config.json").write_text("{}")
        sync_names = {n: expect for n, _, expect in sync_calls(ctx)}
        handle = await client.get_model("chat")
        await traced(handle)
        await handle.chat([{"role": "user", "content": "x"}], generate_config={"max_tokens": 2, "request_id": "done-2"})
        await handle.close()
        c = client
        entry = {"launch": {"model_name": "xinf-test-chat", "model_uid": "auto2", "model_engine": "test"}}
        calls: dict[str, Callable[[], Any]] = {
            "vllm_models": c.vllm_models,
            "login": lambda: c.login("u", "p"),
            "list_models": c.list_models,
            "launch_model": lambda: c.launch_model(model_name="xinf-test-chat", model_uid="extra2"),
            "describe_model": lambda: c.describe_model("extra2"),
            "add_model_replica": lambda: c.add_model_replica("extra2"),
            "terminate_model_replica": lambda: c.terminate_model_replica("extra2", 1),
            "get_launch_model_progress": lambda: c.get_launch_model_progress("extra2"),
            "cancel_launch_model": lambda: c.cancel_launch_model("extra2"),
            "get_instance_info": lambda: c.get_instance_info("xinf-test-chat", "chat"),
            "get_model": lambda: c.get_model("embed"),
            "get_autostart_config": c.get_autostart_config,
            "upsert_autostart_model": lambda: c.upsert_autostart_model(entry),
            "get_autostart_model_summary": c.get_autostart_model_summary,
            "remove_autostart_model": lambda: c.remove_autostart_model("auto2"),
            "reload_model": lambda: c.reload_model("extra2", {"token_delay": 0.001}),
            "get_model_reload_status": lambda: wait_reload_async(c, "extra2"),
            "get_model_reload_config": lambda: c.get_model_reload_config("extra2"),
            "terminate_model": lambda: c.terminate_model("extra2"),
            "register_model": lambda: c.register_model("LLM", registration("reg-y"), persist=False),
            "list_model_registrations": lambda: c.list_model_registrations("rerank"),
            "get_model_registration": lambda: c.get_model_registration("LLM", "reg-y"),
            "unregister_model": lambda: c.unregister_model("LLM", "reg-y"),
            "list_cached_models": c.list_cached_models,
            "list_deletable_models": lambda: c.list_deletable_models(ctx["cached"]),
            "confirm_and_remove_model": lambda: c.confirm_and_remove_model(ctx["cached"]),
            "query_engine_by_model_name": lambda: c.query_engine_by_model_name("xinf-test-chat"),
            "abort_request": lambda: c.abort_request("chat", "no-such-request", 0),
            "get_progress": lambda: c.get_progress("done-2"),
            "get_workers_info": c.get_workers_info,
            "get_supervisor_info": c.get_supervisor_info,
            "list_worker_relaunches": c.list_worker_relaunches,
            "relaunch_worker": lambda: c.relaunch_worker("127.0.0.1:1"),
            "get_worker_relaunch": lambda: c.get_worker_relaunch("op"),
        }
        async_shapes = {
            "get_model": lambda r: type(r).__name__ == "AsyncRESTfulEmbeddingModelHandle",
            "launch_model": "extra2".__eq__,
            "register_model": lambda r: r["model_name"] == "reg-y",
            "get_model_registration": lambda r: r["name"] == "reg-y",
            "unregister_model": lambda r: r["model_name"] == "reg-y",
            "upsert_autostart_model": lambda r: r["models"][0]["launch"]["model_uid"] == "auto2",
            "get_autostart_model_summary": lambda r: r == {"models": [{"enabled": True, "model_uid": "auto2"}]},
            "list_cached_models": lambda r: r[0]["model_version"] == ctx["cached"],
            "list_deletable_models": lambda r: r["paths"][0].endswith("acme--tiny2"),
        }
        missing = public(xc.AsyncRESTfulClient) - set(calls) - {"close", "abort_cluster"}
        assert not missing, sorted(missing)
        for name, call in calls.items():
            expect = async_shapes.get(name, sync_names[name])
            result_holder: list[Any] = []
            if name == "get_model":
                got = await call()
                await got.close()
                assert async_shapes[name](got)
                continue
            await check(name, call, expect)
            del result_holder
        for cls in handle_classes(amod, amod.AsyncRESTfulModelHandle):
            h = cls(model_for(cls), server.url, auth_headers={})
            await traced(h)
            for name, call, expect in handle_calls(h):
                await check(f"{cls.__name__}.{name}", call, expect)
            await h.close()
        await client.close()

    asyncio.run(main())


async def wait_reload_async(client: Any, uid: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        status = await client.get_model_reload_status(uid)
        if status["stage"] in ("ready", "error") or time.monotonic() > deadline:
            return status  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)


def registration(name: str) -> str:
    return json.dumps(
        {"version": 2, "model_name": name, "model_ability": ["chat"], "model_family": "x",
         "model_specs": [{"model_format": "pytorch", "model_size_in_billions": 1, "quantization": "none",
                          "model_uri": "file:///nonexistent/x"}]}
    )  # fmt: skip


# ---------------------------------------------------------------- behaviour behind the routes


def test_abort_by_request_id_across_replicas_and_progress(server: ServerProcess) -> None:
    server.launch(model_name="xinf-test-chat", model_uid="slow", replica=2, token_delay=0.2)
    client = xc.RESTfulClient(server.url)
    handle = client.get_model("slow")
    results: dict[str, Any] = {}

    def chat(rid: str) -> None:
        config = {"max_tokens": 50, "stream": True, "request_id": rid}
        results[rid] = list(handle.chat([{"role": "user", "content": "hi"}], generate_config=config))

    threads = [threading.Thread(target=chat, args=(f"r{i}",)) for i in range(2)]  # one per replica
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    progress = {"progress": 0.0}
    while progress["progress"] == 0.0 and time.monotonic() < deadline:
        time.sleep(0.1)
        progress = client.get_progress("r1")
    assert 0 < progress["progress"] < 1
    assert client.abort_request("slow", "r0") == {"msg": "DONE"}
    assert client.abort_request("slow", "r1") == {"msg": "DONE"}
    for t in threads:
        t.join(30)
    for rid in ("r0", "r1"):
        finish = [c["choices"][0]["finish_reason"] for c in results[rid] if c["choices"]]
        assert finish[-1] == "abort"
        words = "".join(c["choices"][0]["delta"].get("content") or "" for c in results[rid] if c["choices"])
        assert 0 < len(words.split()) < 50
        assert client.get_progress(rid) == {"progress": 1.0}
    replicas = {r["index"]: r["inflight"] for r in client.describe_model("slow")["replicas"]}
    assert replicas == {0: 0, 1: 0}
    # An abort that arrives first blocks the id: the request then ends at once.
    assert client.abort_request("slow", "early", 30) == {"msg": "NO_OP"}
    reply = handle.chat([{"role": "user", "content": "hi"}], generate_config={"max_tokens": 50, "request_id": "early"})
    assert reply["choices"][0]["finish_reason"] == "abort" and reply["choices"][0]["message"]["content"] == ""
    client.terminate_model("slow")
    client.close()


def test_an_empty_request_id_is_refused(server: ServerProcess) -> None:
    body = {"model": "chat", "messages": [{"role": "user", "content": "x"}], "request_id": ""}
    response = server.http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400 and response.json()["error"]["param"] == "request_id"


def test_convert_ids_to_tokens_of_a_batch(server: ServerProcess) -> None:
    body = {"model": "embed", "input": [[3, 4], [5]]}
    assert server.http.post("/v1/convert_ids_to_tokens", json=body).json() == [["delta", "echo"], ["foxtrot"]]
    bad = server.http.post("/v1/convert_ids_to_tokens", json={"model": "embed", "input": [999]})
    assert bad.status_code == 400 and "vocabulary" in bad.json()["error"]["message"]


def test_fixed_paths_are_not_taken_for_model_uids(server: ServerProcess) -> None:
    for path in ("/v1/models/instances", "/v1/models/vllm-supported"):
        response = server.http.get(path)
        assert response.status_code == 200, (path, response.text)


def test_autostart_brings_models_back_with_the_server(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with ServerProcess(home) as first:
        first.http.post("/v1/models", json={"model_name": "xinf-test-chat", "model_uid": "kept", "autostart": True})
        entry = {"model_name": "xinf-test-embed", "model_uid": "kept-embed", "priority": 1}
        assert first.http.post("/v1/autostart/models", json=entry).status_code == 200
        wait_ready(first, {"kept", "kept-embed"})
        first.launch(model_name="xinf-test-chat", model_uid="gone")
    with ServerProcess(home) as second:
        wait_ready(second, {"kept", "kept-embed"})
        assert "gone" not in {m["id"] for m in second.http.get("/v1/models").json()["data"]}
        config = second.http.get("/v1/autostart/models").json()["models"]
        assert {m["launch"]["model_uid"]: m["state"]["status"] for m in config} == {
            "kept": "running",
            "kept-embed": "running",
        }
        bad = second.http.post("/v1/autostart/models", json={"launch": {"model_name": "x", "replica": "two"}})
        assert bad.status_code == 400


def wait_ready(server: ServerProcess, uids: set[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready = {m["id"] for m in server.http.get("/v1/models").json()["data"] if m["status"] == "ready"}
        if uids <= ready:
            return
        time.sleep(0.1)
    raise AssertionError(f"{uids} not ready: {server.http.get('/v1/models').json()}")


def test_abort_cluster_stops_the_server(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "h") as srv:
        client = xc.RESTfulClient(srv.url)
        assert client.abort_cluster() is True
        assert srv.proc is not None and srv.proc.wait(30) in (0, -15)  # stopped as by SIGTERM
        client.close()


def test_login_with_the_api_key(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "h", args=["--api-key", "sekret"]) as srv:
        client = xc.RESTfulClient(srv.url)
        with pytest.raises(RuntimeError, match="wrong API key"):
            client.login("anyone", "guess")
        client.login("anyone", "sekret")
        assert client.list_models() == {}
        client.close()
