"""A JSON-RPC endpoint over HTTP on 127.0.0.1 in front of an in-process py-evm chain, for the CLI tests.

The `edge-agent central anchor` commands run as subprocesses and talk to it exactly as they talk to
Besu or GoQuorum: HTTP POST, JSON-RPC 2.0, hex quantities. Each request goes through web3's own
EthereumTesterProvider handling and the result is written back in wire form. `on_send_raw` lets a
test act at the moment a signed transaction arrives (e.g. kill the sender once it is on chain).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from eth_abi import encode as abi_encode
from web3 import Web3


def _wire(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, dict):  # AttributeDict is a Mapping too
        return {k: _wire(v) for k, v in value.items()}
    if hasattr(value, "items"):
        return {k: _wire(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_wire(v) for v in value]
    raise TypeError(f"cannot put {type(value).__name__} on the wire")


class RpcBridge:
    """Serve `w3` (an EthereumTesterProvider Web3) at http://127.0.0.1:<port>/ until stop()."""

    def __init__(self, w3: Web3) -> None:
        self.w3 = w3
        self.lock = threading.Lock()  # py-evm is not thread-safe
        self.on_send_raw: Callable[[str], None] | None = None
        self.sent_raw: list[str] = []
        # QBFT/IBFT/Clique blocks carry validators and seals in extraData, well past 32 bytes.
        self.bft_extra_data = False
        bridge = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                out = [bridge.handle(r) for r in body] if isinstance(body, list) else bridge.handle(body)
                data = json.dumps(out).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> RpcBridge:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        method, params, rid = req["method"], req.get("params", []), req.get("id")
        try:
            with self.lock:
                result = self.w3.manager.request_blocking(method, params)
            out = {"jsonrpc": "2.0", "id": rid, "result": _wire(result)}
            if self.bft_extra_data and method.startswith("eth_getBlockBy") and out["result"]:
                out["result"]["extraData"] = "0x" + "f8" * 97
        except Exception as exc:  # noqa: BLE001 - every failure becomes a JSON-RPC error, as a node would answer
            message = str(exc.args[0] if exc.args else exc)
            error: dict[str, Any] = {"code": -32000, "message": message}
            if "execution reverted" in message:
                reason = message.split("execution reverted:", 1)[-1].strip()
                error = {"code": 3, "message": message, "data": "0x08c379a0" + abi_encode(["string"], [reason]).hex()}
            out = {"jsonrpc": "2.0", "id": rid, "error": error}
        if method == "eth_sendRawTransaction" and "result" in out:
            self.sent_raw.append(str(out["result"]))
            if self.on_send_raw is not None:
                self.on_send_raw(str(out["result"]))
        return out
