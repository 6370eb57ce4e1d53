"""The wire codec engine: dataclasses <-> JSON-native values, driven by type hints.

Every spec type is a frozen dataclass. Its wire shape follows from its type
hints plus a little field metadata, the Python counterpart of the serde
attributes the spec quotes:

* ``omit="none" | "empty" | "false"``: ``skip_serializing_if`` (the key is left
  out when the value is None, an empty sequence, or False).
* a dataclass default: serde ``default`` (a missing key is accepted on read);
  ``required=True`` makes the key mandatory on read although Python code may
  omit it when constructing (e.g. an input header).
* an optional type (``X | None``) accepts ``null`` on read; a non-optional
  field with a default refuses an explicit ``null``.
* ``ge=0``: unsigned integers.
* ``__wire_order__`` (a class attribute, the wire keys in order): the order the
  keys are written in, when the Rust struct's differs from the dataclass's
  (whose order keeps Python constructors convenient, ``PromptInput("hi")``).

Tagged unions: a base class declares ``__tag_key__`` (e.g. ``"input_type"``) and
each variant a ``__tag__``; variants register themselves through
:func:`tagged`. Anything irregular (untagged or externally tagged enums)
plugs in with ``Annotated[T, Custom(encode, decode)]``.

Inner values and their carriers, as in serde: a variant that is a struct of
its own in Rust, wrapped by a newtype variant of the union (``StagedRunInput``
in ``RunPrimitive::StagedInput``), declares ``__newtype_variant__ = True``.
Its own form (:func:`to_wire`) has no tag, and decoding it ignores the tag key
as serde ignores any unknown key; only where the union is the declared type
(a field typed ``RunPrimitive``, :func:`to_wire_tagged`) is the tag written
beside its fields. Struct variants (the Python class is only the union's
variant) write their tag in their own form, and refuse a wrong one on read.

Identifier newtypes are their inner value on the wire; ``PolicyVersion`` is
read as an unsigned 64-bit integer (:data:`NEWTYPE_CODECS`).

Each class gets an encoder and a decoder generated as Python source and
compiled once (see "generated codecs" below), with every field's read, checks
and conversions written out inline. The generic path, a loop over the class
plan, stays the reference: encoders mirror it exactly, and decoders are a fast
path for valid input that hands anything unusual to it, so errors are worked
out lazily, only for input that has one. Decoding never raises anything but
:class:`InvalidInput`, with the path of the offending field.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import inspect
import math
import threading
import types
import typing
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar, Union, cast, get_args, get_origin

from meerkat_runtime.errors import InvalidInput
from meerkat_runtime.events.ids import (
    PolicyVersion,
    SessionId,
    _uuid_of,
    parse_uuid,
    uuid_text,
    validate_session_id,
)
from meerkat_runtime.events.timefmt import format_timestamp, parse_timestamp, parse_timestamp_text

__all__ = [
    "Custom",
    "JsonValue",
    "check_text",
    "decode_value",
    "encode_value",
    "from_wire",
    "slot_setter",
    "tagged",
    "to_wire",
    "to_wire_tagged",
    "wfield",
]

T = TypeVar("T")
Encoder = Callable[[Any], Any]
Decoder = Callable[[Any, str], Any]

#: A JSON value carried as is (``dict``/``list``/``str``/``int``/``float``/``bool``/``None``).
JsonValue = Any

MAX_JSON_DEPTH = 64
#: orjson (and serde_json's integer types) hold integers in [i64 min, u64 max].
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1


class Custom:
    """``Annotated`` marker giving a type its own encode/decode functions."""

    __slots__ = ("decode", "encode")

    def __init__(self, encode: Encoder, decode: Decoder) -> None:
        self.encode = encode
        self.decode = decode


class _JsonMarker:
    pass


JSON = _JsonMarker()


def wfield(
    *,
    default: Any = dataclasses.MISSING,
    default_factory: Any = dataclasses.MISSING,
    omit: str | None = None,
    required: bool = False,
    ge: int | None = None,
    wire_name: str | None = None,
) -> Any:
    """A dataclass field with wire metadata (see the module docstring)."""
    meta = {"omit": omit, "required": required, "ge": ge, "wire_name": wire_name}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


_VARIANTS: dict[type, dict[str, type]] = {}


def tagged(cls: type[T]) -> type[T]:
    """Register a dataclass as a variant of its tagged-union base (found via ``__tag_key__``)."""
    tag = cls.__dict__.get("__tag__")
    if tag is None:
        raise TypeError(f"{cls.__name__} has no __tag__")
    for base in cls.__mro__[1:]:
        if "__tag_key__" in base.__dict__:
            _VARIANTS.setdefault(base, {})[tag] = cls
            break
    else:
        raise TypeError(f"{cls.__name__} has no base with __tag_key__")
    return cls


def variants_of(base: type) -> dict[str, type]:
    """The registered variants of a tagged-union base, by tag."""
    return dict(_VARIANTS.get(base, {}))


# ---------------------------------------------------------------- type kinds


def _type_name(v: Any) -> str:
    if v is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}.get(
        type(v), "object" if isinstance(v, dict) else type(v).__name__
    )


def join_path(*parts: str) -> str:
    """Join field path parts: ``join_path("appends", "[2]", "role") == "appends[2].role"``."""
    out = ""
    for part in parts:
        if not part:
            continue
        if not out or part.startswith("["):
            out += part
        else:
            out += "." + part
    return out


def check_text(value: str, path: str) -> str:
    """Refuse a string JSON cannot carry (a lone surrogate is not Unicode text)."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput("string is not valid Unicode (lone surrogate)", path) from None
    return value


