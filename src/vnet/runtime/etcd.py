"""flannel's registry in etcd, over etcd's v3 JSON gateway with etcd3gw (OpenStack's
client for that gateway: plain HTTP, no gRPC stack to install).

What the overlay agent needs, as flanneld does it (pkg/subnet/etcd/registry.go): the
network config; every lease with the revision it was read at; a lease created only if
its key is absent, bound to an etcd lease of 24 h; renewal; and a watch of the subnets
prefix from a revision, so no event between the read and the watch is missed. Several
endpoints are tried in turn; every failure is an ``EtcdUnavailableError``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import requests
from etcd3gw.client import Etcd3Client
from etcd3gw.exceptions import Etcd3Exception

from vnet.errors import ConfigError, VnetError

log = logging.getLogger("vnet.etcd")

REQUEST_TIMEOUT = 3.0  # seconds for one request; a dead member is left quickly
WATCH_IDLE = 10.0  # a watch with no event for this long is re-created (a liveness probe)


class EtcdUnavailableError(VnetError):
    """No endpoint answered, or the answer was not what etcd sends."""


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    lease: int  # etcd lease id, 0 for none
    mod_revision: int


@dataclass(frozen=True)
class WatchEvent:
    kind: str  # "put" or "delete"
    kv: KeyValue


def _b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text or "")


def prefix_end(prefix: str) -> bytes:
    """The range end that covers every key starting with ``prefix``."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return bytes(raw)


def _kv(raw: dict[str, Any]) -> KeyValue:
    return KeyValue(
        _unb64(raw.get("key")).decode(errors="replace"),
        _unb64(raw.get("value")),
        int(raw.get("lease", 0)),
        int(raw.get("mod_revision", 0)),
    )


def parse_endpoints(text: str) -> list[tuple[str, int]]:
    """``http://198.18.0.1:2379,http://198.18.0.2:2379`` (scheme optional)."""
    out = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        rest = item.removeprefix("http://")
        if "://" in rest:
            raise ConfigError(f"etcd endpoint {item!r}: only http:// is supported")
        host, sep, port = rest.rstrip("/").rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"etcd endpoint {item!r}: expected http://HOST:PORT")
        out.append((host.strip("[]"), int(port)))
    if not out:
        raise ConfigError("no etcd endpoint given")
    return out


