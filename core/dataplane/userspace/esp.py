"""ESP packet protection (RFC 4303), sans-IO: bytes in, bytes out, no clock, no sockets.

One `EspSa` per SA and direction, built from a `SaSpec`:
- AES-GCM-16 (RFC 4106) and ChaCha20-Poly1305 (RFC 7634): the key material ends with a
  4-byte salt; the 8-byte explicit IV is the 64-bit sequence number, unique per key.
  AAD = SPI || seq (or SPI || seq high || seq low with ESN, RFC 4106 section 5).
- AES-CBC (RFC 3602) with HMAC-SHA1-96 / SHA2-256-128 / 384-192 / 512-256 (RFC 4868) or
  without integrity; random IV.  With ESN the high 32 bits are appended to the ICV input
  only (RFC 4303 section 2.2.1).

"ESP" here is what follows the outer IP header (or the UDP header with RFC 3948): the
backend or the kernel builds the outer header, always with ToS 0.

`encapsulate()` takes an IPv4 packet: tunnel mode carries it whole (next header 4);
transport mode carries its payload with the packet's protocol as next header, and takes
IPv6 packets too when the SA's addresses are IPv6 (without extension headers: ESP would
go between them, RFC 4303 section 3.1.1; locally sent unicast traffic has none).
`decapsulate()` returns an IPv4 packet: tunnel mode the inner one, transport mode the
payload under a rebuilt header from the SA's addresses (IPv6 for IPv6 addresses).  Every
dropped packet raises `EspDropped` (counted here by kind); a packet the SA must not send
raises `EspSendRefused`.
"""

from __future__ import annotations

import enum
import hmac as stdlib_hmac
import ipaddress
import os
import struct
from collections.abc import Callable
from typing import NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from core.dataplane.model import (
    Direction,
    EspAlgorithm,
    EspIntegrity,
    ExpiryKind,
    SaCounters,
    SaMode,
    SaSpec,
)
from core.dataplane.userspace.packet import (
    IPV4_MIN_HEADER,
    PROTO_IPIP,
    PROTO_NONE,
    build_ipv4_header,
    ipv4_header_length,
    ipv4_is_fragment,
    ipv4_total_length,
)
from core.dataplane.userspace.replay import ReplayWindow
from core.errors import PeerError, RbipsecError, UsageError

ESP_HEADER = struct.Struct("!II")  # SPI, sequence number (low 32 bits)
_MAX_SEQ_32 = (1 << 32) - 1
_MAX_SEQ_64 = (1 << 64) - 1
_NO_LIMIT = 1 << 64  # a byte/packet count no SA reaches: "no hard limit" without a branch
_PADDING = bytes(range(1, 256))  # RFC 4303 section 2.4: 1, 2, 3, ...
_IPV6_HEADER = struct.Struct("!IHBB16s16s")  # version/class/flow, length, next, hops, addrs
_IPV6_HEADER_SIZE = 40
_IPV6_HOP_LIMIT = 64
# IPv6 extension headers (IANA registry; 59 "no next header" too): transport mode here
# carries none of them.
_IPV6_EXTENSION_HEADERS = frozenset({0, 43, 44, 50, 51, 59, 60, 135, 139, 140, 253, 254})

# The AEAD fast path packs what it needs with one call each (RFC 4106 sections 3-5):
_HEADER_AND_IV = struct.Struct("!IIQ")  # SPI, seq low, explicit IV = the 64-bit seq
_NONCE = struct.Struct("!4sQ")  # salt || explicit IV
_ESN_AAD = struct.Struct("!IQ")  # SPI || seq high || seq low = SPI || 64-bit seq
# Trailers of tunnel-mode packets (padding, pad length, next header 4), by pad length:
# sending picks one of the first four, receiving checks a whole trailer with endswith().
_TUNNEL_TRAILERS = tuple(_PADDING[:pad] + bytes((pad, 4)) for pad in range(256))

_HMAC_PARAMETERS: dict[EspIntegrity, tuple[type[hashes.HashAlgorithm], int, int]] = {
    # integrity: (hash, key length, ICV length)  -- RFC 2404, RFC 4868
    EspIntegrity.HMAC_SHA1_96: (hashes.SHA1, 20, 12),
    EspIntegrity.HMAC_SHA2_256_128: (hashes.SHA256, 32, 16),
    EspIntegrity.HMAC_SHA2_384_192: (hashes.SHA384, 48, 24),
    EspIntegrity.HMAC_SHA2_512_256: (hashes.SHA512, 64, 32),
}