def _check_int(value: int, path: str) -> int:
    if not INT_MIN <= value <= INT_MAX:
        raise InvalidInput("integer outside the 64-bit range JSON numbers are read in", path)
    return value


def _check_json(value: Any, path: str, depth: int = 0) -> Any:
    if depth > MAX_JSON_DEPTH:
        raise InvalidInput(f"JSON nested deeper than {MAX_JSON_DEPTH} levels", path)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return check_text(value, path)
    if isinstance(value, int):
        return _check_int(value, path)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput("JSON numbers must be finite (no NaN or Infinity)", path)
        return value
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidInput("JSON object keys must be strings", path)
            check_text(k, path)
            try:
                _check_json(v, "", depth + 1)
            except InvalidInput as exc:
                raise InvalidInput(exc.detail, join_path(join_path(path, k), exc.path)) from None
        return value
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            try:
                _check_json(v, "", depth + 1)
            except InvalidInput as exc:
                raise InvalidInput(exc.detail, join_path(path, f"[{i}]", exc.path)) from None
        return list(value) if isinstance(value, tuple) else value
    raise InvalidInput(f"not a JSON value: {type(value).__name__}", path)


def _dec_str(v: Any, path: str) -> str:
    if not isinstance(v, str):
        raise InvalidInput(f"expected string, got {_type_name(v)}", path)
    return check_text(v, path)


def _dec_bool(v: Any, path: str) -> bool:
    if not isinstance(v, bool):
        raise InvalidInput(f"expected boolean, got {_type_name(v)}", path)
    return v


