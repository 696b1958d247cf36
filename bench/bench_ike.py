"""Responder CPU per IKEv2 SA + first Child SA, in-process: `python -m bench.bench_ike`.

    python -m bench.bench_ike [--setups 2000] [--rounds 5] [--ike aes256gcm16-prfsha256-x25519]
                              [--esp aes256gcm16] [--breakdown] [--profile [N]]

One responder endpoint (`Ikev2Endpoint`, PSK, system randomness) answers `--setups`
complete IKE_SA_INIT + IKE_AUTH exchanges, each from a fresh initiator endpoint at its own
address (a dynamic peer: any address, any identity that proves the PSK).  The initiators'
work is done between the timed calls: `time.process_time()` brackets only the responder's
`receive` calls and the draining of its outputs, so the figure is the responder's CPU per
setup.  The total (both sides, also process time) and the wall time are printed too.

Rounds: the setups are split into `--rounds` rounds after a warm-up; the best and the
median round are shown (the machine is shared and noisy).

The goal of issue 3 is under 0.5 ms of responder CPU per setup, at least twice
strongSwan's rate.  strongSwan's figure (~1.0 ms per IKE SA + Child SA with X25519) is the
one recorded in /work/shared/NOTES.md: it is NOT measured by this run, and the ratio
printed against it is only as good as that record.

`--breakdown` times the pieces of one setup one by one (decoding, key exchange, key
derivation, encoding).  `--profile` runs cProfile around the responder calls only and
prints the top N functions by own time and by cumulative time (cProfile inflates small
Python functions; read it for where, the breakdown for how much).
"""

from __future__ import annotations

import argparse
import cProfile
import ipaddress
import pstats
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from core.crypto.cipher import create_ike_protectors  # noqa: E402
from core.crypto.dh import create_key_exchange  # noqa: E402
from core.crypto.keymat import derive_child_keys, derive_ike_keys  # noqa: E402
from core.crypto.proposals import parse_esp_proposal, parse_ike_proposal  # noqa: E402
from core.crypto.random import SystemRandomSource  # noqa: E402
from core.ike.events import Address, ChildSaInstalled, IkeSaUp  # noqa: E402
from core.ike.policy import Identity, PeerPolicy  # noqa: E402
from core.ike.v2.endpoint import Ikev2Endpoint  # noqa: E402
from core.ike.v2.message import decode_message, encode_message  # noqa: E402

# Recorded in /work/shared/NOTES.md ("strongSwan responder CPU per IKE SA + Child SA with
# X25519: ~1.0-1.1 ms"), measured on this machine; not measured here.
STRONGSWAN_RECORDED_MS = 1.0
GOAL_MS = 0.5
RESPONDER = Address("198.51.100.2", 500)
PSK = b"a benchmark secret of some length"


@dataclass
class Round:
    setups: int
    responder_cpu: float  # seconds of process time inside responder calls
    init_cpu: float  # ... of which IKE_SA_INIT
    total_cpu: float  # both sides
    wall: float

    @property
    def responder_ms(self) -> float:
        return self.responder_cpu / self.setups * 1e3


def peer_policy(
    ike: str,
    esp: str,
    *,
    local: str | None,
    remote: str | None,
    remote_id: Identity | None,
    name: str = "bench",
) -> PeerPolicy:
    return PeerPolicy(
        name=name,
        ike_version=2,
        local_id=Identity.parse(local or "bench.responder.example"),
        remote_id=remote_id,
        psk=PSK,
        ike_proposals=tuple(parse_ike_proposal(p) for p in ike.split(",")),
        esp_proposals=tuple(parse_esp_proposal(p) for p in esp.split(",")),
        local_address=local,
        remote_address=remote,
        dpd_interval=0.0,
    )


def initiator_address(index: int) -> Address:
    return Address(str(ipaddress.IPv4Address("10.64.0.0") + 1 + index), 500)


