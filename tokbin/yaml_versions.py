"""params.yaml read alike by YAML 1.1 and YAML 1.2: the stages read it with PyYAML (YAML 1.1),
DVC with ruamel (YAML 1.2), which records the values in dvc.lock and shows them in `dvc params
diff`. Where the two disagree (017: 15 or 17; 1_000, 1:00, 0b101: a number or text; yes, no,
on, off: a boolean or text) a build would not be the one its record says.
"""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from tokbin.errors import TokbinError

_YAML12 = [  # the YAML 1.2 core schema's plain scalars that are not text
    (re.compile(r"~|null|Null|NULL|"), lambda s: None),
    (re.compile(r"true|True|TRUE"), lambda s: True),
    (re.compile(r"false|False|FALSE"), lambda s: False),
    (re.compile(r"[-+]?[0-9]+"), int),
    (re.compile(r"0o[0-7]+"), lambda s: int(s[2:], 8)),
    (re.compile(r"0x[0-9a-fA-F]+"), lambda s: int(s[2:], 16)),
    (re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?"), float),
    (re.compile(r"[-+]?\.(inf|Inf|INF)"), lambda s: float(s.replace(".", ""))),
    (re.compile(r"\.(nan|NaN|NAN)"), lambda s: float("nan")),
]


def yaml12_value(text: str):
    """What a YAML 1.2 (core schema) reader makes of a plain scalar."""
    for pattern, value in _YAML12:
        if pattern.fullmatch(text):
            return value(text)
    return text


def check_yaml_versions_agree(text: str, path: Path) -> None:
    """Refuses a value of `text` (from `path`) that YAML 1.1 and 1.2 read differently, naming
    its key. A number that PyYAML reads as text is left to the key's type check, which says how
    to write it."""
    loader = yaml.SafeLoader("")
    pending = [("", yaml.compose(text, Loader=yaml.SafeLoader))]
    while pending:
        prefix, node = pending.pop()
        if not isinstance(node, yaml.MappingNode):
            continue
        for key_node, value_node in node.value:
            name = f"{prefix}{key_node.value}"
            pending.append((f"{name}.", value_node))
            if not isinstance(value_node, yaml.ScalarNode) or value_node.style is not None:
                continue
            read, later = loader.construct_object(value_node), yaml12_value(value_node.value)
            if isinstance(read, str) or (type(later) is type(read) and
                                         (later == read or read != read)):  # nan != nan
                continue
            fix = ("true or false" if isinstance(read, bool) else
                   "digits with a point, without _ or : (e.g. 0.0005)" if isinstance(read, float)
                   else "plain decimal digits, without a leading zero, _ or :")
            raise TokbinError(f"{path}: {name} is {value_node.value}, which reads as {read!r} in "
                              f"YAML 1.1, as tokbin reads params.yaml, but as {later!r} in YAML "
                              f"1.2, as DVC records it in dvc.lock; write {fix}")
