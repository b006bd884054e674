"""params.yaml read alike by the stages and by DVC: the stages read it with PyYAML (YAML 1.1),
DVC with ruamel.yaml's safe loader (YAML 1.2), and what DVC reads is what dvc.lock records and
`dvc params diff` shows. Where the two disagree (017: 15 or 17; 1:00: 60 or text; yes, no,
on, off: a boolean or text; 4567e89, 0123489, 1e3: text or a number) a build would not be the
one its record says.
"""
from __future__ import annotations

import math
from pathlib import Path

from tokbin.errors import TokbinError


def check_yaml_versions_agree(text: str, read, path: Path) -> None:
    """Refuses `text` (from `path`) where DVC's loader reads anything other than `read`
    (PyYAML's result), naming the first key whose value (or which key) differs."""
    from ruamel.yaml import YAML  # DVC's own loader, as DVC calls it (typ="safe")
    from ruamel.yaml.error import YAMLError
    try:
        dvc_read = YAML(typ="safe").load(text)
    except (YAMLError, ValueError):  # not valid YAML 1.2: DVC reports it itself
        return
    found = _first_difference(read, dvc_read, "", set())
    if found is None:
        return
    name, ours, theirs = found
    fix = ("write true or false, or quote it for text"
           if isinstance(ours, bool) or isinstance(theirs, bool) else
           "quote it" if isinstance(ours, str) else
           "write it with a point, without : (e.g. 0.0005)" if isinstance(ours, float) else
           "write plain decimal digits, without a leading zero or :")
    raise TokbinError(f"{path}: {name or 'the top level'} reads as {ours!r} for the stages "
                      f"(PyYAML, YAML 1.1) but as {theirs!r} for DVC (YAML 1.2), which records "
                      f"it in dvc.lock; {fix}, so that both read it alike")


def _first_difference(ours, theirs, name: str, seen: set):
    """(key path, our value, DVC's) of the first place the two loads differ, or None."""
    if id(ours) in seen:  # an alias that refers to itself: compared once
        return None
    if isinstance(ours, dict) and isinstance(theirs, dict):
        seen.add(id(ours))
        if len(ours) != len(theirs):
            return name, ours, theirs
        for (key, value), (dvc_key, dvc_value) in zip(ours.items(), theirs.items()):
            where = f"{name}.{key}" if name else str(key)
            if not _same(key, dvc_key):
                return f"{where} (the key)", key, dvc_key
            found = _first_difference(value, dvc_value, where, seen)
            if found:
                return found
        return None
    if isinstance(ours, list) and isinstance(theirs, list):
        seen.add(id(ours))
        if len(ours) != len(theirs):
            return name, ours, theirs
        for i, (value, dvc_value) in enumerate(zip(ours, theirs)):
            found = _first_difference(value, dvc_value, f"{name}[{i}]", seen)
            if found:
                return found
        return None
    return None if _same(ours, theirs) else (name, ours, theirs)


def _same(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b
