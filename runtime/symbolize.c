/*
 * Addresses to names, for stall reports and dumps (rf_symbolize).
 *
 * backtrace_symbols(3) names only what the dynamic symbol table holds:
 * a static function, or any function of an executable linked without
 * -rdynamic, comes out as the nearest exported name plus an offset (a
 * wrong name) or a bare address. The full symbol table (.symtab) and the
 * debugging information have the right answer, with file and line; the
 * library that reads both, maintained and in Debian, is elfutils' libdw
 * (docs/inspect.md compares it with the others). It is loaded with
 * dlopen at the first lookup, so that neither the library nor its users
 * link it: a machine without libdw.so.1, or a build without its header
 * (RF_HAVE_LIBDW unset), falls back to dladdr, trusted only when the
 * address lies inside the symbol it names, and else to "module+0xoff",
 * which addr2line -e module turns into a name.
 *
 * Lookups go through one Dwfl (libdw's view of the process's modules)
 * under a mutex; a module loaded after it was made (dlopen) makes it
 * rebuilt once. Making it costs milliseconds (reading the modules'
 * tables), a lookup in it microseconds. It keeps each module's file
 * open, so it is not kept past its use: a dump or a stall report holds
 * it for its many lookups (rf__symbolize_hold / _release), a lone
 * rf_symbolize makes and ends it, and a process that never looks at
 * itself has no descriptor more.
 *
 * libdw wants stack: reading a line table takes more than a task's 128
 * KiB. A lookup asked for on a loop's thread (which may be on a task's
 * stack) is handed to a thread of the runtime ("rf-symbolize", made at
 * the first such lookup, with the default thread stack) and waited for;
 * elsewhere (the stall detector's watchdog, a plain thread) it runs where
 * it is asked.
 */
#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#if defined(__has_include)
#if __has_include(<elfutils/libdwfl.h>) && !defined(RF_NO_LIBDW)
#define RF_HAVE_LIBDW 1
#include <elfutils/libdwfl.h>
#endif
#endif

static pthread_mutex_t g_sym_mu = PTHREAD_MUTEX_INITIALIZER;

#if defined(RF_HAVE_LIBDW)
/* libdw's entry points, from dlopen. */
static struct {
    Dwfl *(*begin)(const Dwfl_Callbacks *);
    void (*end)(Dwfl *);
    void (*report_begin)(Dwfl *);
    int (*proc_report)(Dwfl *, pid_t);
    int (*report_end)(Dwfl *, int (*)(Dwfl_Module *, void *, const char *,
                                      Dwarf_Addr, void *),
                      void *);
    Dwfl_Module *(*addrmodule)(Dwfl *, Dwarf_Addr);
    const char *(*addrinfo)(Dwfl_Module *, GElf_Addr, GElf_Off *, GElf_Sym *,
                            GElf_Word *, Elf **, Dwarf_Addr *);
    Dwfl_Line *(*getsrc)(Dwfl_Module *, Dwarf_Addr);
    const char *(*lineinfo)(Dwfl_Line *, Dwarf_Addr *, int *, int *,
                            Dwarf_Word *, Dwarf_Word *);
    Dwfl_Callbacks cb;
} dw;
static int g_dw_state; /* 0: not tried, 1: loaded, -1: not available */
static Dwfl *g_dwfl;
static unsigned g_holds; /* rf__symbolize_hold without its release */
static char *g_debuginfo_path = NULL;

