"""Security review items as tests: the control socket, secrets in outputs, psk_file
permissions, replayed ESP and IKE, the aggressive mode PSK warning.

Daemon-level replay tests (captured packets sent again between namespaces) are in
test_lab_replay.py; these run without root except the socket tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.config.load import load_text
from core.daemon.bus import Subscription
from core.daemon.control.protocol import Request
from core.daemon.control.server import ControlServer
from core.dataplane.userspace.esp import DropKind, EspDropped
from core.errors import ConfigError
from tests.daemon.harness import A_HOST, B_HOST, Lab, config_text, peer_toml, state, wait_for
from tests.robustness.fuzz_targets import esp_pair

CANARY = "PSK-CANARY-7f3a9c1e"
V1_CANARY = "PSK-CANARY-IKEV1-5d2b80"


# -- the control socket ---------------------------------------------------------------
class _Handler:
    async def handle_command(self, request: Request) -> object:
        return {"pong": True}

    def subscribe(self) -> Subscription:
        raise NotImplementedError


@pytest.fixture
def open_directory() -> Iterator[Path]:
    """A directory every user may enter (a tmp_path is private to root, which would make
    any socket inside unreachable for other users whatever its own mode)."""
    path = Path(tempfile.mkdtemp(prefix="rbipsec-sock-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _connect_as_nobody(path: Path) -> str:
    """What a connection attempt by user `nobody` ends with: "connected" or the errno name.
    (A forked child drops to nobody: the venv's interpreter may not be theirs to run.)"""
    nobody = pwd.getpwnam("nobody")
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        code = 255
        try:
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                client.connect(str(path))
                client.sendall(b'{"cmd": "ping"}\n')
                code = 0 if b"pong" in client.recv(100) else 254
            except OSError as error:
                code = error.errno or 253
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    return "connected" if code == 0 else errno.errorcode.get(code, str(code))


@pytest.mark.root
def test_control_socket_is_0600_root_and_refuses_other_users(open_directory: Path) -> None:
    path = open_directory / "sub" / "control.sock"

    async def scenario() -> tuple[int, int, int, str, str]:
        server = ControlServer(str(path), _Handler())
        await server.start()
        try:
            status = os.stat(path)
            parent = os.stat(path.parent)
            refused = await asyncio.to_thread(_connect_as_nobody, path)
            # The same attempt succeeds once the modes allow it: the test can tell.
            path.parent.chmod(0o755)
            path.chmod(0o666)
            allowed = await asyncio.to_thread(_connect_as_nobody, path)
        finally:
            await server.close()
        return (
            stat.S_IMODE(status.st_mode),
            status.st_uid,
            stat.S_IMODE(parent.st_mode),
            refused,
            allowed,
        )

    mode, owner, parent_mode, refused, allowed = asyncio.run(scenario())
    assert (mode, owner, parent_mode) == (0o600, 0, 0o700)
    assert refused == "EACCES"
    assert allowed == "connected"


@pytest.mark.root
def test_control_socket_in_an_open_directory_still_refuses_other_users(
    open_directory: Path,
) -> None:
    """An operator may put the socket in an existing world-readable directory: the
    socket's own mode still keeps other users out."""
    path = open_directory / "control.sock"

    async def scenario() -> str:
        server = ControlServer(str(path), _Handler())
        await server.start()
        try:
            return await asyncio.to_thread(_connect_as_nobody, path)
        finally:
            await server.close()

    assert asyncio.run(scenario()) == "EACCES"


def test_hostile_control_lines_do_not_stop_the_server(open_directory: Path) -> None:
    """Garbage, a line over the limit and deeply nested JSON on one connection each: the
    server keeps answering everyone else (the nested line gets no answer: bug 1)."""
    path = open_directory / "control.sock"
    hostile = [
        b"\xff\xfe garbage\n",
        b"[" * 100_000 + b"\n",
        b"x" * (1 << 20) + b"yy\n",
        b'{"cmd": "ping", "id": {"a": 1}}\n',
    ]

    def exchange(line: bytes) -> bytes:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(5)
        try:
            client.connect(str(path))
            client.sendall(line)
            client.shutdown(socket.SHUT_WR)
            return client.recv(4096)
        except OSError:
            return b""
        finally:
            client.close()

    async def scenario() -> list[bytes]:
        server = ControlServer(str(path), _Handler())
        await server.start()
        try:
            answers = [await asyncio.to_thread(exchange, line) for line in hostile]
            answers.append(await asyncio.to_thread(exchange, b'{"id": 7, "cmd": "ping"}\n'))
        finally:
            await server.close()
        return answers

    *to_hostile, last = asyncio.run(scenario())
    assert json.loads(last) == {"id": 7, "ok": True, "result": {"pong": True}}
    assert all(b'"ok":false' in to_hostile[i] for i in (0, 2, 3)), to_hostile


# -- secrets never shown ------------------------------------------------------------------
class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _secret_forms(secret: bytes) -> list[str]:
    """How a secret could show up in text."""
    forms = [secret.hex(), secret.hex().upper(), repr(secret)[2:-1]]
    with contextlib.suppress(UnicodeDecodeError):
        forms.append(secret.decode())
    return [f for f in forms if len(f) >= 8]


def test_psks_and_keys_never_reach_logs_status_events_or_errors(tmp_path: Path) -> None:
    """Two daemons at debug level with a recognisable PSK, an IKEv2 and an IKEv1 tunnel:
    up, child and IKE rekey, a peer with the wrong PSK, down and up.  Neither the PSKs nor
    any IKE or ESP key appear in the log records, the status, the event stream or the text
    of any error."""
    capture = _Capture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    wrong = "WRONG-" + CANARY
    secrets: set[bytes] = {CANARY.encode(), wrong.encode(), V1_CANARY.encode()}
    texts: list[str] = []

    async def scenario() -> None:
        lab = Lab(tmp_path)
        a = lab.node(
            "a",
            (A_HOST, "198.51.100.11", "198.51.100.13"),
            config_text(
                tmp_path / "a.sock",
                peer_toml("tob", "ipsec1", A_HOST, B_HOST, psk=CANARY, address="10.0.0.1/30"),
                peer_toml("bad", "ipsec2", "198.51.100.11", "198.51.100.12", psk=wrong),
                peer_toml(
                    "v1",
                    "ipsec3",
                    "198.51.100.13",
                    "198.51.100.14",
                    psk=V1_CANARY,
                    ike_version=1,
                    ike_proposals=["aes256-sha256-modp2048"],
                ),
            ),
            seed=1,
        )
        b = lab.node(
            "b",
            (B_HOST, "198.51.100.12", "198.51.100.14"),
            config_text(
                tmp_path / "b.sock",
                peer_toml("toa", "ipsec1", B_HOST, A_HOST, psk=CANARY, address="10.0.0.2/30"),
                peer_toml(
                    "bad", "ipsec2", "198.51.100.12", "198.51.100.11", psk=CANARY, passive=True
                ),
                peer_toml(
                    "v1",
                    "ipsec3",
                    "198.51.100.14",
                    "198.51.100.13",
                    psk=V1_CANARY,
                    ike_version=1,
                    ike_proposals=["aes256-sha256-modp2048"],
                ),
            ),
            seed=2,
        )
        subscriptions = [a.daemon.subscribe(), b.daemon.subscribe()]
        await lab.start()
        try:
            await wait_for(lambda: state(a.daemon, "tob") == "up", 10, "tob up")
            await wait_for(lambda: state(a.daemon, "v1") == "up", 10, "v1 up")
            for ike in (False, True):
                for name in ("tob", "v1"):
                    await a.daemon.rekey(name, ike=ike)
                await asyncio.sleep(0.5)
            await a.daemon.down("tob")
            await asyncio.sleep(0.3)
            await a.daemon.up("tob")
            await wait_for(lambda: state(a.daemon, "tob") == "up", 10, "tob up again")
            await asyncio.sleep(0.5)
            for node in (a, b):
                texts.append(json.dumps(await node.daemon.status()))
                for engine_sa in _engine_sas(node.daemon):
                    keys = engine_sa.keys
                    if keys is not None:
                        secrets.update(v for v in vars(keys).values() if v)
                        texts.append(repr(engine_sa) + repr(keys) + repr(engine_sa.policy))
                for fake in node.dataplane.sas.values():
                    secrets.update(
                        k for k in (fake.spec.encryption_key, fake.spec.integrity_key) if k
                    )
                    texts.append(repr(fake.spec))
                texts.extend(repr(call) for call in node.dataplane.calls)
                texts.append(repr(node.daemon.config))
            for subscription in subscriptions:
                texts.extend(json.dumps(e) for e in _drain(subscription))
        finally:
            await lab.stop()

    try:
        asyncio.run(scenario())
    finally:
        root.removeHandler(capture)
        root.setLevel(old_level)
    texts.extend(capture.lines)
    assert any("authentication failed" in t or "pre-shared keys" in t for t in texts)
    # 3 PSKs, the IKE SA's keys (5 with an AEAD), the Child SA's 2, SKEYID and its 3
    # children, the IPsec SA's keys: fewer proves little.
    assert len(secrets) >= 15, "too few keys collected: the test would prove little"
    everything = "\n".join(texts)
    for secret in secrets:
        for form in _secret_forms(secret):
            assert form not in everything, f"a secret shows up: {form[:12]}..."


def _engine_sas(daemon: Any) -> list[Any]:
    """Every IKE SA of the daemon's engines (IKEv2 and, where present, IKEv1)."""
    engine = daemon.engine
    if engine is None:
        return []
    endpoints = [getattr(engine, v) for v in ("v1", "v2") if hasattr(engine, v)] or [engine]
    return [sa for endpoint in endpoints for sa in endpoint._sas.values()]


def _drain(subscription: Subscription) -> list[dict[str, Any]]:
    events = []
    queue = subscription._queue
    while not queue.empty():
        events.append(queue.get_nowait())
    return events


def test_config_problems_do_not_echo_the_psk() -> None:
    base = textwrap.dedent(f"""\
        [global]
        enabled = true
        [[peer]]
        name = "b"
        interface = "ipsec1"
        local_address = "198.51.100.1"
        remote_address = "198.51.100.2"
        psk = "{CANARY}"
        """)
    broken = [
        base.replace(f'psk = "{CANARY}"', f'psk = "{CANARY}'),  # unterminated string
        base.replace(f'psk = "{CANARY}"', f'psk = ["{CANARY}"]'),
        base + f'psk = "{CANARY}"\n',  # twice
        base + f'mtu = "{CANARY}"\n',  # (this one is not the PSK: shown is fine, but ...)
    ]
    for text in broken[:3]:
        with pytest.raises(ConfigError) as caught:
            load_text(text, "c.toml")
        assert CANARY not in str(caught.value) and CANARY not in repr(caught.value)
    with pytest.raises(ConfigError):
        load_text(broken[3], "c.toml")
    assert CANARY not in repr(load_text(base, "c.toml"))


# -- psk_file ----------------------------------------------------------------------------
def _config_with_psk_file(directory: Path, psk_file: str) -> str:
    return textwrap.dedent(f"""\
        [global]
        enabled = true
        [[peer]]
        name = "b"
        interface = "ipsec1"
        local_address = "198.51.100.1"
        remote_address = "198.51.100.2"
        psk_file = "{psk_file}"
        """)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o601])
