"""One registry mechanism for everything a sweep names: problems, estimators, variance reductions.

A ``Registry`` maps a name to an item and to tags ("core", "discrete", "reference", "peer", …). Shipped items
are registered by the package that implements them, after their modules are imported, so no implementation
module imports its registry. A user's item goes through the same door, three ways:

- ``module:attribute`` names an object in an importable module (the current directory is importable, as for
  ``python -m``); it is loaded on first use, in every process that asks (a Dask worker too), and registered
  under that spec as its name, so a cell that names it can be rebuilt anywhere;
- an installed distribution's entry point in the registry's group (``varbench.estimators``,
  ``varbench.problems``) loads by its entry-point name in every process;
- ``register(item)`` from Python.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
import sys
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_REQUIRED = object()


def import_user_module(module_name: str):
    """Import a user's module; one in the working directory loads too, as with ``python -m``."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    return importlib.import_module(module_name)


def call_if_factory(obj: object, name: str, kind: str, error: type[ValueError]) -> object:
    """``obj`` itself, or what it returns when it is a factory: a class or function callable with no arguments.
    A callable that needs arguments (a bare surrogate, say) is returned as it is, for the caller to refuse."""
    if not callable(obj) or not (isinstance(obj, type) or inspect.isfunction(obj) or inspect.ismethod(obj)):
        return obj
    try:
        inspect.signature(obj).bind()
    except TypeError:
        return obj  # needs arguments: not a factory
    except ValueError:
        return obj  # no signature to inspect (a builtin)
    try:
        return obj()
    except error:
        raise
    except Exception as failure:  # noqa: BLE001 - the user's factory failed; say so in one line
        raise error(f"{kind} {name}: calling {getattr(obj, '__name__', obj)}() to build it failed "
                    f"({type(failure).__name__}: {failure})") from None  # fmt: skip


class Registry(Generic[T]):
    """Named items of one kind. ``adopt(obj, name)`` turns a loaded object (from ``module:attribute`` or an entry
    point) into an item named ``name``, or raises ``error`` saying what was expected."""

    def __init__(self, kind: str, error: type[ValueError], *, entry_point_group: str | None = None,
                 adopt: Callable[[object, str], T] | None = None):  # fmt: skip
        self.kind = kind
        self.error = error
        self.entry_point_group = entry_point_group
        self._adopt = adopt
        self._items: dict[str, T] = {}
        self._tags: dict[str, frozenset[str]] = {}
        self._entry_points_loaded = entry_point_group is None
        self.broken: dict[str, str] = {}  # plug-in entry point -> why it failed to load (varbench list says so)

    def register(self, name: str, item: T, *tags: str) -> T:
        """Add ``item`` under ``name`` (replacing an earlier one of that name) with ``tags``; returns the item."""
        self._items[name] = item
        self._tags[name] = frozenset(tags)
        return item

    def get(self, name: str, default: object = _REQUIRED) -> T:
        """The item ``name``: registered, from an installed plug-in, or a ``module:attribute`` spec (loaded once).
        Unknown: ``default`` if given, else ``error`` naming what is allowed."""
        if name in self._items:
            return self._items[name]
        if ":" in name:
            return self.register(name, self._load_spec(name), "user")
        self._load_entry_points()
        if name in self._items:
            return self._items[name]
        if default is not _REQUIRED:
            return default  # type: ignore[return-value]
        raise self.error(f"unknown {self.kind} {name!r}; allowed: {', '.join(self.names())} "
                         f"(or module:attribute for your own)")  # fmt: skip

    __getitem__ = get

    def __setitem__(self, name: str, item: T) -> None:
        """``registry[name] = item``: register (keeping the tags of an item it replaces, else tagged "user")."""
        self.register(name, item, *self._tags.get(name, ("user",)))

    def __delitem__(self, name: str) -> None:
        if name not in self._items:
            raise KeyError(name)
        self.unregister(name)

    def __contains__(self, name: object) -> bool:
        self._load_entry_points()
        return name in self._items

    def names(self, *tags: str, exclude: tuple[str, ...] = ()) -> list[str]:
        """Names in registration order: all, or those carrying every tag in ``tags`` and none in ``exclude``."""
        self._load_entry_points()
        return [name for name, have in self._tags.items()
                if set(tags) <= have and not set(exclude) & have]  # fmt: skip

    def tags(self, name: str) -> frozenset[str]:
        self.get(name)
        return self._tags[name]

    def items(self) -> Iterator[tuple[str, T]]:
        self._load_entry_points()
        return iter(list(self._items.items()))

    def values(self) -> list[T]:
        return [item for _, item in self.items()]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def unregister(self, name: str) -> None:
        self._items.pop(name, None)
        self._tags.pop(name, None)

    # -----------------------------------------------------------------------------------------------------

    def _load_spec(self, spec: str) -> T:
        module_name, _, attribute = spec.partition(":")
        if not module_name or not attribute:
            raise self.error(f"{self.kind} {spec!r}: your own {self.kind} is written module:attribute, e.g. "
                             "my_module:my_thing")  # fmt: skip
        try:
            module = import_user_module(module_name)
        except self.error as error:  # the module built its item and varbench refused it (custom_problem, …)
            raise self.error(f"{self.kind} {spec}: {error}") from None
        except Exception as error:  # noqa: BLE001 - any import failure is the user's, reported in one line
            raise self.error(f"{self.kind} {spec}: cannot import module {module_name!r} "
                             f"({type(error).__name__}: {error})") from None  # fmt: skip
        if not hasattr(module, attribute):
            raise self.error(f"{self.kind} {spec}: module {module_name!r} has no attribute {attribute!r}")
        return self._adopt_or_raise(getattr(module, attribute), spec)

    def _adopt_or_raise(self, obj: object, name: str) -> T:
        if self._adopt is None:
            raise self.error(f"{self.kind} {name}: {self.kind}s cannot be loaded from outside varbench")
        return self._adopt(obj, name)

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for entry in importlib.metadata.entry_points(group=self.entry_point_group):
            if entry.name in self._items:
                continue  # a shipped name wins over a plug-in's
            try:
                self.register(entry.name, self._adopt_or_raise(entry.load(), entry.name), "plugin")
            except Exception as error:  # noqa: BLE001 - one broken plug-in must not hide the others
                self.broken[entry.name] = f"{type(error).__name__}: {error}"
