"""J1939 decoding on one core: edge-agent's table decoder next to cantools with a DBC of the same signals.

The frames are the twin's broadcast mix at real rates (EEC1 at 50 Hz, CCVS and LFE at 10 Hz, the
1 Hz counters, level and weight). cantools is what a user would pick to decode CAN with a DBC; the
DBC here is written from drivers/j1939/spns.csv so both decode the same SPNs (cantools applies the
scaling; "not available" markers are left to the caller there, as DBC files do not carry them).
The edge-agent row is what the driver does per frame: it counts every frame, then decodes a quantity
only when its `emit_interval_s` (1 s) is due, so most EEC1 frames are never decoded; the cantools row
decodes every frame, as a DBC-based logger does.
Run: taskset -c 0 python benchmarks/bench_j1939.py   (cantools: pip install cantools)
"""

from __future__ import annotations

import time
import tracemalloc

from edge_agent.drivers.j1939.config import J1939Config
from edge_agent.drivers.j1939.driver import J1939Driver
from edge_agent.drivers.j1939.protocol import make_can_id, parse_can_id, shipped_table
from edge_agent.drivers.j1939.twin import J1939Twin

ROUNDS = 5


def frames() -> list[tuple[int, bytes]]:
    twin = J1939Twin()
    out: list[tuple[int, bytes]] = []
    for tenth in range(600):  # one minute of bus traffic
        st = twin.state(tenth / 10)
        out += twin._eec1(st) * 5 + twin._ccvs(st) + twin._lfe(st)
        if tenth % 10 == 0:
            out += [f for f in twin._one_hz(st) if (f[0] >> 16) & 0xFF not in (0xEC, 0xEB)]
    return out


def dbc_text() -> str:
    """A DBC with one message per PGN of the shipped table (source address 0) and its SPNs as signals."""
    table = shipped_table()
    lines = ['VERSION ""', "", "NS_ :", "", "BS_:", "", "BU_: ENGINE", ""]
    for pgn, spns in sorted(table.by_pgn.items()):
        frame_id = make_can_id(6, pgn, 0) | 0x80000000  # bit 31: an extended identifier in DBC files
        lines.append(f"BO_ {frame_id} {spns[0].acronym}: 8 ENGINE")
        for s in spns:
            name = "".join(c for c in s.name.title() if c.isalnum())[:32]
            lines.append(
                f" SG_ {name} : {s.bit_offset}|{s.length_bits}@1+ ({s.resolution},{s.offset}) "
                f'[0|0] "{s.unit}" Vector__XXX'
            )
        lines.append("")
    return "\n".join(lines)


def bench(name: str, fn: object, data: list[tuple[int, bytes]]) -> None:
    assert callable(fn)
    best = float("inf")
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        fn(data)
        best = min(best, time.perf_counter() - t0)
    tracemalloc.start()
    fn(data)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"{name:<58} {len(data) / best:>12,.0f} {best / len(data) * 1e6:>9.1f} {peak / 1024:>9.0f}")


def main() -> None:
    data = frames()
    print(f"{len(data)} frames (one minute of the twin's broadcast mix)")
    print(f"{'what':<58} {'frames/s':>12} {'us/frame':>9} {'peak KiB':>9}")

    def ours(fs: list[tuple[int, bytes]]) -> None:
        d = J1939Driver(J1939Config(kind="j1939", channel="bench", emit_interval_s=1.0))
        for i, (can_id, payload) in enumerate(fs):
            d.handle_frame(can_id, payload, i * 0.001)
        d._pending.clear()

    bench("edge-agent table decoder (ids, SPNs, N/A markers, readings)", ours, data)
    try:
        import cantools
    except ImportError:
        print("cantools not installed: pip install cantools for the side-by-side column")
        return
    db = cantools.database.load_string(dbc_text(), database_format="dbc")
    by_id = {m.frame_id: m for m in db.messages}

    def with_cantools(fs: list[tuple[int, bytes]]) -> None:
        for can_id, payload in fs:
            cid = parse_can_id(can_id)
            msg = by_id.get(make_can_id(6, cid.pgn, 0))  # J1939: match on the PGN, not the whole id
            if msg is not None:
                msg.decode(payload, decode_choices=False)

    bench("cantools 45 decode with a DBC of the same SPNs", with_cantools, data)


if __name__ == "__main__":
    main()
