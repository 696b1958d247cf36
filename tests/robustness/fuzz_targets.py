"""Fuzz targets: one function per input surface, taking the fuzzer's bytes.

Each target feeds its bytes to one parser or engine and lets any exception the code must
not raise escape: those are the findings (atheris reports them as crashes, the tests as
failures).  The exceptions a surface is allowed to raise for bad input (the project's
PeerError / ProtocolError / ConfigError families) are caught here.  `KNOWN` lists the
findings already reported, so a long run can look past them; each has a strict-xfail
reproducer in tests/robustness/test_fuzz.py that fails the day it is fixed, so the entry
cannot outlive the bug.

Targets:
- ikev2_decoder: `core.ike.v2.message.decode_message`, re-encoding what parses;
- ikev1_decoder: `core.ike.v1.message.decode_message`, with and without a cipher;
- ikev2_engine / ikev1_engine: the engines' whole receive path on keyed SAs, both roles
  (keyed_v2.py, keyed_v1.py);
- esp: `EspSa.decapsulate` over a sequence of packets, raw or sealed with the SA's keys;
- control: the control socket's request parser;
- config: the config loader, which also parses `config-validate` / `config-apply` text.
"""

from __future__ import annotations

import contextlib
import ipaddress
import tempfile
from collections.abc import Callable
from pathlib import Path

from core.config.load import load_text
from core.crypto.ikev1 import CbcCipher
from core.daemon.control.protocol import (
    COMMANDS,
    ProtocolError,
    decode_request,
    error_response,
    ok_response,
)
from core.dataplane.model import (
    Direction,
    EspAlgorithm,
    EspIntegrity,
    SaMode,
    SaSpec,
)
from core.dataplane.userspace.esp import ESP_HEADER, EspDropped, EspSa
from core.errors import ConfigError, PeerError, RbipsecError
from core.ike.v1.constants import Phase1Encr
from core.ike.v1.message import decode_message as decode_v1
from core.ike.v2.message import decode_message as decode_v2
from core.ike.v2.message import encode_message as encode_v2
from tests.robustness import keyed_v1, keyed_v2

Target = Callable[[bytes], None]


class FuzzFinding(AssertionError):
    """A property a target checks beyond "no unexpected exception" did not hold."""


# -- known findings (see the module docstring) -----------------------------------------
# Each entry: a finding reported but not fixed yet, matched by (exception, target); none
# is open now (the RecursionError of deep JSON and the IsADirectoryError of a psk_file
# directory were fixed).
KNOWN: dict[str, Callable[[BaseException, str], bool]] = {}


def is_known(error: BaseException, target: str) -> bool:
    return any(match(error, target) for match in KNOWN.values())


# -- decoders ------------------------------------------------------------------------
def ikev2_decoder(data: bytes) -> None:
    try:
        message = decode_v2(data)
    except PeerError:
        return
    try:
        again = decode_v2(encode_v2(message))
    except RbipsecError:
        return  # e.g. an SK payload (encoded by the protector only) or a size limit
    if [t for t, _ in again.payloads] != [t for t, _ in message.payloads]:
        raise FuzzFinding("re-encoding a decoded message changed its payload chain")


_V1_CIPHER = CbcCipher(Phase1Encr.AES_CBC, bytes(range(16)))


def ikev1_decoder(data: bytes) -> None:
    for cipher in (None, _V1_CIPHER):
        with contextlib.suppress(PeerError):
            decode_v1(data, cipher, bytes(16) if cipher else b"")


# -- engines -------------------------------------------------------------------------
def ikev2_engine(data: bytes) -> None:
    keyed_v2.run(data)


def ikev1_engine(data: bytes) -> None:
    keyed_v1.run(data)


# -- ESP -----------------------------------------------------------------------------
_SPI = 0x0A0B0C0D
_ESP_SUITES = (
    (EspAlgorithm.AES_GCM_16, bytes(range(20)), EspIntegrity.NONE, b""),
    (EspAlgorithm.AES_GCM_16, bytes(range(36)), EspIntegrity.NONE, b""),
    (EspAlgorithm.CHACHA20_POLY1305, bytes(range(36)), EspIntegrity.NONE, b""),
    (EspAlgorithm.AES_CBC, bytes(range(32)), EspIntegrity.HMAC_SHA2_256_128, bytes(32)),
)
_WINDOWS = (0, 32, 128, 4096)