class DropKind(enum.Enum):
    """Why an inbound packet was dropped; selects the counter it goes to."""

    REPLAY = "replay"  # duplicate or left of the window -> replay_errors
    INTEGRITY = "integrity"  # ICV mismatch -> integrity_errors
    MALFORMED = "malformed"  # short, bad padding, bad inner packet -> other_errors
    EXPIRED = "expired"  # SA past its hard limit -> other_errors
    DUMMY = "dummy"  # next header 59 (RFC 4303 section 2.6): dropped silently


class EspDropped(PeerError):
    """An inbound ESP packet was dropped; never escapes the backend."""

    def __init__(self, kind: DropKind, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class EspSendRefused(RbipsecError):
    """The SA cannot protect this packet (hard limit, sequence space spent, not IPv4)."""


class EspSaError(UsageError):
    """A SaSpec that cannot be built into an ESP SA (wrong key length, bad combination)."""


class _AeadTransform:
    """Combined-mode ciphers: AES-GCM with a 16-byte ICV, ChaCha20-Poly1305."""

    __slots__ = ("_aead", "_salt")
    iv_size = 8
    block_size = 4
    icv_size = 16

    def __init__(self, aead: AESGCM | ChaCha20Poly1305, salt: bytes) -> None:
        self._aead = aead  # created once per SA: the key schedule is not redone per packet
        self._salt = salt

    @property
    def aead(self) -> AESGCM | ChaCha20Poly1305:
        return self._aead

    @property
    def salt(self) -> bytes:
        return self._salt

    def seal(self, header: bytes, seq_high: bytes, iv: bytes, plaintext: bytes) -> bytes:
        aad = header[:4] + seq_high + header[4:] if seq_high else header
        return self._aead.encrypt(self._salt + iv, plaintext, aad)

    def open(self, header: bytes, seq_high: bytes, iv: bytes, body: bytes) -> bytes:
        aad = header[:4] + seq_high + header[4:] if seq_high else header
        try:
            return self._aead.decrypt(self._salt + iv, body, aad)
        except InvalidTag:
            raise EspDropped(DropKind.INTEGRITY, "ICV mismatch") from None


class _CbcTransform:
    """AES-CBC with an optional truncated HMAC over header || IV || ciphertext [|| seq hi]."""

    __slots__ = ("_aes", "_hmac", "icv_size")
    iv_size = 16
    block_size = 16

    def __init__(self, key: bytes, mac: crypto_hmac.HMAC | None, icv_size: int) -> None:
        self._aes = algorithms.AES(key)
        self._hmac = mac
        self.icv_size = icv_size

    def _icv(self, header: bytes, seq_high: bytes, iv: bytes, ciphertext: bytes) -> bytes:
        assert self._hmac is not None
        mac = self._hmac.copy()
        mac.update(header + iv + ciphertext + seq_high)
        return mac.finalize()[: self.icv_size]

    def seal(self, header: bytes, seq_high: bytes, iv: bytes, plaintext: bytes) -> bytes:
        encryptor = Cipher(self._aes, modes.CBC(iv)).encryptor()
        ciphertext = encryptor.update(plaintext) + encryptor.finalize()
        if self._hmac is None:
            return ciphertext
        return ciphertext + self._icv(header, seq_high, iv, ciphertext)

    def open(self, header: bytes, seq_high: bytes, iv: bytes, body: bytes) -> bytes:
        ciphertext = body[: len(body) - self.icv_size]
        if self._hmac is not None:
            expected = self._icv(header, seq_high, iv, ciphertext)
            if not stdlib_hmac.compare_digest(expected, body[len(ciphertext) :]):
                raise EspDropped(DropKind.INTEGRITY, "ICV mismatch")
        if not ciphertext or len(ciphertext) % self.block_size:
            raise EspDropped(DropKind.MALFORMED, "ciphertext not a whole number of blocks")
        decryptor = Cipher(self._aes, modes.CBC(iv)).decryptor()
        return decryptor.update(ciphertext) + decryptor.finalize()


_Transform = _AeadTransform | _CbcTransform


def _build_transform(spec: SaSpec) -> _Transform:
    key = spec.encryption_key
    if spec.algorithm in (EspAlgorithm.AES_GCM_16, EspAlgorithm.CHACHA20_POLY1305):
        if spec.integrity is not EspIntegrity.NONE:
            raise EspSaError(f"SA {spec.spi:#010x}: {spec.algorithm.value} takes no integrity")
        if spec.algorithm is EspAlgorithm.AES_GCM_16:
            if len(key) not in (20, 28, 36):
                raise EspSaError(f"SA {spec.spi:#010x}: AES-GCM needs 16/24/32 bytes + 4 salt")
            return _AeadTransform(AESGCM(key[:-4]), key[-4:])
        if len(key) != 36:
            raise EspSaError(f"SA {spec.spi:#010x}: ChaCha20-Poly1305 needs 32 bytes + 4 salt")
        return _AeadTransform(ChaCha20Poly1305(key[:-4]), key[-4:])
    if len(key) not in (16, 24, 32):
        raise EspSaError(f"SA {spec.spi:#010x}: AES-CBC needs a 16/24/32-byte key")
    if spec.integrity is EspIntegrity.NONE:
        return _CbcTransform(key, None, 0)
    hash_type, key_length, icv_size = _HMAC_PARAMETERS[spec.integrity]
    if len(spec.integrity_key) != key_length:
        raise EspSaError(
            f"SA {spec.spi:#010x}: {spec.integrity.value} needs a {key_length}-byte key"
        )
    return _CbcTransform(key, crypto_hmac.HMAC(spec.integrity_key, hash_type()), icv_size)


class EspSa:
    """One direction of one ESP SA: protection, anti-replay, counters and lifetimes.

    Every packet costs Python bytecode, so the per-packet methods take a fast path for
    the common case -- an AEAD in tunnel mode carrying an IPv4 header without options --
    made of precomputed values, one struct call, the AEAD call and a few byte tests.
    Anything else, and any packet failing one of those tests, goes through the general
    code, which also gives the precise reason for a drop.
    """

    __slots__ = (
        "_aead",
        "_esn",
        "_hard_bytes",
        "_hard_packets",
        "_hard_reported",
        "_installed_at",
        "_ipv6_transport",
        "_max_seq",
        "_min_length",
        "_next_seq",
        "_packets_at_poll",
        "_random_bytes",
        "_replay",
        "_salt",
        "_soft_reported",
        "_spi",
        "_transform",
        "_tunnel",
        "_tunnel_aead",
        "bytes",
        "hard_expired",
        "integrity_errors",
        "last_used",
        "other_errors",
        "packets",
        "replay_errors",
        "spec",
    )

    def __init__(
        self,
        spec: SaSpec,
        now: float,
        *,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if not 0 <= spec.replay_window <= 4096:
            raise EspSaError(f"SA {spec.spi:#010x}: replay window {spec.replay_window}")
        self.spec = spec
        transform = self._transform = _build_transform(spec)
        self._random_bytes = random_bytes
        self._installed_at = now
        self._max_seq = _MAX_SEQ_64 if spec.esn else _MAX_SEQ_32
        self._next_seq = 1
        self._replay = ReplayWindow(spec.replay_window, esn=spec.esn)
        # Copies of the spec's values the packet path reads (a plain slot beats a chain
        # of attribute lookups through frozen dataclasses and enum comparisons).
        self._spi = spec.spi
        self._esn = spec.esn
        self._tunnel = spec.mode is SaMode.TUNNEL
        # Transport mode between IPv6 addresses: IPv6 packets in and out.
        self._ipv6_transport = not self._tunnel and spec.dst.version == 6
        self._aead: AESGCM | ChaCha20Poly1305 | None = None
        self._salt = b""
        if isinstance(transform, _AeadTransform):
            self._aead, self._salt = transform.aead, transform.salt
        # The AEAD when the fast paths apply (tunnel mode), else None.
        self._tunnel_aead = self._aead if self._tunnel else None
        self._min_length = ESP_HEADER.size + transform.iv_size + transform.icv_size + 2
        self._hard_packets = spec.lifetime.hard_packets or _NO_LIMIT
        self._hard_bytes = spec.lifetime.hard_bytes or _NO_LIMIT
        self.bytes = 0
        self.packets = 0
        self.replay_errors = 0
        self.integrity_errors = 0
        self.other_errors = 0
        self.last_used: float | None = None
        self.hard_expired = False
        self._soft_reported = False
        self._hard_reported = False
        self._packets_at_poll = 0

    # -- the outbound direction ---------------------------------------------------
    @property
    def next_sequence(self) -> int:
        return self._next_seq

    @next_sequence.setter
    def next_sequence(self, seq: int) -> None:
        """Move the counter forward (a restored SA); it never moves back."""
        if seq < self._next_seq:
            raise EspSaError(f"SA {self._spi:#010x}: sequence numbers never go back")
        self._next_seq = seq

    def encapsulate(self, packet: bytes) -> bytes:
        """Protect one IPv4 packet; raises `EspSendRefused` when the SA must not send."""
        seq = self._next_seq
        aead = self._tunnel_aead
        length = len(packet)
        if (
            aead is not None
            and seq <= self._max_seq
            and not self.hard_expired
            and length >= IPV4_MIN_HEADER
            and packet[0] == 0x45
        ):
            # The fast path, `_seal_aead()` and `_count()` inline: an AEAD in tunnel mode
            # and an IPv4 header without options (the general code below agrees).
            self._next_seq = seq + 1
            header_and_iv = _HEADER_AND_IV.pack(self._spi, seq & _MAX_SEQ_32, seq)
            esp = header_and_iv + aead.encrypt(
                _NONCE.pack(self._salt, seq),
                packet + _TUNNEL_TRAILERS[-(length + 2) & 3],
                _ESN_AAD.pack(self._spi, seq) if self._esn else header_and_iv[:8],
            )
            self.packets = packets = self.packets + 1
            self.bytes = total = self.bytes + length
            if packets >= self._hard_packets or total >= self._hard_bytes:
                self.hard_expired = True
            return esp
        if seq > self._max_seq or self.hard_expired:
            self._refuse_to_send()
        if self._tunnel:
            # 0x45 (IPv4, 20-byte header) in a packet of 20 bytes or more is plausible.
            if len(packet) < IPV4_MIN_HEADER or (
                packet[0] != 0x45 and not ipv4_header_length(packet)
            ):
                raise EspSendRefused("only IPv4 packets are carried")
            payload, next_header = packet, PROTO_IPIP
        elif self._ipv6_transport:
            payload, next_header = _transport_payload_ipv6(packet)
        else:
            payload, next_header = _transport_payload(packet)
        self._next_seq = seq + 1
        aead = self._aead
        if aead is not None:
            esp = self._seal_aead(aead, payload, next_header, seq)
        else:
            esp = self.protect(payload, next_header, seq)
        self._count(len(packet))
        return esp

    def _refuse_to_send(self) -> NoReturn:
        if not self.hard_expired:  # RFC 4303 section 3.3.3: never cycle the counter
            self.hard_expired = True
            raise EspSendRefused(f"SA {self._spi:#010x} has spent its sequence numbers")
        raise EspSendRefused(f"SA {self._spi:#010x} reached its hard limit")

    def protect(self, payload: bytes, next_header: int, seq: int, iv: bytes | None = None) -> bytes:
        """ESP header || IV || ciphertext || ICV for `payload` with sequence number `seq`.

        The building block of `encapsulate()`, public for known-answer tests: it keeps no
        counters and takes the IV from the caller if given.
        """
        transform = self._transform
        if iv is None and self._aead is not None:
            return self._seal_aead(self._aead, payload, next_header, seq)
        pad_length = (-(len(payload) + 2)) % transform.block_size
        plaintext = payload + _PADDING[:pad_length] + bytes((pad_length, next_header))
        header = ESP_HEADER.pack(self._spi, seq & _MAX_SEQ_32)
        if iv is None:
            iv = self._random_bytes(transform.iv_size)
        seq_high = (seq >> 32).to_bytes(4, "big") if self._esn else b""
        return header + iv + transform.seal(header, seq_high, iv, plaintext)

    def _seal_aead(
        self, aead: AESGCM | ChaCha20Poly1305, payload: bytes, next_header: int, seq: int
    ) -> bytes:
        """`protect()` for AES-GCM and ChaCha20-Poly1305 (RFC 4106, RFC 7634): the IV is
        the 64-bit sequence number, unique per key, and the padding is minimal."""
        pad_length = -(len(payload) + 2) & 3
        if next_header == PROTO_IPIP:
            trailer = _TUNNEL_TRAILERS[pad_length]
        else:
            trailer = _PADDING[:pad_length] + bytes((pad_length, next_header))
        header_and_iv = _HEADER_AND_IV.pack(self._spi, seq & _MAX_SEQ_32, seq)
        aad = _ESN_AAD.pack(self._spi, seq) if self._esn else header_and_iv[:8]
        nonce = _NONCE.pack(self._salt, seq)
        return header_and_iv + aead.encrypt(nonce, payload + trailer, aad)

    # -- the inbound direction ----------------------------------------------------
    def decapsulate(self, esp: bytes, offset: int = 0) -> bytes:
        """The IPv4 packet carried by the ESP packet at `esp[offset:]`.

        `offset` lets a caller skip an outer header without copying the packet.  Raises
        `EspDropped` and counts why.
        """
        aead = self._tunnel_aead
        if (
            aead is not None
            and not self._esn
            and not self.hard_expired
            and len(esp) - offset >= self._min_length
        ):
            packet = self._open_tunnel_fast(aead, esp, offset)
            if packet is not None:
                return packet
        return self._decapsulate(esp, offset)

    def _open_tunnel_fast(
        self, aead: AESGCM | ChaCha20Poly1305, esp: bytes, offset: int
    ) -> bytes | None:
        """`decapsulate()` of a well-formed packet (AEAD, tunnel mode, no ESN) in one go:
        the inner IPv4 packet, or None for the general code to decide (and count) what
        is wrong.  Only a failed ICV is dropped here, so a forgery costs one decryption."""
        spi, seq = ESP_HEADER.unpack_from(esp, offset)
        replay = self._replay
        if spi != self._spi or not replay.check(seq):
            return None
        body_start = offset + 16
        try:
            plaintext = aead.decrypt(
                self._salt + esp[offset + 8 : body_start], esp[body_start:],
                esp[offset : offset + 8],
            )  # fmt: skip
        except InvalidTag:
            self.integrity_errors += 1
            raise EspDropped(DropKind.INTEGRITY, "ICV mismatch") from None
        length = len(plaintext)
        pad_length = plaintext[-2]
        if (
            length & 3
            or plaintext[0] != 0x45
            or not plaintext.endswith(_TUNNEL_TRAILERS[pad_length])
            or not IPV4_MIN_HEADER <= (plaintext[2] << 8 | plaintext[3]) <= length - 2 - pad_length
        ):
            return None  # authentic but odd: the general code decrypts it again
        replay.update(seq)
        packet = plaintext[: plaintext[2] << 8 | plaintext[3]]  # drops TFC padding
        self.packets = packets = self.packets + 1
        self.bytes = total = self.bytes + len(packet)
        if packets >= self._hard_packets or total >= self._hard_bytes:
            self.hard_expired = True
        return packet

    def _decapsulate(self, esp: bytes, offset: int) -> bytes:
        """The general `decapsulate()`: every mode and algorithm, and why a drop."""
        try:
            if self.hard_expired:
                raise EspDropped(DropKind.EXPIRED, "SA past its hard limit")
            if len(esp) - offset < self._min_length:
                raise EspDropped(DropKind.MALFORMED, "too short for ESP header, IV and ICV")
            spi, seq_low = ESP_HEADER.unpack_from(esp, offset)
            if spi != self._spi:
                raise EspDropped(DropKind.MALFORMED, f"SPI {spi:#010x} is not this SA's")
            replay = self._replay
            seq = replay.infer(seq_low) if self._esn else seq_low
            if seq < 0 or not replay.check(seq):
                raise EspDropped(DropKind.REPLAY, f"sequence number {seq_low} replayed or old")
            aead = self._aead
            if aead is not None:
                plaintext = self._open_aead(aead, esp, offset, seq)
            else:
                plaintext = self._open(esp[offset:] if offset else esp, seq)
            replay.update(seq)  # the ICV passed: now the window may move
            packet = self._inner_packet(plaintext)
        except EspDropped as dropped:
            self._count_drop(dropped.kind)
            raise
        self._count(len(packet))
        return packet

    def unprotect(self, esp: bytes, seq: int) -> tuple[int, bytes]:
        """(next header, payload) of `esp` taken as sequence number `seq`, ICV verified.

        The building block of `decapsulate()` without anti-replay, public for
        known-answer tests.
        """
        return _strip_trailer(self._open(esp, seq))

    def _open(self, esp: bytes, seq: int) -> bytes:
        """The decrypted plaintext (payload, padding, pad length, next header)."""
        transform = self._transform
        if len(esp) < self._min_length:
            raise EspDropped(DropKind.MALFORMED, "too short for IV, trailer and ICV")
        body_start = ESP_HEADER.size + transform.iv_size
        header = esp[: ESP_HEADER.size]
        iv = esp[ESP_HEADER.size : body_start]
        seq_high = (seq >> 32).to_bytes(4, "big") if self._esn else b""
        return transform.open(header, seq_high, iv, esp[body_start:])

    def _open_aead(
        self, aead: AESGCM | ChaCha20Poly1305, esp: bytes, offset: int, seq: int
    ) -> bytes:
        """`_open()` for an AEAD, reading the ESP packet at `esp[offset:]` in place."""
        body_start = offset + ESP_HEADER.size + 8
        aad = _ESN_AAD.pack(self._spi, seq) if self._esn else esp[offset : offset + 8]
        try:
            return aead.decrypt(self._salt + esp[offset + 8 : body_start], esp[body_start:], aad)
        except InvalidTag:
            raise EspDropped(DropKind.INTEGRITY, "ICV mismatch") from None

    def _inner_packet(self, plaintext: bytes) -> bytes:
        if self._tunnel and not len(plaintext) & 3:
            # The fast path: one endswith() checks padding, pad length and next header 4
            # at once; then an IPv4 header without options whose length fits.
            pad_length = plaintext[-2]
            if plaintext.endswith(_TUNNEL_TRAILERS[pad_length]) and plaintext[0] == 0x45:
                total_length = plaintext[2] << 8 | plaintext[3]
                if IPV4_MIN_HEADER <= total_length <= len(plaintext) - 2 - pad_length:
                    return plaintext[:total_length]  # drops TFC padding (RFC 4303 2.7)
        return self._checked_inner_packet(*_strip_trailer(plaintext))

    def _checked_inner_packet(self, next_header: int, payload: bytes) -> bytes:
        if next_header == PROTO_NONE:
            raise EspDropped(DropKind.DUMMY, "dummy packet")
        if not self._tunnel:
            src, dst = self.spec.src, self.spec.dst
            if self._ipv6_transport:
                return _build_ipv6_header(src, dst, next_header, len(payload)) + payload
            if not isinstance(src, ipaddress.IPv4Address) or not isinstance(
                dst, ipaddress.IPv4Address
            ):
                raise EspDropped(DropKind.MALFORMED, "transport mode needs IPv4 endpoints")
            return (
                build_ipv4_header(
                    src=src, dst=dst, protocol=next_header, payload_length=len(payload)
                )
                + payload
            )
        if next_header != PROTO_IPIP:
            raise EspDropped(DropKind.MALFORMED, f"tunnel mode next header {next_header}")
        header_length = ipv4_header_length(payload)
        total_length = ipv4_total_length(payload) if header_length else 0
        if not header_length or not header_length <= total_length <= len(payload):
            raise EspDropped(DropKind.MALFORMED, "inner packet is not a valid IPv4 packet")
        return payload[:total_length]  # drops TFC padding (RFC 4303 section 2.7)

    # -- counters and lifetimes ---------------------------------------------------
    def _count(self, length: int) -> None:
        self.packets += 1
        self.bytes += length
        if self.packets >= self._hard_packets or self.bytes >= self._hard_bytes:
            self.hard_expired = True

    def _count_drop(self, kind: DropKind) -> None:
        if kind is DropKind.REPLAY:
            self.replay_errors += 1
        elif kind is DropKind.INTEGRITY:
            self.integrity_errors += 1
        elif kind is not DropKind.DUMMY:
            self.other_errors += 1

    def counters(self) -> SaCounters:
        return SaCounters(
            bytes=self.bytes,
            packets=self.packets,
            replay_errors=self.replay_errors,
            integrity_errors=self.integrity_errors,
            other_errors=self.other_errors,
            last_used=self.last_used,
        )

    def poll(self, now: float) -> list[ExpiryKind]:
        """Expiries newly reached by `now` (each kind reported once); notes last use.

        Soft expiry also comes when 15/16 of the sequence space is spent, so that the
        daemon rekeys before the hard stop.
        """
        if self.packets != self._packets_at_poll:
            self._packets_at_poll = self.packets
            self.last_used = now
        lifetime = self.spec.lifetime
        age = now - self._installed_at
        reached: list[ExpiryKind] = []
        if lifetime.hard_seconds and age >= lifetime.hard_seconds:
            self.hard_expired = True
        soft = self.hard_expired or (
            (lifetime.soft_seconds and age >= lifetime.soft_seconds)
            or (lifetime.soft_packets and self.packets >= lifetime.soft_packets)
            or (lifetime.soft_bytes and self.bytes >= lifetime.soft_bytes)
            or (
                self.spec.direction is Direction.OUT
                and self._next_seq > self._max_seq - (self._max_seq >> 4)
            )
        )
        if soft and not self._soft_reported:
            self._soft_reported = True
            reached.append(ExpiryKind.SOFT)
        if self.hard_expired and not self._hard_reported:
            self._hard_reported = True
            reached.append(ExpiryKind.HARD)
        return reached


def _transport_payload(packet: bytes) -> tuple[bytes, int]:
    """(payload, protocol) of an IPv4 packet for transport mode; refuses what it cannot carry."""
    header_length = ipv4_header_length(packet)
    if not header_length:
        raise EspSendRefused("only IPv4 packets are carried")
    total_length = ipv4_total_length(packet)
    if total_length > len(packet) or total_length < header_length:
        raise EspSendRefused("IPv4 total length does not match the packet")
    if ipv4_is_fragment(packet):
        raise EspSendRefused("transport mode cannot carry IPv4 fragments")
    return packet[header_length:total_length], packet[9]


def _transport_payload_ipv6(packet: bytes) -> tuple[bytes, int]:
    """(payload, next header) of an IPv6 packet for transport mode; refuses what it
    cannot carry (not IPv6, extension headers, a length past the end)."""
    if len(packet) < _IPV6_HEADER_SIZE or packet[0] >> 4 != 6:
        raise EspSendRefused("only IPv6 packets are carried by an IPv6 transport-mode SA")
    next_header = packet[6]
    if next_header in _IPV6_EXTENSION_HEADERS:
        raise EspSendRefused(f"transport mode cannot carry IPv6 extension header {next_header}")
    end = _IPV6_HEADER_SIZE + (packet[4] << 8 | packet[5])
    if end > len(packet):
        raise EspSendRefused("IPv6 payload length does not match the packet")
    return packet[_IPV6_HEADER_SIZE:end], next_header


def _build_ipv6_header(
    src: ipaddress.IPv4Address | ipaddress.IPv6Address,
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address,
    next_header: int,
    payload_length: int,
) -> bytes:
    if payload_length > 0xFFFF:
        raise EspDropped(DropKind.MALFORMED, "payload too long for an IPv6 packet")
    return _IPV6_HEADER.pack(
        6 << 28, payload_length, next_header, _IPV6_HOP_LIMIT, src.packed, dst.packed
    )


def _strip_trailer(plaintext: bytes) -> tuple[int, bytes]:
    """Check and remove padding, pad length and next header (RFC 4303 section 2.4)."""
    if len(plaintext) < 2 or len(plaintext) % 4:
        raise EspDropped(DropKind.MALFORMED, "payload not 4-byte aligned")
    pad_length = plaintext[-2]
    payload_end = len(plaintext) - 2 - pad_length
    if payload_end < 0:
        raise EspDropped(DropKind.MALFORMED, "pad length beyond the payload")
    if plaintext[payload_end:-2] != _PADDING[:pad_length]:
        raise EspDropped(DropKind.MALFORMED, "padding bytes are not 1, 2, 3, ...")
    return plaintext[-1], plaintext[:payload_end]
