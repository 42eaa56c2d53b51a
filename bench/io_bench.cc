// I/O benchmarks of ringfiber_bench (linked into the same binary as
// ringfiber_bench.cc; see there for the conventions).
//
// W8: 4 KiB random reads of a cached file from 64 tasks. One iteration is
// one read, so time per iteration is the inverse of IOPS (also reported as
// items_per_second). In-run baselines: a plain pread() loop on one thread
// (on a cached file the ceiling: a read is a memory copy plus a system
// call), and raw liburing keeping 64 reads in flight on a ring set up like
// the runtime's.
//   The file: RF_W8_FILE=path uses an existing file (left in place);
//   otherwise /tmp/ringfiber-w8-<pid> of RF_W8_MIB MiB (default 256; 1024
//   for the 1 GiB file of bench/compare) is created at the first W8
//   benchmark, read once to bring it into the page cache, and removed at
//   exit.
//
// IO: three ways to run socket I/O, measured below the runtime
// (raw liburing on one ring, one thread) so that the only difference is
// the flag: a 64-byte TCP ping-pong on 127.0.0.1, both ends in one ring,
// each recv posted before the data it waits for is sent (a server waiting
// for a request). Variants: plain fds (IO_plain_fd_baseline), registered
// files with IOSQE_FIXED_FILE (IO_fixed_file), IORING_RECVSEND_POLL_FIRST
// on every recv (IO_recv_poll_first), and a multishot recv per socket fed
// by a provided buffer ring (IO_recv_multishot_bufring). What the runtime
// kept, and why, is in runtime/net.c.

#include <benchmark/benchmark.h>

#include <ringfiber.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

// ---------------------------------------------------------------------------
// W8
// ---------------------------------------------------------------------------

constexpr unsigned kW8Tasks = 64;
constexpr size_t kW8Block = 4096;
// Reads per KeepRunningBatch round: every task does the same share.
constexpr unsigned kW8Batch = kW8Tasks * 256;

struct W8File {
    std::string path;
    bool remove = false;
    int fd = -1;
    uint64_t blocks = 0;
    std::string error;
};

W8File *w8_file_get() {
    static W8File f;
    static bool done = false;
    if (done)
        return &f;
    done = true;
    const char *env = std::getenv("RF_W8_FILE");
    uint64_t size;
    if (env && *env) {
        f.path = env;
        f.fd = open(env, O_RDONLY | O_CLOEXEC);
        if (f.fd < 0) {
            f.error = std::string(env) + ": " + std::strerror(errno);
            return &f;
        }
        off_t end = lseek(f.fd, 0, SEEK_END);
        size = end > 0 ? uint64_t(end) : 0;
    } else {
        const char *mib = std::getenv("RF_W8_MIB");
        size = uint64_t(mib ? std::atoll(mib) : 256) << 20;
        f.path = "/tmp/ringfiber-w8-" + std::to_string(getpid());
        f.remove = true;
        int fd = open(f.path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0) {
            f.error = f.path + ": " + std::strerror(errno);
            return &f;
        }
        std::atexit([] {
            W8File *g = w8_file_get();
            if (g->fd >= 0)
                close(g->fd);
            if (g->remove)
                unlink(g->path.c_str());
        });
        std::vector<char> buf(1 << 20);
        for (size_t i = 0; i < buf.size(); i++)
            buf[i] = char(i * 131 + 7);
        for (uint64_t off = 0; off < size; off += buf.size()) {
            if (pwrite(fd, buf.data(), buf.size(), off_t(off)) != ssize_t(buf.size())) {
                f.error = "writing " + f.path + ": " + std::strerror(errno);
                close(fd);
                return &f;
            }
        }
        f.fd = fd;
    }
    f.blocks = size / kW8Block;
    if (f.blocks == 0) {
        f.error = f.path + ": smaller than one block";
        return &f;
    }
    // Into the page cache (the workload is on a cached file).
    std::vector<char> buf(1 << 20);
    for (uint64_t off = 0; off < size; off += buf.size())
        if (pread(f.fd, buf.data(), buf.size(), off_t(off)) <= 0)
            break;
    return &f;
}

inline uint64_t xorshift(uint64_t &x) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
}

struct W8Ctx {
    benchmark::State *state;
    W8File *file;
    int err = 0;
};

struct W8Worker {
    W8Ctx *c;
    unsigned reads;
    uint64_t seed;
    alignas(64) char buf[kW8Block];
};

