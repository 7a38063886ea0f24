"""One generic registry of named things, each with its config class beside it.

Mixers, model architectures, tasks and presets are each a ``Registry``:

    MIXERS = Registry("mixer")
    @MIXERS.register("s4d", config=S4DConfig)      # on a class or a factory function
    MIXERS.get("s4d"), MIXERS.names(), MIXERS.config_class("s4d"), MIXERS.create("s4d", ...)

Reading an entry's config class never builds the entry (a task's config type does not load its
data). Unknown names are a ``KeyError`` that lists the registered ones.
"""
from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, tuple[T, type | None]] = {}

    def register(self, name: str, config: type | None = None,
                 check: Callable[[str, T], None] | None = None) -> Callable[[T], T]:
        """Decorator: make the decorated class or factory available as ``name`` (``check(name, obj)``
        may refuse it with an error)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")

        def decorator(obj: T) -> T:
            if check is not None:
                check(name, obj)
            if name in self._entries and self._entries[name][0] is not obj:
                raise ValueError(f"{self.kind} name '{name}' is already registered by "
                                 f"{getattr(self._entries[name][0], '__name__', self._entries[name][0])!r}")
            self._entries[name] = (obj, config)
            return obj

        return decorator

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a plugin or a test that registered a temporary entry)."""
        self._entry(name)
        del self._entries[name]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def _entry(self, name: str) -> tuple[T, type | None]:
        if not isinstance(name, str) or name not in self._entries:
            raise KeyError(f"unknown {self.kind} {name!r}; registered {self.kind}s: {self.names()}")
        return self._entries[name]

    def get(self, name: str) -> T:
        """The registered class or factory."""
        return self._entry(name)[0]

    def config_class(self, name: str) -> type | None:
        """The config dataclass registered beside ``name`` (None when it takes no settings)."""
        return self._entry(name)[1]

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the registered class or factory."""
        return self.get(name)(*args, **kwargs)
