"""YAML in and out: a safe loader that keeps ``20:40`` as text and reports duplicate keys."""

from __future__ import annotations

import logging
from typing import Any

import yaml

from ..errors import MuseredError

logger = logging.getLogger("musered.settings")


def parse_yaml(text: str, where: str = "settings") -> Any:
    """Parse YAML text safely; a syntax error is one line with line and column (1-based)."""
    loader = _Loader(text)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        position = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        context = ""
        if exc.context and exc.problem:
            context = " ".join(exc.context.split())
            if exc.context_mark is not None and exc.context_mark is not mark:
                context += f" started at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1}"
            context = f" ({context})"
        raise MuseredError(f"{where}: YAML syntax error{position}: {problem}{context}") from None
    except yaml.YAMLError as exc:
        raise MuseredError(f"{where}: YAML error: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()
    for key, line in loader.duplicates:
        logger.warning("%s: line %d: duplicate key %r, the last value wins", where, line, key)
    return data


class _Loader(yaml.SafeLoader):
    """Safe loader that keeps ``20:40`` as text and records duplicate keys.

    YAML 1.1 reads ``20:40`` as the base-60 integer 1240, which would turn a night cutoff
    into nonsense; musered has no use for base-60 numbers, so they stay strings.
    """

    def __init__(self, stream: str):
        super().__init__(stream)
        self.duplicates: list[tuple[str, int]] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    self.duplicates.append((key_node.value, key_node.start_mark.line + 1))
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def _construct_no_sexagesimal(base):
    def construct(loader: yaml.SafeLoader, node: yaml.ScalarNode):
        if ":" in node.value:
            return loader.construct_scalar(node)
        return base(loader, node)

    return construct


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_no_sexagesimal(yaml.SafeLoader.construct_yaml_int))
_Loader.add_constructor(
    "tag:yaml.org,2002:float", _construct_no_sexagesimal(yaml.SafeLoader.construct_yaml_float)
)


def dump_yaml(value: Any) -> str:
    """YAML text of a settings (sub)tree, in the file's key order, without anchors."""
    return yaml.dump(
        value, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100
    )


class _Dumper(yaml.SafeDumper):
    """Dump shared subtrees (YAML aliases in the input) in full, without &id001 anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True