void *w8_worker(void *arg) {
    auto *w = static_cast<W8Worker *>(arg);
    for (unsigned i = 0; i < w->reads; i++) {
        uint64_t blk = xorshift(w->seed) % w->c->file->blocks;
        ssize_t n = rf_read(w->c->file->fd, w->buf, kW8Block, int64_t(blk * kW8Block));
        if (n != ssize_t(kW8Block)) {
            w->c->err = n < 0 ? int(n) : -EIO;
            break;
        }
    }
    return nullptr;
}

void *w8_main(void *arg) {
    auto *c = static_cast<W8Ctx *>(arg);
    benchmark::State &state = *c->state;
    std::vector<W8Worker> w(kW8Tasks);
    rf_task *t[kW8Tasks];
    for (unsigned i = 0; i < kW8Tasks; i++)
        w[i].seed = 0x9E3779B97F4A7C15ull * (i + 1);
    rf_stats s0, s1;
    rf_loop_stats(rf_loop_current(), &s0);
    while (state.KeepRunningBatch(kW8Batch)) {
        for (unsigned i = 0; i < kW8Tasks; i++) {
            w[i].c = c;
            w[i].reads = kW8Batch / kW8Tasks;
            t[i] = rf_spawn(w8_worker, &w[i]);
            if (!t[i]) {
                c->err = -errno;
                for (unsigned j = 0; j < i; j++)
                    rf_cancel(t[j]);
                rf_gather(t, i, nullptr);
                for (unsigned j = 0; j < i; j++)
                    rf_task_release(t[j]);
                break;
            }
        }
        if (c->err)
            break;
        rf_gather(t, kW8Tasks, nullptr);
        for (unsigned i = 0; i < kW8Tasks; i++)
            rf_task_release(t[i]);
        if (c->err)
            break;
    }
    rf_loop_stats(rf_loop_current(), &s1);
    if (c->err) {
        state.SkipWithError((std::string("rf_read: ") + rf_strerror(c->err)).c_str());
        return nullptr;
    }
    double n = double(state.iterations());
    state.counters["enters"] = double(s1.enters - s0.enters) / n;
    state.counters["switches"] = double(s1.switches - s0.switches) / n;
    return nullptr;
}

void w8_finish(benchmark::State &state, const char *label) {
    state.SetItemsProcessed(int64_t(state.iterations()));
    state.SetLabel(label);
}

void W8_ring_random_read(benchmark::State &state) {
    W8File *f = w8_file_get();
    if (!f->error.empty()) {
        state.SkipWithError(f->error.c_str());
        return;
    }
    W8Ctx c{&state, f};
    int rc = rf_run(w8_main, &c, nullptr);
    if (rc != 0 && !state.error_occurred())
        state.SkipWithError((std::string("rf_run: ") + rf_strerror(rc)).c_str());
    w8_finish(state, "1 iteration = one 4 KiB rf_read, 64 tasks");
}

void W8_pread_baseline(benchmark::State &state) {
    W8File *f = w8_file_get();
    if (!f->error.empty()) {
        state.SkipWithError(f->error.c_str());
        return;
    }
    alignas(64) static char buf[kW8Block];
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    for (auto _ : state) {
        uint64_t blk = xorshift(seed) % f->blocks;
        if (pread(f->fd, buf, kW8Block, off_t(blk * kW8Block)) != ssize_t(kW8Block)) {
            state.SkipWithError("pread failed");
            break;
        }
    }
    w8_finish(state, "1 iteration = one 4 KiB pread, one thread");
}

// The ring flags the runtime uses (ring.c's first rung), so that the
// comparison is about the runtime's own cost.
int raw_ring_init(struct io_uring *ring, unsigned entries) {
    struct io_uring_params p;
    std::memset(&p, 0, sizeof p);
    p.flags = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER |
              IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
    int rc = io_uring_queue_init_params(entries, ring, &p);
    if (rc == -EINVAL) {
        std::memset(&p, 0, sizeof p);
        rc = io_uring_queue_init_params(entries, ring, &p);
    }
    return rc;
}

