"""The daemon base every long-running vnet program stands on (vnet-wg, vnet switch, the
overlay agent): one thread, one epoll, file descriptors mapped to handlers.

What a daemon writes: ``open()`` (create devices and sockets, ``watch`` their fds),
``close()`` (undo it; called on every failed start too, so it must cope with half a
start), and where it has timers ``next_deadline()``/``on_timers(now)``. What it gets:

- ``start()``: ``open()``, and on any failure or Ctrl-C ``close()`` before the error
  goes on: nothing half-made survives a refused start.
- ``run()``: the loop. SIGTERM/SIGINT stop it when it runs in the main thread (the
  handlers it replaced are put back afterwards);
  ``stop()`` works from a signal handler or another thread through a self-pipe.
- ``probe(feature, enable)``: an offload tried once at start; the answer is logged when
  refused and shown by ``offload_summary()``.
- control sockets (``runtime.control.ControlServer``) served from the same loop without
  ever blocking it, and ``post(work)`` for helper threads that hand results to the loop;
- ``lone_event``: whether the event a handler runs for came alone from its poll (a busy
  daemon's polls return several), for handlers that treat a lone packet after a quiet
  spell as a latency case.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import queue
import select
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from vnet.errors import KernelError
from vnet.kernel import udp
from vnet.kernel.tun import TSO_OFFLOADS, Mode, TunDevice
from vnet.runtime.wakeup import Wakeup

BATCH = 256  # reads per readiness event before the loop looks at the other fds
IDLE_TIMEOUT = 1.0  # the longest the loop sleeps: stop() is noticed sooner anyway

Handler = Callable[[int], None]  # called with the epoll events that fired


class Daemon:
    def __init__(self, name: str, log: logging.Logger) -> None:
        self.name = name
        self.log = log
        self.running = False
        self.offloads: dict[str, bool] = {}  # feature -> on, in the order probed
        self._poll = select.epoll()
        self._handlers: dict[int, Handler] = {}
        self._wakeup = Wakeup()
        self._closers: list[Callable[[], None]] = []
        self._closed = False
        self.lone_event = False
        self._posted: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.watch(self._wakeup.fileno(), self._run_posted)

    # --- what a daemon provides -------------------------------------------------

    def open(self) -> None:
        """Create devices and sockets and watch their fds."""

    def on_start(self) -> None:
        """Just before the loop starts (after open): a good place for the start-up log."""

    def next_deadline(self) -> float | None:
        """The monotonic time of the next timer, or None."""
        return None

    def on_timers(self, now: float) -> None:
        """Run the timers due at ``now``."""

    def deadline_source(self) -> Callable[[], float | None]:
        """What the loop calls each turn for ``next_deadline``: a daemon may hand over its
        core's own method, a call less on every turn (each is paid cold after a sleep)."""
        return self.next_deadline

    def close(self) -> None:
        """Undo ``open``. Subclasses close their own things, then call this."""
        if self._closed:
            return
        self._closed = True
        for closer in reversed(self._closers):
            closer()
        self._closers.clear()
        self._handlers.clear()
        self._poll.close()
        self._wakeup.close()

    # --- what a daemon gets -----------------------------------------------------

    def start(self) -> None:
        try:
            self.open()
        except BaseException:
            self.close()
            raise

    def on_close(self, closer: Callable[[], None]) -> None:
        """Run ``closer`` when the daemon closes (last registered, first run)."""
        self._closers.append(closer)

    def watch(self, fd: int, handler: Handler, events: int = select.EPOLLIN) -> None:
        self._poll.register(fd, events)
        self._handlers[fd] = handler

    def modify(self, fd: int, events: int) -> None:
        self._poll.modify(fd, events)

    def unwatch(self, fd: int) -> None:
        """Before the fd is closed (a closed socket's fileno() is -1)."""
        with contextlib.suppress(OSError, ValueError):
            self._poll.unregister(fd)
        self._handlers.pop(fd, None)

    def probe(self, feature: str, enable: Callable[[], object] | None) -> bool:
        """Try an offload once (``enable`` None: not wanted); a refusal (KernelError) is
        logged and leaves it off."""
        on = False
        if enable is not None:
            try:
                enable()
                on = True
            except KernelError as e:
                self.log.info("%s: %s unavailable: %s", self.name, feature, e)
        self.offloads[feature] = on
        return on

    def open_tun(self, name: str, offload: bool) -> tuple[TunDevice, bool]:
        """A non-blocking TUN; with ``offload`` its reads and writes carry a virtio_net_hdr
        and TSO is asked for. Returns the TUN and whether the kernel took TSO."""
        tun = TunDevice(name, Mode.TUN, nonblocking=True, vnet_hdr=offload)
        self.offloads["tun vnet_hdr"] = offload
        tso = self.probe("tun tso", (lambda: tun.set_offload(TSO_OFFLOADS)) if offload else None)
        return tun, tso

    def note_udp(self, sock: udp.UdpSocket) -> None:
        """Record the UDP offloads a socket's probe found, for offload_summary()."""
        self.offloads["udp gso"] = sock.gso
        self.offloads["udp gro"] = sock.gro

    def offload_summary(self) -> str:
        if not self.offloads:
            return "offloads off"
        return ", ".join(f"{f} {'on' if on else 'off'}" for f, on in self.offloads.items())

    def stop(self) -> None:
        self.running = False
        self._wakeup.set()

    def post(self, work: Callable[[], None]) -> None:
        """Run ``work`` in the loop's thread soon (safe from any thread): how a helper
        thread that may block - an etcd watch - hands its results to the loop."""
        self._posted.put(work)
        self._wakeup.set()

    def _run_posted(self, events: int) -> None:
        self._wakeup.clear()
        while True:
            try:
                work = self._posted.get_nowait()
            except queue.Empty:
                return
            work()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop()

    def run(self, ready: Callable[[], None] | None = None) -> None:
        """The loop, until stop() or a signal; ``ready`` is called once it is about to
        wait for the first event."""
        old = {}
        if threading.current_thread() is threading.main_thread():  # where signals arrive
            old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        self.running = True
        try:
            self.on_start()
            if ready is not None:
                ready()
            # what start-up made lives as long as the daemon: out of the collector's
            # sight, so that a collection on the packet path walks only what packets made
            gc.freeze()
            poll = self._poll.poll
            handlers = self._handlers
            next_deadline = self.deadline_source()
            while self.running:
                deadline = next_deadline()
                timeout = IDLE_TIMEOUT
                if deadline is not None:
                    timeout = min(IDLE_TIMEOUT, max(0.0, deadline - time.monotonic()))
                fired = poll(timeout)
                self.lone_event = len(fired) == 1
                for fd, events in fired:
                    handler = handlers.get(fd)  # None: unwatched by an earlier handler
                    if handler is not None:
                        handler(events)
                    if not self.running:
                        break
                # timers run only when one is due; one set meanwhile by a handler is
                # counted by the next turn's deadline
                if deadline is not None:
                    now = time.monotonic()
                    if now >= deadline:
                        self.on_timers(now)
        finally:
            for signum, previous in old.items():
                signal.signal(signum, previous)
            self.log.info("%s: shutting down", self.name)
