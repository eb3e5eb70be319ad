"""Rules for the names people give collectors and sources, shared by the app's
forms, the models (so Django admin applies them too) and the templates.

A name must be readable and typeable again: no character lost in decoding
(U+FFFD), no control, format or bidirectional-override character (which can
make "evil‮txt.exe" read as "evilexe.txt"). Two names that differ only by
case or by Unicode compatibility forms ("Ｂａｔｔｅｒｙ", "Battery") are the
same name.
"""

from __future__ import annotations

import re
import unicodedata

from django.core.exceptions import ValidationError

# Unicode's bidirectional formatting characters: embeddings, overrides,
# isolates and the implicit marks.
BIDI_CONTROLS = (
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
_BIDI_RE = re.compile(f"[{BIDI_CONTROLS}]")


def validate_display_name(name: str) -> None:
    """Refuse a name that lost characters in decoding or holds control,
    format (bidi) or line-break characters: it could never be typed again."""
    if "\ufffd" in name:
        raise ValidationError(
            "The name contains characters that could not be read; type it again.",
            code="invalid",
        )
    if _BIDI_RE.search(name):
        raise ValidationError(
            "The name may not contain right-to-left or other direction control "
            "characters.",
            code="invalid",
        )
    if not name.isprintable():
        raise ValidationError(
            "The name may not contain control characters or line breaks.",
            code="invalid",
        )


def name_key(name: str) -> str:
    """What two names must share to be the same name: NFKC, then case-folded."""
    return unicodedata.normalize("NFKC", name).casefold()


def same_name_ids(rows, name: str) -> list[int]:
    """Ids of the (pk, name) rows whose name is the same name as `name`.

    The database's unique constraints compare lower-cased names; NFKC is
    compared here, over the names of one scope (a collector's sources, every
    collector), which stay few enough to read.
    """
    key = name_key(name)
    return [pk for pk, other in rows if name_key(other) == key]


def show_bidi(text: str) -> str:
    """`text` with each bidi control character made visible as ⟨U+202E⟩, so
    text from events cannot reorder what a page shows around it."""
    return _BIDI_RE.sub(lambda m: f"⟨U+{ord(m.group()):04X}⟩", text)
