"""Runs one Ikev1Endpoint over real UDP sockets for a while (interop tests, test-only glue).

    python -m tests.ike.v1.interop_driver '<json spec>'

The spec names the policy (`PeerPolicy` fields as JSON, proposals as strongSwan strings),
the local and remote addresses, how long to run and timed actions ("connect", "rekey",
"rekey_ike", "disconnect").  Every engine event is printed as one JSON line; ESP-in-UDP
and keepalives arriving on 4500 are ignored (no dataplane here).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import select
import socket
import sys
import time
from typing import Any

from core.crypto.proposals import parse_esp_proposals, parse_ike_proposals
from core.crypto.random import SystemRandomSource
from core.ike.constants import NAT_T_PORT, NON_ESP_MARKER
from core.ike.events import Address, IkeEvent
from core.ike.policy import Identity, PeerPolicy, Timing
from core.ike.v1.endpoint import Ikev1Endpoint


def build_policy(spec: dict[str, Any]) -> PeerPolicy:
    return PeerPolicy(
        name="peer", ike_version=1,
        local_id=Identity.parse(spec["local_id"]),
        remote_id=Identity.parse(spec["remote_id"]) if spec.get("remote_id") else None,
        psk=spec["psk"].encode(),
        ike_proposals=parse_ike_proposals(spec.get("ike", "aes256-sha256-modp2048")),
        esp_proposals=parse_esp_proposals(spec.get("esp", "aes256-sha256")),
        mode=spec.get("mode", "tunnel"), exchange_mode=spec.get("exchange_mode", "main"),
        ike_lifetime=float(spec.get("ike_lifetime", 3600)),
        child_lifetime=float(spec.get("child_lifetime", 1200)),
        dpd_interval=float(spec.get("dpd_interval", 0)),
        dpd_retries=int(spec.get("dpd_retries", 3)),
        nat_traversal=spec.get("nat_traversal", "auto"), passive=bool(spec.get("passive")),
        local_address=spec.get("local_address", spec["local"]),
        remote_address=spec.get("remote_address", spec["remote"]),
        timing=Timing(retransmit_timeout=1.0),
    )


def event_json(event: IkeEvent) -> dict[str, Any]:
    fields: dict[str, Any] = {"event": type(event).__name__}
    for item in dataclasses.fields(event):
        value = getattr(event, item.name)
        if dataclasses.is_dataclass(value):
            value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)
                     if f.name != "keys"}
        fields[item.name] = value
    return json.loads(json.dumps(fields, default=str))  # type: ignore[no-any-return]


def main() -> None:
    spec = json.loads(sys.argv[1])
    local, remote = spec["local"], spec["remote"]
    family = socket.AF_INET6 if ipaddress.ip_address(local).version == 6 else socket.AF_INET
    sockets: dict[int, socket.socket] = {}
    for port in (500, NAT_T_PORT):
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.bind((local, port))
        sockets[port] = sock
    endpoint = Ikev1Endpoint([build_policy(spec)], SystemRandomSource())
    start = time.monotonic()
    actions = sorted((float(at), what) for at, what in spec.get("actions", []))
    deadline = start + float(spec.get("duration", 10))
    while time.monotonic() < deadline:
        now = time.monotonic()
        while actions and start + actions[0][0] <= now:
            _at, what = actions.pop(0)
            if what == "connect":
                endpoint.connect("peer", Address(local, 500), Address(remote, 500), now)
            elif what in ("rekey", "rekey_ike"):
                endpoint.rekey("peer", now, ike=what == "rekey_ike")
            elif what == "disconnect":
                endpoint.disconnect("peer", now)
        timer = endpoint.next_timer()
        wait = min(0.05, max(0.0, (timer - now) if timer is not None else 0.05))
        readable, _w, _x = select.select(list(sockets.values()), [], [], wait)
        for sock in readable:
            data, source = sock.recvfrom(65535)
            port = sock.getsockname()[1]
            if port == NAT_T_PORT:
                if not data.startswith(NON_ESP_MARKER):
                    continue  # ESP in UDP or a keepalive
                data = data[len(NON_ESP_MARKER):]
            endpoint.receive(data, Address(local, port), Address(source[0], source[1]),
                             time.monotonic())
        now = time.monotonic()
        timer = endpoint.next_timer()
        if timer is not None and timer <= now:
            endpoint.handle_timer(now)
        for datagram in endpoint.pop_datagrams():
            sockets[datagram.local.port].sendto(datagram.data, tuple(datagram.remote))
        for event in endpoint.pop_events():
            print(json.dumps(event_json(event)), flush=True)
    for sock in sockets.values():
        sock.close()


if __name__ == "__main__":
    main()
