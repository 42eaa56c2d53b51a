# ringfiber's gdb helper: the tasks of every loop, and the backtrace of a
# suspended task, in a live process or a core file.
#
#     (gdb) source tools/gdb/ringfiber.py
#     (gdb) rf-loops                 every loop of the process
#     (gdb) rf-tasks [LOOP]          its tasks: state, what each waits on
#     (gdb) rf-bt TASK [LOOP]        a task's stack, from its saved context
#
# LOOP is a loop's number as rf-loops prints it (default: every loop for
# rf-tasks, the first loop that has TASK for rf-bt); TASK is a task's id.
# It reads the runtime's own records through the debugging information of
# the program or of libringfiber.so (build with -g: RelWithDebInfo, the
# default build, has it): the process's list of loops
# (rf__loops_registry, runtime/inspect.c), each loop's list of live tasks,
# and what each task's last wait recorded (runtime/internal.h, rf_task).
#
# A suspended task's registers are where jump_fcontext saved them, on its
# own stack (x86-64: r12..r15, rbx, rbp, then the return address, at the
# saved context's address + 0x8 .. + 0x38; the stack pointer after the
# return is that address + 0x40; arm64: x19..x29, lr at + 0x40 .. + 0x98,
# pc at + 0xa0, sp + 0xb0). A core file's registers cannot be set, so
# rf-bt installs an unwinder that gives the thread's innermost frame the
# task's registers as its caller's: frame #0 is the thread's own, and the
# task's stack is #1 and after.

import gdb
import gdb.unwinder

_WAIT_PREFIX = "RF_WAIT_ON_"


def _offset(type_name, member):
    t = gdb.lookup_type(type_name)
    for f in t.fields():
        if f.name == member:
            return f.bitpos // 8
    raise gdb.GdbError(f"{type_name} has no member {member}")


def _u64(addr):
    return int(gdb.parse_and_eval(f"*(unsigned long long *){addr}"))


def _list(head_addr, type_name, member):
    """The records on the rf_list at head_addr, linked through member."""
    off = _offset(type_name, member)
    ptr = gdb.lookup_type(type_name).pointer()
    node = _u64(head_addr)  # head->next
    seen = 0
    while node != head_addr and node != 0:
        yield gdb.Value(node - off).cast(ptr).dereference()
        node = _u64(node)
        seen += 1
        if seen > 50_000_000:
            raise gdb.GdbError("list does not end: memory damaged?")


def loops():
    try:
        reg = gdb.parse_and_eval("&rf__loops_registry")
    except gdb.error:
        raise gdb.GdbError("no rf__loops_registry: not a ringfiber program, "
                           "or no debugging information for it")
    return list(_list(int(reg), "struct rf_loop", "registry_node"))


def _wait_names():
    names = {}
    try:
        for f in gdb.lookup_type("enum rf_wait_on").fields():
            names[f.enumval] = f.name[len(_WAIT_PREFIX):].lower()
    except gdb.error:
        pass
    return names


def _op_name(op):
    try:
        arr = gdb.parse_and_eval("op_names")
        lo, hi = arr.type.range()
        if lo <= op <= hi and int(arr[op]) != 0:
            return arr[op].string()
    except gdb.error:
        pass
    return f"op{op}"


def _symbol(addr):
    if addr == 0:
        return "?"
    try:
        s = gdb.execute(f"info symbol {addr:#x}", to_string=True).strip()
        return s.split(" in section")[0]
    except gdb.error:
        return f"{addr:#x}"


def _task_name(t):
    name = t["name"].string(length=32).split("\0")[0]
    return name or f"task-{int(t['id'])}"


def _tasks(loop):
    return list(_list(int(loop["alive"].address), "struct rf_task", "alive"))


def _states():
    try:
        return {f.enumval: f.name[3:].lower()
                for f in gdb.lookup_type("enum rf_task_state").fields()}
    except gdb.error:
        return {0: "ready", 1: "running", 2: "waiting", 3: "done"}


def _describe(loop, t, names):
    state = _states().get(int(t["state"]), str(int(t["state"])))
    if int(t.address) == int(loop["current"]):
        state = "running"
    line = f"task {int(t['id'])} '{_task_name(t)}' {state}"
    if state == "waiting":
        on = int(t["wait_on"])
        kind, op = on & 0xff, on >> 8
        what = names.get(kind, str(kind))
        obj = int(t["wait_obj"]) & 0xffffffffffffffff
        if what == "io":
            what = _op_name(op) + (f" fd {obj}" if obj < 1 << 31 else "")
        elif what in ("accept", "close"):
            what += f" fd {obj}"
        elif what == "sleep":
            what += f" until {obj / 1e9:.3f} s (monotonic)"
        elif what == "task":
            j = gdb.Value(obj).cast(gdb.lookup_type("struct rf_task").pointer())
            what = f"join task {int(j['id'])} '{_task_name(j.dereference())}'"
        elif what == "mutex":
            what += f" {obj:#x}"
            try:
                m = gdb.Value(obj).cast(gdb.lookup_type("mutex_impl").pointer())
                o = int(m["owner"])
                if o and o != int(t.address):
                    h = gdb.Value(o).cast(gdb.lookup_type("struct rf_task").pointer())
                    what += f" held by task {int(h['id'])} '{_task_name(h.dereference())}'"
            except gdb.error:
                pass
        elif what == "offload":
            what = f"to_thread {_symbol(obj)}"
        elif obj:
            what += f" {obj:#x}"
        since = int(t["wait_since"])
        now = int(loop["now_approx"])
        line += f" {max(now - since, 0) / 1e9:.3f} s: {what}"
    if bool(t["cancelled"]):
        line += "; cancelled"
    line += f"; runs {_symbol(int(t['fn']))}"
    frm = int(t["spawned_from"])
    if frm:
        line += f", spawned from {_symbol(frm)}"
    return line


