"""``Registry``: a dict of named objects (guide families, objectives, fitting methods), with the
one copy of the rules for adding to it and looking a name up."""

from __future__ import annotations

__all__ = ["Registry"]


class Registry(dict):
    """``{name: item}`` for items of type ``kind`` with a ``name`` field.

    ``noun`` names an item in messages (``"guide"``), ``plural`` several (``"guides"``), ``adder``
    the public function that calls :meth:`add` (``"register_guide"``) and ``kind_name`` the type
    as users import it (``"vibench.guides.Guide"``).
    """

    def __init__(self, kind: type, kind_name: str, noun: str, plural: str, adder: str):
        super().__init__()
        self.kind, self.kind_name, self.noun, self.plural, self.adder = kind, kind_name, noun, plural, adder

    def add(self, item):
        """Add ``item`` under ``item.name`` (replacing any item of that name); returns it."""
        if not isinstance(item, self.kind):
            raise TypeError(f"{self.adder} expects a {self.kind_name}, got {type(item).__name__}")
        self[item.name] = item
        return item

    def lookup(self, name: str):
        """The item called ``name``; a ValueError lists the known names otherwise."""
        try:
            return self[name]
        except KeyError:
            raise ValueError(f"unknown {self.noun} {name!r}; known {self.plural}: {sorted(self)}") from None
