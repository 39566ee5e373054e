"""A Modbus RTU slave on a pty: answers function 03/04 reads from a register bank a scenario changes over time."""

from __future__ import annotations

import os
import struct
import threading
import time
from collections.abc import Callable
from typing import Literal

from edge_agent.drivers.ptytwin import PtyTwin

Table = Literal["holding", "input"]
Scenario = Callable[[float, "RegisterBank"], None]

# Function codes and exception codes, Modbus application protocol v1.1b3, sections 6 and 7.
READ_HOLDING = 0x03
READ_INPUT = 0x04
EXC_ILLEGAL_FUNCTION = 0x01
EXC_ILLEGAL_ADDRESS = 0x02
EXC_ILLEGAL_VALUE = 0x03


def crc16(data: bytes) -> int:
    """CRC-16/MODBUS, bit by bit (deliberately not the driver's table-driven code)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            lsb = crc & 1
            crc >>= 1
            if lsb:
                crc ^= 0xA001
    return crc


def with_crc(body: bytes) -> bytes:
    crc = crc16(body)
    return body + bytes((crc & 0xFF, crc >> 8))  # low byte first on the wire


class RegisterBank:
    """Holding and input registers of one slave; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._words: dict[str, dict[int, int]] = {"holding": {}, "input": {}}

    def set_words(self, table: Table, address: int, words: list[int]) -> None:
        with self._lock:
            for i, w in enumerate(words):
                self._words[table][address + i] = w & 0xFFFF

    def set_uint16(self, table: Table, address: int, value: int) -> None:
        self.set_words(table, address, [value & 0xFFFF])

    def set_int16(self, table: Table, address: int, value: int) -> None:
        self.set_words(table, address, [value & 0xFFFF])

    def set_32(self, table: Table, address: int, raw4: bytes, word_order: str = "big") -> None:
        hi, lo = raw4[0] << 8 | raw4[1], raw4[2] << 8 | raw4[3]
        self.set_words(table, address, [hi, lo] if word_order == "big" else [lo, hi])

    def set_float32(self, table: Table, address: int, value: float, word_order: str = "big") -> None:
        self.set_32(table, address, struct.pack(">f", value), word_order)

    def set_uint32(self, table: Table, address: int, value: int, word_order: str = "big") -> None:
        self.set_32(table, address, (value & 0xFFFFFFFF).to_bytes(4, "big"), word_order)

    def set_int32(self, table: Table, address: int, value: int, word_order: str = "big") -> None:
        self.set_32(table, address, value.to_bytes(4, "big", signed=True), word_order)

    def get(self, table: Table, address: int, count: int) -> list[int] | None:
        """The words, or None when any address in the range is not mapped."""
        with self._lock:
            words = self._words[table]
            if any(a not in words for a in range(address, address + count)):
                return None
            return [words[a] for a in range(address, address + count)]


