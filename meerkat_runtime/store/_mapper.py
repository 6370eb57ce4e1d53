"""Topics, schema versions and upcasting; the byte format of stored events and snapshots."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from eventsourcing.compressor import ZlibCompressor
from eventsourcing.persistence import Cipher, Compressor
from eventsourcing.utils import Environment

from meerkat_runtime.errors import StoreError

__all__ = ["EventCodec", "MalformedEvent", "Upcaster"]

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns a payload of schema version n into one of version n + 1 (returns the new dict)."""

# Datetimes and dataclasses would be written by orjson but read back as str
# and dict, so a round trip would silently change their type: refuse them.
_DUMPS_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS

#: The version of the stored snapshot record (its "s" key), not of the state inside it
#: (``events.session`` versions that).
SNAPSHOT_RECORD_FORMAT = 1

#: Domain separation: the key of :meth:`Serializer.conceal` is derived from the cipher key
#: for this purpose only, so a digest never reveals anything about the AES key itself.
_CONCEAL_PURPOSE = b"meerkat-runtime/conceal/hmac-sha256/v1"
CONCEALED_PREFIX = "hmac-sha256:"


class MalformedEvent(StoreError):
    """Stored bytes that were read (decrypted, decompressed) but are not a readable event:
    damaged JSON text, not an envelope, or refused by an upcaster. A defect of that one
    event, not of the store: the store reports it as
    :class:`~meerkat_runtime.errors.UndecodableEvent`. Bytes that cannot be decrypted or
    decompressed, or are binary where JSON belongs (encrypted or compressed data read with
    other options), stay a :class:`StoreError`: the store's configuration, not one event."""


@dataclass(frozen=True, slots=True)
class _TopicSchema:
    version: int
    upcasters: tuple[Upcaster, ...]  # upcasters[i] turns schema i + 1 into i + 2