class RfLoops(gdb.Command):
    """List the process's ringfiber loops: rf-loops."""

    def __init__(self):
        super().__init__("rf-loops", gdb.COMMAND_DATA)

    def invoke(self, arg, from_tty):
        for i, l in enumerate(loops()):
            g = " (a group's loop %d)" % int(l["group_index"]) \
                if int(l["group"]) else ""
            print(f"loop {i}: {int(l.address):#x}{g}, "
                  f"{int(l['stats']['tasks_alive'])} tasks, "
                  f"{int(l['inflight'])} operations in flight, "
                  f"thread {int(l['owner']):#x}")


class RfTasks(gdb.Command):
    """List a loop's tasks (all loops' without LOOP): rf-tasks [LOOP].
The wait times run to the loop's last clock reading (its approximate clock,
refreshed at each entry into the kernel)."""

    def __init__(self):
        super().__init__("rf-tasks", gdb.COMMAND_DATA)

    def invoke(self, arg, from_tty):
        ls = loops()
        pick = [int(arg)] if arg.strip() else range(len(ls))
        names = _wait_names()
        for i in pick:
            l = ls[i]
            ts = _tasks(l)
            print(f"loop {i}: {len(ts)} tasks")
            for t in ts:
                print("  " + _describe(l, t, names))


class _TaskUnwinder(gdb.unwinder.Unwinder):
    """While a task is chosen, the innermost frame's caller is the task."""

    def __init__(self):
        super().__init__("ringfiber-task")
        self.regs = None

    def __call__(self, pending):
        if self.regs is None or pending.level() != 0:
            return None
        arch = pending.architecture().name()
        sp_name = "rsp" if "x86-64" in arch else "sp"
        pc_name = "rip" if "x86-64" in arch else "pc"
        frame_id = _FrameId(pending.read_register(sp_name),
                            pending.read_register(pc_name))
        info = pending.create_unwind_info(frame_id)
        for name, value in self.regs.items():
            info.add_saved_register(name, value)
        return info


class _FrameId:
    def __init__(self, sp, pc):
        self.sp = sp
        self.pc = pc


_unwinder = _TaskUnwinder()
gdb.unwinder.register_unwinder(None, _unwinder, replace=True)


def _saved_regs(fctx):
    arch = gdb.selected_frame().architecture().name()
    u64 = gdb.lookup_type("unsigned long long")
    val = lambda off: gdb.Value(_u64(fctx + off)).cast(u64)
    if "x86-64" in arch:
        return {"r12": val(0x8), "r13": val(0x10), "r14": val(0x18),
                "r15": val(0x20), "rbx": val(0x28), "rbp": val(0x30),
                "rip": val(0x38), "rsp": gdb.Value(fctx + 0x40).cast(u64)}
    if "aarch64" in arch:
        regs = {f"x{19 + i}": val(0x40 + 8 * i) for i in range(11)}
        regs.update({"x30": val(0x98), "pc": val(0xa0),
                     "sp": gdb.Value(fctx + 0xb0).cast(u64)})
        return regs
    raise gdb.GdbError(f"rf-bt knows x86-64 and arm64, not {arch}")


class RfBt(gdb.Command):
    """Backtrace of a suspended task: rf-bt TASK [LOOP].
Frame #0 is the thread's own innermost frame; the task's stack is #1 and
after (a core file's registers cannot be set; see the file's top)."""

    def __init__(self):
        super().__init__("rf-bt", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        args = arg.split()
        if not args:
            raise gdb.GdbError("usage: rf-bt TASK [LOOP]")
        want = int(args[0])
        ls = loops()
        pick = [int(args[1])] if len(args) > 1 else range(len(ls))
        for i in pick:
            for t in _tasks(ls[i]):
                if int(t["id"]) != want:
                    continue
                if int(t.address) == int(ls[i]["current"]):
                    raise gdb.GdbError(f"task {want} is running: use bt "
                                       "in its loop's thread")
                fctx = int(t["ctx"]["fctx"])
                if fctx == 0:
                    print(f"task {want} '{_task_name(t)}' of loop {i} has "
                          "not started yet: no stack")
                    return
                print(f"task {want} '{_task_name(t)}' of loop {i}, "
                      f"suspended at {fctx:#x}:")
                _unwinder.regs = _saved_regs(fctx)
                gdb.invalidate_cached_frames()
                try:
                    gdb.execute("bt", to_string=False)
                finally:
                    _unwinder.regs = None
                    gdb.invalidate_cached_frames()
                return
        raise gdb.GdbError(f"no task {want}")


RfLoops()
RfTasks()
RfBt()
