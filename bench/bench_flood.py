"""IKE_SA_INIT flood against a daemon carrying a tunnel: the highest rate it holds.

    sudo python bench/bench_flood.py [--rates 1000,2000,4000,8000,16000] [--seconds 5]

One lab (tests/robustness/flood_lab.py): a tunnel a <-> b with a ping every 10 ms, and
a flooder namespace with 200 addresses sending valid IKE_SA_INIT requests to b (a
COOKIE-carrying retry for 20 of the COOKIEs, as a real initiator would).  For each rate,
a burst of `seconds` at that rate; printed per rate: the rate achieved by the flooder, the
share of requests b answered (COOKIE or response), real responses (half-open SAs), ping
loss and worst RTT, b's CPU and peak RSS.  "Held" means no ping lost and at least 90 % of
the requests answered.  The last columns count datagrams the kernel dropped for a full
socket buffer, at b (the daemon's IKE socket) and at the flooder (the answers).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.robustness.flood_lab import RssSampler, build_flood_lab, flood
from tests.robustness.lab import NetLab, resources


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def udp_receive_buffer_errors(lab: NetLab, namespace: str) -> int:
    """Datagrams the namespace's kernel dropped because a socket's buffer was full."""
    lines = [
        line.split()
        for line in lab.run(namespace, "cat", "/proc/net/snmp").stdout.splitlines()
        if line.startswith("Udp:")
    ]
    return int(dict(zip(lines[0], lines[1], strict=True))["RcvbufErrors"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="1000,2000,4000,8000,16000")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_flood needs root (network namespaces)")
    held = 0
    with NetLab(Path(tempfile.mkdtemp(prefix="rbipsec-flood-"))) as lab:
        a, b, sources = build_flood_lab(lab)
        base = resources(lab, b)
        print(f"tunnel up; b: {base.line()}")
        print(
            "  rate  achieved  answered  half-open  ping sent/lost  worst RTT ms  "
            "b CPU %  b RSS peak MiB  held"
        )
        for rate in (int(r) for r in args.rates.split(",")):
            ping = lab.start_ping("a", "10.0.0.2", interval=0.01)
            sampler = RssSampler(lab, b)
            cpu_before, started = cpu_seconds(b.pid), time.monotonic()
            drops_before = {n: udp_receive_buffer_errors(lab, n) for n in ("b", "f")}
            figures = flood(lab, int(rate * args.seconds), rate, sources)
            cpu = (cpu_seconds(b.pid) - cpu_before) / (time.monotonic() - started) * 100
            time.sleep(0.5)
            drops = {n: udp_receive_buffer_errors(lab, n) - drops_before[n] for n in ("b", "f")}
            peak = sampler.stop()
            ping.send_signal(2)
            out, _ = ping.communicate(timeout=10)
            numbers = re.search(r"(\d+) packets transmitted, (\d+) received", out)
            rtt = re.search(r"= [\d.]+/[\d.]+/([\d.]+)/", out)
            sent, received = (int(numbers[1]), int(numbers[2])) if numbers else (0, 0)
            answered = (figures.get("cookie", 0) + figures.get("init_response", 0)) / max(
                1, figures["sent"] + figures["cookies_returned"]
            )
            half_open = figures.get("init_response", 0)
            ok = sent > 0 and sent == received and answered >= 0.9
            held = max(held, figures["rate"]) if ok else held
            print(
                f"{rate:6d} {figures['rate']:9d} {answered:9.1%} {half_open:10d}"
                f"  {sent:6d}/{sent - received:<6d} {float(rtt[1]) if rtt else 0:12.1f}"
                f"  {cpu:7.0f}  {peak // 1024:14d}  {'yes' if ok else 'no':4s}"
                f"  {drops['b']:7d} {drops['f']:7d}",
                flush=True,
            )
            time.sleep(11)  # half-open SAs of this round time out (lab: 10 s)
        print(
            f"\nheld: {held} IKE_SA_INIT/s from {len(sources)} addresses with no ping lost; "
            f"engine errors {b.status()['daemon']['engine_errors']}; "
            f"tunnel {a.state('tob')}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
