"""Mutation operators for the rule data that cosmic-ray's own operators cannot reach.

cosmic-ray mutates operators, numbers and booleans, at module level too, so
``TABLE_2``'s flags and votes and the limits' constants are mutated by its core
operators. Two kinds of rule data have none of those tokens and would go
unmutated:

* the codecs' state tables, ``TRANSITIONS[state][command] -> next state``
  (``protocol/peer/states.py``, ``protocol/user/states.py``,
  ``protocol/smtp/states.py``; also ``FAILED_PASS`` and ``FAILED_AUTH``):
  :class:`RetargetTransition` sends a command to another state,
  :class:`DropTransition` removes a (state, command) entry;
* the module-level state sets of ``core/decisions.py`` (``NEEDS_BODY``,
  ``REJECTED_RECIPIENTS``, ...): :class:`DropSetMember` removes one member
  from a ``frozenset({...})`` literal.

They are cosmic-ray operators (parso trees, ``mutation_positions`` and
``mutate``) and are registered by ``tests/mutation/run.py`` under the
provider name ``smdp`` (``smdp/RetargetTransition`` and so on).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cosmic_ray.operators.operator import Example, Operator
from parso.tree import Leaf

# parso's trees are typed loosely (parents may be None, most methods are
# unannotated); the operators walk them as ``Any``.
NodeOrLeaf = Any
BaseNode = Any

Position = tuple[tuple[int, int], tuple[int, int]]

#: Module-level names whose value is a transition table ``{state: {command: state}}``.
TABLE_NAMES = ("TRANSITIONS", "FAILED_PASS", "FAILED_AUTH")


def _module_level_target(node: NodeOrLeaf) -> str | None:
    """The name a module-level ``NAME = ...`` / ``NAME: T = ...`` assigns ``node`` to."""
    parent = node.parent
    while parent is not None and parent.type not in ("expr_stmt", "file_input"):
        node, parent = parent, parent.parent
    if parent is None or parent.type != "expr_stmt":
        return None
    stmt = parent
    if stmt.parent is None or stmt.parent.parent is None or stmt.parent.parent.type != "file_input":
        return None
    target = stmt.children[0]
    return target.value if isinstance(target, Leaf) and target.type == "name" else None


def _table_entry(node: NodeOrLeaf) -> tuple[BaseNode, int] | None:
    """(inner dict body, index of ``node`` in it) when ``node`` is a key or value
    of a row of a transition table; None otherwise."""
    inner = node.parent
    if inner is None or inner.type != "dictorsetmaker":
        return None
    atom = inner.parent
    outer = atom.parent if atom is not None else None
    if atom is None or atom.type != "atom" or outer is None or outer.type != "dictorsetmaker":
        return None
    if _module_level_target(outer) not in TABLE_NAMES:
        return None
    return inner, inner.children.index(node)


def _row_state(inner: BaseNode) -> str | None:
    """The state (alias) whose row ``inner`` is: the key before its ``{``."""
    atom = inner.parent
    outer = atom.parent
    index = outer.children.index(atom)
    key = outer.children[index - 2] if index >= 2 else None
    return key.value if isinstance(key, Leaf) and key.type == "name" else None


def _state_aliases(node: NodeOrLeaf, name: str) -> list[str]:
    """The names of the module-level tuple assignment that defines ``name``
    (``_G, _R, ... = (PeerState.GREETED, ...)``), in their order."""
    root = node.get_root_node()
    for stmt in _module_statements(root):
        target = stmt.children[0]
        if target.type in ("exprlist", "testlist_star_expr"):
            names = [c.value for c in target.children if isinstance(c, Leaf) and c.type == "name"]
            if name in names:
                return names
    return []


def _module_statements(root: Any) -> Iterator[BaseNode]:
    for simple in root.children:
        if simple.type == "simple_stmt":
            for stmt in simple.children:
                if stmt.type == "expr_stmt":
                    yield stmt


class RetargetTransition(Operator):  # type: ignore[misc]
    """``"RCPT": _TR`` becomes ``"RCPT": _TS``: a command leads to a wrong state."""

    def _alternatives(self, node: NodeOrLeaf) -> list[str]:
        if not (isinstance(node, Leaf) and node.type == "name"):
            return []
        entry = _table_entry(node)
        if entry is None:
            return []
        inner, index = entry
        if index == 0 or inner.children[index - 1].type != "operator" \
                or getattr(inner.children[index - 1], "value", "") != ":":
            return []
        # Two wrong targets per entry, not every state: the row's own state
        # (the command would leave the state alone) and the state declared
        # after the right one. Every other state would multiply the run time
        # by three for mutants that these two already stand for.
        states = _state_aliases(node, node.value)
        row = _row_state(inner)
        picks: list[str] = []
        if row is not None and row != node.value:
            picks.append(row)
        start = states.index(node.value)
        for step in range(1, len(states)):
            other = states[(start + step) % len(states)]
            if other not in picks and other != node.value:
                picks.append(other)
                break
        return picks

    def mutation_positions(self, node: NodeOrLeaf) -> Iterator[Position]:
        for _ in self._alternatives(node):
            yield (node.start_pos, node.end_pos)

    def mutate(self, node: NodeOrLeaf, index: int) -> NodeOrLeaf:
        assert isinstance(node, Leaf)
        node.value = self._alternatives(node)[index]
        return node

    @classmethod
    def examples(cls) -> tuple[Example, ...]:
        return ()


class DropTransition(Operator):  # type: ignore[misc]
    """Removes one (state, command) entry: its key is renamed to a verb no one sends."""

    def mutation_positions(self, node: NodeOrLeaf) -> Iterator[Position]:
        if not isinstance(node, Leaf) or node.type not in ("string", "name"):
            return
        entry = _table_entry(node)
        if entry is None:
            return
        inner, index = entry
        following = inner.children[index + 1] if index + 1 < len(inner.children) else None
        if following is not None and getattr(following, "value", "") == ":":
            yield (node.start_pos, node.end_pos)

    def mutate(self, node: NodeOrLeaf, index: int) -> NodeOrLeaf:
        assert isinstance(node, Leaf)
        word = node.value.strip("\"'") if node.type == "string" else node.value
        node.value = f'"{word}~dropped"'
        return node

    @classmethod
    def examples(cls) -> tuple[Example, ...]:
        return ()


def _set_members(node: NodeOrLeaf) -> list[NodeOrLeaf] | None:
    """The members of ``node``'s set literal when ``node`` is one member of a
    ``{A.X, A.Y, ...}`` inside a module-level ``frozenset(...)``."""
    body = node.parent
    if body is None or body.type != "dictorsetmaker" or node.type != "atom_expr":
        return None
    if any(getattr(c, "value", "") == ":" for c in body.children):
        return None
    target = _module_level_target(body)
    if target is None:
        return None
    stmt = body
    while stmt.type != "expr_stmt":
        stmt = stmt.parent
    if "frozenset(" not in stmt.get_code():
        return None
    members = [c for c in body.children if c.type == "atom_expr"]
    return members if len(members) > 1 else None


class DropSetMember(Operator):  # type: ignore[misc]
    """``frozenset({A.X, A.Y, A.Z})`` loses one member: ``{A.Y, A.Y, A.Z}``."""

    def mutation_positions(self, node: NodeOrLeaf) -> Iterator[Position]:
        if _set_members(node) is not None:
            yield (node.start_pos, node.end_pos)

    def mutate(self, node: NodeOrLeaf, index: int) -> NodeOrLeaf:
        members = _set_members(node)
        assert members is not None
        other = members[(members.index(node) + 1) % len(members)]
        mine, theirs = node.get_last_leaf(), other.get_last_leaf()
        mine.value = theirs.value
        return node

    @classmethod
    def examples(cls) -> tuple[Example, ...]:
        return ()


_OPERATORS: dict[str, type[Operator]] = {
    "RetargetTransition": RetargetTransition,
    "DropTransition": DropTransition,
    "DropSetMember": DropSetMember,
}


class Provider:
    """cosmic-ray's operator-provider protocol: iterate names, look one up."""

    def __iter__(self) -> Iterator[str]:
        return iter(_OPERATORS)

    def __getitem__(self, name: str) -> type[Operator]:
        return _OPERATORS[name]
