#!/usr/bin/env python3
"""Run a command so that /usr/bin/time around this wrapper accounts for its whole process tree.

    treerun.py PEAK_FILE CMD [ARG...]

/usr/bin/time reports the CPU time and peak RSS of the processes its child waited for. PyFlink
starts a JVM that its Python process does not always reap; the JVM's CPU time would then be
missing. This wrapper makes itself a child subreaper (prctl PR_SET_CHILD_SUBREAPER), so every
orphaned descendant is re-parented to it, and waits for all of them before it exits: their
CPU time and RSS count in its rusage, which /usr/bin/time reads.

/usr/bin/time's peak RSS is that of the largest single process. This wrapper also samples the
sum of the RSS of all its descendants every 0.1 s and writes the largest sum (KiB) to PEAK_FILE.
Its own exit status is the command's.
"""

import ctypes
import os
import signal
import sys
import threading

PR_SET_CHILD_SUBREAPER = 36
INTERVAL_S = 0.1


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                with open(f"/proc/{p}/task/{t}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                continue
            out.extend(kids)
            todo.extend(kids)
    return out


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    peak_file, cmd = sys.argv[1], sys.argv[2:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit(f"treerun: prctl failed: {os.strerror(ctypes.get_errno())}")
    me = os.getpid()
    child = os.fork()
    if child == 0:
        try:
            os.execvp(cmd[0], cmd)
        except OSError as e:
            print(f"treerun: {cmd[0]}: {e}", file=sys.stderr)
            os._exit(127)

    peak = [0]
    done = threading.Event()

    def sample():
        while not done.wait(INTERVAL_S):
            peak[0] = max(peak[0], sum(rss_kib(p) for p in descendants(me)))

    threading.Thread(target=sample, daemon=True).start()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda s, _f: os.kill(child, s))

    status = None
    while True:
        try:
            pid, st = os.wait()
        except ChildProcessError:
            break
        if pid == child:
            status = os.waitstatus_to_exitcode(st)
    done.set()
    with open(peak_file, "w") as f:
        f.write(f"{peak[0]}\n")
    if status is None:
        status = 1
    sys.exit(status if status >= 0 else 128 - status)


if __name__ == "__main__":
    main()
