"""The host's change feed, with threads and a fake clock: what a watcher is told and when."""

from __future__ import annotations

import threading
import time

from counters.change_feed import ChangeFeed


def test_changes_after_a_number_in_commit_order() -> None:
    feed = ChangeFeed()
    incarnation, last = feed.watch(["A", "B"])
    assert last == 0
    feed.publish([("A", [1, 1]), ("B", [5, 1])])
    feed.publish([("A", [2, 2])])
    assert feed.wait(incarnation, 0, [], 0) == (
        incarnation,
        3,
        [("A", [1, 1]), ("B", [5, 1]), ("A", [2, 2])],
    )
    assert feed.wait(incarnation, 2, [], 0) == (incarnation, 3, [("A", [2, 2])])
    assert feed.wait(incarnation, 3, [], 0) == (incarnation, 3, [])


def test_a_waiter_wakes_at_the_first_change() -> None:
    feed = ChangeFeed()
    incarnation, _ = feed.watch(["A"])
    answers = []
    waiter = threading.Thread(target=lambda: answers.append(feed.wait(incarnation, 0, ["A"], 30)))
    waiter.start()
    time.sleep(0.05)
    assert answers == []  # still waiting
    feed.publish([("A", [1, 1])])
    waiter.join(timeout=5)
    assert answers == [(incarnation, 1, [("A", [1, 1])])]


def test_closing_wakes_every_waiter() -> None:
    feed = ChangeFeed()
    incarnation, _ = feed.watch(["A"])
    threads = [
        threading.Thread(target=feed.wait, args=(incarnation, 0, ["A"], 30)) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    feed.close()
    for thread in threads:
        thread.join(timeout=5)
        assert not thread.is_alive()


def test_another_incarnation_or_a_gap_means_resynchronise() -> None:
    feed = ChangeFeed(capacity=3)
    incarnation, _ = feed.watch(["A"])
    assert feed.wait("an old incarnation", 0, [], 0) == (incarnation, 0, None)
    assert feed.wait(None, 0, [], 0) == (incarnation, 0, None)
    feed.publish([("A", [n, n]) for n in range(1, 6)])  # 1 and 2 fell out of the log
    assert feed.wait(incarnation, 1, [], 0) == (incarnation, 5, None)
    assert feed.wait(incarnation, 2, [], 0) == (
        incarnation,
        5,
        [("A", [3, 3]), ("A", [4, 4]), ("A", [5, 5])],
    )
    assert feed.wait(incarnation, 9, [], 0) == (incarnation, 5, None)  # a number never given
    assert ChangeFeed().incarnation != incarnation


def test_registrations_expire_unless_renewed() -> None:
    now = [0.0]
    feed = ChangeFeed(registration=60, clock=lambda: now[0])
    incarnation, _ = feed.watch(["A", "B"])
    now[0] = 50
    feed.wait(incarnation, 0, ["A"], 0)  # renews A only
    now[0] = 61
    feed.expire()
    assert set(feed.watched) == {"A"}
    now[0] = 111
    feed.expire()
    assert feed.watched == {}


def test_a_watcher_whose_registration_lapsed_resynchronises() -> None:
    now = [0.0]
    feed = ChangeFeed(registration=60, clock=lambda: now[0])
    incarnation, _ = feed.watch(["A"])
    now[0] = 75  # the watcher's process stalled
    feed.expire()
    feed.publish([])  # a change of A now would not be published: A is not watched
    assert feed.wait(incarnation, 0, ["A"], 0) == (incarnation, 0, None)
    assert feed.wait(incarnation, 0, ["A"], 0) == (incarnation, 0, [])  # registered again


def test_a_watchers_newer_call_or_its_release_answers_its_older_one() -> None:
    feed = ChangeFeed()
    incarnation, _ = feed.watch(["A"])
    answers: list[object] = []

    def wait(watcher: str) -> None:
        answers.append((watcher, feed.wait(incarnation, 0, ["A"], 30, watcher)))

    first = threading.Thread(target=wait, args=("gateway-1",))
    first.start()
    time.sleep(0.05)
    other = threading.Thread(target=wait, args=("gateway-2",))  # another watcher: no effect
    other.start()
    time.sleep(0.05)
    assert answers == []
    second = threading.Thread(target=wait, args=("gateway-1",))
    second.start()
    first.join(timeout=5)
    assert answers == [("gateway-1", (incarnation, 0, []))]  # the older call, at once
    feed.release("gateway-1")
    second.join(timeout=5)
    assert len(answers) == 2
    assert other.is_alive()  # still waiting for a change
    feed.close()
    other.join(timeout=5)
