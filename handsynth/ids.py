"""Injective encodings of source references into ids and object keys.

Ids are built by joining parts read from input files (IH2.6M capture and frame keys, file names)
with separators; if a part may itself contain the separator, two different sources can get the
same id and one image silently overwrites another. Every part therefore goes through
:func:`escape_part` (percent-encoding of the separators), and a whole id becomes a file name
through :func:`id_to_filename`, which is reversible (:func:`filename_to_id`) and hence can never
map two ids to one name.
"""

from __future__ import annotations

import string
from urllib.parse import quote, unquote

#: Bytes kept as they are in file names; everything else but "/" becomes "~XX".
_FILENAME_SAFE = frozenset((string.ascii_letters + string.digits + ".-").encode())


def escape_part(part: str) -> str:
    """One component of an id or reference, with ``/ ; = %`` (and any non-URL-safe byte) escaped.

    Percent-encoding is reversible, so ``escape_part(a) + "/" + escape_part(b)`` determines
    ``(a, b)``: IH2.6M capture ``1_2`` / frame ``3`` and capture ``1`` / frame ``2_3`` stay apart,
    and so do ``1/2``, ``3`` and ``1``, ``2/3``. Decimal keys (what IH2.6M ships) are unchanged.
    """
    return quote(str(part), safe="-_.")


def unescape_part(part: str) -> str:
    """The inverse of :func:`escape_part`."""
    return unquote(part)


def id_to_filename(identifier: str) -> str:
    """A flat file name for an id: ``/`` -> ``_``, other bytes outside ``[A-Za-z0-9.-]`` -> ``~XX``.

    ``_`` and ``~`` are escaped too, so the mapping is injective (see :func:`filename_to_id`).
    """
    out = []
    for b in str(identifier).encode("utf-8"):
        if b in _FILENAME_SAFE:
            out.append(chr(b))
        elif b == 0x2F:  # "/"
            out.append("_")
        else:
            out.append(f"~{b:02X}")
    return "".join(out)


def filename_to_id(name: str) -> str:
    """The inverse of :func:`id_to_filename`; raises ``ValueError`` on a name it cannot produce."""
    out = bytearray()
    i = 0
    while i < len(name):
        c = name[i]
        if c == "_":
            out.append(0x2F)
            i += 1
        elif c == "~":
            out.append(int(name[i + 1:i + 3], 16))
            i += 3
        else:
            out.append(ord(c))
            i += 1
    return out.decode("utf-8")