static bool dw_load(void)
{
    if (g_dw_state)
        return g_dw_state > 0;
    g_dw_state = -1;
    void *h = dlopen("libdw.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h)
        return false;
#define DW_SYM(field, name)                                                    \
    if (!(*(void **)&dw.field = dlsym(h, name)))                              \
        return false;
    DW_SYM(begin, "dwfl_begin")
    DW_SYM(end, "dwfl_end")
    DW_SYM(report_begin, "dwfl_report_begin")
    DW_SYM(proc_report, "dwfl_linux_proc_report")
    DW_SYM(report_end, "dwfl_report_end")
    DW_SYM(addrmodule, "dwfl_addrmodule")
    DW_SYM(addrinfo, "dwfl_module_addrinfo")
    DW_SYM(getsrc, "dwfl_module_getsrc")
    DW_SYM(lineinfo, "dwfl_lineinfo")
    DW_SYM(cb.find_elf, "dwfl_linux_proc_find_elf")
    DW_SYM(cb.find_debuginfo, "dwfl_standard_find_debuginfo")
#undef DW_SYM
    dw.cb.debuginfo_path = &g_debuginfo_path;
    g_dw_state = 1;
    return true;
}

static bool dwfl_make(void)
{
    if (g_dwfl)
        dw.end(g_dwfl);
    g_dwfl = dw.begin(&dw.cb);
    if (!g_dwfl)
        return false;
    dw.report_begin(g_dwfl);
    if (dw.proc_report(g_dwfl, getpid()) != 0 ||
        dw.report_end(g_dwfl, NULL, NULL) != 0) {
        dw.end(g_dwfl);
        g_dwfl = NULL;
        return false;
    }
    return true;
}

/* name+0xoff (file:line) by libdw; -1 if it does not know addr. */
static int dw_symbolize(uintptr_t a, char *buf, size_t len)
{
    if (!dw_load())
        return -1;
    if (!g_dwfl && !dwfl_make())
        return -1;
    Dwfl_Module *m = dw.addrmodule(g_dwfl, a);
    if (!m && dwfl_make()) /* a module loaded since */
        m = dw.addrmodule(g_dwfl, a);
    if (!m)
        return -1;
    GElf_Off off = 0;
    GElf_Sym s;
    const char *name = dw.addrinfo(m, a, &off, &s, NULL, NULL, NULL);
    if (!name)
        return -1;
    /* A return address is just after its call: the line is the call's. */
    Dwfl_Line *line = dw.getsrc(m, off ? a - 1 : a);
    int lineno = 0;
    const char *file = line ? dw.lineinfo(line, NULL, &lineno, NULL, NULL, NULL)
                            : NULL;
    char offs[24] = ""; /* a function's own address: its name alone */
    if (off)
        snprintf(offs, sizeof offs, "+0x%llx", (unsigned long long)off);
    if (file) {
        const char *base = strrchr(file, '/');
        return snprintf(buf, len, "%s%s (%s:%d)", name, offs,
                        base ? base + 1 : file, lineno);
    }
    return snprintf(buf, len, "%s%s", name, offs);
}
#endif

/* The module that holds a, from the program headers (dladdr's own
 * answer can be wrong for what it does not export). */
typedef struct {
    uintptr_t a;
    const char *name;
    uintptr_t base;
} find_mod;

static int mod_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    find_mod *f = arg;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *p = &info->dlpi_phdr[i];
        uintptr_t lo = info->dlpi_addr + p->p_vaddr;
        if (p->p_type == PT_LOAD && f->a >= lo && f->a < lo + p->p_memsz) {
            f->name = info->dlpi_name;
            f->base = info->dlpi_addr;
            return 1;
        }
    }
    return 0;
}

static int plain_symbolize(uintptr_t a, char *buf, size_t len)
{
    Dl_info di;
    const ElfW(Sym) *s = NULL;
    if (dladdr1((void *)a, &di, (void **)&s, RTLD_DL_SYMENT) && di.dli_sname &&
        s && a >= (uintptr_t)di.dli_saddr &&
        a < (uintptr_t)di.dli_saddr + (s->st_size ? s->st_size : 1))
        return a == (uintptr_t)di.dli_saddr
                   ? snprintf(buf, len, "%s", di.dli_sname)
                   : snprintf(buf, len, "%s+0x%lx", di.dli_sname,
                              (unsigned long)(a - (uintptr_t)di.dli_saddr));
    find_mod f = {.a = a};
    if (dl_iterate_phdr(mod_cb, &f)) {
        const char *n = f.name && *f.name ? f.name
                                          : program_invocation_short_name;
        const char *base = strrchr(n, '/');
        return snprintf(buf, len, "%s+0x%lx", base ? base + 1 : n,
                        (unsigned long)(a - f.base));
    }
    return snprintf(buf, len, "0x%lx", (unsigned long)a);
}

