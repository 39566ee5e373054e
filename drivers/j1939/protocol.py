"""SAE J1939 over bytes: identifiers, SPN decoding from a data table, transport protocol, VIN and DM1 (pure).

Documents followed:
- SAE J1939-21 (data link layer): the 29-bit identifier (priority 3 bits, EDP, DP, PDU format PF,
  PDU specific PS, source address SA); PF < 240 is PDU1 (PS is a destination address and not part
  of the PGN), PF >= 240 is PDU2 (PS is the group extension). Transport protocol (section 5.10):
  TP.CM (PGN 60416) with control bytes 16 RTS, 17 CTS, 19 EndOfMsgAck, 32 BAM, 255 Abort, bytes 2-3
  the message size, byte 4 the packet count, bytes 6-8 the PGN carried; TP.DT (PGN 60160) with a
  sequence number in byte 1 and 7 data bytes; at most 1785 bytes; T1 = 750 ms between packets.
  Request PGN 59904: three data bytes, the requested PGN little-endian.
- SAE J1939-71 (vehicle application layer) section 5.1.4: a parameter of n whole bytes is valid up to
  0xFA..FF (the top byte 0xFA), 0xFE.. is an error indicator, 0xFF.. "not available"; a 2-bit status
  10 is an error, 11 not available; 4-bit 0xE error, 0xF not available. SPN positions are byte.bit,
  1-based, multi-byte values little-endian. The SPNs themselves are a data table (spns.csv).
- SAE J1939-73 (diagnostics) DM1 (PGN 65226): byte 1 lamps (MIL bits 8-7, red stop 6-5, amber
  warning 4-3, protect 2-1), byte 2 flash codes, then 4 bytes per DTC: SPN low 16 bits (bytes 3-4),
  SPN high 3 bits in byte 5 bits 8-6, FMI byte 5 bits 5-1, occurrence count byte 6 bits 7-1
  (conversion method version 4).
- VIN (PGN 65260, SPN 237): ASCII, ended by '*', sent with BAM when longer than 8 bytes.
"""

from __future__ import annotations

import csv
import importlib.resources
import io
from dataclasses import dataclass, field
from pathlib import Path

from edge_agent.drivers.base import FrameError

PGN_REQUEST = 59904
PGN_TP_CM = 60416
PGN_TP_DT = 60160
PGN_DM1 = 65226
PGN_VI = 65260
TP_RTS, TP_CTS, TP_EOM_ACK, TP_BAM, TP_ABORT = 16, 17, 19, 32, 255
TP_MAX_BYTES = 1785
TP_T1_S = 0.75  # J1939-21: a receiver gives up on a session after 750 ms without its next packet
GLOBAL = 0xFF


@dataclass(frozen=True, slots=True)
class CanId:
    """The parts of a 29-bit J1939 identifier."""

    priority: int
    pgn: int
    source: int
    destination: int  # GLOBAL for PDU2 (broadcast) PGNs


def parse_can_id(arbitration_id: int) -> CanId:
    """Split a 29-bit identifier into priority, PGN, source and destination (J1939-21 PDU1/PDU2)."""
    if not 0 <= arbitration_id < 1 << 29:
        raise FrameError(f"identifier {arbitration_id:#x}: expected a 29-bit extended CAN identifier")
    priority = arbitration_id >> 26
    edp_dp = (arbitration_id >> 24) & 0x3
    pf = (arbitration_id >> 16) & 0xFF
    ps = (arbitration_id >> 8) & 0xFF
    sa = arbitration_id & 0xFF
    if pf < 240:
        return CanId(priority, (edp_dp << 16) | (pf << 8), sa, ps)
    return CanId(priority, (edp_dp << 16) | (pf << 8) | ps, sa, GLOBAL)


def make_can_id(priority: int, pgn: int, source: int, destination: int = GLOBAL) -> int:
    """The 29-bit identifier for a PGN from `source` (to `destination` for PDU1 PGNs)."""
    pf = (pgn >> 8) & 0xFF
    ps = destination if pf < 240 else pgn & 0xFF
    return (priority & 0x7) << 26 | ((pgn >> 16) & 0x3) << 24 | pf << 16 | ps << 8 | (source & 0xFF)


def encode_request(pgn: int, source: int, destination: int = GLOBAL) -> tuple[int, bytes]:
    """(identifier, data) of a Request (PGN 59904, priority 6) for `pgn`."""
    return make_can_id(6, PGN_REQUEST, source, destination), pgn.to_bytes(3, "little")


# ---------------------------------------------------------------- SPN table


@dataclass(frozen=True, slots=True)
class Spn:
    """One parameter as the Digital Annex places and scales it."""

    pgn: int
    acronym: str
    spn: int
    name: str
    start_byte: int  # 1-based
    start_bit: int  # 1-based, within start_byte
    length_bits: int
    resolution: float
    offset: float
    unit: str
    quantity: str  # what the driver hands on ("" for none)

    @property
    def bit_offset(self) -> int:
        return (self.start_byte - 1) * 8 + self.start_bit - 1