class ModbusTwin(PtyTwin):
    """An RTU slave: reads 03/04 from `bank`, exception 02 for unmapped addresses, 01 for other functions.

    Knobs for tests: `silent` (answer nothing), `garbage_before_reply` (bytes sent just before
    the next reply), `corrupt_replies` (that many replies go out with a broken CRC),
    `inject(bytes)` (noise on the line now). `requests` keeps every good request seen.
    """

    name = "modbus"

    def __init__(
        self,
        link: str | os.PathLike[str] | None = None,
        *,
        unit_id: int = 1,
        scenario: Scenario | None = None,
        reply_delay_s: float = 0.0,
        others: dict[int, Scenario] | None = None,
    ) -> None:
        super().__init__(link)
        self.unit_id = unit_id
        self.bank = RegisterBank()
        self.scenario = scenario
        # More slaves on the same RS-485 line: unit id -> its scenario (each gets its own bank).
        self.others = {u: (RegisterBank(), sc) for u, sc in (others or {}).items()}
        for other_bank, other_scenario in self.others.values():
            other_scenario(0.0, other_bank)
        self.reply_delay_s = reply_delay_s
        self.silent = False
        self.garbage_before_reply = b""
        self.corrupt_replies = 0
        self.requests: list[bytes] = []
        self.bad_requests = 0
        self._t0 = time.monotonic()
        if scenario is not None:
            scenario(0.0, self.bank)

    def inject(self, data: bytes) -> None:
        self.write(data)

    def serve(self) -> None:
        buf = bytearray()
        while not self.stop_event.is_set():
            chunk = self.read_available(0.05)
            if self.scenario is not None:
                self.scenario(time.monotonic() - self._t0, self.bank)
            for other_bank, other_scenario in self.others.values():
                other_scenario(time.monotonic() - self._t0, other_bank)
            if not chunk:
                # An RTU frame ends with a silent gap: whatever is left is noise or a torn frame.
                if buf:
                    self.bad_requests += 1
                    buf.clear()
                continue
            buf += chunk
            self._take_frames(buf)

    def _take_frames(self, buf: bytearray) -> None:
        while len(buf) >= 8:
            frame = bytes(buf[:8])
            if crc16(frame[:6]) != (frame[6] | frame[7] << 8):
                n = _write_frame_len(buf)
                if n and len(buf) >= n and crc16(bytes(buf[: n - 2])) == (buf[n - 2] | buf[n - 1] << 8):
                    self._answer(bytes(buf[:n]))
                    del buf[:n]
                    continue
                if n and len(buf) < n:
                    return  # maybe a write request still arriving
                del buf[0]  # resynchronise one byte at a time
                self.bad_requests += 1
                continue
            self._answer(frame)
            del buf[:8]

    def _answer(self, request: bytes) -> None:
        unit, function = request[0], request[1]
        if unit == self.unit_id:
            bank = self.bank
        elif unit in self.others:
            bank = self.others[unit][0]
        else:
            return  # another slave on the bus (or a broadcast, which reads never use)
        self.requests.append(request)
        if self.silent:
            return
        if function in (READ_HOLDING, READ_INPUT):
            address, count = struct.unpack(">HH", request[2:6])
            table: Table = "holding" if function == READ_HOLDING else "input"
            if not 1 <= count <= 125:
                reply = self._exception(function, EXC_ILLEGAL_VALUE, unit)
            elif (words := bank.get(table, address, count)) is None:
                reply = self._exception(function, EXC_ILLEGAL_ADDRESS, unit)
            else:
                data = b"".join(w.to_bytes(2, "big") for w in words)
                reply = with_crc(bytes((unit, function, len(data))) + data)
        else:
            reply = self._exception(function, EXC_ILLEGAL_FUNCTION, unit)
        if self.reply_delay_s:
            self.stop_event.wait(self.reply_delay_s)
        if self.corrupt_replies > 0:
            self.corrupt_replies -= 1
            reply = reply[:-1] + bytes(((reply[-1] ^ 0x5A) or 1,))
        if self.garbage_before_reply:
            reply, self.garbage_before_reply = self.garbage_before_reply + reply, b""
        self.write(reply)

    def _exception(self, function: int, code: int, unit: int) -> bytes:
        return with_crc(bytes((unit, (function | 0x80) & 0xFF, code)))


def _write_frame_len(buf: bytearray) -> int:
    """Length of a function 15/16 (multiple write) request from its byte count, else 0."""
    if len(buf) >= 7 and buf[1] in (0x0F, 0x10):
        return 9 + buf[6]
    return 0


# ---------------------------------------------------------------- scenarios


def xy_md02_scenario(start_c: float = 4.0, drift_c_per_s: float = 0.05, humidity_pct: float = 61.5) -> Scenario:
    """An XY-MD02 (SHT20) in a cold room warming up: input 1 = 0.1 °C (signed), input 2 = 0.1 %RH."""

    def step(t_s: float, bank: RegisterBank) -> None:
        bank.set_int16("input", 0x0001, round((start_c + drift_c_per_s * t_s) * 10))
        bank.set_uint16("input", 0x0002, round(humidity_pct * 10))
        bank.set_uint16("holding", 0x0101, 1)  # device address
        bank.set_uint16("holding", 0x0102, 9600)  # baud rate

    return step


def sdm120_scenario(start_kwh: float = 1234.5, power_w: float = 2300.0, time_scale: float = 1.0) -> Scenario:
    """An Eastron SDM120 metering a steady load: kWh counting up, float32 input registers, high word first.

    time_scale > 1 runs the energy counter faster than real time, so tests see it move.
    """

    def step(t_s: float, bank: RegisterBank) -> None:
        kwh = start_kwh + power_w * t_s * time_scale / 3_600_000
        voltage = 230.0 + (t_s % 3)
        for address, value in (
            (0x0000, voltage),
            (0x0006, power_w / voltage),
            (0x000C, power_w),
            (0x0012, power_w * 1.02),
            (0x0018, power_w * 0.2),
            (0x001E, 0.98),
            (0x0046, 50.0),
            (0x0048, kwh),
            (0x004A, 0.0),
            (0x004C, kwh * 0.1),
            (0x004E, 0.0),
            (0x0156, kwh),
            (0x0158, kwh * 0.1),
        ):
            bank.set_float32("input", address, value)

    return step
