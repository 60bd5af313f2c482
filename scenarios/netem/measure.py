"""What a link really does, measured the way the nodes feel it: application-level round trips
and TCP throughput between two emulated nodes (`ping` reports the kernel's receive time, before
the delayer holds the packet, so it under-reports: DESIGN.md §7).

    python -m scenarios.netem.measure serve HOST PORT           # in the far node's namespace
    python -m scenarios.netem.measure rtt HOST PORT [N]          # prints {"rtt_ms": median}
    python -m scenarios.netem.measure send HOST PORT SECONDS     # prints {"mbit_s": ...} (uplink)
    python -m scenarios.netem.measure recv HOST PORT SECONDS     # prints {"mbit_s": ...} (downlink)
"""
from __future__ import annotations

import json
import os
import socket
import statistics
import sys
import threading
import time

BLOCK = 64 * 1024
WARMUP_S = 1.0
"""Throughput counts from this long after the first byte: TCP's slow start is not the link."""


def serve(host: str, port: int) -> None:
    """Echo one byte per byte (`rtt`), swallow a stream (`send`) or pour one (`recv`): the first
    byte of a connection says which."""
    srv = socket.create_server((host, port), reuse_port=False)
    print("ready", flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=_handle, args=(conn,), daemon=True).start()


def _handle(conn: socket.socket) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with conn:
        mode = conn.recv(1)
        if mode == b"e":
            while data := conn.recv(1):
                conn.sendall(data)
        elif mode == b"s":  # reply: goodput after the warm-up, as the receiver saw it
            conn.sendall(json.dumps({"mbit_s": _goodput(conn)}).encode())
        elif mode == b"r":
            seconds = float(conn.recv(16).decode())
            block, end = b"\0" * BLOCK, time.monotonic() + seconds
            try:
                while time.monotonic() < end:
                    conn.sendall(block)
            except OSError:
                pass


def rtt_ms(host: str, port: int, n: int = 20) -> float:
    with socket.create_connection((host, port), timeout=30) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b"e")
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            s.sendall(b"x")
            s.recv(1)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def send_mbit_s(host: str, port: int, seconds: float) -> float:
    """Our uplink: what the far end read per second, after the warm-up (TCP slow start on a
    long link takes a good part of a short test)."""
    with socket.create_connection((host, port), timeout=60) as s:
        s.sendall(b"s")
        block, t0 = b"\0" * BLOCK, time.monotonic()
        while time.monotonic() - t0 < seconds + WARMUP_S:
            s.sendall(block)
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while data := s.recv(256):
            reply += data
        return float(json.loads(reply)["mbit_s"])


def recv_mbit_s(host: str, port: int, seconds: float) -> float:
    """Our downlink: bytes read per second after the warm-up."""
    with socket.create_connection((host, port), timeout=60) as s:
        s.sendall(b"r" + f"{seconds + WARMUP_S:<15}".encode())
        return _goodput(s)


def _goodput(sock: socket.socket) -> float:
    """Mbit/s read from `sock` until it closes, counted from WARMUP_S after we started reading."""
    start, got, t0, t1 = time.monotonic(), 0, None, None
    while data := sock.recv(BLOCK):
        now = time.monotonic()
        if now - start >= WARMUP_S:
            t0 = t0 or now
            got, t1 = got + len(data), now
    return got * 8 / (t1 - t0) / 1e6 if t0 and t1 and t1 > t0 else 0.0


def _ahead_of_the_load() -> None:
    """Run at the delayer's priority when we may: we measure the link, not the scheduler of a
    busy 2-core machine (a Python process woken late reads as a longer link)."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -15)
    except OSError:
        pass


if __name__ == "__main__":
    _ahead_of_the_load()
    cmd, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if cmd == "serve":
        serve(host, port)
    elif cmd == "rtt":
        print(json.dumps({"rtt_ms": rtt_ms(host, port, int(sys.argv[4]) if len(sys.argv) > 4 else 20)}))
    elif cmd == "send":
        print(json.dumps({"mbit_s": send_mbit_s(host, port, float(sys.argv[4]))}))
    elif cmd == "recv":
        print(json.dumps({"mbit_s": recv_mbit_s(host, port, float(sys.argv[4]))}))