def esp_pair(config: int) -> tuple[EspSa, EspSa]:
    """(inbound SA under test, its outbound twin with the same keys) for a config byte:
    bits 0-1 the suite, bit 2 ESN, bit 3 transport mode, bits 4-5 the replay window."""
    algorithm, key, integrity, integrity_key = _ESP_SUITES[config & 3]
    specs = [
        SaSpec(
            spi=_SPI,
            direction=direction,
            src=ipaddress.IPv4Address("198.51.100.2"),
            dst=ipaddress.IPv4Address("198.51.100.1"),
            mode=SaMode.TRANSPORT if config & 8 else SaMode.TUNNEL,
            algorithm=algorithm,
            encryption_key=key,
            integrity=integrity,
            integrity_key=integrity_key,
            esn=bool(config & 4),
            replay_window=_WINDOWS[(config >> 4) & 3],
        )
        for direction in (Direction.IN, Direction.OUT)
    ]
    return EspSa(specs[0], 0.0), EspSa(specs[1], 0.0, random_bytes=lambda n: bytes(n))


def _sealed(twin: EspSa, seq: int, plaintext: bytes) -> bytes:
    """An ESP packet whose ICV verifies, carrying exactly `plaintext` (trailer included)."""
    transform = twin._transform
    if transform.block_size == 16:
        plaintext += bytes(-len(plaintext) % 16)
    header = ESP_HEADER.pack(_SPI, seq & 0xFFFFFFFF)
    seq_high = (seq >> 32).to_bytes(4, "big") if twin.spec.esn else b""
    iv = seq.to_bytes(8, "big") if transform.iv_size == 8 else bytes(16)
    return header + iv + transform.seal(header, seq_high, iv, plaintext)


def esp(data: bytes) -> None:
    """Packets: [kind][seq: 4][length: 2][bytes]; kind bit 0 = sealed with valid keys."""
    if not data:
        return
    inbound, twin = esp_pair(data[0])
    accepted: set[int] = set()
    position = 1
    while position + 7 <= len(data):
        kind = data[position]
        seq = int.from_bytes(data[position + 1 : position + 5], "big")
        length = int.from_bytes(data[position + 5 : position + 7], "big") & 0x7FF
        body = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind & 2 and inbound.spec.esn:
            seq |= (kind >> 2 & 3) << 32
        if kind & 1:
            packet = _sealed(twin, seq, body)
        else:
            packet = ESP_HEADER.pack(_SPI, seq & 0xFFFFFFFF) + body
        before = inbound.packets
        try:
            inner = inbound.decapsulate(packet)
        except EspDropped:
            continue
        if inbound.packets != before + 1 or len(inner) < 20:
            raise FuzzFinding("a delivered packet is not counted or not an IPv4 packet")
        if inbound.spec.replay_window and seq in accepted:
            raise FuzzFinding(f"sequence number {seq} accepted twice")
        accepted.add(seq)


# -- control socket and config ---------------------------------------------------------
def control(data: bytes) -> None:
    try:
        request = decode_request(data)
    except ProtocolError as error:
        error_response(error.request_id, str(error))  # the answer must encode
        return
    if request.cmd not in COMMANDS:
        raise FuzzFinding(f"unknown command {request.cmd!r} accepted")
    required, optional = COMMANDS[request.cmd]
    for key, value in request.args.items():
        kind = str if key in required else optional.get(key)
        if kind is None or not isinstance(value, kind):
            raise FuzzFinding(f"argument {key}={value!r} accepted for {request.cmd}")
    ok_response(request.id, None)


_CONFIG_DIR = Path(tempfile.mkdtemp(prefix="rbipsec-fuzz-config-"))


def config(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    with contextlib.suppress(ConfigError):
        load_text(text, "fuzz.toml", _CONFIG_DIR)


TARGETS: dict[str, Target] = {
    "ikev2_decoder": ikev2_decoder,
    "ikev1_decoder": ikev1_decoder,
    "ikev2_engine": ikev2_engine,
    "ikev1_engine": ikev1_engine,
    "esp": esp,
    "control": control,
    "config": config,
}


def checked(name: str) -> Target:
    """The target `name`, with known findings passed over."""
    target = TARGETS[name]

    def run(data: bytes) -> None:
        try:
            target(data)
        except Exception as error:
            if not is_known(error, name):
                raise

    return run