def _dec_int(v: Any, path: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise InvalidInput(f"expected integer, got {_type_name(v)}", path)
    return _check_int(v, path)


def _dec_float(v: Any, path: str) -> float:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        raise InvalidInput(f"expected number, got {_type_name(v)}", path)
    if not math.isfinite(v):
        raise InvalidInput("number must be finite", path)
    return float(v)


def _enc_uuid(v: uuid.UUID) -> str:
    return str(v)


def _enum_decoder(cls: type[enum.Enum]) -> Decoder:
    members = {m.value: m for m in cls}
    names = ", ".join(sorted(str(k) for k in members))

    def dec(v: Any, path: str) -> Any:
        if not isinstance(v, str):
            raise InvalidInput(f"expected one of {names}, got {_type_name(v)}", path)
        try:
            return members[v]
        except KeyError:
            raise InvalidInput(f"unknown value {v[:64]!r}; expected one of {names}", path) from None

    return dec


def _enc_enum(v: enum.Enum) -> Any:
    return v.value


def _dec_u64(v: Any, path: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise InvalidInput(f"expected unsigned integer, got {_type_name(v)}", path)
    if not 0 <= v <= INT_MAX:
        raise InvalidInput(f"must be an unsigned 64-bit integer, got {v}", path)
    return v


def _enc_u64(v: Any) -> int:
    if type(v) is not int or not 0 <= v <= INT_MAX:
        raise InvalidInput(f"not an unsigned 64-bit integer: {v!r}")
    return v


def _enc_session_id(v: Any) -> str:
    return validate_session_id(v, "")


#: Newtypes whose wire form is narrower than their Python carrier type, by newtype.
#: The others are written and read as their inner type.
NEWTYPE_CODECS: dict[Any, tuple[Encoder, Decoder]] = {
    PolicyVersion: (_enc_u64, _dec_u64),
    SessionId: (_enc_session_id, validate_session_id),
}

_ENCODERS: dict[Any, Encoder | None] = {}
_DECODERS: dict[Any, Decoder] = {}


def _unwrap_newtype(tp: Any) -> Any:
    while hasattr(tp, "__supertype__") and tp not in NEWTYPE_CODECS:
        tp = tp.__supertype__
    return tp


def _newtype_codec(tp: Any) -> tuple[Encoder, Decoder] | None:
    try:
        return NEWTYPE_CODECS.get(tp)
    except TypeError:  # an unhashable type form: not a newtype
        return None


def _is_union_base(tp: Any) -> bool:
    """A tagged-union base: a tag key of its own and no tag (its values are its variants)."""
    return isinstance(tp, type) and "__tag_key__" in tp.__dict__ and "__tag__" not in tp.__dict__


def _is_optional(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp)


def _encoder_for(tp: Any) -> Encoder | None:
    """Return the encoder for a type, or None when the value is already JSON-native."""
    try:
        return _ENCODERS[tp]
    except (KeyError, TypeError):
        pass
    enc = _build_encoder(tp)
    with contextlib.suppress(TypeError):
        _ENCODERS[tp] = enc
    return enc


def _build_encoder(tp: Any) -> Encoder | None:
    tp = _unwrap_newtype(tp)
    if (codec := _newtype_codec(tp)) is not None:
        return codec[0]
    origin = get_origin(tp)
    if origin is typing.Annotated:
        base, *extras = get_args(tp)
        for extra in extras:
            if isinstance(extra, Custom):
                return extra.encode
            if extra is JSON:
                return None
        return _encoder_for(base)
    if tp in (str, int, bool, float, Any, type(None)):
        return None
    if isinstance(tp, type) and hasattr(tp, "__wire_encode__"):
        return tp.__wire_encode__  # type: ignore[no-any-return]
    if tp is uuid.UUID:
        return _enc_uuid
    if tp is datetime:
        return format_timestamp
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enc_enum
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(tp) if a is not type(None)]
        if len(members) == 1:
            inner = _encoder_for(members[0])
            if inner is None:
                return None
            return lambda v: None if v is None else inner(v)
        return to_wire  # union of dataclasses: dispatch on the runtime type
    if origin in (tuple, list):
        args = get_args(tp)
        item = _encoder_for(args[0]) if args else None
        if item is None:
            return list
        return lambda v: [item(x) for x in v]
    if origin is dict:
        args = get_args(tp)
        val = _encoder_for(args[1]) if len(args) == 2 else None
        if val is None:
            return None
        return lambda v: {k: val(x) for k, x in v.items()}
    if _is_union_base(tp):
        return to_wire_tagged  # the variant with its tag, also a newtype variant's
    if dataclasses.is_dataclass(tp):
        return to_wire
    raise TypeError(f"no wire encoder for {tp!r}")


def _decoder_for(tp: Any) -> Decoder:
    try:
        return _DECODERS[tp]
    except (KeyError, TypeError):
        pass
    dec = _build_decoder(tp)
    with contextlib.suppress(TypeError):
        _DECODERS[tp] = dec
    return dec


def _build_decoder(tp: Any) -> Decoder:
    tp = _unwrap_newtype(tp)
    if (codec := _newtype_codec(tp)) is not None:
        return codec[1]
    origin = get_origin(tp)
    if origin is typing.Annotated:
        base, *extras = get_args(tp)
        for extra in extras:
            if isinstance(extra, Custom):
                return extra.decode
            if extra is JSON:
                return _check_json
        return _decoder_for(base)
    if tp is Any:
        return _check_json
    if isinstance(tp, type) and hasattr(tp, "__wire_decode__"):
        return tp.__wire_decode__  # type: ignore[no-any-return]
    if tp is str:
        return _dec_str
    if tp is bool:
        return _dec_bool
    if tp is int:
        return _dec_int
    if tp is float:
        return _dec_float
    if tp is uuid.UUID:
        return parse_uuid
    if tp is datetime:
        return parse_timestamp
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum_decoder(tp)
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(tp) if a is not type(None)]
        if len(members) == 1:
            inner = _decoder_for(members[0])
            return lambda v, path: None if v is None else inner(v, path)
        raise TypeError(f"untagged union {tp!r} needs a Custom codec")
    if origin in (tuple, list):
        args = get_args(tp)
        item = _decoder_for(args[0]) if args else _check_json

        def dec_seq(v: Any, path: str) -> Any:
            if not isinstance(v, (list, tuple)):
                raise InvalidInput(f"expected array, got {_type_name(v)}", path)
            out = []
            for i, x in enumerate(v):
                try:
                    out.append(item(x, ""))
                except InvalidInput as exc:
                    raise InvalidInput(exc.detail, join_path(path, f"[{i}]", exc.path)) from None
            return tuple(out)

        return dec_seq
    if origin is dict:
        args = get_args(tp)
        val = _decoder_for(args[1]) if len(args) == 2 else _check_json

        def dec_map(v: Any, path: str) -> Any:
            if not isinstance(v, dict):
                raise InvalidInput(f"expected object, got {_type_name(v)}", path)
            out = {}
            for k, x in v.items():
                if not isinstance(k, str):
                    raise InvalidInput("object keys must be strings", path)
                try:
                    out[check_text(k, path)] = val(x, "")
                except InvalidInput as exc:
                    raise InvalidInput(exc.detail, join_path(path, k, exc.path)) from None
            return out

        return dec_map
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        cls = tp
        return lambda v, path: from_wire(cls, v, path) if path else _from_wire(cls, v)
    raise TypeError(f"no wire decoder for {tp!r}")


# ---------------------------------------------------------------- dataclasses

_MISSING = dataclasses.MISSING


class _FieldPlan:
    __slots__ = (
        "attr",
        "decode",
        "encode",
        "ge",
        "has_default",
        "key",
        "nullable",
        "omit",
        "optional",
    )

    def __init__(self, f: dataclasses.Field[Any], tp: Any) -> None:
        meta = f.metadata
        self.attr = f.name
        self.key = meta.get("wire_name") or f.name
        self.omit = meta.get("omit")
        self.ge = meta.get("ge")
        self.encode = _encoder_for(tp)
        self.decode = _decoder_for(tp)
        self.optional = _is_optional(_unwrap_newtype(tp))
        self.nullable = self.optional or _is_json_type(tp)
        has_default = f.default is not _MISSING or f.default_factory is not _MISSING
        self.has_default = has_default and not meta.get("required", False)


