"""InputQueue and InputScope (docs: concepts/policy-and-queueing.md).

A session keeps two queues: the ordinary queue (lane ``queue``) and the steer
queue (lane ``steer``). The queue holds input ids in admission order;
``enqueue_front`` puts re-queued or priority work first.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

from meerkat_runtime.events._codec import tagged

__all__ = [
    "AllScope",
    "InputQueue",
    "InputScope",
    "OperationScope",
    "RuntimeScope",
    "SpecificScope",
]


class InputQueue:
    """A FIFO of input ids (the spec's queue stores ``(id, input)``; the ledger holds the input)."""

    # A list, not a deque: a session's queues are short and mostly empty, and every
    # live session keeps two (an empty deque costs 600 bytes, an empty list 56).
    __slots__ = ("_items",)

    def __init__(self, items: Iterable[uuid.UUID] = ()) -> None:
        self._items: list[uuid.UUID] = list(items)

    def enqueue(self, input_id: uuid.UUID) -> None:
        self._items.append(input_id)

    def enqueue_front(self, input_id: uuid.UUID) -> None:
        self._items.insert(0, input_id)

    def dequeue(self) -> uuid.UUID | None:
        return self._items.pop(0) if self._items else None

    def peek(self) -> uuid.UUID | None:
        return self._items[0] if self._items else None

    def remove(self, input_id: uuid.UUID) -> uuid.UUID | None:
        """Delete the first match and return it; None when absent."""
        try:
            self._items.remove(input_id)
        except ValueError:
            return None
        return input_id

    def drain(self) -> list[uuid.UUID]:
        """Empty the queue and return everything in order."""
        items = list(self._items)
        self._items.clear()
        return items

    def dequeue_exact_prefix(self, ids: Sequence[uuid.UUID]) -> bool:
        """Remove the first ``len(ids)`` entries only if they are exactly ``ids``, in order."""
        if len(ids) > len(self._items):
            return False
        if any(self._items[i] != x for i, x in enumerate(ids)):
            return False
        del self._items[: len(ids)]
        return True

    def input_ids(self) -> list[uuid.UUID]:
        return list(self._items)

    def copy(self) -> InputQueue:
        return InputQueue(self._items)

    def __contains__(self, input_id: object) -> bool:
        return input_id in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[uuid.UUID]:
        return iter(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, InputQueue) and list(self._items) == list(other._items)

    def __repr__(self) -> str:
        return f"InputQueue({list(self._items)!r})"

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class InputScope:
    """Which inputs an operation addresses (tag ``scope_type``)."""

    __tag_key__: ClassVar[str] = "scope_type"


@tagged
@dataclass(frozen=True, slots=True)
class RuntimeScope(InputScope):
    __tag__: ClassVar[str] = "runtime"
    runtime_id: str


@tagged
@dataclass(frozen=True, slots=True)
class SpecificScope(InputScope):
    __tag__: ClassVar[str] = "specific"
    input_id: uuid.UUID


@tagged
@dataclass(frozen=True, slots=True)
class OperationScope(InputScope):
    __tag__: ClassVar[str] = "operation"
    operation_id: str


@tagged
@dataclass(frozen=True, slots=True)
class AllScope(InputScope):
    __tag__: ClassVar[str] = "all"
