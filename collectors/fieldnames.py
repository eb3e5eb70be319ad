"""Naming rules for field keys, shared by the source form and the Fields page.

One place decides what a valid field name is, so a key accepted on a source can
always be added to the schema and the other way round.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError

from collectors.choices import RESERVED_FIELD_NAMES

MAX_KEY_LENGTH = 255
MAX_VALUE_LENGTH = 200
_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
# Each rule's words, shared with the source form's check while typing.
MESSAGES = {
    "empty": "Enter a field name.",
    "length": f"A field name has at most {MAX_KEY_LENGTH} characters.",
    "start": "A field name must start with a letter or an underscore.",
    "chars": "A field name may only contain letters, digits, underscores and dots.",
    "dots": "A field name may not contain two dots in a row.",
    "reserved": "“{key}” is a built-in metadata name and cannot be used as a field.",
}


def key_error(key: str) -> str | None:
    """The first rule `key` breaks, worded for the user, or None when valid."""
    if not key:
        return MESSAGES["empty"]
    if len(key) > MAX_KEY_LENGTH:
        return MESSAGES["length"]
    if not (key[0].isascii() and (key[0].isalpha() or key[0] == "_")):
        return MESSAGES["start"]
    if not _KEY_RE.fullmatch(key):
        return MESSAGES["chars"]
    if ".." in key:
        return MESSAGES["dots"]
    if key.lower() in RESERVED_FIELD_NAMES:
        return MESSAGES["reserved"].format(key=key)
    return None


def validate_field_key(key: str) -> None:
    """Django validator form of `key_error`."""
    message = key_error(key)
    if message:
        raise ValidationError(message, code="invalid_field_name")


def value_error(value: str) -> str | None:
    """The rule a field value breaks, or None when valid."""
    if len(value) > MAX_VALUE_LENGTH:
        return f"A field value has at most {MAX_VALUE_LENGTH} characters."
    if "\x00" in value:
        return "A field value may not contain null characters."
    return None


def client_rules() -> dict:
    """The naming rules as data, for the source form's check while typing
    (static/js/source_form.js applies them in `key_error`'s order and with
    its words; the server checks again on Save)."""
    return {
        "max": MAX_KEY_LENGTH,
        "reserved": sorted(RESERVED_FIELD_NAMES),
        "messages": MESSAGES,
    }