@dataclass(frozen=True, slots=True)
class SpnTable:
    """PGN -> its SPNs; built from spns.csv and a site's own CAN map."""

    by_pgn: dict[int, tuple[Spn, ...]] = field(default_factory=dict)

    def spns(self, pgn: int) -> tuple[Spn, ...]:
        return self.by_pgn.get(pgn, ())

    def acronym(self, pgn: int) -> str:
        spns = self.by_pgn.get(pgn)
        return spns[0].acronym if spns else str(pgn)

    def merged(self, other: SpnTable) -> SpnTable:
        """This table with `other`'s PGNs added (a PGN in both: other's rows win)."""
        return SpnTable({**self.by_pgn, **other.by_pgn})


_COLUMNS = (
    "pgn",
    "acronym",
    "spn",
    "name",
    "start_byte",
    "start_bit",
    "length_bits",
    "resolution",
    "offset",
    "unit",
    "quantity",
)


def parse_spn_table(text: str, source: str) -> SpnTable:
    """The rows of an SPN CSV ('#' lines are comments); ValueError naming the source, line and column."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    if tuple(reader.fieldnames or ()) != _COLUMNS:
        got = ",".join(reader.fieldnames or [])
        raise ValueError(f"{source}: expected the header {','.join(_COLUMNS)}, got {got}")
    by_pgn: dict[int, list[Spn]] = {}
    for n, row in enumerate(reader, start=2):
        try:
            spn = Spn(
                pgn=int(row["pgn"]),
                acronym=row["acronym"].strip(),
                spn=int(row["spn"]),
                name=row["name"].strip(),
                start_byte=int(row["start_byte"]),
                start_bit=int(row["start_bit"]),
                length_bits=int(row["length_bits"]),
                resolution=float(row["resolution"]),
                offset=float(row["offset"]),
                unit=row["unit"].strip(),
                quantity=row["quantity"].strip(),
            )
        except (TypeError, ValueError, AttributeError):
            raise ValueError(
                f"{source}: data row {n - 1}: expected numbers in pgn, spn, positions and scaling"
            ) from None
        if not (1 <= spn.start_byte <= 8 and 1 <= spn.start_bit <= 8 and 1 <= spn.length_bits <= 32):
            raise ValueError(f"{source}: data row {n - 1} (SPN {spn.spn}): position outside an 8-byte frame")
        if spn.bit_offset + spn.length_bits > 64 and spn.pgn not in (PGN_VI, PGN_DM1):
            raise ValueError(f"{source}: data row {n - 1} (SPN {spn.spn}): runs past byte 8")
        by_pgn.setdefault(spn.pgn, []).append(spn)
    return SpnTable({pgn: tuple(rows) for pgn, rows in by_pgn.items()})


def shipped_table() -> SpnTable:
    """The table shipped beside this module (spns.csv)."""
    text = importlib.resources.files("edge_agent.drivers.j1939").joinpath("spns.csv").read_text(encoding="utf-8")
    return parse_spn_table(text, "spns.csv")


def load_table(site_map: Path | None) -> SpnTable:
    """The shipped table, plus a site's CAN map when one is configured."""
    table = shipped_table()
    if site_map is None:
        return table
    try:
        text = site_map.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{site_map}: cannot read the CAN map: {exc.strerror or exc}") from None
    return table.merged(parse_spn_table(text, str(site_map)))


def raw_field(data: bytes, spn: Spn) -> int | None:
    """The raw integer of an SPN, or None when the frame is too short to hold it."""
    end = spn.bit_offset + spn.length_bits
    if end > len(data) * 8:
        return None
    return (int.from_bytes(data, "little") >> spn.bit_offset) & ((1 << spn.length_bits) - 1)


def marker(raw: int, length_bits: int) -> str | None:  # noqa: PLR0911 - one verdict per J1939-71 range
    """'not available' / 'error' for J1939-71 5.1.4's reserved ranges, None for a valid raw value."""
    if length_bits >= 8:
        top = raw >> (length_bits - 8)
        if top == 0xFF:
            return "not available"
        if top == 0xFE:
            return "error"
        return "reserved" if top > 0xFA else None
    if length_bits == 1:
        return None
    all_ones = (1 << length_bits) - 1
    if raw == all_ones:
        return "not available"
    if raw == all_ones - 1:
        return "error"
    return None


def decode_spn(data: bytes, spn: Spn) -> float | None:
    """The physical value (raw * resolution + offset), or None when not available, an error or absent."""
    raw = raw_field(data, spn)
    if raw is None or marker(raw, spn.length_bits) is not None:
        return None
    return raw * spn.resolution + spn.offset


def decode_pgn(pgn: int, data: bytes, table: SpnTable) -> dict[int, float | None]:
    """SPN -> value for every SPN of `pgn` in the table (None: not available or error)."""
    return {spn.spn: decode_spn(data, spn) for spn in table.spns(pgn)}


# ---------------------------------------------------------------- VIN and DM1


