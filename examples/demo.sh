#!/usr/bin/env bash
# The main demonstration: every scenario of the seed tutorials, in the
# tutorials' order, at real speed (about two minutes). Options:
#
#   --scale N      divide every duration by N (passed to each example)
#   --bin-dir DIR  where the example programs are
#                  (default: build/examples next to this directory)
#
# Stops at the first example that fails.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
bin_dir="$here/../build/examples"
scale=1
while [ $# -gt 0 ]; do
    case "$1" in
    --scale) scale=$2; shift 2 ;;
    --bin-dir) bin_dir=$2; shift 2 ;;
    -h | --help) sed -n '2,9s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done

# "seed | program [args]", one scenario per line.
scenarios=(
    "000/002 hello world|hello_async"
    "002 gather|gather_tasks"
    "002 create_task|create_tasks"
    "000 a blocking sleep in a task (3.00 s)|async_tasks_blocked"
    "000 ... and the stall detector naming the task that holds the loop|RINGFIBER_STALL_MS=100 async_tasks_blocked"
    "000 ... in the other order (2.00 s)|async_tasks_blocked --reverse"
    "000 ... the blocking call handed to a thread (2.00 s)|async_tasks_blocked --offload"
    "001 sequential (17 s) vs concurrent (10 s)|long_running_tasks"
    "001 tasks that block the thread (17 s) vs concurrent (10 s)|long_running_tasks --blocking"
    "002 coffee: everything at once (wrong)|make_coffee_wrong"
    "002 coffee: blocking brew (4.90 s)|make_coffee_toast_blocked"
    "002 coffee: concurrent brew and toast (4.00 s)|make_coffee_toast_concurrent"
    "002 coffee: the blocking brew on a thread (4.00 s)|make_coffee_toast_offloaded"
    "003 run_until_complete, run_forever, asyncio.run, tasks|add_results"
    "003 gather|add_gather"
    "003 as_completed|add_as_completed"
    "003 wait_for with a 3 s timeout (random delay)|add_wait_for"
    "004 sleep(0.5), never-awaited task, sleep(0), no sleep|count_numbers"
    "004 three tasks await one|shared_awaiters"
)

for scenario in "${scenarios[@]}"; do
    title=${scenario%%|*}
    read -r -a cmd <<<"${scenario#*|}"
    printf '\n=== %s  (seed %s)\n' "${cmd[*]}" "$title"
    # A leading VAR=value sets the environment of that one program.
    envs=()
    while [ "${#cmd[@]}" -gt 0 ] && [[ ${cmd[0]} == *=* ]]; do
        envs+=("${cmd[0]}")
        cmd=("${cmd[@]:1}")
    done
    # The report goes to stderr; keep it in order with the program's output.
    env "${envs[@]}" "$bin_dir/${cmd[0]}" "${cmd[@]:1}" --scale "$scale" 2>&1
done
