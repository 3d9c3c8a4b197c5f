"""The Helper (then also the Leader) goes down mid-collection: nothing is lost.

While the Helper is down the Leader keeps accepting and storing uploads, its jobs wait,
and no window closes (a window needs both aggregators). The Leader is then stopped with
jobs open; both come back, the Leader resends its stored jobs (the Helper answers a job
it already ran with the same response), and every report is counted exactly once. Last,
the Leader goes down during an upload: the gateway resends the same reports until it is
back.
"""

from __future__ import annotations

import asyncio
import time

from datafed.collect import Collector, Uploader
from datafed.proto.v1 import collect_pb2

from .collect_harness import (
    HELPER,
    LEADER,
    PURPOSE,
    collect_federation,
    gateway_file,
    make_task,
    party,
    signed,
    upload,
    wait_closed,
)
from .collect_harness import window as w
from .raw import ledger_records


def test_helper_down_uploads_accepted_then_both_catch_up_nothing_lost(tmp_path) -> None:
    fed = collect_federation(tmp_path, [make_task("meters", close_after=30)])
    try:
        nodes = {n.spec.name: n for n in fed.nodes}
        first = [(1, w(0) + i) for i in range(20)] + [(0, w(1) + i) for i in range(10)]
        dt, _ = asyncio.run(upload(fed, "meters", first))
        fed.stop_node(nodes[HELPER])
        later = [(1, w(0) + 30 + i) for i in range(15)] + [(1, w(1) + 30 + i) for i in range(5)]
        _, statuses = asyncio.run(upload(fed, "meters", [*later, (0, w(2) + 40)]))
        assert set(statuses) == {"accepted"}  # the Leader stores them with the Helper down
        time.sleep(1.0)

        async def listed() -> list[int]:  # asked of the Leader alone: the Helper is down
            alice = party(fed, "analyst", "alice", LEADER)
            req = collect_pb2.ListWindowsRequest(task="meters")
            reply = await signed(alice, LEADER, "ListWindows", req)
            await alice.aclose()
            return [x.start for x in reply.windows]

        assert asyncio.run(listed()) == []  # no window closes without the Helper
        fed.stop_node(nodes[LEADER])  # with jobs still open: they are stored
        fed.start_node(nodes[HELPER])
        fed.start_node(nodes[LEADER])
        asyncio.run(wait_closed(fed, "meters", [w(0), w(1)]))
        assert "resending" in nodes[LEADER].log.read_text()  # the stored jobs, after restart

        async def fetch():
            async with Collector.from_file(fed.fed_toml) as col:
                return [await col.get("meters", s, purpose=PURPOSE) for s in (w(0), w(1))]

        one, two = asyncio.run(fetch())
        assert (one.result, one.report_count, one.rejected_count) == (35, 35, 0)
        assert (two.result, two.report_count, two.rejected_count) == (5, 15, 0)
        for node in (LEADER, HELPER):
            closes = [r for r in ledger_records(fed, node) if r.operation == "collect_window"]
            assert [r.details["window"] for r in closes] == [str(w(0)), str(w(1))]

        # The Leader itself goes down while a gateway uploads: the gateway retries the
        # same reports until it is back; they are stored once.
        fed.stop_node(nodes[LEADER])

        async def upload_through_restart() -> list[str]:
            async with Uploader.from_file(gateway_file(fed)) as up:
                sending = asyncio.create_task(
                    up.upload(dt, dt.shard_many([(1, w(5) + i) for i in range(10)]), retries=10)
                )
                await asyncio.sleep(0.5)
                await asyncio.to_thread(fed.start_node, nodes[LEADER])
                result = await sending
                assert min(result.batch_seconds) > 0.5  # it waited for the Leader: retried
                return list(result.statuses)

        assert asyncio.run(upload_through_restart()) == ["accepted"] * 10
    finally:
        codes = fed.stop()
        assert all(c in (0, None) for c in codes), f"nodes exited with {codes}"
