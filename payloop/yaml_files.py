"""Configuration files in YAML (the routing file, the risk rules file): one exact loader, and errors that name the
file, the line and the field.

The loader keeps numbers exact: unquoted decimals such as `1.4` stay the string "1.4" (no floats are ever built),
integers stay integers, and only `true`/`false` are booleans — so the country `NO` stays "NO" (YAML 1.1 would make
it False). A key given twice in one mapping is an error, not a silent overwrite.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import ValidationError

# A pydantic-style location inside the document: ("rules", 3, "when", "amount_eur").
Loc = tuple[Any, ...]


@dataclass(frozen=True)
class Issue:
    line: int | None
    field: str
    message: str


class ConfigFileError(ValueError):
    """A configuration file that cannot be used; str() has one `file:line: field: message` line per problem."""

    what: ClassVar[str] = "configuration file"  # "invalid <what> <source>"

    def __init__(self, source: str, issues: list[Issue]) -> None:
        self.source = source
        self.issues = issues
        lines = [f"{source}:{i.line if i.line is not None else '?'}: {i.field or '(file)'}: {i.message}"
                 for i in issues]
        super().__init__(f"invalid {self.what} {source}:\n  " + "\n  ".join(lines))


class _ExactLoader(yaml.SafeLoader):
    """SafeLoader without floats (decimals stay strings) and with only true/false as booleans."""


_ExactLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag not in ("tag:yaml.org,2002:float", "tag:yaml.org,2002:bool")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ExactLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|false)$"), list("tf"))


@dataclass(frozen=True)
class YamlDocument:
    """A parsed file: its data, and its node tree to find the line of any location in it."""

    data: dict[str, Any]
    root: yaml.Node

    def line_of(self, loc: Loc) -> int:
        return line_of(self.root, loc)

    def issues(self, problems: list[tuple[Loc, str]]) -> list[Issue]:
        """Issues for (location, message) problems found by checks after validation."""
        return [Issue(self.line_of(loc), field_name(loc), message) for loc, message in problems]

    def validation_issues(self, error: ValidationError) -> list[Issue]:
        return [Issue(self.line_of(e["loc"]), field_name(e["loc"]), _message(e)) for e in error.errors()]


def read_file(path: Path, error: type[ConfigFileError]) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as err:
        raise error(str(path), [Issue(None, "", f"cannot read the file: {err.strerror or err}")]) from None


def parse_mapping(text: str, source: str, error: type[ConfigFileError], expected: str) -> YamlDocument:
    """The document as a mapping, read exactly; `expected` ends "the file must be a mapping with …"."""
    loader = _ExactLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            raise error(source, [Issue(1, "", "the file is empty")])
        issues = _duplicate_keys(root)
        if issues:
            raise error(source, issues)
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else None
        raise error(source, [Issue(line, "", f"not valid YAML: {err.problem or err}")]) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise error(source, [Issue(root.start_mark.line + 1, "", f"the file must be a mapping with {expected}")])
    return YamlDocument(data, root)


def _message(error: dict[str, Any]) -> str:
    message = str(error.get("msg", "invalid value"))
    return message.removeprefix("Value error, ")


def field_name(loc: Loc) -> str:
    """("rules", 3, "when") → "rules[3].when"."""
    name = ""
    for part in loc:
        if isinstance(part, int):
            name += f"[{part}]"
        elif part == "[key]":
            name += " (key)"
        else:
            name += f".{part}" if name else str(part)
    return name


def line_of(root: yaml.Node, loc: Loc) -> int:
    """The 1-based line of the YAML node a pydantic/validation location points at (its nearest existing parent
    when the field is missing; the key's line for a mapping entry)."""
    node, line = root, root.start_mark.line
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            entry = next(((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(part)),
                         None)
            if entry is None:
                break
            node, line = entry[1], entry[0].start_mark.line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line
        else:
            break
    return line + 1


def _duplicate_keys(node: yaml.Node, path: str = "") -> list[Issue]:
    issues: list[Issue] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            here = f"{path}.{name}" if path else name
            if name in seen:
                issues.append(Issue(key.start_mark.line + 1, here, "duplicate key"))
            seen.add(name)
            issues += _duplicate_keys(value, here)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            issues += _duplicate_keys(item, f"{path}[{index}]")
    return issues