def _is_json_type(tp: Any) -> bool:
    if tp is Any:
        return True
    return get_origin(tp) is typing.Annotated and JSON in get_args(tp)[1:]


class _ClassPlan:
    __slots__ = ("custom", "decode_hook", "fields", "own_tag", "tag", "tag_key", "union_key")

    def __init__(self, cls: type) -> None:
        self.custom = hasattr(cls, "__wire_encode__")
        self.decode_hook: Callable[[Any, str], Any] | None = getattr(cls, "__wire_decode__", None)
        key = cls.__dict__.get("__tag_key__")
        # A tagged-union base (a tag key but no tag of its own) dispatches to its variants.
        self.union_key: str | None = (
            key if key is not None and "__tag__" not in cls.__dict__ else None
        )
        hints = typing.get_type_hints(cls, include_extras=True)
        fields = [
            _FieldPlan(f, hints[f.name])
            for f in dataclasses.fields(cls)
            if f.init and not f.metadata.get("skip")
        ]
        order: tuple[str, ...] | None = cls.__dict__.get("__wire_order__")
        if order is not None:  # the Rust struct's field order, where Python's differs
            if sorted(order) != sorted(fp.key for fp in fields):
                raise TypeError(f"{cls.__name__}.__wire_order__ must name every wire key once")
            fields.sort(key=lambda fp: order.index(fp.key))
        self.fields = tuple(fields)
        self.tag: str | None = cls.__dict__.get("__tag__")
        self.tag_key: str | None = getattr(cls, "__tag_key__", None) if self.tag else None
        # Whether the tag is part of the class's own form (not for a newtype variant).
        self.own_tag = self.tag_key is not None and not cls.__dict__.get(
            "__newtype_variant__", False
        )


_PLANS: dict[type, _ClassPlan] = {}


def _plan(cls: type) -> _ClassPlan:
    plan = _PLANS.get(cls)
    if plan is None:
        plan = _PLANS[cls] = _ClassPlan(cls)
    return plan


def to_wire(obj: Any) -> Any:
    """Encode a spec dataclass instance into its own JSON-native wire dict."""
    cls = type(obj)
    enc = _FAST_ENC.get(cls)
    if enc is None:
        enc = _compiled_encoder(cls)
    return enc(obj)


def to_wire_tagged(obj: Any) -> Any:
    """The wire dict of a variant where its union is the declared type: with its tag, also
    for a newtype variant (whose own form, :func:`to_wire`, has none)."""
    cls = type(obj)
    enc = _FAST_ENC_TAGGED.get(cls)
    if enc is None:
        enc = _compiled_tagged_encoder(cls)
    return enc(obj)


def from_wire(cls: type[T], data: Any, path: str = "") -> T:
    """Decode a wire dict into ``cls`` (a variant, or a tagged-union base that dispatches on its tag).

    Field paths are built only when something is wrong: decoding goes on with
    relative paths and an error is prefixed on its way out.
    """
    try:
        return _from_wire(cls, data)
    except InvalidInput as exc:
        if path:
            raise InvalidInput(exc.detail, join_path(path, exc.path)) from None
        raise


def _from_wire(cls: type[T], data: Any) -> T:
    """The generated decoder of ``cls``; anything it does not take goes to the generic path."""
    dec = _FAST_DEC.get(cls)
    if dec is None:
        dec = _compiled_decoder(cls)
    try:
        decoded: T = dec(data)
        return decoded
    except Exception:  # the generic path decides again, and explains a refusal
        return _from_wire_generic(cls, data)


def _to_wire_generic(obj: Any, tagged: bool = False) -> Any:
    """The reference encoder: a loop over the class plan (the generated encoders mirror it).
    ``tagged``: the form inside its union (:func:`to_wire_tagged`)."""
    cls = type(obj)
    plan = _PLANS.get(cls) or _plan(cls)
    if plan.custom:
        return obj.__wire_encode__()
    out: dict[str, Any] = {}
    if plan.tag_key is not None and (plan.own_tag or tagged):
        out[plan.tag_key] = plan.tag
    for fp in plan.fields:
        v = getattr(obj, fp.attr)
        omit = fp.omit
        if omit is not None and (
            (omit == "none" and v is None)
            or (omit == "empty" and not v)
            or (omit == "false" and v is False)
        ):
            continue
        enc = fp.encode
        out[fp.key] = v if enc is None or v is None else enc(v)
    return out