def test_psk_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    secret = tmp_path / "peer.psk"
    secret.write_text(CANARY + "\n")
    secret.chmod(mode)
    with pytest.raises(ConfigError) as caught:
        load_text(_config_with_psk_file(tmp_path, "peer.psk"), "c.toml", tmp_path)
    assert "chmod 600" in str(caught.value)
    assert CANARY not in str(caught.value)


def test_psk_file_0600_and_0400_are_read(tmp_path: Path) -> None:
    secret = tmp_path / "peer.psk"
    secret.write_text(CANARY + "\n")
    for mode in (0o600, 0o400):
        secret.chmod(mode)
        config = load_text(_config_with_psk_file(tmp_path, "peer.psk"), "c.toml", tmp_path)
        assert config.peers[0].psk.value == CANARY.encode()


def test_psk_file_symlink_to_an_open_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "open.psk"
    target.write_text(CANARY)
    target.chmod(0o644)
    (tmp_path / "link.psk").symlink_to(target)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_text(_config_with_psk_file(tmp_path, "link.psk"), "c.toml", tmp_path)


def test_psk_file_missing_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_text(_config_with_psk_file(tmp_path, "none.psk"), "c.toml", tmp_path)


def test_psk_file_that_is_a_directory_is_a_config_problem(tmp_path: Path) -> None:
    (tmp_path / "dir.psk").mkdir(mode=0o700)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_text(_config_with_psk_file(tmp_path, "dir.psk"), "c.toml", tmp_path)


