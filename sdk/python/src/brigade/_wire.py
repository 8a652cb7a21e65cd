"""How Python values and exceptions travel in brigade's JSON.

A task's input is ``{"args": [...], "kwargs": {...}}``; its output is the
function's return value. A failure is brigade's ``{"message", "kind"}``
error; the Python exception's type and traceback ride in the message as::

    ValueError: the message

    Traceback (most recent call last):
      ...

so that any brigade client shows something readable, and this SDK can take
the three parts apart again (:func:`decode_error`).
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import traceback as _tb
from typing import Any

# brigade's kind grammar: [a-z0-9][a-z0-9._-]{0,63}
KIND_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
TRACEBACK_HEAD = "Traceback (most recent call last):\n"
# Remote tracebacks are cut beyond this, so one failure cannot fill the server.
MAX_TRACEBACK = 16 * 1024


def kind_for(module: str, function: str) -> str:
    """The kind of a task: ``<module>.<function>`` lowercased.

    ``tasks.process_file`` stays ``tasks.process_file``; a character a kind
    may not hold becomes ``-``, and a leading run of characters a kind may
    not start with is dropped (``__main__`` → ``main``).
    """
    raw = f"{module}.{function}".lower()
    raw = re.sub(r"[^a-z0-9._\-]", "-", raw)
    raw = raw.lstrip("._-")
    if not KIND_RE.match(raw):
        raise ValueError(
            f"the task kind {raw!r} (from {module}.{function}) is not a valid brigade kind "
            "([a-z0-9][a-z0-9._-]{0,63}); give the task a name= that is"
        )
    return raw


def check_kind(name: str) -> str:
    """``name`` if it is a valid kind, else ValueError."""
    if not KIND_RE.match(name):
        raise ValueError(f"task name {name!r} is not a valid brigade kind ([a-z0-9][a-z0-9._-]{{0,63}})")
    return name


def encode_input(kind: str, args: Any, kwargs: Any) -> dict[str, Any]:
    """The task input for ``args``/``kwargs``; TypeError if they are not JSON."""
    arg_list: list[Any] = list(args or ())
    kwarg_map: dict[str, Any] = dict(kwargs or {})
    body: dict[str, Any] = {"args": arg_list, "kwargs": kwarg_map}
    try:
        json.dumps(body, allow_nan=False)
    except (TypeError, ValueError) as e:
        # Say which argument, so the caller need not guess.
        for i, a in enumerate(arg_list):
            if not _is_json(a):
                raise TypeError(
                    f"argument {i} of {kind} is not JSON-serialisable ({type(a).__name__}: {e}); "
                    "brigade passes arguments as JSON"
                ) from None
        for k, v in kwarg_map.items():
            if not _is_json(v):
                raise TypeError(
                    f"keyword argument {k!r} of {kind} is not JSON-serialisable ({type(v).__name__}: {e}); "
                    "brigade passes arguments as JSON"
                ) from None
        raise TypeError(f"the arguments of {kind} are not JSON-serialisable: {e}") from None
    return body


def _is_json(v: Any) -> bool:
    try:
        json.dumps(v, allow_nan=False)
        return True
    except (TypeError, ValueError):
        return False


def decode_input(value: Any, parents: list[dict[str, Any]] | None = None) -> tuple[list[Any], dict[str, Any]]:
    """``(args, kwargs)`` from a task input; a bare value is one argument.

    An input with a ``prepend`` reference (a step of a chain, a chord's
    body) gets the value it names, built from the task's ``parents``, as its
    first argument; ValueError if the parents do not hold it.
    """
    if isinstance(value, dict) and set(value) <= {"args", "kwargs", PREPEND} and value:
        args = value.get("args") or []
        kwargs = value.get("kwargs") or {}
        if isinstance(args, list) and isinstance(kwargs, dict):
            if PREPEND in value:
                if parents is None:
                    raise ValueError("the input takes its parents' results but the task came without parents")
                args = [resolve_ref(value[PREPEND], parents), *args]
            return args, kwargs
    if value is None:
        return [], {}
    return [value], {}


# The canvas (chain, group, chord) marks a task's input with
#   "prepend": REF
# REF names what its parents returned, by the keys the canvas gave them:
#   "k"                  the output of the task with key k;
#   {"all": "k"}         the outputs of every task with key k, in submission order (a list);
#   {"list": [REF, ...]} a list; an {"all": ...} item is spliced into it (a group's members).
PREPEND = "prepend"


def ref_keys(ref: Any) -> list[str]:
    """The keys a reference names, in order, once each (the task's ``after``)."""
    out: list[str] = []

    def walk(r: Any) -> None:
        if isinstance(r, str):
            out.append(r)
        elif isinstance(r, dict) and "all" in r:
            out.append(str(r["all"]))
        elif isinstance(r, dict) and "list" in r:
            for item in r["list"]:
                walk(item)
        else:
            raise ValueError(f"not a parents reference: {r!r}")

    walk(ref)
    return list(dict.fromkeys(out))


def resolve_ref(ref: Any, parents: list[dict[str, Any]]) -> Any:
    """The value ``ref`` names, from a leased task's ``parents``
    (``[{"key", "task_id", "state", "output", "error"}]``)."""
    by_key: dict[str, list[Any]] = {}
    for p in parents:
        if p.get("key") is not None:
            by_key.setdefault(str(p["key"]), []).append(p.get("output"))

    def one(r: Any) -> Any:
        if isinstance(r, str):
            outs = by_key.get(r)
            if not outs:
                raise ValueError(f"no parent with key {r!r}")
            return outs[0]
        if isinstance(r, dict) and "all" in r:
            return list(by_key.get(str(r["all"]), []))
        if isinstance(r, dict) and isinstance(r.get("list"), list):
            items: list[Any] = []
            for item in r["list"]:
                if isinstance(item, dict) and "all" in item:
                    items.extend(one(item))
                else:
                    items.append(one(item))
            return items
        raise ValueError(f"not a parents reference: {r!r}")

    return one(ref)


def encode_exception(exc: BaseException) -> str:
    """The error message for ``exc``: type, message, traceback."""
    name = type(exc).__qualname__
    module = type(exc).__module__
    if module not in ("builtins", "__main__"):
        name = f"{module}.{name}"
    tb = "".join(_tb.format_exception(type(exc), exc, exc.__traceback__))
    if len(tb) > MAX_TRACEBACK:
        tb = tb[: MAX_TRACEBACK // 2] + "\n  [... cut ...]\n" + tb[-MAX_TRACEBACK // 2 :]
    if not tb.startswith(TRACEBACK_HEAD):
        tb = TRACEBACK_HEAD + tb
    return f"{name}: {exc}\n\n{tb}"


def decode_error(error: dict[str, Any] | None) -> tuple[str, str, str, str]:
    """``(type, message, traceback, kind)`` from a task's error."""
    if not error:
        return "", "", "", "other"
    text = str(error.get("message", ""))
    kind = str(error.get("kind", "other"))
    cut = text.find("\n\n" + TRACEBACK_HEAD)
    if cut < 0:
        return "", text, "", kind
    head, tb = text[:cut], text[cut + 2 :]
    type_, sep, msg = head.partition(": ")
    if not sep or " " in type_ or not type_:
        return "", head, tb, kind
    return type_, msg, tb, kind


def rfc3339(t: _dt.datetime) -> str:
    """A timestamp as the API wants it (UTC, RFC 3339)."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    return t.astimezone(_dt.timezone.utc).isoformat().replace("+00:00", "Z")


def in_seconds(seconds: float) -> str:
    """RFC 3339 for now + ``seconds``."""
    return rfc3339(_dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(seconds=seconds))
