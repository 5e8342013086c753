"""The transition-table machinery (nodes/protocols/fsm.py) and the 2PC/3PC tables built on it."""

from __future__ import annotations

import pytest

from nodes.protocols.fsm import IllegalTransition, Table, combined_mermaid, to_dot, to_mermaid
from nodes.protocols.threepc import ThreePC
from nodes.protocols.twopc import TwoPC

DOOR = Table("door", "closed", [
    ("closed", "open", "opened", ("creak",)),
    ("opened", "close", "closed", ("slam", "lock")),
    ("opened", "wave", "opened", ()),
], final=("closed",))


def test_step_gives_next_state_and_actions_in_order() -> None:
    t = DOOR.step("opened", "close")
    assert (t.source, t.event, t.target, t.actions) == ("opened", "close", "closed", ("slam", "lock"))
    assert DOOR.step("opened", "wave").actions == ()


@pytest.mark.parametrize("state,event", [("closed", "close"), ("opened", "open"), ("ajar", "open"),
                                         ("closed", "wave")])
def test_unlisted_transition_is_illegal(state: str, event: str) -> None:
    assert not DOOR.allows(state, event)
    with pytest.raises(IllegalTransition) as e:
        DOOR.step(state, event)
    assert (e.value.table, e.value.state, e.value.event) == ("door", state, event)
    assert "door" in str(e.value) and event in str(e.value)


def test_a_row_listed_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="listed twice"):
        Table("t", "a", [("a", "x", "b", ()), ("a", "x", "c", ())])


def test_states_and_events_in_first_mention_order() -> None:
    assert DOOR.states == ["closed", "opened"]
    assert DOOR.events == ["open", "close", "wave"]


def test_mermaid_lists_every_transition_start_and_final() -> None:
    text = to_mermaid(DOOR)
    lines = text.splitlines()
    assert lines[0] == "stateDiagram-v2"
    assert "    [*] --> closed" in lines
    assert "    opened --> closed: close / slam, lock" in lines
    assert "    opened --> opened: wave" in lines
    assert "    closed --> [*]" in lines


def test_mermaid_prefix_namespaces_states() -> None:
    text = to_mermaid(DOOR, prefix="d_", header=False)
    assert "stateDiagram" not in text
    assert 'state "opened" as d_opened' in text
    assert "d_closed --> d_opened: open / creak" in text


def test_dot_lists_every_transition() -> None:
    text = to_dot(DOOR)
    assert text.startswith('digraph "door" {')
    assert '"opened" -> "closed" [label="close / slam, lock"];' in text
    assert '"closed" [shape=doublecircle];' in text
    assert text.rstrip().endswith("}")


def test_combined_keeps_roles_apart() -> None:
    text = combined_mermaid([("coordinator", DOOR), ("participant", DOOR)])
    assert "    state coordinator {" in text
    assert "c_opened --> c_closed" in text and "p_opened --> p_closed" in text


@pytest.mark.parametrize("core", [TwoPC, ThreePC])
def test_every_action_of_every_table_has_a_method(core: type) -> None:
    for table in (core.coordinator_table, core.participant_table):
        for t in table.transitions:
            for action in t.actions:
                assert callable(getattr(core, f"act_{action}", None)), f"{table.name}: {action}"


@pytest.mark.parametrize("core", [TwoPC, ThreePC])
def test_diagram_is_generated_from_both_tables(core: type) -> None:
    text = core.diagram()
    assert text.startswith("stateDiagram-v2")
    for prefix, table in (("c_", core.coordinator_table), ("p_", core.participant_table)):
        for t in table.transitions:
            assert f"{prefix}{t.source} --> {prefix}{t.target}: {t.event}" in text


@pytest.mark.parametrize("core", [TwoPC, ThreePC])
def test_decided_states_are_final(core: type) -> None:
    """Nothing leaves committed or aborted: the table itself forbids changing an outcome."""
    for table in (core.coordinator_table, core.participant_table):
        for t in table.transitions:
            if t.source in ("committed", "aborted"):
                assert t.target == t.source, f"{table.name}: {t}"
        assert not table.allows("committed", "global_abort") and not table.allows("aborted", "global_commit")
        assert not table.allows("committed", "abort") and not table.allows("aborted", "do_commit")


@pytest.mark.parametrize("core,doc", [(TwoPC, "twopc.md"), (ThreePC, "threepc.md")])
def test_docs_show_the_diagrams_the_tables_make(core: type, doc: str) -> None:
    """docs/<protocol>.md embeds each role's to_mermaid(table) verbatim: a changed table
    must change the docs (paste the new output of to_mermaid into the ```mermaid block)."""
    from pathlib import Path
    text = (Path(__file__).resolve().parent.parent / "docs" / doc).read_text(encoding="utf-8")
    for table in (core.coordinator_table, core.participant_table):
        assert "```mermaid\n" + to_mermaid(table) + "```" in text, table.name