/* Under g_sym_mu. */
static void dwfl_drop_unheld(void)
{
#if defined(RF_HAVE_LIBDW)
    if (!g_holds && g_dwfl) {
        dw.end(g_dwfl);
        g_dwfl = NULL;
    }
#endif
}

void rf__symbolize_hold(void)
{
    pthread_mutex_lock(&g_sym_mu);
    g_holds++;
    pthread_mutex_unlock(&g_sym_mu);
}

void rf__symbolize_release(void)
{
    pthread_mutex_lock(&g_sym_mu);
    g_holds--;
    dwfl_drop_unheld();
    pthread_mutex_unlock(&g_sym_mu);
}

/* Under g_sym_mu. */
static int symbolize_here(uintptr_t a, char *buf, size_t len)
{
    int n = -1;
#if defined(RF_HAVE_LIBDW)
    n = dw_symbolize(a, buf, len);
#endif
    return n < 0 ? plain_symbolize(a, buf, len) : n;
}

#if defined(RF_HAVE_LIBDW)
/* The lookups of tasks, on a thread with room (see the top). One request
 * at a time: g_sym_mu is held by the asker throughout. */
static struct {
    pthread_cond_t cv;
    bool started, failed;
    bool busy;      /* a request is being asked and answered */
    bool asked, answered;
    uintptr_t a;
    char *buf;
    size_t len;
    int n;
} g_req = {.cv = PTHREAD_COND_INITIALIZER};

static void *symbolizer(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&g_sym_mu);
    for (;;) {
        while (!g_req.asked)
            pthread_cond_wait(&g_req.cv, &g_sym_mu);
        g_req.asked = false;
        g_req.n = symbolize_here(g_req.a, g_req.buf, g_req.len);
        dwfl_drop_unheld();
        g_req.answered = true;
        pthread_cond_broadcast(&g_req.cv);
    }
    return NULL;
}

/* Under g_sym_mu; false if the thread cannot be had. */
static bool symbolize_there(uintptr_t a, char *buf, size_t len, int *n)
{
    if (!g_req.started && !g_req.failed) {
        pthread_t th;
        if (rf__thread_create(&th, symbolizer, NULL) != 0) {
            g_req.failed = true;
            return false;
        }
        pthread_setname_np(th, "rf-symbolize");
        pthread_detach(th);
        g_req.started = true;
    }
    if (g_req.failed)
        return false;
    /* The waits below let go of g_sym_mu: another asker waits its turn
     * here rather than write over this request. */
    while (g_req.busy)
        pthread_cond_wait(&g_req.cv, &g_sym_mu);
    g_req.busy = true;
    g_req.a = a;
    g_req.buf = buf;
    g_req.len = len;
    g_req.answered = false;
    g_req.asked = true;
    pthread_cond_broadcast(&g_req.cv);
    while (!g_req.answered)
        pthread_cond_wait(&g_req.cv, &g_sym_mu);
    *n = g_req.n;
    g_req.busy = false;
    pthread_cond_broadcast(&g_req.cv);
    return true;
}
#endif

int rf_symbolize(const void *addr, char *buf, size_t len)
{
    if (!buf && len > 0)
        return -EINVAL;
    uintptr_t a = (uintptr_t)addr;
    char scratch[1];
    if (!buf) { /* the length only */
        buf = scratch;
        len = 0;
    }
    int n = -1;
    pthread_mutex_lock(&g_sym_mu);
    /* A loop's thread may be on a task's stack even outside any task (a
     * threadsafe call's function runs at a pass end, on the stack of the
     * task that ended the pass): its lookups go to the thread. */
    bool small_stack = rf__tls_loop != NULL;
#if defined(RF_HAVE_LIBDW)
    if (small_stack && symbolize_there(a, buf, len, &n)) {
        pthread_mutex_unlock(&g_sym_mu);
        return n;
    }
#endif
    if (small_stack) /* no room for libdw on a task's stack */
        n = plain_symbolize(a, buf, len);
    else
        n = symbolize_here(a, buf, len);
    dwfl_drop_unheld();
    pthread_mutex_unlock(&g_sym_mu);
    return n;
}