class Registry:
    def __init__(self, endpoints: list[tuple[str, int]], prefix: str) -> None:
        self.prefix = prefix.rstrip("/")
        self.clients = [
            Etcd3Client(host, port, timeout=REQUEST_TIMEOUT, api_path="/v3/")
            for host, port in endpoints
        ]
        self._current = 0  # the endpoint that answered last

    @property
    def config_key(self) -> str:
        return f"{self.prefix}/config"

    @property
    def subnets_prefix(self) -> str:
        return f"{self.prefix}/subnets/"

    def endpoint(self) -> str:
        client = self.clients[self._current]
        return f"{client.host}:{client.port}"

    def _pass_over(self) -> None:
        """The current endpoint failed: the next one is tried first from now on."""
        self._current = (self._current + 1) % len(self.clients)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """One request, to the endpoint that answered last and then to the others."""
        errors = []
        for attempt in range(len(self.clients)):
            index = (self._current + attempt) % len(self.clients)
            client = self.clients[index]
            try:
                answer: dict[str, Any] = client.post(client.get_url(path), json=body)
            except (Etcd3Exception, requests.RequestException, ValueError) as e:
                errors.append(f"{client.host}:{client.port}: {type(e).__name__}")
                continue
            self._current = index
            return answer
        raise EtcdUnavailableError("etcd unreachable (" + "; ".join(errors) + ")")

    # --- reads ----------------------------------------------------------------

    def get(self, key: str) -> tuple[KeyValue | None, int]:
        answer = self._post("/kv/range", {"key": _b64(key)})
        kvs = answer.get("kvs") or []
        return (_kv(kvs[0]) if kvs else None), int(answer["header"]["revision"])

    def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix`` and the revision they were read at."""
        answer = self._post(
            "/kv/range", {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}
        )
        kvs = [_kv(raw) for raw in answer.get("kvs") or []]
        return kvs, int(answer["header"]["revision"])

    # --- writes ---------------------------------------------------------------

    def put(self, key: str, value: str, lease: int = 0) -> None:
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = lease
        self._post("/kv/put", body)

    def delete(self, key: str) -> None:
        self._post("/kv/deleterange", {"key": _b64(key)})

    def grant(self, ttl: int) -> int:
        answer = self._post("/lease/grant", {"TTL": ttl})
        return int(answer["ID"])

    def refresh(self, lease: int) -> int:
        """Renew an etcd lease; its remaining TTL (0: it had expired)."""
        answer = self._post("/lease/keepalive", {"ID": lease})
        return int(answer.get("result", {}).get("TTL", 0))

    def revoke(self, lease: int) -> None:
        self._post("/kv/lease/revoke", {"ID": lease})

    def create(self, key: str, value: str, ttl: int) -> int | None:
        """Put ``key`` only if it does not exist, bound to a new etcd lease of ``ttl``
        seconds; the lease id, or None when the key exists (someone else's)."""
        lease = self.grant(ttl)
        answer = self._post(
            "/kv/txn",
            {
                "compare": [
                    {"key": _b64(key), "result": "EQUAL", "target": "CREATE", "create_revision": 0}
                ],
                "success": [
                    {"request_put": {"key": _b64(key), "value": _b64(value), "lease": lease}}
                ],
            },
        )
        if answer.get("succeeded"):
            return lease
        with contextlib.suppress(EtcdUnavailableError):  # else it expires by itself
            self.revoke(lease)
        return None

    # --- watch ----------------------------------------------------------------

    def watch(self, prefix: str, start_revision: int) -> Iterator[WatchEvent | int]:
        """Events under ``prefix`` from ``start_revision`` on, and after each batch the
        revision of its last event: what a new watch continues after. (Not a message's
        header revision: etcd sends the current one with the first messages while older
        events are still to come, and resuming from it after a break would skip them.)
        Ends quietly after WATCH_IDLE seconds without news (call it again from the next
        revision); raises EtcdUnavailableError when the stream breaks or etcd compacted
        ``start_revision`` away."""
        client = self.clients[self._current]
        body: dict[str, Any] = {
            "create_request": {
                "key": _b64(prefix),
                "range_end": _b64(prefix_end(prefix)),
                "start_revision": start_revision,
            }
        }
        try:
            response = client.session.post(
                client.get_url("/watch"),
                json=body,
                stream=True,
                timeout=(REQUEST_TIMEOUT, WATCH_IDLE),
            )
        except requests.RequestException as e:
            self._pass_over()
            raise EtcdUnavailableError(
                f"watch: {client.host}:{client.port}: {type(e).__name__}"
            ) from None
        with response:
            try:
                for line in response.iter_lines():
                    if not line:
                        continue
                    result = json.loads(line).get("result", {})
                    if int(result.get("compact_revision", 0) or 0):
                        raise EtcdUnavailableError(
                            f"watch: revision {start_revision} was compacted",
                        )
                    last = 0
                    for event in result.get("events") or []:
                        kind = "delete" if event.get("type") == "DELETE" else "put"
                        kv = _kv(event.get("kv", {}))
                        last = max(last, kv.mod_revision)
                        yield WatchEvent(kind, kv)
                    if last:
                        yield last
            except requests.exceptions.ConnectionError as e:
                if "Read timed out" in str(e):
                    return  # idle: the caller watches again
                self._pass_over()
                raise EtcdUnavailableError(f"watch: {type(e).__name__}") from None
            except (requests.RequestException, ValueError) as e:
                self._pass_over()
                raise EtcdUnavailableError(f"watch: {type(e).__name__}") from None
