"""One registry helper, :class:`Registry`, behind every registry of the project.

Objectives, encoders, methods, data sets, task families and backbones are each one
``Registry`` (see :mod:`croma.registry` for the list); their public functions
(``register_loss``, ``get_encoder``, ``list_methods``, ``load_benchmark``, ...) are thin
wrappers around it, and every CLI choice list is read from one at parser-build time.
Adding an objective, encoder, data set or method is therefore one new file that calls the
registry's decorator, plus one import line.

This module lives in :mod:`episodes` because data sets are registered there and ``episodes``
never imports ``croma``; :mod:`croma.registry` re-exports it.

Example:

    >>> LOSSES = Registry("loss")
    >>> @LOSSES.register("toy", info={"paper": "none"})
    ... class ToyLoss: ...
    >>> LOSSES.get("toy").__name__
    'ToyLoss'
    >>> LOSSES.info("toy")
    {'paper': 'none'}
    >>> LOSSES.names()             # registration order
    ['toy']
    >>> LOSSES.get("nope")
    Traceback (most recent call last):
    ...
    episodes.registry.UnknownNameError: unknown loss 'nope'; available: toy
"""

from __future__ import annotations

from typing import Any, Callable, Generic, Iterator, TypeVar, overload

__all__ = ["Registry", "RegistryError", "UnknownNameError", "DuplicateNameError"]

T = TypeVar("T")


class RegistryError(ValueError):
    """Base of the registry's errors; a ``ValueError``, so the CLI prints it as one line."""


class UnknownNameError(RegistryError, KeyError):
    """A name that is not registered. Also a ``KeyError`` (``registry[name]`` behaves like a dict)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateNameError(RegistryError):
    """A name registered twice (pass ``overwrite=True`` to replace an entry on purpose)."""


class Registry(Generic[T]):
    """Names -> objects (classes, factories, functions, specs), with optional per-entry info.

    ``names()`` and iteration follow **registration order** (wrappers that promise sorted
    listings, e.g. ``list_losses``, sort themselves). Read access is also dict-like
    (``reg[name]``, ``name in reg``, ``len(reg)``, ``keys()``, ``values()``, ``items()``), so a
    registry can stand in where a plain ``{name: obj}`` dict used to be exported.

    Args:
        kind: what the entries are, singular (``"loss"``, ``"data set"``); used in messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = str(kind)
        self._entries: dict[str, T] = {}
        self._info: dict[str, Any] = {}

    # -- writing ---------------------------------------------------------------------------
    @overload
    def register(self, name: str, obj: None = None, *, info: Any = None,
                 overwrite: bool = False) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T, *, info: Any = None, overwrite: bool = False) -> T: ...

    def register(self, name: str, obj: Any = None, *, info: Any = None, overwrite: bool = False) -> Any:
        """Register ``obj`` under ``name``; without ``obj``, return a decorator that does.

        Args:
            name: a non-empty string, unique in this registry.
            obj: the object; omitted (``None``) for decorator use: ``@reg.register("name")``.
            info: anything describing the entry (a dict, a dataclass); read back with :meth:`info`.
            overwrite: replace an existing entry instead of raising.

        Returns:
            ``obj`` (so decorated classes / functions are unchanged), or the decorator.

        Raises:
            DuplicateNameError: ``name`` is taken and ``overwrite`` is false.
            ValueError: ``name`` is not a non-empty string.
        """
        if not isinstance(name, str) or not name.strip():
            raise RegistryError(f"{self.kind} name must be a non-empty string (got {name!r})")
        if obj is None:
            def deco(target: T) -> T:
                return self.register(name, target, info=info, overwrite=overwrite)

            return deco
        if name in self._entries and not overwrite:
            raise DuplicateNameError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = obj
        self._info[name] = info
        return obj

    def unregister(self, name: str) -> T:
        """Remove ``name`` and return its object (tests use this to clean up). UnknownNameError if absent."""
        obj = self.get(name)
        del self._entries[name]
        self._info.pop(name, None)
        return obj

    # -- reading ---------------------------------------------------------------------------
    def get(self, name: str) -> T:
        """The object registered as ``name``.

        Raises:
            UnknownNameError: ``unknown KIND 'name'; available: a, b, c``.
        """
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: object) -> str:
        """``unknown KIND 'name'; available: a, b, c`` (the text :meth:`get` raises)."""
        return f"unknown {self.kind} {name!r}; available: {', '.join(self._entries) or '(none)'}"

    def info(self, name: str) -> Any:
        """The ``info`` given at registration (``None`` when none was). UnknownNameError if absent."""
        self.get(name)
        return self._info.get(name)

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def keys(self) -> list[str]:
        return self.names()

    def values(self) -> list[T]:
        return list(self._entries.values())

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()!r})"
