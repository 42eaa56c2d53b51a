#!/usr/bin/env python3
"""tools/gdb/ringfiber.py on a live process and on a core file it made.

    check_gdb.py --target PATH --helper tools/gdb/ringfiber.py --core DIR

gdb runs the target (tests/gdb/gdb_target.c) to its breakpoint, lists the
tasks, walks a suspended task's stack, and writes a core file (gcore);
a second gdb reads the core file and must say the same. Then, where the
kernel writes core files to a file (core_pattern is not a pipe), the
target aborts at the same point with the default stack guards, and gdb
must say the same of the kernel's core. Exit 0 when every check passed,
1 otherwise, 77 (skipped) without gdb.
"""
import glob
import resource
import argparse
import os
import re
import shutil
import subprocess
import sys

failures = []


def check(cond, what):
    print(("ok: " if cond else "FAIL: ") + what, flush=True)
    if not cond:
        failures.append(what)


def gdb(args, commands):
    cmd = ["gdb", "-nx", "-batch", *[x for c in commands for x in ("-ex", c)],
           *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    return r.stdout + r.stderr


def check_listing(out, where):
    wants = [
        (r"task 1 'task-1' running; runs main_task", "the main task running"),
        (r"task 2 'deep' waiting [0-9.]+ s: event 0x[0-9a-f]+; runs deep_one",
         "the deep task in an event wait"),
        (r"task 3 'sleeper' waiting [0-9.]+ s: sleep until [0-9.]+ s",
         "the sleeper in a sleep"),
        (r"task 4 'holder' waiting [0-9.]+ s: event 0x", "the holder"),
        (r"task 5 'locker' waiting [0-9.]+ s: mutex 0x[0-9a-f]+ held by "
         r"task 4 'holder'", "the locker in a mutex wait, and who holds it"),
        (r"task 6 'receiver' waiting [0-9.]+ s: recv fd \d+",
         "the receiver in a recv"),
        (r"spawned from main_task", "where they were spawned"),
    ]
    for pattern, what in wants:
        check(re.search(pattern, out) is not None, f"{where}: {what}")


def check_backtrace(out, where):
    frames = re.findall(r"^#(\d+)\s+(?:0x[0-9a-f]+ in )?(\w+)", out, re.M)
    names = [n for _, n in frames]
    order = [n for n in names if n in ("rf_event_wait", "deep_three",
                                       "deep_two", "deep_one")]
    check(order == ["rf_event_wait", "deep_three", "deep_two", "deep_one"],
          f"{where}: rf-bt 2 walks the task's stack in order ({names})")


def kernel_core(a):
    try:
        with open("/proc/sys/kernel/core_pattern") as f:
            pattern = f.read().strip()
    except OSError:
        pattern = "|"
    if pattern.startswith("|") or "/" in pattern:
        print(f"kernel core: core_pattern {pattern!r} is not a file here: "
              "not checked")
        return
    d = os.path.join(a.core, "kernel")
    os.makedirs(d, exist_ok=True)
    for old in glob.glob(os.path.join(d, "core*")):
        os.unlink(old)

    def unlimited():
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY,
                                                  resource.RLIM_INFINITY))
    env = dict(os.environ, GDB_TARGET_ABORT="1", GDB_TARGET_GUARD="madvise")
    r = subprocess.run([a.target], cwd=d, env=env, preexec_fn=unlimited,
                       capture_output=True, timeout=60)
    cores = glob.glob(os.path.join(d, "core*"))
    if r.returncode >= 0 or not cores:
        print(f"kernel core: none written (exit {r.returncode}): not checked")
        return
    out = gdb([a.target, cores[0]], ["set pagination off",
                                    f"source {a.helper}", "rf-tasks",
                                    "rf-bt 2"])
    print(out)
    check_listing(out, "kernel core")
    check_backtrace(out, "kernel core")
    for c in cores:
        os.unlink(c)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--target", required=True)
    p.add_argument("--helper", required=True)
    p.add_argument("--core", required=True)
    a = p.parse_args()
    if not shutil.which("gdb"):
        print("gdb not installed: skipped")
        return 77
    os.makedirs(a.core, exist_ok=True)
    core = os.path.join(a.core, "gdb_target.core")
    if os.path.exists(core):
        os.unlink(core)
    live = gdb([a.target], ["set pagination off",
                            "break rf_gdb_stop_here", "run",
                            f"source {a.helper}", "rf-loops", "rf-tasks",
                            "rf-bt 2", f"gcore {core}", "kill"])
    print(live)
    if "ptrace" in live and "Operation not permitted" in live:
        print("ptrace is not permitted here: skipped")
        return 77
    check(re.search(r"loop 0: 0x[0-9a-f]+, 6 tasks", live) is not None,
          "live: rf-loops lists the loop and its 6 tasks")
    check_listing(live, "live")
    check_backtrace(live, "live")
    check(os.path.exists(core), "gcore wrote a core file")
    if os.path.exists(core):
        dead = gdb([a.target, core], ["set pagination off",
                                      f"source {a.helper}", "rf-loops",
                                      "rf-tasks", "rf-bt 2"])
        print(dead)
        check_listing(dead, "core")
        check_backtrace(dead, "core")
        os.unlink(core)
    kernel_core(a)
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("all checks passed")
    return 0


sys.exit(main())
