"""Re-create the golden netlink dumps: what iproute2's `ip xfrm` sends for each command.

Run as root on a host with iproute2 and strace (`python capture.py`).  Each command runs in a
throw-away network namespace; the kernel may refuse it (this host has no ESP) but the request
is what we keep.  Output: one JSON file per case with the command, the netlink message type
and flags and the message body after the 16-byte nlmsghdr (sequence numbers vary).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
NETNS = "rbipsec-golden"

KEY_GCM = "0x000102030405060708090a0b0c0d0e0f10111213"
KEY_CBC = "0x101112131415161718191a1b1c1d1e1f"
KEY_SHA = "0x202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"

CASES: dict[str, str] = {
    "newsa_gcm_esn": (
        "xfrm state add src 198.51.100.1 dst 198.51.100.2 proto esp spi 0x01020304"
        f" reqid 0x72620001 mode tunnel aead rfc4106(gcm(aes)) {KEY_GCM} 128"
        " replay-window 128 flag esn sel src 0.0.0.0/0 dst 0.0.0.0/0"
        " if_id 0x72620001 extra-flag dont-encap-dscp"
    ),
    "newsa_cbc_sha256_encap": (
        "xfrm state add src 203.0.113.5 dst 198.51.100.2 proto esp spi 0xc0ffee01"
        f" reqid 0x72620002 mode tunnel enc cbc(aes) {KEY_CBC}"
        f" auth-trunc hmac(sha256) {KEY_SHA} 128"
        " replay-window 32 sel src 0.0.0.0/0 dst 0.0.0.0/0 encap espinudp 4500 4501 0.0.0.0"
        " limit time-soft 3000 limit time-hard 3600 limit byte-soft 1000000"
        " limit byte-hard 2000000 limit packet-soft 500 limit packet-hard 1000"
        " if_id 0x72620002 extra-flag dont-encap-dscp"
    ),
    "newsa_gcm_v6_transport": (
        "xfrm state add src 2001:db8::1 dst 2001:db8::2 proto esp spi 0x00001000"
        f" reqid 0x72620003 mode transport aead rfc4106(gcm(aes)) {KEY_GCM} 128"
        " replay-window 64 sel src ::/0 dst ::/0 if_id 0x72620003 extra-flag dont-encap-dscp"
        " output-mark 0x72620000 mask 0xffff0000"
    ),
    "delsa": "xfrm state delete src 198.51.100.1 dst 198.51.100.2 proto esp spi 0x01020304",
    "getsa": "xfrm state get src 198.51.100.1 dst 198.51.100.2 proto esp spi 0x01020304",
    "allocspi": (
        "xfrm state allocspi src 198.51.100.1 dst 198.51.100.2 proto esp"
        " mode tunnel min 0x100 max 0xffff"
    ),
    "newpolicy_out": (
        "xfrm policy add src 0.0.0.0/0 dst 0.0.0.0/0 dir out"
        " tmpl src 198.51.100.1 dst 198.51.100.2 proto esp reqid 0x72620001 mode tunnel"
        " if_id 0x72620001"
    ),
    "newpolicy_in": (
        "xfrm policy add src 0.0.0.0/0 dst 0.0.0.0/0 dir in"
        " tmpl src 0.0.0.0 dst 0.0.0.0 proto esp reqid 0x72620001 mode tunnel"
        " if_id 0x72620001"
    ),
    "delpolicy_fwd": "xfrm policy delete src 0.0.0.0/0 dst 0.0.0.0/0 dir fwd if_id 0x72620001",
    "flushsa": "xfrm state flush proto esp",
}

_SENDMSG = re.compile(
    r"nlmsg_len=(\d+), nlmsg_type=([A-Z_0-9x]+), nlmsg_flags=([A-Z_|0-9x]+), .*?\}, \"([^\"]*)\""
)


def capture(name: str, command: str) -> dict[str, object]:
    argv = ["ip", "netns", "exec", NETNS, "strace", "-e", "trace=sendmsg", "-xx", "-s", "8192"]
    argv += ["ip", *command.split()]
    run = subprocess.run(argv, capture_output=True, text=True, check=False)
    found = _SENDMSG.findall(run.stderr)
    if not found:
        raise SystemExit(f"{name}: no netlink request in strace output:\n{run.stderr}")
    length, msg_type, flags, body = found[-1]
    body_bytes = bytes(int(h, 16) for h in body.split("\\x")[1:])
    if len(body_bytes) + 16 != int(length):
        raise SystemExit(f"{name}: body is {len(body_bytes)} bytes, header says {length}")
    return {
        "command": "ip " + command,
        "source": "iproute2 6.1.0 via strace 6.1 (sendmsg, -xx)",
        "nlmsg_type": msg_type,
        "nlmsg_flags": flags,
        "body_hex": body_bytes.hex(),
    }


def main() -> None:
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    try:
        for name, command in CASES.items():
            record = capture(name, command)
            (HERE / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
            print(name, record["nlmsg_type"], len(str(record["body_hex"])) // 2, file=sys.stderr)
    finally:
        subprocess.run(["ip", "netns", "del", NETNS], check=False)


if __name__ == "__main__":
    main()