void W8_raw_liburing_baseline(benchmark::State &state) {
    W8File *f = w8_file_get();
    if (!f->error.empty()) {
        state.SkipWithError(f->error.c_str());
        return;
    }
    struct io_uring ring;
    int rc = raw_ring_init(&ring, 128);
    if (rc != 0) {
        state.SkipWithError((std::string("io_uring: ") + std::strerror(-rc)).c_str());
        return;
    }
    static char bufs[kW8Tasks][kW8Block] __attribute__((aligned(64)));
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    auto queue = [&](unsigned slot) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
        uint64_t blk = xorshift(seed) % f->blocks;
        io_uring_prep_read(sqe, f->fd, bufs[slot], kW8Block, blk * kW8Block);
        io_uring_sqe_set_data64(sqe, slot);
    };
    unsigned inflight = 0;
    bool failed = false;
    while (!failed && state.KeepRunningBatch(kW8Batch)) {
        unsigned issued = 0, done = 0;
        for (; inflight < kW8Tasks && issued < kW8Batch; inflight++, issued++)
            queue(inflight);
        while (done < kW8Batch) {
            io_uring_submit_and_wait(&ring, 1);
            unsigned head, n = 0;
            struct io_uring_cqe *cqe;
            io_uring_for_each_cqe(&ring, head, cqe) {
                n++;
                if (cqe->res != int(kW8Block))
                    failed = true;
                unsigned slot = unsigned(cqe->user_data);
                if (issued < kW8Batch) {
                    queue(slot);
                    issued++;
                } else {
                    inflight--;
                }
            }
            io_uring_cq_advance(&ring, n);
            done += n;
        }
    }
    io_uring_queue_exit(&ring);
    if (failed)
        state.SkipWithError("a read failed");
    w8_finish(state, "1 iteration = one 4 KiB read, depth 64, raw liburing");
}

// ---------------------------------------------------------------------------
// IO: registered files and POLL_FIRST on a loopback ping-pong
// ---------------------------------------------------------------------------

