"""Recordings in a cluster (issue 12): every node must write into one shared
recordings_dir. Each node leaves a mark there and looks for the live nodes'
marks; a node whose folder is not shared says so on /api/health, and its
clean-up leaves alone the rows of files it cannot see (they are on another
node's disk), while a shared folder's clean-up forgets files already gone."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import aiohttp

from ivr.node_roster import NodeRoster
from ivr.recordings import SharedRecordings, purge_recordings
from ivr.store import open_store
from ivr.tickets import TicketStore
from tests.conftest import StartHotline

LOG = logging.getLogger("test.recordings_share")


async def test_marks_tell_a_shared_folder_from_per_node_folders(
    store_location: str | Path, tmp_path: Path
) -> None:
    db = await open_store(store_location)
    try:
        for node in ("node-a", "node-b", "node-c"):
            await NodeRoster(db, node).join()
        alive = await NodeRoster(db, "node-a").alive()
        shared, own = tmp_path / "shared", tmp_path / "own-c"
        a = SharedRecordings(shared, "node-a", LOG)
        b = SharedRecordings(shared, "node-b", LOG)
        c = SharedRecordings(own, "node-c", LOG)
        for share in (a, b, c):
            share.mark()
        assert not a.check(alive) and a.unseen == ["node-c"]
        assert a.describe() == "not shared with node-c"
        assert not c.check(alive) and c.unseen == ["node-a", "node-b"]
        assert a.check({"node-a", "node-b"}) and a.describe() == "ok"  # node C gone

        # a file of node C's disk, old enough to go: node A cannot see it
        store = TicketStore(db)
        ticket = await store.create("call-c", "13812345678")
        on_c = own / "2026-12-05" / "r1.wav"
        on_c.parent.mkdir(parents=True)
        on_c.write_bytes(b"RIFF....")
        await store.add_recording(ticket.id, on_c, 2.0, "silence")
        mine = shared / "2026-12-05" / "r2.wav"
        mine.parent.mkdir(parents=True)
        mine.write_bytes(b"RIFF....")
        await store.add_recording(ticket.id, mine, 2.0, "silence")
        await db.execute("UPDATE ticket_recordings SET created_at = ?", (time.time() - 3 * 86400,))
        on_c_seen_from_a = shared / "2026-12-05" / "r1.wav"  # the same name, A's folder
        await db.execute(
            "UPDATE ticket_recordings SET path = ? WHERE path = ?",
            (str(on_c_seen_from_a), str(on_c)),
        )
        assert await purge_recordings(store, 1, LOG, forget_missing=False) == 1  # its own only
        assert not mine.exists()
        got = await store.get(ticket.id)
        assert got is not None
        assert sorted(r.path for r in got.recordings) == ["", str(on_c_seen_from_a)]
        # a shared folder: a file already gone was deleted by another node or an admin
        assert await purge_recordings(store, 1, LOG, forget_missing=True) == 1
        got = await store.get(ticket.id)
        assert got is not None and [r.path for r in got.recordings] == ["", ""]
    finally:
        await db.close()


async def test_health_says_when_recordings_are_not_shared(
    start_hotline: StartHotline, tmp_path: Path
) -> None:
    hotline = await start_hotline(["sip:op@127.0.0.1:5999"], extra='[node]\nid = "node-a"\n')
    recordings = hotline.settings.storage.recordings_dir
    assert (recordings / ".nodes" / "node-a").is_file()  # its mark, left at start

    async def health() -> dict[str, object]:
        assert hotline.api is not None
        url = f"http://127.0.0.1:{hotline.api.port}/api/health"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            answer: dict[str, object] = await response.json()
            return answer

    assert (await health())["recordings"] == "ok"
    assert hotline.db is not None  # another node joins, its recordings on its own disk
    peer = NodeRoster(hotline.db, "node-b")
    await peer.join()
    assert not await hotline._recordings_shared()
    assert (await health())["recordings"] == "not shared with node-b"
    (recordings / ".nodes" / "node-b").write_text("node-b\n")  # now it writes here too
    await peer.beat()
    assert await hotline._recordings_shared()
    assert (await health())["recordings"] == "ok"
