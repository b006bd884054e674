"""`python -m tokbin set section.key=value ...`: params.yaml changed in place, as a person
would edit it.

Only each value's text changes: comments, their columns, the order of keys and the style of
every other value stay, so the diff is one line per key set (`dvc exp run -S` re-dumps the
file through a YAML library instead, and then re-indents lists, and records an experiment).
The edited file must pass the check stage's checks of params.yaml (tokbin.preflight); when it
does not, params.yaml is left untouched.
"""
from __future__ import annotations

import json
import re
import typing
from pathlib import Path

import yaml

from tokbin import schema
from tokbin.errors import TokbinError
from tokbin.fsio import write_text_atomic
from tokbin.params import Params, parse_params, read_params_text
from tokbin.preflight import params_problems


def set_params(path: Path, assignments: list[str]
               ) -> tuple[list[tuple[str, str, str]], str | None]:
    """Applies "section.key=value" assignments (value: YAML text, e.g. ./sample, [train] or
    "<|endoftext|>", a quoted string: the text inside the quotes); returns (key, old value
    text, new value text) per assignment, and the check's failure that the file had already
    (another key's: a teammate's dataset folder not on this machine), or None."""
    text = original = read_params_text(path)
    changes = []
    for assignment in assignments:
        name, sep, value = assignment.partition("=")
        if not sep or "." not in name:
            raise TokbinError(f"{assignment!r} is not section.key=value (e.g. "
                              "download.dataset=./sample)")
        text, old = _set_value(text, name, _yaml_value(name, value), path)
        changes.append((name, old, value))
    tokenizers = path.parent / "tokenizers"
    problems = params_problems(parse_params(text, path), tokenizers)  # before any write
    if problems:
        try:
            before = params_problems(parse_params(original, path), tokenizers)
        except TokbinError:  # the file did not even parse: every problem is news to it
            before = []
        new = [problem for problem in problems if problem not in before]
        if new:
            raise TokbinError(new[0])  # this edit's, not one the file had before
    write_text_atomic(path, text)
    return changes, problems[0] if problems else None


def _yaml_value(name: str, value: str) -> str:
    """`value` as YAML text for key `name`: quoted where a text key's value would otherwise
    read as something else (a number, true, a comment)."""
    if "\n" in value:
        raise TokbinError(f"{name}: a value set here is one line of YAML, got {value!r}")
    section, _, key = name.partition(".")
    sections = schema.fields_of(Params)
    hint = schema.fields_of(sections[section]).get(key) if section in sections else None
    optional = typing.get_args(hint) == (str, type(None))  # str | None: null stays null
    if hint is str or optional:
        try:
            read = yaml.safe_load(value)
            plain = read == value or (optional and value in ("null", "Null", "NULL", "~"))
            # a quoted YAML string is the text it quotes, as `dvc exp run -S` reads it too
            quoted = len(value) > 1 and value[0] == value[-1] in "'\"" and isinstance(read, str)
        except yaml.YAMLError:
            plain = quoted = False
        if not (plain or quoted):
            return json.dumps(value)  # a JSON string is a double-quoted YAML string
    return value


def _set_value(text: str, name: str, value: str, path: Path) -> tuple[str, str]:
    """`text` with the value of `section.key` replaced by `value`; and the old value's text."""
    section, _, key = name.partition(".")
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines)
                  if re.match(rf"{re.escape(section)}:\s*(#.*)?$", line)), None)
    if start is None:
        raise TokbinError(f"{path} has no section {section}: (sections: "
                          f"{', '.join(schema.fields_of(Params))})")
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"[^\s#]", lines[i])),
               len(lines))
    for i in range(start + 1, end):
        found = re.match(rf"(\s+){re.escape(key)}:(\s*)(.*?)(\r?\n)?$", lines[i])
        if not found:
            continue
        indent, _, rest, newline = found.groups()
        old, comment = _split_comment(rest)
        last = i + 1  # a block value (a list under the key) ends where the indentation does
        if not old:
            while last < end and (lines[last].startswith(indent + " ")
                                  or lines[last].startswith(indent + "-")):
                last += 1
            old = yaml.safe_dump(yaml.safe_load("".join(lines[i + 1:last])),
                                 default_flow_style=True).strip()
        line = f"{indent}{key}: {value}"
        if comment:  # it stays in its column, unless the new value reaches it
            column = found.start(3) + len(rest) - len(comment)
            line = line.ljust(column - 1) + " " + comment
        lines[i:last] = [line + (newline or "\n")]
        return "".join(lines), old
    raise TokbinError(f"{path} has no key {name} (the keys of {section}: "
                      f"{', '.join(schema.fields_of(schema.fields_of(Params)[section]))})")


def _split_comment(rest: str) -> tuple[str, str]:
    """(value text, comment) of what follows `key:` on a line: a comment starts at a # after
    a space, outside quotes."""
    quote = None
    for i, char in enumerate(rest):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or rest[i - 1].isspace()):
            return rest[:i].rstrip(), rest[i:]
    return rest.rstrip(), ""
