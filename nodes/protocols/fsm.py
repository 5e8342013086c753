"""Transition tables for finite protocols (2PC, 3PC), in the spirit of h11's ``_state.py``.

A :class:`Table` maps ``(state, event)`` to a :class:`Transition`: the next
state and the names of the actions the core runs, in order. The table is the
one authority on what may happen: a core asks it before it changes anything,
an event the table does not list raises :class:`IllegalTransition`, and the
diagrams in the docs are generated from it (:func:`to_mermaid`,
:func:`to_dot`), so the picture cannot drift from the code.

Actions are plain names; the core maps each to a method (``act_<name>``).
Keeping them as data lets a test walk every row of a table and lets the
diagram show what each edge does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class IllegalTransition(Exception):
    """``event`` is not allowed in ``state`` by ``table``.

    nodes/ cannot import lab/ (so not lab.errors.ProtocolError); a core that
    meets one because of a message from the network drops the message and
    traces it, as DESIGN.md's rule 6 asks.
    """

    def __init__(self, table: str, state: str, event: str) -> None:
        super().__init__(f"{table}: event {event!r} is not allowed in state {state!r}")
        self.table, self.state, self.event = table, state, event


@dataclass(frozen=True)
class Transition:
    source: str
    event: str
    target: str
    actions: tuple[str, ...] = ()


Row = tuple[str, str, str, Sequence[str]]   # (state, event, next state, actions)


class Table:
    """One role's transition table.

    ``rows`` lists ``(state, event, next_state, actions)``; ``final`` names the
    states in which the role has decided (drawn as ending in the diagrams).
    """

    def __init__(self, name: str, initial: str, rows: Iterable[Row],
                 final: Iterable[str] = ()) -> None:
        self.name = name
        self.initial = initial
        self.final = tuple(final)
        self._rows: dict[tuple[str, str], Transition] = {}
        for state, event, target, actions in rows:
            key = (state, event)
            if key in self._rows:
                raise ValueError(f"{name}: ({state}, {event}) is listed twice")
            self._rows[key] = Transition(state, event, target, tuple(actions))

    def step(self, state: str, event: str) -> Transition:
        """The transition for ``event`` in ``state``; raises :class:`IllegalTransition`."""
        try:
            return self._rows[(state, event)]
        except KeyError:
            raise IllegalTransition(self.name, state, event) from None

    def allows(self, state: str, event: str) -> bool:
        return (state, event) in self._rows

    @property
    def transitions(self) -> list[Transition]:
        return list(self._rows.values())

    @property
    def states(self) -> list[str]:
        """Every state, in first-mention order starting with the initial one."""
        seen = [self.initial]
        for t in self._rows.values():
            for s in (t.source, t.target):
                if s not in seen:
                    seen.append(s)
        return seen

    @property
    def events(self) -> list[str]:
        out: list[str] = []
        for t in self._rows.values():
            if t.event not in out:
                out.append(t.event)
        return out


def _label(t: Transition) -> str:
    return f"{t.event} / {', '.join(t.actions)}" if t.actions else t.event


def to_mermaid(table: Table, *, prefix: str = "", header: bool = True, indent: str = "    ") -> str:
    """The table as a Mermaid ``stateDiagram-v2``.

    ``prefix`` namespaces the state ids (``c_wait``) so that two roles can share
    one diagram as composite states; ``header=False`` leaves out the first line
    for that use.
    """
    lines = ["stateDiagram-v2"] if header else []
    for s in table.states:
        if prefix:
            lines.append(f'{indent}state "{s}" as {prefix}{s}')
    lines.append(f"{indent}[*] --> {prefix}{table.initial}")
    for t in table.transitions:
        lines.append(f"{indent}{prefix}{t.source} --> {prefix}{t.target}: {_label(t)}")
    for s in table.final:
        lines.append(f"{indent}{prefix}{s} --> [*]")
    return "\n".join(lines) + "\n"


def to_dot(table: Table) -> str:
    """The table as a Graphviz digraph (``dot -Tsvg``)."""
    def q(s: str) -> str:
        return '"' + s.replace('"', r"\"") + '"'
    lines = [f"digraph {q(table.name)} {{", "    rankdir=LR;",
             '    node [shape=ellipse]; __start [shape=point];',
             f"    __start -> {q(table.initial)};"]
    for s in table.final:
        lines.append(f"    {q(s)} [shape=doublecircle];")
    for t in table.transitions:
        lines.append(f"    {q(t.source)} -> {q(t.target)} [label={q(_label(t))}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def combined_mermaid(tables: Sequence[tuple[str, Table]]) -> str:
    """Several roles' tables in one Mermaid diagram, one composite state per role."""
    lines = ["stateDiagram-v2"]
    for role, table in tables:
        prefix = f"{role[:1]}_"
        lines.append(f"    state {role} {{")
        lines.append(to_mermaid(table, prefix=prefix, header=False, indent="        ").rstrip("\n"))
        lines.append("    }")
    return "\n".join(lines) + "\n"