def _from_wire_generic(cls: type[T], data: Any) -> T:
    """The reference decoder: every check in order, with the path of the first defect."""
    plan = _PLANS.get(cls) or _plan(cls)
    if plan.decode_hook is not None:
        decoded: T = plan.decode_hook(data, "")
        return decoded
    if not isinstance(data, dict):
        raise InvalidInput(f"expected object, got {_type_name(data)}", "")
    if plan.union_key is not None:
        tag = data.get(plan.union_key, _MISSING)
        if tag is _MISSING:
            raise InvalidInput("missing required field", plan.union_key)
        variants = _VARIANTS.get(cls, {})
        target = variants.get(tag) if isinstance(tag, str) else None
        if target is None:
            known = ", ".join(sorted(variants))
            raise InvalidInput(
                f"unknown variant {str(tag)[:64]!r}; expected one of {known}", plan.union_key
            )
        return _from_wire(target, data)
    if plan.own_tag and plan.tag_key is not None:
        tag = data.get(plan.tag_key, _MISSING)
        # Decoding straight into a variant tolerates a missing tag; a wrong one is refused
        # (a newtype variant ignores the key, as serde ignores any unknown key).
        if tag is not _MISSING and tag != plan.tag:
            raise InvalidInput(f"expected {plan.tag!r}, got {str(tag)[:64]!r}", plan.tag_key)
    kwargs: dict[str, Any] = {}
    for fp in plan.fields:
        v = data.get(fp.key, _MISSING)
        if v is _MISSING:
            if fp.has_default:
                continue
            if fp.optional:  # serde: a missing Option is None
                kwargs[fp.attr] = None
                continue
            raise InvalidInput("missing required field", fp.key)
        if v is None:
            if not fp.nullable:
                raise InvalidInput("must not be null", fp.key)
            if fp.optional:
                kwargs[fp.attr] = None
                continue
        try:
            value = fp.decode(v, "")
        except InvalidInput as exc:
            raise InvalidInput(exc.detail, join_path(fp.key, exc.path)) from None
        if fp.ge is not None and value is not None and value < fp.ge:
            raise InvalidInput(f"must be >= {fp.ge}, got {value}", fp.key)
        kwargs[fp.attr] = value
    try:
        return cls(**kwargs)
    except InvalidInput:
        raise
    except (TypeError, ValueError) as exc:
        raise InvalidInput(str(exc), "") from None


def encode_value(tp: Any, value: Any) -> Any:
    """Encode a value of an arbitrary supported type (e.g. ``tuple[InputId, ...]``)."""
    enc = _encoder_for(tp)
    return value if enc is None or value is None else enc(value)


def decode_value(tp: Any, value: Any, path: str = "") -> Any:
    """Decode a JSON-native value as type ``tp``."""
    return _decoder_for(tp)(value, path)


# ---------------------------------------------------------------- generated codecs
#
# Per class, the plan above is turned into the source of one encoder and one
# decoder function, compiled with ``exec`` (as the stdlib builds a dataclass's
# ``__init__``) and cached. Field reads, None checks, omission rules and the
# conversions of uuids, timestamps, enums, sequences and nested dataclasses are
# written out inline instead of looked up per field and per value.
#
# Encoders are exact copies of ``_to_wire_generic``, expression by expression.
# Decoders are a fast path for valid input: they take exactly what the generic
# decoder takes and build an equal value, but they do not explain a refusal. On
# anything unusual (wrong type, missing key, bad value, a ``__post_init__`` that
# objects) they raise whatever comes first, and ``_from_wire`` hands the same
# data to ``_from_wire_generic``, which produces the precise error and path.
# Leaf conversions are written as "common case inline, else the generic leaf
# decoder", so rare but valid forms (a tuple instead of a list, a datetime
# object instead of a string) are still decoded exactly.

_ENUM_VALUE = inspect.getattr_static(enum.Enum, "value")
_FAST_ENC: dict[type, Callable[[Any], Any]] = {}
_FAST_ENC_TAGGED: dict[type, Callable[[Any], Any]] = {}
_FAST_DEC: dict[type, Callable[[Any], Any]] = {}
_COMPILING: dict[tuple[int, type], Callable[[Any], Any]] = {}
_COMPILE_LOCK = threading.RLock()


def _bad() -> Any:
    """Leave a generated decoder: something needs the generic path's judgement."""
    raise _Unusual


class _Unusual(Exception):
    pass


class _Source:
    """Generated source under way: its lines, and the namespace its names are bound in."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.ns: dict[str, Any] = {"_MISSING": _MISSING, "_bad": _bad}
        self._count = 0

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{hint}{self._count}"

    def bind(self, obj: Any, hint: str) -> str:
        """A name for ``obj`` in the generated code's namespace."""
        name = self.fresh(f"_{hint}")
        self.ns[name] = obj
        return name

    def compile(self, name: str) -> Callable[[Any], Any]:
        exec("\n".join(self.lines), self.ns)  # our own generated source
        fn: Callable[[Any], Any] = self.ns[name]
        return fn


def _compiled(
    cache: dict[type, Callable[[Any], Any]],
    cls: type,
    generate: Callable[[type], Callable[[Any], Any]],
) -> Callable[[Any], Any]:
    """The cached generated function of ``cls``, generating it (and those it calls) if need be."""
    with _COMPILE_LOCK:
        key = (id(cache), cls)
        fn = cache.get(cls) or _COMPILING.get(key)
        if fn is not None:
            return fn
        # A class that (indirectly) contains itself calls itself through this trampoline.
        _COMPILING[key] = lambda v: cache[cls](v)  # noqa: PLW0108 - looked up late
        try:
            fn = cache[cls] = generate(cls)
        finally:
            del _COMPILING[key]
        return fn