class Bench:
    def __init__(self, ike: str, esp: str) -> None:
        self.ike, self.esp = ike, esp
        self.rng = SystemRandomSource()
        self.responder = Ikev2Endpoint(
            [peer_policy(ike, esp, local=RESPONDER.host, remote=None, remote_id=None)],
            self.rng,
        )
        self.template = peer_policy(
            ike, esp, local=None, remote=RESPONDER.host, remote_id=Identity.parse(RESPONDER.host)
        )
        self.now = 1000.0
        self.timed: Callable[[Callable[[], None]], None] = self._timed_plain
        self.profiler: cProfile.Profile | None = None
        self.responder_cpu = 0.0

    def _timed_plain(self, call: Callable[[], None]) -> None:
        start = time.process_time()
        call()
        self.responder_cpu += time.process_time() - start

    def _timed_profiled(self, call: Callable[[], None]) -> None:
        assert self.profiler is not None
        self.profiler.enable()
        call()
        self.profiler.disable()

    def one_setup(self, index: int) -> float:
        """Run one IKE_SA_INIT + IKE_AUTH; return the responder CPU of its IKE_SA_INIT."""
        address = initiator_address(index)
        policy = replace(
            self.template, local_address=address.host, local_id=Identity.parse(address.host)
        )
        initiator = Ikev2Endpoint([policy], self.rng)
        initiator.connect(policy.name, address, RESPONDER, self.now)
        init_cpu = 0.0
        for _exchange in ("IKE_SA_INIT", "IKE_AUTH"):
            [request] = initiator.pop_datagrams()
            answers: list[bytes] = []

            def respond(data: bytes = request.data, answers: list[bytes] = answers) -> None:
                self.responder.receive(data, RESPONDER, address, self.now)
                # Only the answer to this initiator (others, e.g. a DELETE of an SA it
                # replaced, are part of the work but go elsewhere).
                answers.extend(
                    d.data for d in self.responder.pop_datagrams() if d.remote == address
                )
                self.responder.pop_events()

            before = self.responder_cpu
            self.timed(respond)
            if _exchange == "IKE_SA_INIT":
                init_cpu = self.responder_cpu - before
            [answer] = answers
            initiator.receive(answer, address, RESPONDER, self.now)
        events = initiator.pop_events()
        if not any(isinstance(e, IkeSaUp) for e in events) or not any(
            isinstance(e, ChildSaInstalled) for e in events
        ):
            raise SystemExit(f"setup {index} failed: {events}")
        self.now += 0.001
        return init_cpu

    def run_round(self, setups: int, first: int) -> Round:
        self.responder_cpu = 0.0
        init_cpu = 0.0
        wall, cpu = time.perf_counter(), time.process_time()
        for index in range(first, first + setups):
            init_cpu += self.one_setup(index)
        return Round(
            setups,
            self.responder_cpu,
            init_cpu,
            time.process_time() - cpu,
            time.perf_counter() - wall,
        )


def _per_call_us(func: Callable[[], object], number: int = 500) -> float:
    return min(timeit.repeat(func, number=number, repeat=5, timer=time.process_time)) / number * 1e6


def breakdown(bench: Bench) -> None:
    """Per-call cost of the pieces a responder setup is made of, on the messages of one
    real setup (public APIs only; the engine's bookkeeping is the remainder)."""
    address = initiator_address(20_000_000)
    policy = replace(
        bench.template, local_address=address.host, local_id=Identity.parse(address.host)
    )
    initiator = Ikev2Endpoint([policy], bench.rng)
    initiator.connect(policy.name, address, RESPONDER, bench.now)
    messages: list[bytes] = []
    for _exchange in range(2):
        [request] = initiator.pop_datagrams()
        bench.responder.receive(request.data, RESPONDER, address, bench.now)
        [answer] = [d for d in bench.responder.pop_datagrams() if d.remote == address]
        bench.responder.pop_events()
        messages += [request.data, answer.data]
        initiator.receive(answer.data, address, RESPONDER, bench.now)
    bench.now += 0.001
    sa = bench.responder.current_sa("bench")
    assert sa is not None and sa.keys is not None and sa.negotiated is not None
    neg, keys = sa.negotiated, sa.keys
    assert neg.prf is not None and neg.dh is not None
    seal, opener = create_ike_protectors(neg.encr_choice, neg.integ, keys, False)
    init_request, init_response, auth_request, auth_response = messages
    _, initiator_opener = create_ike_protectors(neg.encr_choice, neg.integ, keys, True)
    init_reply = decode_message(init_response)
    auth_reply = decode_message(auth_response, initiator_opener)
    group, prf, rng = neg.dh, neg.prf, bench.rng
    nonce, spi = rng.bytes(32), rng.bytes(8)

    peer_public = create_key_exchange(group, rng).public_value

    def exchange() -> bytes:
        return create_key_exchange(group, rng).shared_secret(peer_public)

    rows = [
        ("decode IKE_SA_INIT request", lambda: decode_message(init_request)),
        (f"key exchange {group.name} (key pair + shared secret)", exchange),
        (
            "derive_ike_keys",
            lambda: derive_ike_keys(prf, neg.encr_choice, neg.integ, nonce, nonce, nonce, spi, spi),
        ),
        ("encode IKE_SA_INIT response", lambda: encode_message(init_reply)),
        ("decode IKE_AUTH request (SK opened)", lambda: decode_message(auth_request, opener)),
        (
            "derive_child_keys",
            lambda: derive_child_keys(prf, keys.sk_d, neg.encr_choice, neg.integ, nonce, nonce),
        ),
        ("encode IKE_AUTH response (SK sealed)", lambda: encode_message(auth_reply, seal, rng)),
    ]
    print("\nWhat a setup is made of (CPU, best of 5, microseconds per call):")
    for name, func in rows:
        print(f"  {name:<48} {_per_call_us(func):8.1f}")
    print("  (the rest of the responder's time is the engine's own work: proposal")
    print("  selection, AUTH, traffic selectors, SA bookkeeping, events)")


