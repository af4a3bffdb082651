"""certmq.broker.commit_gate: a reply waits until every source has committed what it acknowledges."""

from __future__ import annotations

from certmq.broker.commit_gate import CommitGate, OutOfOrderCommits


def test_the_committed_prefix_grows_only_when_the_first_pending_piece_completes() -> None:
    commits = OutOfOrderCommits()
    first, second, third = commits.append(), commits.append(), commits.append()
    commits.complete(third)
    commits.complete(second)
    assert commits.committed == 0
    commits.complete(first)
    assert commits.committed == 3
    commits.complete(first)  # completing twice changes nothing
    assert (commits.appended, commits.committed) == (3, 3)


def test_a_mark_passes_when_every_source_has_committed_up_to_it() -> None:
    journal, cluster = OutOfOrderCommits(), OutOfOrderCommits()
    gate = CommitGate([journal, cluster])
    journal.append()
    message = cluster.append()
    mark = gate.mark()
    journal.complete(1)
    assert not gate.passed(mark)
    # Work appended after the mark does not hold it back.
    later = journal.append()
    cluster.complete(message)
    assert gate.passed(mark)
    assert not gate.passed(gate.mark())
    journal.complete(later)
    assert gate.passed(gate.mark())


def test_a_waiting_reply_is_woken_once_whichever_source_commits() -> None:
    journal, cluster = OutOfOrderCommits(), OutOfOrderCommits()
    gate = CommitGate([journal, cluster])
    wakes: list[str] = []
    gate.when_committed(lambda: wakes.append("woken"))
    journal.complete(journal.append())
    cluster.complete(cluster.append())
    assert wakes == ["woken"]


def test_appended_changes_whenever_any_source_appends() -> None:
    journal, cluster = OutOfOrderCommits(), OutOfOrderCommits()
    gate = CommitGate([journal, cluster])
    before = gate.appended
    cluster.append()
    assert gate.appended != before