def _enc_expr(tp: Any, x: str, src: _Source) -> str | None:
    """Source of an expression encoding the value named ``x`` of type ``tp``, as ``_encoder_for``
    would; None when the value is already JSON-native (mirrors ``_build_encoder`` case by case)."""
    tp = _unwrap_newtype(tp)
    if (codec := _newtype_codec(tp)) is not None:
        return f"{src.bind(codec[0], 'newtype')}({x})"
    origin = get_origin(tp)
    if origin is typing.Annotated:
        base, *extras = get_args(tp)
        for extra in extras:
            if isinstance(extra, Custom):
                return f"{src.bind(extra.encode, 'custom')}({x})"
            if extra is JSON:
                return None
        return _enc_expr(base, x, src)
    if tp in (str, int, bool, float, Any, type(None)):
        return None
    if isinstance(tp, type) and hasattr(tp, "__wire_encode__"):
        return f"{src.bind(tp.__wire_encode__, 'hook')}({x})"
    if tp is uuid.UUID:
        return f"{src.bind(uuid_text, 'uuid_text')}({x})"
    if tp is datetime:
        return f"{src.bind(format_timestamp, 'fmt_ts')}({x})"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if inspect.getattr_static(tp, "value") is _ENUM_VALUE:
            # A member's ``value`` property returns its ``_value_``; read the attribute directly.
            return f"({x}._value_ if type({x}) is {src.bind(tp, 'enum')} else {x}.value)"
        return f"{x}.value"
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(tp) if a is not type(None)]
        if len(members) == 1:
            inner = _enc_expr(members[0], x, src)
            return None if inner is None else f"(None if {x} is None else {inner})"
        return f"{src.bind(to_wire, 'to_wire')}({x})"
    if origin in (tuple, list):
        args = get_args(tp)
        y = src.fresh("e")
        item = _enc_expr(args[0], y, src) if args else None
        return f"list({x})" if item is None else f"[{item} for {y} in {x}]"
    if origin is dict:
        args = get_args(tp)
        y, k = src.fresh("e"), src.fresh("k")
        val = _enc_expr(args[1], y, src) if len(args) == 2 else None
        return None if val is None else f"{{{k}: {val} for {k}, {y} in {x}.items()}}"
    if _is_union_base(tp):  # many classes, each with its tag
        return f"{src.bind(to_wire_tagged, 'to_wire_tagged')}({x})"
    if dataclasses.is_dataclass(tp):
        to_wire_ = src.bind(to_wire, "to_wire")
        if not isinstance(tp, type) or "__tag_key__" in tp.__dict__:
            return f"{to_wire_}({x})"
        try:
            enc = src.bind(_compiled_encoder(tp), "encode")
        except TypeError:  # not encodable: let to_wire say so if a value ever comes
            return f"{to_wire_}({x})"
        return f"({enc}({x}) if type({x}) is {src.bind(tp, 'cls')} else {to_wire_}({x}))"
    raise TypeError(f"no wire encoder for {tp!r}")


def _compiled_encoder(cls: type) -> Callable[[Any], Any]:
    return _compiled(_FAST_ENC, cls, _generate_encoder)


def _compiled_tagged_encoder(cls: type) -> Callable[[Any], Any]:
    plan = _PLANS.get(cls) or _plan(cls)
    if plan.tag_key is None or plan.own_tag or plan.custom:
        fn = _FAST_ENC_TAGGED[cls] = _compiled_encoder(cls)  # the same form
        return fn
    return _compiled(_FAST_ENC_TAGGED, cls, lambda c: _generate_encoder(c, tagged=True))


def _generate_encoder(cls: type, tagged: bool = False) -> Callable[[Any], Any]:
    plan = _PLANS.get(cls) or _plan(cls)
    if plan.custom:
        return cls.__wire_encode__  # type: ignore[attr-defined,no-any-return]
    src = _Source()
    hints = typing.get_type_hints(cls, include_extras=True)
    name = f"encode_{cls.__name__}"
    body: list[str] = []
    # The leading fields that are never left out go into the dict display itself.
    with_tag = plan.tag_key is not None and (plan.own_tag or tagged)
    display = [f"{plan.tag_key!r}: {plan.tag!r}"] if with_tag else []
    for fp in plan.fields:
        v = src.fresh("v")
        read = f"o.{fp.attr}" if fp.attr.isidentifier() else f"getattr(o, {fp.attr!r})"
        enc = _enc_expr(hints[fp.attr], v, src)
        if fp.omit not in ("none", "empty", "false"):
            value = read if enc is None else f"(None if ({v} := {read}) is None else {enc})"
            if not body:
                display.append(f"{fp.key!r}: {value}")
            else:
                body.append(f"    out[{fp.key!r}] = {value}")
            continue
        if not body:
            body.append("    out = {" + ", ".join(display) + "}")
        test = {"none": f"{v} is not None", "empty": v, "false": f"{v} is not False"}[fp.omit]
        if enc is not None and fp.omit == "false":
            enc = f"(None if {v} is None else {enc})"
        body += [f"    {v} = {read}", f"    if {test}:", f"        out[{fp.key!r}] = {enc or v}"]
    if not body:
        body.append("    return {" + ", ".join(display) + "}")
    else:
        body.append("    return out")
    src.lines = [f"def {name}(o):", *body]
    return src.compile(name)


