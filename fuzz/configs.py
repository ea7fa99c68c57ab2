"""Fuzzing the text a user, a `wg` client or etcd hands us (atheris): UAPI requests, wg(8)
and wg-quick files, the switch's YAML, lab YAML, flannel's network config, leases and
subnet.env. Each may raise only the project's own errors (VnetError: ConfigError,
UapiError); anything else escaping is a finding.

    python fuzz/configs.py [-runs=N] [corpus dir]   (make fuzz)
"""

from __future__ import annotations

import contextlib
import sys

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports():
    from vnet.errors import VnetError
    from vnet.lab import load as lab_load
    from vnet.overlay import config as overlay_config
    from vnet.overlay import lease, subnetenv
    from vnet.switch import config as switch_config
    from vnet.wireguard import config as wg_config
    from vnet.wireguard import uapi


def _uapi(text: str) -> None:
    uapi.parse_set(text.split("\n"))


def _lease(text: str) -> None:
    key, _, value = text.partition("\n")
    lease.decode(key, value)


PARSERS = (
    _uapi,
    lambda text: wg_config.parse_config(text, "fuzz.conf"),
    lambda text: switch_config.load(text, "fuzz.yaml", {}),
    lambda text: lab_load.load(text, "fuzz.yaml"),
    overlay_config.parse_config,
    _lease,
    subnetenv.parse_env,
    uapi.parse_endpoint,
)


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    parse = PARSERS[fdp.ConsumeIntInRange(0, len(PARSERS) - 1)]
    with contextlib.suppress(VnetError):
        parse(fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 2000)))


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