def test_psk_file_that_is_a_fifo_does_not_hang(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.psk", 0o600)
    text = _config_with_psk_file(tmp_path, "fifo.psk")
    code = (
        "import sys; from pathlib import Path; from core.config.load import validate_text;"
        f"print(validate_text(sys.stdin.read(), 'c.toml', Path({str(tmp_path)!r})))"
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", code],
            input=text,
            text=True,
            capture_output=True,
            timeout=3,
            check=False,
            cwd=Path(__file__).resolve().parents[2],
        )
    except subprocess.TimeoutExpired:
        pytest.fail("loading a config whose psk_file is a FIFO hung")
    assert "not a regular file" in result.stdout


# -- replay ------------------------------------------------------------------------------
@pytest.mark.parametrize("config", [0x10, 0x21, 0x23, 0x34])
def test_replayed_esp_packets_are_dropped_and_counted(config: int) -> None:
    inbound, twin = esp_pair(config)
    inner = bytes.fromhex("4500001c00000000400100000a0000010a000002") + bytes(8)
    packets = [twin.encapsulate(inner) for _ in range(5)]
    for packet in packets:
        assert inbound.decapsulate(packet) == inner
    for packet in (packets[0], packets[4], packets[2]):
        with pytest.raises(EspDropped) as caught:
            inbound.decapsulate(packet)
        assert caught.value.kind is DropKind.REPLAY
    assert inbound.replay_errors == 3 and inbound.packets == 5


def test_replayed_ike_requests_change_nothing() -> None:
    """Every request of a good run, sent again to its receiver while the IKE SA stands:
    the latest is answered from the cache (the same bytes as before), older ones are
    dropped; no SA, Child SA or event other than a log line results.  A replayed
    IKE_SA_INIT is a late copy of the request that built the standing IKE SA: ignored
    (RFC 7296 2.1), no half-open SA, no answer."""
    from core.ike.events import IkeSaUp, LogMessage
    from tests.ike.v2.pair import Pair, mirror, policy

    base = policy(dpd_interval=0)
    pair = Pair(base, mirror(base))
    pair.connect()
    for _ in range(2):
        pair.a.endpoint.rekey("peer", pair.now)
        pair.deliver()
    pair.advance(2)
    init, *requests = [d for d in pair.a.sent if not d.data[19] & 0x20]
    assert [d.data[18] for d in requests] == [35, 36, 37, 36, 37]  # AUTH, CCS, INFO ...
    before = _snapshot(pair)
    answered = {d.data for d in pair.b.sent}
    replies = []
    for datagram in requests:
        pair.b.endpoint.receive(datagram.data, datagram.remote, datagram.local, pair.now)
        replies += pair.b.endpoint.pop_datagrams()
    events = pair.b.endpoint.pop_events()
    assert all(isinstance(e, LogMessage) for e in events), events
    assert len(replies) == 1 and replies[0].data in answered  # the last, from the cache
    assert _snapshot(pair) == before
    pair.b.endpoint.receive(init.data, init.remote, init.local, pair.now)
    assert pair.b.endpoint.half_open_count == 0 and not pair.b.endpoint.pop_datagrams()
    pair.b.events.clear()
    pair.advance(60)
    assert pair.b.endpoint.half_open_count == 0 and not pair.b.of(IkeSaUp)
    assert _snapshot(pair)[1:3] == before[1:3]


def _snapshot(pair: Any) -> tuple[Any, ...]:
    sa_a, sa_b = pair.a.endpoint.current_sa("peer"), pair.b.endpoint.current_sa("peer")
    return (
        (sa_a.spi_i, sa_a.spi_r, sa_a.state),
        (sa_b.spi_i, sa_b.spi_r, sa_b.state),
        sorted((c.spi_in, c.spi_out, c.state.value) for c in sa_b.children),
        len(pair.b.endpoint._sas),
    )


# -- aggressive mode ---------------------------------------------------------------------
def test_aggressive_mode_with_a_psk_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The warning may come from the config loader (a `warnings` list on the Config, or a
    log record) or from the daemon when it sets the peer up: either counts."""
    peer = peer_toml(
        "agg",
        "ipsec1",
        A_HOST,
        "dynamic",
        ike_version=1,
        exchange_mode="aggressive",
        remote_id="fqdn:b.example",
    )
    caplog.set_level(logging.WARNING)
    config = load_text(config_text(tmp_path / "x.sock", peer), "c.toml")

    async def start_and_stop() -> None:
        lab = Lab(tmp_path)
        lab.node("a", (A_HOST,), config_text(tmp_path / "a.sock", peer))
        await lab.start()
        await asyncio.sleep(0.2)
        await lab.stop()

    asyncio.run(start_and_stop())
    warnings = list(getattr(config, "warnings", ())) + [
        r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
    ]
    assert any("aggressive" in w.lower() for w in warnings), warnings
