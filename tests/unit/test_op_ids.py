"""Operation ids: distinct across threads and forked processes, each with a secret part."""

from __future__ import annotations

import os
import re
import threading

from counters.op_ids import ID_LENGTH, new_op_id

URL_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{32}")
PER_PROCESS = 5000  # more than one pool of 4096 ids: every child draws a second pool too


def test_an_id_is_32_url_safe_characters_in_the_order_made_with_a_secret_of_its_own() -> None:
    ids = [new_op_id() for _ in range(PER_PROCESS)]
    assert ID_LENGTH == 32
    assert [i for i in ids if not URL_SAFE_ID.fullmatch(i)] == []
    assert len(set(ids)) == PER_PROCESS
    # One process's ids sort in the order made (a host's index takes them at one point)...
    assert sorted(ids) == ids
    assert len({i[:12] for i in ids}) == 1
    # ...and each carries 60 bits of its own that no other id tells.
    assert len({i[-10:] for i in ids}) == PER_PROCESS


def test_forked_children_never_make_their_parents_or_each_others_ids() -> None:
    before = [new_op_id() for _ in range(10)]  # the parent's pool is warm, most of it unused
    children: list[tuple[int, int]] = []
    for _ in range(3):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: its ids to the pipe, and out without pytest's clean-up
            code = 1
            try:
                os.close(read_end)
                data = "\n".join(new_op_id() for _ in range(PER_PROCESS)).encode()
                with os.fdopen(write_end, "wb") as out:
                    out.write(data)
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        children.append((pid, read_end))
    made: dict[str, list[str]] = {}
    for index, (pid, read_end) in enumerate(children):
        with os.fdopen(read_end, "rb") as pipe:
            made[f"child {index}"] = pipe.read().decode().split("\n")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    made["parent after the forks"] = [new_op_id() for _ in range(PER_PROCESS)]
    for who, ids in made.items():
        assert len(ids) == PER_PROCESS, who
        assert [i for i in ids if not URL_SAFE_ID.fullmatch(i)] == [], who
    prefixes = {ids[0][:12] for ids in [before, *made.values()]}
    assert len(prefixes) == 4, "a forked child keeps its parent's prefix"  # parent, 3 children
    every = [i for ids in [before, *made.values()] for i in ids]
    assert len(every) == 10 + 4 * PER_PROCESS
    assert len(every) - len(set(every)) == 0, "ids made more than once"


def test_ids_made_by_many_threads_at_once_are_distinct() -> None:
    threads, per_thread = 8, 20_000  # ~40 pools drawn, often by two threads at once
    made: list[list[str]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads)

    def make(into: list[str]) -> None:
        start.wait()
        into.extend(new_op_id() for _ in range(per_thread))

    workers = [threading.Thread(target=make, args=(ids,)) for ids in made]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    every = [i for ids in made for i in ids]
    assert len(every) == threads * per_thread
    assert len(every) - len(set(every)) == 0, "ids made more than once"
    assert [i for i in every if not URL_SAFE_ID.fullmatch(i)] == []
