"""Import a Python object named by a "package.module:attribute" string."""

from __future__ import annotations

import importlib

from edgedistill.errors import UserError


def import_object(spec: str) -> object:
    """Return the object `spec` names, e.g. "mypkg.models:build" (the attribute may be dotted)."""
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path or ":" in attr_path:
        raise UserError(f'{spec!r} is not of the form "package.module:function": name a module and an attribute')
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"cannot import module {module_name!r} for {spec!r} ({exc}): check the name and that it is on PYTHONPATH") from exc
    except Exception as exc:  # the user's module fails as it loads (a SyntaxError, an error at import time)
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise UserError(
            f"importing {module_name!r} for {spec!r} raised {type(exc).__name__} ({first}): fix that module; "
            "--debug shows the traceback"
        ) from exc
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise UserError(f"{spec!r}: module {module_name!r} has no attribute {attr_path!r}: check the name after the colon")
        obj = getattr(obj, part)
    return obj
