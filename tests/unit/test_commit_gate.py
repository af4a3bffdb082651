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


def test_a_waiting_reply_is_woken_once_every_source_has_passed_its_mark() -> None:
    journal, cluster = OutOfOrderCommits(), OutOfOrderCommits()
    gate = CommitGate([journal, cluster])
    first_record, message = journal.append(), cluster.append()
    mark = gate.mark()
    wakes: list[str] = []

    def release() -> None:
        # As a connection does: check, and wait again when some source has not passed.
        if gate.passed(mark):
            wakes.append("released")
        else:
            gate.when_committed(release, mark)

    gate.when_committed(release, mark)
    journal.complete(first_record)
    assert wakes == []
    cluster.complete(message)
    assert wakes == ["released"]


def test_only_the_replies_whose_work_is_committed_are_woken() -> None:
    commits = OutOfOrderCommits()
    numbers = [commits.append() for _ in range(100)]
    woken: list[int] = []
    for number in numbers:
        commits.when_committed(lambda number=number: woken.append(number), number)
    commits.complete(numbers[0])
    assert woken == [1]
    for number in reversed(numbers[1:]):
        commits.complete(number)
    assert woken == numbers
    # Waiting for what is committed already: at once.
    commits.when_committed(lambda: woken.append(0), 50)
    assert woken[-1] == 0


def test_appended_changes_whenever_any_source_appends() -> None:
    journal, cluster = OutOfOrderCommits(), OutOfOrderCommits()
    gate = CommitGate([journal, cluster])
    before = gate.appended
    cluster.append()
    assert gate.appended != before
