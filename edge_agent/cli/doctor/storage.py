"""Doctor checks of the disk and the outbox: free space, integrity, chain links, oldest undelivered."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import shutil
import sqlite3

from edge_agent.cli.doctor.base import (
    CHAIN_TAIL,
    DISK_MARGIN_MB,
    FAIL,
    OK,
    OLDEST_UNDELIVERED_FAIL_S,
    OLDEST_UNDELIVERED_WARN_S,
    WARN,
    Check,
    human_s,
)
from edge_agent.errors import EdgeAgentError
from edge_agent.settings import AgentConfig

log = logging.getLogger(__name__)


def check_disk(cfg: AgentConfig) -> Check:
    from edge_agent.spine.outbox import Outbox

    folder = cfg.state_dir if cfg.state_dir.exists() else cfg.state_dir.parent
    free_mb = shutil.disk_usage(folder).free / 1048576
    stored_mb = 0.0
    if cfg.db_path.exists():
        with contextlib.suppress(sqlite3.Error, EdgeAgentError):
            ob = Outbox(cfg.db_path, readonly=True)
            try:
                stored_mb = ob.stats().stored_bytes / 1048576
            finally:
                ob.close()
    needed_mb = max(0.0, cfg.outbox.max_mb - stored_mb)
    msg = (
        f"{free_mb:.0f} MB free on {folder}; the outbox may still grow by {needed_mb:.0f} MB "
        f"(outbox.max_mb {cfg.outbox.max_mb:g})"
    )
    if free_mb < needed_mb:
        lower = max(free_mb - DISK_MARGIN_MB, 1)
        return Check("disk", FAIL, msg, f"free disk space or lower outbox.max_mb below {lower:.0f}")
    if free_mb < needed_mb + DISK_MARGIN_MB:
        return Check("disk", WARN, msg, "free some disk space: less than 100 MB would be left with a full outbox")
    return Check("disk", OK, msg)


def check_outbox(cfg: AgentConfig) -> Check:  # noqa: PLR0911 - one verdict per kind of damage
    """SQLite integrity, the chain links of the newest records, the head, and the oldest undelivered age."""
    from edge_agent.spine.outbox import FOREIGN_CHAIN_REMEDY, Outbox

    if not cfg.db_path.exists():
        return Check("outbox", OK, f"{cfg.db_path} not created yet (the agent has not run)")
    try:
        with Outbox(cfg.db_path, readonly=True) as probe:
            result = probe.quick_check()
            rows = probe.tail(CHAIN_TAIL)  # oldest first
    except sqlite3.DatabaseError as exc:
        result, rows = str(exc), []
    if result != "ok":
        return Check(
            "outbox",
            FAIL,
            f"{cfg.db_path} failed its integrity check ({str(result)[:120]})",
            "restart the agent: it moves the damaged file aside and starts a fresh outbox; keep the old "
            "file for recovery",
        )
    ob = Outbox(cfg.db_path, readonly=True)
    try:
        st = ob.stats()
        foreign = ob.foreign_chain(cfg.device.id)
    finally:
        ob.close()
    if foreign is not None:
        return Check("outbox", FAIL, foreign, f"the agent refuses to start on it; {FOREIGN_CHAIN_REMEDY}")
    recs = [json.loads(d) for _, d in rows]
    for a, b in itertools.pairwise(recs):
        if b["seq"] == a["seq"] + 1 and b.get("prev") != a.get("hash"):
            return Check(
                "outbox",
                FAIL,
                f"chain broken between seq {a['seq']} and {b['seq']}",
                "the outbox was altered: keep a copy for the central team and report it",
            )
    if recs and recs[-1]["seq"] == st.head_seq and recs[-1].get("hash") != st.head_hash:
        return Check(
            "outbox",
            FAIL,
            f"stored head hash does not match record seq {st.head_seq}",
            "the outbox was altered: keep a copy for the central team and report it",
        )
    age = st.oldest_undelivered_age_s
    msg = f"intact; head seq {st.head_seq}, {st.depth} undelivered"
    if age is None:
        return Check("outbox", OK, msg)
    msg += f", oldest waiting {human_s(age)}"
    if age > OLDEST_UNDELIVERED_FAIL_S:
        return Check("outbox", FAIL, msg, "records are not reaching the broker: see the broker checks below")
    if age > OLDEST_UNDELIVERED_WARN_S:
        return Check("outbox", WARN, msg, "records are slow to reach the broker: see the broker checks below")
    return Check("outbox", OK, msg)