def _dec_expr(tp: Any, x: str, src: _Source) -> tuple[str, bool]:
    """Source of an expression decoding the value named ``x`` as type ``tp``, and whether it
    refuses None by itself. It takes what ``_decoder_for(tp)`` takes and returns an equal value;
    it may raise anything on what the generic decoder refuses (mirrors ``_build_decoder``)."""
    tp = _unwrap_newtype(tp)
    if (codec := _newtype_codec(tp)) is not None:
        return f'{src.bind(codec[1], "newtype")}({x}, "")', True
    origin = get_origin(tp)
    generic = src.bind(_decoder_for(tp), "generic")  # the exact decoder, for the rare forms
    if origin is typing.Annotated:
        base, *extras = get_args(tp)
        for extra in extras:
            if isinstance(extra, Custom) or extra is JSON:
                return f'{generic}({x}, "")', False
        return _dec_expr(base, x, src)
    if tp is Any or (isinstance(tp, type) and hasattr(tp, "__wire_decode__")):
        return f'{generic}({x}, "")', False
    if tp is str:
        return f'({x} if type({x}) is str and {x}.isascii() else {generic}({x}, ""))', True
    if tp is bool:
        return f'({x} if {x} is True or {x} is False else {generic}({x}, ""))', True
    if tp is int:
        ok = f"type({x}) is int and {INT_MIN} <= {x} <= {INT_MAX}"
        return f'({x} if {ok} else {generic}({x}, ""))', True
    if tp is uuid.UUID:
        cached = src.bind(_uuid_of, "uuid_of")
        return f'(({cached}({x}) if type({x}) is str else None) or {generic}({x}, ""))', True
    if tp is datetime:
        cached = src.bind(parse_timestamp_text, "parse_ts")
        return f'({cached}({x}) if type({x}) is str else {generic}({x}, ""))', True
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        members = src.bind({m.value: m for m in tp}, "members")
        return f'({members}[{x}] if type({x}) is str else {generic}({x}, ""))', True
    if origin in (Union, types.UnionType):
        members_ = [a for a in get_args(tp) if a is not type(None)]
        inner, _ = _dec_expr(members_[0], x, src)
        return f"(None if {x} is None else {inner})", False
    if origin in (tuple, list):
        args = get_args(tp)
        y = src.fresh("e")
        item, _ = _dec_expr(args[0] if args else Any, y, src)
        return (
            f'(tuple([{item} for {y} in {x}]) if type({x}) is list else {generic}({x}, ""))',
            True,
        )
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        try:
            dec = src.bind(_compiled_decoder(tp), "decode")
        except TypeError:  # not decodable: the generic path says so if a value ever comes
            return f'{generic}({x}, "")', True
        return f"{dec}({x})", not hasattr(tp, "__wire_decode__")
    # float, dict and anything else: the generic decoder as it is.
    return f'{generic}({x}, "")', tp is float or origin is dict


def _compiled_decoder(cls: type) -> Callable[[Any], Any]:
    return _compiled(_FAST_DEC, cls, _generate_decoder)


def _generate_decoder(cls: type) -> Callable[[Any], Any]:
    plan = _PLANS.get(cls) or _plan(cls)
    hook = plan.decode_hook
    if hook is not None:
        return lambda d: hook(d, "")
    if plan.union_key is not None:
        return _union_decoder(cls, plan.union_key)
    src = _Source()
    hints = typing.get_type_hints(cls, include_extras=True)
    name = f"decode_{cls.__name__}"
    body = ["    if type(d) is not dict:", "        _bad()"]
    if plan.own_tag:
        body += [
            f"    t = d.get({plan.tag_key!r}, _MISSING)",
            f"    if t is not _MISSING and t != {plan.tag!r}:",
            "        _bad()",
        ]
    args: list[tuple[str, str]] = []
    for fp in plan.fields:
        v = src.fresh("v")
        value, refuses_none = _dec_expr(hints[fp.attr], v, src)
        field = next(f for f in dataclasses.fields(cls) if f.name == fp.attr)
        if fp.has_default:
            if field.default_factory is not _MISSING:
                default = f"{src.bind(field.default_factory, 'factory')}()"
            else:
                default = src.bind(field.default, "default")
            body.append(f"    {v} = d.get({fp.key!r}, _MISSING)")
            if fp.optional:
                body.append(f"    {v} = {default} if {v} is _MISSING else {value}")
            else:
                body.append(f"    if {v} is _MISSING:")
                body.append(f"        {v} = {default}")
                body.append("    else:")
                if not fp.nullable and not refuses_none:
                    body.append(f"        {v} = _bad() if {v} is None else {value}")
                else:
                    body.append(f"        {v} = {value}")
        elif fp.optional:  # a missing Option is None, as an explicit null
            body.append(f"    {v} = d.get({fp.key!r})")
            body.append(f"    {v} = {value}")
        else:
            body.append(f"    {v} = d[{fp.key!r}]")
            if not fp.nullable and not refuses_none:
                body.append(f"    if {v} is None:")
                body.append("        _bad()")
            body.append(f"    {v} = {value}")
        if fp.ge is not None:
            body.append(f"    if {v} is not None and {v} < {fp.ge!r}:")
            body.append("        _bad()")
        args.append((fp.attr, v))
    body += _construction(cls, dict(args), src)
    src.lines = [f"def {name}(d):", *body]
    return src.compile(name)


