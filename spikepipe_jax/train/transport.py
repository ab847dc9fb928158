"""Point-to-point messages between the processes of a pipelined run (TCP sockets).

The asynchronous pipeline executor (:mod:`spikepipe_jax.train.async_executor`) runs each stage
as its own programs and sends each message to the one stage that needs it: spikes forward,
gradients backward. Inside one process a message is a ``jax.device_put`` onto the receiving
stage's devices; between processes it goes through this module. JAX has no point-to-point
transfer between processes outside its collectives (a ``ppermute`` is a rendezvous of every
process), and the ``jax.distributed`` key-value store carries bytes at a few MB/s, so every pair
of processes that exchange messages gets one TCP connection; the addresses are published through
that key-value store once, at start-up.

A message is a host array (``numpy``) under a string key. :meth:`SocketTransport.send` queues
it for a sender thread (the caller goes on computing); receiver threads put arriving messages
in a mailbox, and :meth:`SocketTransport.recv` waits for its key. A peer that goes away (its
process ended, e.g. with an error) makes every later ``recv`` from it raise, naming the process,
instead of waiting for ever.
"""

from __future__ import annotations

import json
import queue
import socket
import struct
import threading
from typing import Optional

import numpy as np

_HEADER = struct.Struct("!I")  # length of the JSON header that precedes each message's bytes
_KEY_PREFIX = "spikepipe_transport"


def _local_address(coordinator: str) -> str:
    """This host's address as the coordinator sees it (the interface that reaches it)."""
    host, _, port = coordinator.rpartition(":")
    host = host.strip("[]") or "localhost"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, int(port or 1)))
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


def _recv_exact(sock: socket.socket, n: int) -> Optional[bytearray]:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            return None
        got += k
    return buf


class SocketTransport:
    """Messages to and from the processes in ``peers`` (process indices of this
    ``jax.distributed`` run). Every process of the run must construct it with the peers it
    exchanges messages with (a symmetric relation), at the same point of the program."""

    def __init__(self, peers, *, process_id: int, coordinator: str, kv_client, timeout_s: float = 600.0):
        self.process_id = process_id
        self.timeout_s = timeout_s
        self._mail: dict[str, np.ndarray] = {}
        self._cond = threading.Condition()
        self._dead: dict[int, str] = {}
        self._sockets: dict[int, socket.socket] = {}
        self._queues: dict[int, queue.Queue] = {}
        peers = sorted(set(int(p) for p in peers) - {process_id})
        server = socket.create_server(("", 0))
        port = server.getsockname()[1]
        kv_client.key_value_set(f"{_KEY_PREFIX}/{process_id}", f"{_local_address(coordinator)}:{port}")
        ms = int(timeout_s * 1000)
        for q in peers:  # connect to the higher-numbered peers, accept the lower-numbered ones
            if q > process_id:
                host, _, p = kv_client.blocking_key_value_get(f"{_KEY_PREFIX}/{q}", ms).rpartition(":")
                sock = socket.create_connection((host, int(p)), timeout=timeout_s)
                sock.sendall(_HEADER.pack(process_id))
                self._sockets[q] = sock
        server.settimeout(timeout_s)
        for _ in [q for q in peers if q < process_id]:
            sock, _ = server.accept()
            q = _HEADER.unpack(bytes(_recv_exact(sock, _HEADER.size)))[0]
            self._sockets[q] = sock
        server.close()
        for q, sock in self._sockets.items():
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._queues[q] = queue.Queue()
            threading.Thread(target=self._receive, args=(q, sock), daemon=True).start()
            threading.Thread(target=self._send_loop, args=(q, sock), daemon=True).start()

    # --- threads -------------------------------------------------------------------------------
    def _receive(self, q: int, sock: socket.socket) -> None:
        try:
            while True:
                head = _recv_exact(sock, _HEADER.size)
                if head is None:
                    raise ConnectionError("connection closed")
                meta = json.loads(bytes(_recv_exact(sock, _HEADER.unpack(bytes(head))[0])))
                body = _recv_exact(sock, meta["nbytes"]) if meta["nbytes"] else bytearray()
                if body is None:
                    raise ConnectionError("connection closed in the middle of a message")
                arr = np.frombuffer(body, dtype=np.dtype(meta["dtype"])).reshape(meta["shape"])
                with self._cond:
                    self._mail[meta["key"]] = arr
                    self._cond.notify_all()
        except (OSError, ValueError) as e:
            with self._cond:
                self._dead[q] = f"{type(e).__name__}: {e}"
                self._cond.notify_all()

    def _send_loop(self, q: int, sock: socket.socket) -> None:
        while True:
            item = self._queues[q].get()
            if item is None:
                return
            key, arr = item
            meta = json.dumps({"key": key, "dtype": arr.dtype.str, "shape": list(arr.shape),
                               "nbytes": arr.nbytes}).encode()
            try:
                sock.sendall(_HEADER.pack(len(meta)) + meta)
                if arr.nbytes:
                    sock.sendall(memoryview(arr).cast("B"))
            except OSError as e:
                with self._cond:
                    self._dead[q] = f"{type(e).__name__}: {e}"
                    self._cond.notify_all()
                return

    # --- API -----------------------------------------------------------------------------------
    def send(self, dst: int, key: str, arr: np.ndarray) -> None:
        """Queues ``arr`` (a host array, not modified afterwards) for process ``dst``."""
        if dst not in self._queues:
            raise ValueError(f"process {self.process_id} has no connection to process {dst}")
        arr = np.asarray(arr)  # (np.ascontiguousarray would make a 0-d array 1-d)
        self._queues[dst].put((key, arr if arr.flags.c_contiguous else arr.copy(order="C")))

    def recv(self, src: int, key: str) -> np.ndarray:
        """Waits for the message ``key`` from process ``src`` and takes it out of the mailbox."""
        with self._cond:
            ok = self._cond.wait_for(lambda: key in self._mail or src in self._dead, self.timeout_s)
            if key in self._mail:
                return self._mail.pop(key)
            if not ok:
                raise TimeoutError(f"process {self.process_id}: no message {key!r} from process {src} "
                                   f"within {self.timeout_s:g} s")
            raise ConnectionError(f"process {self.process_id}: process {src} went away before sending "
                                  f"{key!r} ({self._dead[src]}); see that process's error")

    def close(self) -> None:
        for q in self._queues.values():
            q.put(None)


def for_jax_distributed(peers, timeout_s: float = 3600.0) -> SocketTransport:
    """A :class:`SocketTransport` for this ``jax.distributed`` run (its coordinator's key-value
    store carries the addresses)."""
    from jax._src import distributed  # the run's client; JAX has no public handle on it

    state = distributed.global_state
    if state.client is None:
        raise ValueError("messages between processes need jax.distributed.initialize first")
    return SocketTransport(peers, process_id=state.process_id, coordinator=state.coordinator_address,
                           kv_client=state.client, timeout_s=timeout_s)