def profile(bench: Bench, setups: int, top: int) -> None:
    bench.profiler = cProfile.Profile()
    bench.timed = bench._timed_profiled
    for index in range(setups):
        bench.one_setup(10_000_000 + index)
    stats = pstats.Stats(bench.profiler)
    print(f"\ncProfile of the responder calls only ({setups} setups), top {top} by own time:")
    stats.sort_stats("tottime").print_stats(top)
    print(f"top {top} by cumulative time:")
    stats.sort_stats("cumulative").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setups", type=int, default=2000, help="measured setups in all")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--ike", default="aes256gcm16-prfsha256-x25519")
    parser.add_argument("--esp", default="aes256gcm16")
    parser.add_argument(
        "--breakdown", action="store_true", help="also time the pieces of a setup one by one"
    )
    parser.add_argument(
        "--profile",
        type=int,
        nargs="?",
        const=25,
        default=None,
        metavar="N",
        help="also profile the responder calls (top N)",
    )
    args = parser.parse_args()

    bench = Bench(args.ike, args.esp)
    bench.run_round(args.warmup, 0)
    per_round = max(1, args.setups // args.rounds)
    rounds = [bench.run_round(per_round, args.warmup + r * per_round) for r in range(args.rounds)]
    best = min(rounds, key=lambda r: r.responder_ms)
    median_ms = statistics.median(r.responder_ms for r in rounds)
    setups = sum(r.setups for r in rounds)
    init_ms = sum(r.init_cpu for r in rounds) / setups * 1e3
    total_ms = sum(r.total_cpu for r in rounds) / setups * 1e3
    wall_ms = sum(r.wall for r in rounds) / setups * 1e3

    print(f"IKEv2 responder, PSK, IKE {args.ike}, ESP {args.esp}")
    print(
        f"{setups} setups (IKE_SA_INIT + IKE_AUTH with the first Child SA) in "
        f"{args.rounds} rounds after {args.warmup} warm-up setups\n"
    )
    print(
        f"  responder CPU per setup   best round {best.responder_ms:6.3f} ms   "
        f"median {median_ms:6.3f} ms   ({1e3 / median_ms:,.0f} setups/s)"
    )
    print(
        f"    of which IKE_SA_INIT    {init_ms:6.3f} ms   IKE_AUTH "
        f"{median_ms - init_ms:6.3f} ms (mean split)"
    )
    print(f"  both sides, CPU           {total_ms:6.3f} ms per setup")
    print(f"  wall time                 {wall_ms:6.3f} ms per setup")
    verdict = "met" if median_ms < GOAL_MS else "NOT met"
    print(f"\n  goal (issue 3): < {GOAL_MS} ms per setup: {verdict} (median round)")
    print(
        f"  strongSwan: ~{STRONGSWAN_RECORDED_MS} ms per setup -- RECORDED figure from "
        "/work/shared/NOTES.md, not measured in this run"
    )
    print(
        f"  rate vs that recorded figure: {STRONGSWAN_RECORDED_MS / median_ms:4.2f}x "
        "strongSwan's setup rate (goal >= 2x)"
    )
    if args.breakdown:
        breakdown(bench)
    if args.profile:
        profile(bench, max(200, per_round), args.profile)


if __name__ == "__main__":
    main()