class EventCodec:
    """Registry of event topics with their current schema version and upcasters.

    Every topic a store appends must be registered first. A stored payload of
    an older schema version is upcast on read, one step at a time::

        codec = EventCodec()
        codec.register("input.accepted")                       # schema 1
        codec.register("run.failed", version=2, upcasters={1: add_attempt})

    Payloads are JSON-native dicts, encoded with orjson together with their
    schema version and the writer's incarnation id.

    ``check(topic, data)``, when given, is called on every payload before it is
    written; whatever it raises refuses the append with :class:`StoreError`,
    nothing written. The runtime's codec checks that each payload decodes into
    its event. It checks the payload rather than the encoded bytes parsed back
    because orjson writes NaN and Infinity as ``null`` without a word (the
    decoder refuses them in the payload); every other value the decoder takes
    orjson writes as it reads back, or refuses to write at all.
    """

    def __init__(self, check: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self._topics: dict[str, _TopicSchema] = {}
        self._check = check

    def register(
        self,
        topic: str,
        version: int = 1,
        upcasters: Mapping[int, Upcaster] | None = None,
    ) -> None:
        """Register ``topic`` at schema ``version``.

        ``upcasters[n]`` turns schema ``n`` into ``n + 1``; every step from 1 to
        ``version - 1`` must be given, and no other. Raises ``ValueError``
        otherwise, or if the topic is already registered.
        """
        if not isinstance(topic, str) or not topic:
            raise ValueError(f"topic must be a non-empty string, got {topic!r}")
        if type(version) is not int or version < 1:
            raise ValueError(f"schema version of {topic!r} must be an int >= 1, got {version!r}")
        if topic in self._topics:
            raise ValueError(f"topic {topic!r} is already registered")
        given = dict(upcasters or {})
        needed = set(range(1, version))
        if missing := sorted(needed - given.keys()):
            steps = ", ".join(f"{n}->{n + 1}" for n in missing)
            raise ValueError(f"topic {topic!r} at schema {version} lacks upcasters for {steps}")
        if extra := sorted(given.keys() - needed, key=repr):
            raise ValueError(
                f"topic {topic!r} at schema {version} has upcasters for unknown "
                f"versions {extra!r} (expected keys 1..{version - 1})"
            )
        for n, upcaster in given.items():
            if not callable(upcaster):
                raise ValueError(f"upcaster {n} of topic {topic!r} is not callable")
        chain = tuple(given[n] for n in range(1, version))
        self._topics[topic] = _TopicSchema(version, chain)

    def topics(self) -> frozenset[str]:
        """Return the registered topics."""
        return frozenset(self._topics)

    def schema_version(self, topic: str) -> int:
        """Return the current schema version of ``topic``; ``StoreError`` if unregistered."""
        return self._schema(topic).version

    def encode(self, topic: str, data: dict[str, Any], writer: str, *, check: bool = True) -> bytes:
        """Return the orjson bytes of ``data`` wrapped with its schema version and writer.

        ``check=False`` skips the codec's ``check`` (a caller that has verified the
        payload itself)."""
        schema = self._schema(topic)
        if not isinstance(data, dict):
            raise StoreError(f"payload of {topic!r} must be a dict, got {type(data).__name__}")
        if check and self._check is not None:
            try:
                self._check(topic, data)
            except Exception as e:
                raise StoreError(
                    f"event {topic!r} refused, nothing of its append was written: "
                    f"it would not read back ({type(e).__name__}: {e})"
                ) from e
        try:
            return orjson.dumps(
                {"s": schema.version, "w": writer, "d": data}, option=_DUMPS_OPTIONS
            )
        except TypeError as e:  # orjson.JSONEncodeError is a TypeError
            raise StoreError(f"payload of {topic!r} is not JSON-native: {e}") from e

    def decode(self, topic: str, raw: bytes) -> tuple[dict[str, Any], str]:
        """Return ``(data, writer)`` of stored bytes, upcast to the current schema."""
        schema = self._schema(topic)
        stored_version, writer, data = _unwrap(raw)
        if stored_version > schema.version:
            raise StoreError(
                f"event topic {topic!r} was stored with schema version {stored_version}, "
                f"but this codec registers version {schema.version}; it was written by "
                f"a newer program: upgrade before reading it"
            )
        for step in range(stored_version, schema.version):
            try:
                data = schema.upcasters[step - 1](data)
            except Exception as e:
                raise MalformedEvent(
                    f"upcaster {step}->{step + 1} of topic {topic!r} failed on it: "
                    f"{type(e).__name__}: {e}"
                ) from e
            if not isinstance(data, dict):
                raise MalformedEvent(
                    f"upcaster {step}->{step + 1} of topic {topic!r} returned "
                    f"{type(data).__name__}, not a dict"
                )
        return data, writer

    def _schema(self, topic: str) -> _TopicSchema:
        try:
            return self._topics[topic]
        except KeyError:
            raise StoreError(
                f"event topic {topic!r} is not registered in the codec "
                f"(register it with EventCodec.register before use)"
            ) from None


def _looks_like_json(raw: bytes) -> bool:
    """UTF-8 text that starts as an envelope does (ciphertext and zlib streams are not)."""
    if not raw.startswith(b"{"):
        return False
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _unwrap(raw: bytes) -> tuple[int, str, dict[str, Any]]:
    try:
        envelope = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        # Damaged JSON text is a defect of this event. Binary bytes are most likely
        # encrypted or compressed ones read with the wrong options: the store's problem.
        error = MalformedEvent if _looks_like_json(raw) else StoreError
        raise error(
            f"stored bytes are not JSON ({e}); if the store is encrypted or compressed, "
            f"open it with the same cipher_key and compress options"
        ) from e
    if not isinstance(envelope, dict):
        raise MalformedEvent("stored bytes are not an event envelope")
    version, writer, data = envelope.get("s"), envelope.get("w"), envelope.get("d")
    if type(version) is not int or version < 1 or not isinstance(writer, str):
        raise MalformedEvent("stored envelope lacks a valid schema version or writer")
    if not isinstance(data, dict):
        raise MalformedEvent("stored envelope has no dict payload")
    return version, writer, data


class Serializer:
    """The full byte chain of one store: codec (orjson), then zlib, then AES-GCM."""

    def __init__(
        self, codec: EventCodec, *, compress: bool = False, cipher_key: str | None = None
    ) -> None:
        self.codec = codec
        self.compressor: Compressor | None = ZlibCompressor() if compress else None
        self.cipher: Cipher | None = _make_cipher(cipher_key) if cipher_key is not None else None
        self._conceal_key: bytes | None = None
        if cipher_key is not None:  # valid base64: _make_cipher checked it
            raw = base64.b64decode(cipher_key)
            self._conceal_key = hmac.new(raw, _CONCEAL_PURPOSE, hashlib.sha256).digest()

    @property
    def encrypted(self) -> bool:
        """Whether payloads are encrypted at rest (a ``cipher_key`` was given)."""
        return self.cipher is not None

    def conceal(self, value: str) -> str:
        """``value`` as it may be kept outside the encrypted payloads (read models).

        With encryption on: ``"hmac-sha256:<hex>"``, HMAC-SHA256 of ``value`` under a
        key derived from the cipher key, so equal values give equal digests (lookups
        hash the value asked for) but the store never holds the value in clear, and
        nobody without the key can test guesses. Without encryption: ``value`` itself.
        """
        if self._conceal_key is None:
            return value
        digest = hmac.new(self._conceal_key, value.encode("utf-8"), hashlib.sha256).hexdigest()
        return CONCEALED_PREFIX + digest

    def encode_event(
        self, topic: str, data: dict[str, Any], writer: str
    ) -> tuple[bytes, dict[str, Any]]:
        """Return the stored bytes and the payload exactly as a reader will see it."""
        plain = self.codec.encode(topic, data, writer)
        as_read: dict[str, Any] = orjson.loads(plain)["d"]
        return self._seal(plain), as_read

    def encode_event_bytes(
        self, topic: str, data: dict[str, Any], writer: str, *, check: bool = True
    ) -> bytes:
        """Return only the stored bytes: :meth:`encode_event` without reading them back
        (``check``: see :meth:`EventCodec.encode`)."""
        return self._seal(self.codec.encode(topic, data, writer, check=check))

    def decode_event(self, topic: str, state: bytes) -> tuple[dict[str, Any], str]:
        """Return ``(data, writer)`` of a stored event."""
        return self.codec.decode(topic, self.unseal(state))

    def encode_snapshot(self, data: dict[str, Any], writer: str) -> bytes:
        """Return the stored bytes of a snapshot payload."""
        if not isinstance(data, dict):
            raise StoreError(f"snapshot data must be a dict, got {type(data).__name__}")
        try:
            plain = orjson.dumps(
                {"s": SNAPSHOT_RECORD_FORMAT, "w": writer, "d": data}, option=_DUMPS_OPTIONS
            )
        except TypeError as e:
            raise StoreError(f"snapshot data is not JSON-native: {e}") from e
        return self._seal(plain)

    def decode_snapshot(self, state: bytes) -> dict[str, Any]:
        """Return a snapshot's payload; ``StoreError`` if it cannot be read."""
        version, _writer, data = _unwrap(self.unseal(state))
        if version > SNAPSHOT_RECORD_FORMAT:
            raise StoreError(
                f"snapshot format {version} is newer than {SNAPSHOT_RECORD_FORMAT}"
            ).with_hint("upgrade meerkat-runtime to read this store")
        return data

    def _seal(self, plain: bytes) -> bytes:
        if self.compressor is not None:
            plain = self.compressor.compress(plain)
        if self.cipher is not None:
            plain = self.cipher.encrypt(plain)
        return plain

    def unseal(self, state: bytes) -> bytes:
        """Undo encryption and compression: the plain orjson envelope."""
        try:
            if self.cipher is not None:
                state = self.cipher.decrypt(state)
            if self.compressor is not None:
                state = self.compressor.decompress(state)
        except Exception as e:
            raise StoreError(
                f"stored bytes cannot be decrypted or decompressed ({e}); "
                f"check the cipher_key and compress options"
            ) from e
        return state


def _make_cipher(cipher_key: str) -> Cipher:
    # Imported here so that a store without encryption never needs `cryptography`
    # (the `encryption` extra).
    try:
        from eventsourcing.cryptography import AESCipher
    except ImportError as e:
        raise StoreError(
            "option cipher_key needs the cryptography package; install the encryption "
            f"extra: pip install 'meerkat-runtime[encryption]' ({e})"
        ) from None

    if not isinstance(cipher_key, str):
        raise StoreError("option cipher_key must be a str (base64 of 16, 24 or 32 bytes)")
    try:
        return AESCipher(Environment(env={AESCipher.CIPHER_KEY: cipher_key}))
    except (ValueError, binascii.Error, OSError):
        # Never echo the key: only say what a valid one looks like.
        raise StoreError(
            "option cipher_key is not a valid AES key: expected base64 of 16, 24 or 32 "
            "random bytes, e.g. from eventsourcing.cryptography.AESCipher.create_key(32)"
        ) from None