def slot_setter(cls: type[T], name: str) -> Callable[[T, Any], None]:
    """The ``__set__`` of field ``name``'s slot in slots class ``cls``: it sets the field
    on a frozen instance without ``object.__setattr__`` (how :func:`_construction`'s
    generated builders, and the hand-written ones on the accept path, fill an instance
    made by ``object.__new__``)."""
    slot = inspect.getattr_static(cls, name)
    if not isinstance(slot, types.MemberDescriptorType):
        raise TypeError(f"{cls.__name__}.{name} is not a slot")
    setter: Callable[[T, Any], None] = slot.__set__
    return setter


#: The shared instances of the value classes marked ``__interned__`` (see :func:`interned`).
_INTERNED: dict[Any, Any] = {}
#: Past this many distinct values, new ones are built but not shared.
INTERNED_MAX = 4096


def interned(value: T) -> T:
    """The one shared instance equal to ``value``: ``value`` itself the first time.

    For frozen value classes with few distinct values that every input carries
    (its origin, visibility, policy snapshot): a live input then holds no copy of
    them, which is fewer objects for Python's cyclic garbage collector to walk on
    every full collection (a pause for every thread) and less memory per input.
    Classes opt in with ``__interned__ = True``; their decoders return interned
    values. A value that cannot be hashed is returned as it is.
    """
    try:
        found = _INTERNED.get(value)
    except TypeError:
        return value
    if found is not None:
        return cast(T, found)
    if len(_INTERNED) < INTERNED_MAX:
        _INTERNED[value] = value
    return value


def _construction(cls: type, values: dict[str, str], src: _Source) -> list[str]:
    """Source lines returning an instance of ``cls`` from the decoded field values (named by
    the local variables in ``values``).

    A frozen slots dataclass whose ``__init__`` is the one ``dataclasses`` generated is
    built the way that ``__init__`` builds it, minus the call: ``object.__new__``, every
    field's slot set in order (defaults for the fields the wire leaves out) and then
    ``__post_init__``. That halves the cost of building the value. Any other class is
    called with keywords.
    """
    shared = getattr(cls, "__interned__", False)
    ret = f"{src.bind(interned, 'interned')}(o)" if shared else "o"
    call = [
        f"    o = {src.bind(cls, 'cls')}({', '.join(f'{k}={v}' for k, v in values.items())})",
        f"    return {ret}",
    ]
    params = getattr(cls, "__dataclass_params__", None)
    init = cls.__dict__.get("__init__")
    code = getattr(init, "__code__", None)
    if (
        init is None
        or params is None
        or not params.frozen
        or code is None
        or code.co_filename != "<string>"
    ):
        return call  # not an __init__ dataclasses wrote
    fields = dataclasses.fields(cls)
    if list(inspect.signature(init).parameters)[1:] != [f.name for f in fields if f.init]:
        return call  # InitVars or a changed signature
    lines = [f"    o = {src.bind(object.__new__, 'new')}({src.bind(cls, 'cls')})"]
    for f in fields:
        slot = inspect.getattr_static(cls, f.name, None)
        if not isinstance(slot, types.MemberDescriptorType):
            return call
        if f.name in values:
            value = values[f.name]
        elif f.default_factory is not _MISSING:
            value = f"{src.bind(f.default_factory, 'factory')}()"
        elif f.default is not _MISSING:
            value = src.bind(f.default, "default")
        elif f.init:
            return call  # a field the wire never fills, without a default: the call refuses
        else:
            continue  # init=False without a default: __init__ leaves it unset too
        lines.append(f"    {src.bind(slot.__set__, 'set_' + f.name)}(o, {value})")
    if hasattr(cls, "__post_init__"):
        lines.append("    o.__post_init__()")
    return [*lines, f"    return {ret}"]


def _union_decoder(base: type, key: str) -> Callable[[Any], Any]:
    """The decoder of a tagged-union base: the variant its tag names (variants may register later)."""
    variants = _VARIANTS.setdefault(base, {})

    def decode_union(d: Any) -> Any:
        if type(d) is not dict:
            _bad()
        tag = d[key]
        if type(tag) is not str:
            _bad()
        target = variants[tag]
        dec = _FAST_DEC.get(target)
        return (dec if dec is not None else _compiled_decoder(target))(d)

    return decode_union
