"""Parsing a config document safely: a YAML loader that refuses what a hostile or broken file could do
to the process (the file itself is read by serving.configread, bounded, regular files only).

- Aliases may add at most ALIAS_EXPANSION_BUDGET nodes to the document (a 528-byte "billion laughs"
  expands to 387 million strings), and a recursive alias is refused.
- Collections nest at most MAX_DEPTH levels (20 KB of `[[[[` was a RecursionError).
- A key appears once per mapping: a second `endpoints:` is refused with both lines, not last-wins.

yaml.safe_load was the same pure-Python loader, so parsing costs what it did.
"""
from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

from providers.secrets import shown

MAX_DEPTH = 64
ALIAS_EXPANSION_BUDGET = 10_000


class GatewayLoader(yaml.SafeLoader):
    """yaml.SafeLoader with limits on nesting and alias expansion, and no duplicate keys.

    The pure-Python loader, not libyaml's CSafeLoader: the composer's steps must be overridable, and
    config documents are small."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise ComposerError(None, None, f"collections nest deeper than {MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> yaml.Node | None:
        node = super().compose_document()
        if node is not None:
            _check_expansion(node)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base`: keys written beside it override the merged ones, as YAML says
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:
                continue  # an unhashable key: SafeConstructor refuses it with its own message
            if first is not key_node:
                raise ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"duplicate key {shown(key)} (first at line {first.start_mark.line + 1}); "
                    "a key may appear only once", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a document whose aliases add more than ALIAS_EXPANSION_BUDGET nodes once expanded, nest
    deeper than MAX_DEPTH once expanded, or refer to a collection from inside itself. Each distinct node
    is visited once, without recursion."""
    done: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded size, expanded depth)
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, list[yaml.Node], int]] = []  # a node, its children, the next one to visit

    def enter(node: yaml.Node) -> None:
        if id(node) in open_nodes:
            raise ComposerError(None, None, "an alias refers to a collection from inside itself", node.start_mark)
        open_nodes.add(id(node))
        stack.append((node, _children(node), 0))

    enter(root)
    while stack:
        node, children, index = stack[-1]
        if index < len(children):
            stack[-1] = (node, children, index + 1)
            if id(children[index]) not in done:
                enter(children[index])
            continue
        stack.pop()
        open_nodes.discard(id(node))
        parts = [done[id(child)] for child in children]
        depth = 1 + max((d for _, d in parts), default=0)
        if depth > MAX_DEPTH:
            raise ComposerError(None, None, f"with its aliases expanded, collections nest deeper than {MAX_DEPTH} "
                                "levels", node.start_mark)
        done[id(node)] = (1 + sum(s for s, _ in parts), depth)
    size, _ = done[id(root)]
    if size - len(done) > ALIAS_EXPANSION_BUDGET:
        raise ComposerError(None, None, f"aliases expand the document by more than {ALIAS_EXPANSION_BUDGET} "
                            "nodes (a YAML bomb?)", root.start_mark)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def load_yaml(text: str) -> Any:
    """Parse one YAML document with GatewayLoader. Raises yaml.YAMLError."""
    loader = GatewayLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def compose_yaml(text: str) -> yaml.Node | None:
    """The node tree of one document (with lines), under the same limits. Raises yaml.YAMLError."""
    loader = GatewayLoader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()
