"""Prefix routing: a conversation's turns stay on the replica that holds its prompt; loads stay balanced."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from xinf.routing import PrefixTable, balanced, by_prefix, prefix_keys, prompt_text
from xinf.testing.server import ServerProcess


@dataclass
class Fake:
    index: int
    inflight: int = 0


def conversation(n: int, turns: int) -> list[dict[str, str]]:
    system = f"You are assistant number {n}. " + " ".join(f"Rule {n}.{i}: answer briefly." for i in range(40))
    messages = [{"role": "system", "content": system}]
    for t in range(turns):
        messages.append({"role": "user", "content": f"question {t} of conversation {n}"})
        messages.append({"role": "assistant", "content": f"answer {t}"})
    messages.append({"role": "user", "content": f"question {turns} of conversation {n}"})
    return messages


def keys_of(messages: list[dict[str, str]]) -> list[bytes]:
    return prefix_keys(prompt_text(messages, None))


def test_a_longer_turn_extends_the_keys_of_the_earlier_one() -> None:
    first, second = keys_of(conversation(1, 0)), keys_of(conversation(1, 1))
    assert len(first) >= 4 and second[: len(first) - 1] == first[: len(first) - 1]
    assert keys_of(conversation(2, 0))[0] != first[0]  # another system prompt: nothing shared
    assert prefix_keys("short") == []  # shorter than a block: nothing to route by


def test_the_replica_with_the_longest_prefix_wins_while_loads_are_balanced() -> None:
    table = PrefixTable()
    replicas = [Fake(0), Fake(1), Fake(2)]
    table.record(keys_of(conversation(1, 0)), 2)
    table.record(keys_of(conversation(2, 0)), 0)
    assert by_prefix(replicas, table, keys_of(conversation(1, 1))).index == 2
    assert by_prefix(replicas, table, keys_of(conversation(2, 3))).index == 0
    assert by_prefix(replicas, table, keys_of(conversation(3, 0))).index == 0  # no match: least busy (first)
    replicas[2].inflight = 10  # one hot prefix must not pile everything onto one replica
    assert not balanced(replicas)
    assert by_prefix(replicas, table, keys_of(conversation(1, 1))).index == 0
    table.forget(0)  # a restarted replica holds nothing
    replicas[2].inflight = 0
    assert by_prefix([Fake(0), Fake(1)], table, keys_of(conversation(2, 1))).index == 0  # least busy, no match
    assert table.matched(keys_of(conversation(2, 1)), {0, 1, 2}) == {}


def test_the_table_is_bounded() -> None:
    table = PrefixTable(capacity=50)
    for n in range(20):
        table.record(keys_of(conversation(n, 0)), n % 3)
    assert len(table.owners) == 50
    assert table.matched(keys_of(conversation(19, 0)), {0, 1, 2})  # the newest are kept


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with ServerProcess(tmp_path_factory.mktemp("routing")) as server:
        yield server


def served_by(server: ServerProcess, uid: str) -> list[int]:
    return [r["requests"] for r in server.http.get(f"/v1/models/{uid}").json()["replicas"]]


def ask(server: ServerProcess, uid: str, messages: list[dict[str, str]]) -> int:
    """Send one turn; the index of the replica that served it."""
    before = served_by(server, uid)
    response = server.http.post("/v1/chat/completions", json={"model": uid, "messages": messages, "max_tokens": 2})
    assert response.status_code == 200, response.text
    after = served_by(server, uid)
    (index,) = [i for i, (a, b) in enumerate(zip(before, after)) if b > a]
    return index


def test_each_conversation_stays_on_one_replica_with_prefix_routing(server: ServerProcess) -> None:
    server.launch(model_name="xinf-test-chat", model_uid="prefix", replica=3, routing="prefix")
    assert server.http.get("/v1/models/prefix").json()["routing"] == "prefix"
    homes: dict[int, set[int]] = {n: set() for n in range(6)}
    for turn in range(3):
        for n in homes:
            homes[n].add(ask(server, "prefix", conversation(n, turn)))
    assert all(len(replicas) == 1 for replicas in homes.values()), homes
    assert len({next(iter(r)) for r in homes.values()}) == 3  # the conversations spread over every replica


def test_least_busy_routing_rotates_the_same_conversation(server: ServerProcess) -> None:
    server.launch(model_name="xinf-test-chat", model_uid="busy", replica=2, routing="least_busy")
    served = {ask(server, "busy", conversation(1, turn)) for turn in range(4)}
    assert served == {0, 1}


def test_a_bad_routing_is_a_400(server: ServerProcess) -> None:
    response = server.http.post("/v1/models", json={"model_name": "xinf-test-chat", "routing": "random"})
    assert response.status_code == 400
    assert "routing" in response.json()["error"]["message"]