def decode_vin(payload: bytes) -> str:
    """The VIN of a VI message: ASCII up to the '*' delimiter; FrameError when it is not printable text."""
    text = payload.split(b"*", 1)[0].rstrip(b"\x00 \xff")
    try:
        vin = text.decode("ascii")
    except UnicodeDecodeError:
        raise FrameError(f"VI: VIN is not ASCII: {payload[:20].hex(' ')}") from None
    if not vin or not vin.isprintable():
        raise FrameError(f"VI: no printable VIN in {payload[:20].hex(' ')}")
    return vin


@dataclass(frozen=True, slots=True)
class Dtc:
    """One active diagnostic trouble code."""

    spn: int
    fmi: int
    occurrences: int


@dataclass(frozen=True, slots=True)
class Dm1:
    """Active faults and lamps of one ECU."""

    mil: int
    red_stop: int
    amber_warning: int
    protect: int
    dtcs: tuple[Dtc, ...]


def decode_dm1(payload: bytes) -> Dm1:
    """A DM1 (single frame or reassembled); a DTC of all zeros means "no active fault"."""
    if len(payload) < 6:
        raise FrameError(f"DM1: expected at least 6 bytes, got {len(payload)}")
    lamps = payload[0]
    dtcs = []
    for i in range(2, len(payload) - 3, 4):
        b = payload[i : i + 4]
        spn = b[0] | b[1] << 8 | (b[2] >> 5) << 16
        fmi = b[2] & 0x1F
        if spn == 0 and fmi == 0:
            continue
        if spn == 0x7FFFF:
            continue  # padding
        dtcs.append(Dtc(spn, fmi, b[3] & 0x7F))
    return Dm1(lamps >> 6 & 3, lamps >> 4 & 3, lamps >> 2 & 3, lamps & 3, tuple(dtcs))


# ---------------------------------------------------------------- transport protocol


@dataclass
class _Session:
    pgn: int
    size: int
    packets: int
    started_s: float
    last_s: float
    chunks: dict[int, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Assembled:
    """A multi-packet message put back together."""

    pgn: int
    source: int
    destination: int
    payload: bytes


@dataclass
class TransportStats:
    completed: int = 0
    aborted: int = 0
    timed_out: int = 0
    bad: int = 0


class TransportAssembler:
    """Reassembles BAM and RTS/CTS sessions by listening only (J1939-21 5.10).

    A listener sees the sender's TP.CM (BAM or RTS) and its TP.DT packets; CTS and EndOfMsgAck
    come from the receiver and only confirm. One session per (source, destination); a new
    announcement replaces an unfinished one, Abort or 750 ms of silence drops it.
    """

    def __init__(self) -> None:
        self._sessions: dict[tuple[int, int], _Session] = {}
        self.stats = TransportStats()

    def feed(self, can_id: CanId, data: bytes, t_s: float) -> Assembled | None:
        """One TP.CM or TP.DT frame; the finished message when this frame completes one."""
        self._expire(t_s)
        if can_id.pgn == PGN_TP_CM:
            self._control(can_id, data, t_s)
            return None
        if can_id.pgn == PGN_TP_DT:
            return self._data(can_id, data, t_s)
        return None

    def _control(self, can_id: CanId, data: bytes, t_s: float) -> None:
        if len(data) < 8:
            self.stats.bad += 1
            raise FrameError(f"TP.CM from {can_id.source}: expected 8 bytes, got {len(data)}")
        control = data[0]
        pgn = int.from_bytes(data[5:8], "little")
        if control in (TP_BAM, TP_RTS):
            size = int.from_bytes(data[1:3], "little")
            packets = data[3]
            if not 9 <= size <= TP_MAX_BYTES or packets != (size + 6) // 7:
                self.stats.bad += 1
                raise FrameError(f"TP.CM from {can_id.source}: size {size} with {packets} packets is inconsistent")
            self._sessions[(can_id.source, can_id.destination)] = _Session(pgn, size, packets, t_s, t_s)
        elif control == TP_ABORT:
            # An Abort is sent by either side; the session's key is the sender's (source, destination).
            for key in ((can_id.destination, can_id.source), (can_id.source, can_id.destination)):
                if self._sessions.pop(key, None) is not None:
                    self.stats.aborted += 1

    def _data(self, can_id: CanId, data: bytes, t_s: float) -> Assembled | None:
        key = (can_id.source, can_id.destination)
        s = self._sessions.get(key)
        if s is None or len(data) < 2:
            return None  # a packet of a session we did not see start
        seq = data[0]
        if not 1 <= seq <= s.packets:
            self.stats.bad += 1
            del self._sessions[key]
            raise FrameError(f"TP.DT from {can_id.source}: sequence {seq} outside 1..{s.packets}")
        s.chunks[seq] = bytes(data[1:8])
        s.last_s = t_s
        if len(s.chunks) < s.packets:
            return None
        del self._sessions[key]
        payload = b"".join(s.chunks[i] for i in range(1, s.packets + 1))[: s.size]
        self.stats.completed += 1
        return Assembled(s.pgn, can_id.source, can_id.destination, payload)

    def _expire(self, t_s: float) -> None:
        for key in [k for k, s in self._sessions.items() if t_s - s.last_s > TP_T1_S]:
            del self._sessions[key]
            self.stats.timed_out += 1