bool tcp_pair(int fds[2]) {
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a;
    std::memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 1) < 0 ||
        getsockname(l, (struct sockaddr *)&a, &len) < 0) {
        if (l >= 0)
            close(l);
        return false;
    }
    fds[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok = fds[0] >= 0 && connect(fds[0], (struct sockaddr *)&a, sizeof a) == 0;
    fds[1] = ok ? accept4(l, nullptr, nullptr, SOCK_CLOEXEC) : -1;
    close(l);
    int one = 1;
    if (fds[1] < 0) {
        if (fds[0] >= 0)
            close(fds[0]);
        return false;
    }
    setsockopt(fds[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fds[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return true;
}

enum class PingMode { plain, fixed, poll_first };

// One iteration: a message each way. The receiving side's recv is queued
// before the send it waits for, in the same submission.
void io_pingpong(benchmark::State &state, PingMode mode) {
    int fds[2];
    if (!tcp_pair(fds)) {
        state.SkipWithError("loopback TCP pair failed");
        return;
    }
    struct io_uring ring;
    int rc = raw_ring_init(&ring, 64);
    if (rc == 0 && mode == PingMode::fixed)
        rc = io_uring_register_files(&ring, fds, 2);
    if (rc != 0) {
        state.SkipWithError((std::string("io_uring: ") + std::strerror(-rc)).c_str());
        close(fds[0]);
        close(fds[1]);
        return;
    }
    char out[64], in[64];
    std::memset(out, 'p', sizeof out);
    bool fixed = mode == PingMode::fixed;
    bool failed = false;
    auto leg = [&](int from, int to) {
        struct io_uring_sqe *r = io_uring_get_sqe(&ring);
        io_uring_prep_recv(r, fixed ? to : fds[to], in, sizeof in, MSG_WAITALL);
        if (mode == PingMode::poll_first)
            r->ioprio |= IORING_RECVSEND_POLL_FIRST;
        struct io_uring_sqe *s = io_uring_get_sqe(&ring);
        io_uring_prep_send(s, fixed ? from : fds[from], out, sizeof out, 0);
        if (fixed) {
            r->flags |= IOSQE_FIXED_FILE;
            s->flags |= IOSQE_FIXED_FILE;
        }
        io_uring_submit_and_wait(&ring, 2);
        unsigned seen = 0;
        while (seen < 2) {
            struct io_uring_cqe *cqe;
            if (io_uring_wait_cqe(&ring, &cqe) != 0) {
                failed = true;
                return;
            }
            if (cqe->res != int(sizeof out))
                failed = true;
            io_uring_cqe_seen(&ring, cqe);
            seen++;
        }
    };
    for (auto _ : state) {
        leg(0, 1);
        leg(1, 0);
        if (failed) {
            state.SkipWithError("a transfer failed");
            break;
        }
    }
    io_uring_queue_exit(&ring);
    close(fds[0]);
    close(fds[1]);
    state.SetLabel("1 iteration = 64 B each way, recv posted first, raw liburing");
}

// Provided buffer ring + multishot recv: one recv per socket stays armed
// for the whole run, the kernel picks a buffer from a ring of 64; each leg
// submits only its send. The received buffer goes back to the ring.
void IO_recv_multishot_bufring(benchmark::State &state) {
    int fds[2];
    if (!tcp_pair(fds)) {
        state.SkipWithError("loopback TCP pair failed");
        return;
    }
    struct io_uring ring;
    int rc = raw_ring_init(&ring, 64);
    constexpr unsigned kBufs = 64, kBufSize = 256;
    void *mem = nullptr;
    struct io_uring_buf_ring *br = nullptr;
    static char bufs[kBufs][kBufSize];
    if (rc == 0) {
        if (posix_memalign(&mem, 4096, kBufs * sizeof(struct io_uring_buf)) != 0)
            rc = -ENOMEM;
    }
    if (rc == 0) {
        br = static_cast<struct io_uring_buf_ring *>(mem);
        io_uring_buf_ring_init(br);
        struct io_uring_buf_reg reg;
        std::memset(&reg, 0, sizeof reg);
        reg.ring_addr = uint64_t(uintptr_t(br));
        reg.ring_entries = kBufs;
        reg.bgid = 1;
        rc = io_uring_register_buf_ring(&ring, &reg, 0);
        for (unsigned i = 0; i < kBufs && rc == 0; i++)
            io_uring_buf_ring_add(br, bufs[i], kBufSize, i,
                                  io_uring_buf_ring_mask(kBufs), int(i));
        if (rc == 0)
            io_uring_buf_ring_advance(br, kBufs);
    }
    if (rc != 0) {
        state.SkipWithError((std::string("io_uring: ") + std::strerror(-rc)).c_str());
        if (rc != -ENOMEM || mem)
            io_uring_queue_exit(&ring);
        std::free(mem);
        close(fds[0]);
        close(fds[1]);
        return;
    }
    auto arm = [&](int i) {
        struct io_uring_sqe *r = io_uring_get_sqe(&ring);
        io_uring_prep_recv_multishot(r, fds[i], nullptr, 0, 0);
        r->flags |= IOSQE_BUFFER_SELECT;
        r->buf_group = 1;
        io_uring_sqe_set_data64(r, uint64_t(i) + 1);
    };
    arm(0);
    arm(1);
    char out[64];
    std::memset(out, 'p', sizeof out);
    bool failed = false;
    auto leg = [&](int from) {
        struct io_uring_sqe *s = io_uring_get_sqe(&ring);
        io_uring_prep_send(s, fds[from], out, sizeof out, 0);
        io_uring_sqe_set_data64(s, 0);
        io_uring_submit(&ring);
        bool sent = false;
        unsigned got = 0;
        while (!sent || got < sizeof out) {
            struct io_uring_cqe *cqe;
            if (io_uring_wait_cqe(&ring, &cqe) != 0) {
                failed = true;
                return;
            }
            if (cqe->user_data == 0) {
                sent = true;
                failed |= cqe->res != int(sizeof out);
            } else {
                if (cqe->res > 0 && (cqe->flags & IORING_CQE_F_BUFFER)) {
                    got += unsigned(cqe->res);
                    unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
                    io_uring_buf_ring_add(br, bufs[bid], kBufSize, bid,
                                          io_uring_buf_ring_mask(kBufs), 0);
                    io_uring_buf_ring_advance(br, 1);
                } else if (cqe->res <= 0 && cqe->res != -ENOBUFS) {
                    failed = true;
                }
                if (!(cqe->flags & IORING_CQE_F_MORE)) {
                    arm(int(cqe->user_data - 1));
                    io_uring_submit(&ring);
                }
            }
            io_uring_cqe_seen(&ring, cqe);
            if (failed)
                return;
        }
    };
    for (auto _ : state) {
        leg(0);
        leg(1);
        if (failed) {
            state.SkipWithError("a transfer failed");
            break;
        }
    }
    io_uring_queue_exit(&ring); // cancels the armed recvs
    std::free(mem);
    close(fds[0]);
    close(fds[1]);
    state.SetLabel("1 iteration = 64 B each way, multishot recv + buffer ring");
}

void IO_plain_fd_baseline(benchmark::State &state) { io_pingpong(state, PingMode::plain); }
void IO_fixed_file(benchmark::State &state) { io_pingpong(state, PingMode::fixed); }
void IO_recv_poll_first(benchmark::State &state) {
    io_pingpong(state, PingMode::poll_first);
}

} // namespace

BENCHMARK(W8_ring_random_read)->UseRealTime();
BENCHMARK(W8_pread_baseline)->UseRealTime();
BENCHMARK(W8_raw_liburing_baseline)->UseRealTime();
BENCHMARK(IO_plain_fd_baseline)->UseRealTime();
BENCHMARK(IO_fixed_file)->UseRealTime();
BENCHMARK(IO_recv_poll_first)->UseRealTime();
BENCHMARK(IO_recv_multishot_bufring)->UseRealTime();
