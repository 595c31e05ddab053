"""The local stack behaves as AWS does where sluice's guarantees depend on it: conditional
writes are atomic, concurrent puts are all kept, and stopping `sluice local up` (Ctrl-C or
SIGTERM) or killing what started moto leaves no server behind."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest

from sluice.ledger import ClaimLost, Ledger

REPO = Path(__file__).resolve().parents[2]
DAY = "2026-11-27"


def race(threads: int, attempt: Callable[[int], Any]) -> list[Any]:
    """Run ``attempt(i)`` in ``threads`` threads released together; their results in order.

    A thread that dies of an exception fails the race with that exception (``result()``
    re-raises it), not with a count mismatch further down.
    """
    start = threading.Barrier(threads, timeout=30)

    def contender(i: int) -> Any:
        start.wait()
        return attempt(i)

    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(contender, i) for i in range(threads)]
        return [f.result(timeout=60) for f in futures]


@pytest.fixture
def table(aws) -> str:
    boto3.client("dynamodb").create_table(
        TableName="ledger", BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                   {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"}])
    return "ledger"


def test_a_claim_race_has_exactly_one_winner(table):
    """Before moto's server was serialized, 8 threads claiming one record had two winners in
    about 8 rounds of 100 (moto checks the condition, then writes, with no lock between)."""
    threads, rounds = 8, 60
    ledgers = [Ledger(table, client=boto3.session.Session().client("dynamodb"))
               for _ in range(threads)]

    def claim(record_id: str) -> Callable[[int], bool]:
        def attempt(i: int) -> bool:
            try:
                ledgers[i].claim(record_id, DAY, f"token-{i}", time.time(), lease_s=120)
            except ClaimLost:
                return False
            return True
        return attempt

    winners = [sum(race(threads, claim(f"rec-{n}"))) for n in range(rounds)]
    assert winners == [1] * rounds
    holders = {Ledger(table).get(f"rec-{n}", DAY).claim_token for n in range(rounds)}
    assert len(holders) > 1  # different threads won different rounds: a real race


def test_a_racing_thread_that_dies_fails_the_race_with_its_own_exception():
    def attempt(i: int) -> bool:
        if i == 3:
            raise ConnectionResetError("thread 3 died")
        return False

    with pytest.raises(ConnectionResetError, match="thread 3 died"):
        race(4, attempt)


def test_concurrent_puts_to_one_shard_are_all_kept(aws):
    """moto's Kinesis lost 1-2 % of records under concurrent puts (PITFALLS.md)."""
    kinesis = boto3.client("kinesis")
    kinesis.create_stream(StreamName="puts", ShardCount=1)
    threads, each = 4, 100
    clients = [boto3.session.Session().client("kinesis") for _ in range(threads)]

    def put(i: int) -> int:
        for n in range(each):
            clients[i].put_record(StreamName="puts", PartitionKey="k", Data=f"{i}-{n}".encode())
        return each

    assert sum(race(threads, put)) == threads * each
    shard = kinesis.list_shards(StreamName="puts")["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(StreamName="puts", ShardId=shard,
                                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    seen: set[bytes] = set()
    while True:
        page = kinesis.get_records(ShardIterator=iterator, Limit=1000)
        seen |= {r["Data"] for r in page["Records"]}
        if not page["Records"]:
            break
        iterator = page["NextShardIterator"]
    assert len(seen) == threads * each


# -- stopping the stack ------------------------------------------------------------------------


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found |= {int(p) for p in text}
    return found


def _gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return "\nState:\tZ" in status  # exited, not yet reaped by whoever adopted it


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _lines(stream: Any) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put("")  # EOF

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _wait_for_line(lines: queue.Queue[str], needle: str, timeout_s: float) -> list[str]:
    seen, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if not line:
            break
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"no {needle!r} within {timeout_s} s; output:\n{''.join(seen)}")


pytestmark_linux = pytest.mark.skipif(not Path("/proc/self/task").exists(),
                                      reason="reads /proc for the child processes")


@pytestmark_linux
def test_sigterm_stops_local_up_and_its_moto_server(wait_until, tmp_path):
    moto_port, lambda_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "sluice_tools.cli", "local", "up", "--moto-port", str(moto_port),
         "--lambda-port", str(lambda_port)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output = _wait_for_line(_lines(process.stdout), "to stop", timeout_s=120)
        assert any(f"AWS_ENDPOINT_URL=http://127.0.0.1:{moto_port}" in line for line in output)
        started = _children(process.pid)
        assert started, "local up started no child process (moto runs in its own)"
        assert not _port_free(moto_port) and not _port_free(lambda_port)

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        assert wait_until(lambda: all(_gone(pid) for pid in started), timeout_s=30)
        assert wait_until(lambda: _port_free(moto_port) and _port_free(lambda_port),
                          timeout_s=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


@pytestmark_linux
def test_moto_exits_when_whatever_started_it_is_killed(wait_until):
    """SIGKILL runs no cleanup at all: the server notices its parent is gone and exits."""
    moto_port = _free_port()
    starter = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from sluice_tools.local.moto import MotoServer\n"
         f"server = MotoServer({moto_port}).start()\n"
         "print(server.pid, flush=True)\n"
         "time.sleep(600)\n"],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        moto_pid = int(_wait_for_line(_lines(starter.stdout), "", timeout_s=60)[0])
        assert not _port_free(moto_port)
        starter.kill()
        starter.wait(10)
        assert wait_until(lambda: _gone(moto_pid), timeout_s=30)
        assert wait_until(lambda: _port_free(moto_port), timeout_s=30)
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait(10)
