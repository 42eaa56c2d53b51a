//! The workloads W1-W3 and W6 of docs/benchmarks.md with tokio tasks, for
//! bench/compare. Every figure comes from a current-thread runtime (one
//! thread runs every task, as one ringfiber loop does), unless the
//! argument says "multi".
//!
//!   peers-tokio W1 COUNT       two tasks ping-pong with task::yield_now()
//!   peers-tokio W2 N ROUNDS    N empty tasks spawned, then each joined
//!   peers-tokio W3 N ROUNDS    N tasks each time::sleep(10 ms), joined
//!   peers-tokio W3mem N        N tasks parked on one Notify: memory
//!   peers-tokio echo-server    the W6 server: a task per connection,
//!                              read then write it all back (TCP_NODELAY)
//!   peers-tokio S3 THREADS     the many-core row: 1,000,000 empty tasks
//!                              spawned and joined on a multi-thread
//!                              runtime of THREADS workers, one spawner
//!                              task per worker, 10,000 alive per spawner
//!
//! Prints one JSON object on stdout, with the fields of bench/peers/go:
//! W2 and W3 run their first round in a fresh process ("first_*"), the
//! figure is the median of the later rounds; rss_per_task is the resident
//! memory with all N alive minus the memory before, over N. The server
//! listens on 127.0.0.1 at an ephemeral port, prints "listening on
//! 127.0.0.1:PORT" and serves until it is killed.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

fn rss_bytes() -> i64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: i64 = s.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

async fn w1(count: usize) -> String {
    let t0 = Instant::now();
    let player = move || async move {
        for _ in 0..count {
            tokio::task::yield_now().await;
        }
    };
    let a = tokio::spawn(player());
    let b = tokio::spawn(player());
    a.await.unwrap();
    b.await.unwrap();
    let ns = t0.elapsed().as_nanos() as f64 / count as f64;
    format!("{{\"ns\":{:.3}}}", ns)
}

async fn rounds(n: usize, nrounds: usize, sleep: Option<Duration>) -> String {
    let base = rss_bytes();
    let mut times = Vec::with_capacity(nrounds);
    let mut rss_max = 0i64;
    for _ in 0..nrounds {
        let started = Arc::new(AtomicUsize::new(0));
        let rss = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let t0 = Instant::now();
        let mut handles = Vec::with_capacity(n);
        for _ in 0..n {
            let (started, rss) = (started.clone(), rss.clone());
            handles.push(tokio::spawn(async move {
                if started.fetch_add(1, Ordering::Relaxed) + 1 == n {
                    rss.store(rss_bytes(), Ordering::Relaxed);
                }
                if let Some(d) = sleep {
                    tokio::time::sleep(d).await;
                }
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        times.push(t0.elapsed().as_nanos() as f64);
        rss_max = rss_max.max(rss.load(Ordering::Relaxed) - base);
    }
    let first = times[0];
    let mut later: Vec<f64> = if times.len() > 1 { times[1..].to_vec() } else { times.clone() };
    later.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let m = later.len();
    let med = if m % 2 == 1 { later[m / 2] } else { (later[m / 2 - 1] + later[m / 2]) / 2.0 };
    format!(
        "{{\"first_ns\":{:.0},\"round_ns\":{:.0},\"ns_per_task\":{:.3},\"first_ns_per_task\":{:.3},\"rss_per_task\":{:.1}}}",
        first, med, med / n as f64, first / n as f64, rss_max as f64 / n as f64
    )
}

async fn parked(n: usize) -> String {
    let base = rss_bytes();
    let release = Arc::new(Notify::new());
    let started = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::with_capacity(n);
    for _ in 0..n {
        let (release, started) = (release.clone(), started.clone());
        handles.push(tokio::spawn(async move {
            let wait = release.notified();
            started.fetch_add(1, Ordering::Relaxed);
            wait.await;
        }));
    }
    while started.load(Ordering::Relaxed) < n {
        tokio::task::yield_now().await;
    }
    let rss = rss_bytes() - base;
    // Every task has polled its Notified once and is parked in it: a
    // notify_waiters now reaches all of them.
    release.notify_waiters();
    for h in handles {
        h.await.unwrap();
    }
    format!("{{\"rss_per_task\":{:.1},\"alive\":{}}}", rss as f64 / n as f64, n)
}

async fn echo_server() {
    let ln = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!("listening on {}", ln.local_addr().unwrap());
    use std::io::Write;
    std::io::stdout().flush().ok();
    loop {
        let (mut c, _) = match ln.accept().await {
            Ok(v) => v,
            Err(e) => {
                eprintln!("{}", e);
                std::process::exit(1);
            }
        };
        c.set_nodelay(true).ok();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16384];
            loop {
                match c.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => {
                        if c.write_all(&buf[..k]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

/* S3: as ringfiber's S3_spawn_join_loops/N: each of N spawners (one per
 * worker) spawns and joins its share in batches of 10,000; one untimed
 * batch per spawner first, so that the runtime is warm; timed from all
 * spawners ready to the last one done. */
fn s3(threads: usize) -> String {
    const TOTAL: usize = 1_000_000;
    const BATCH: usize = 10_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime");
    let ns = rt.block_on(async move {
        let ready = Arc::new(tokio::sync::Barrier::new(threads + 1));
        let mut spawners = Vec::new();
        for _ in 0..threads {
            let ready = ready.clone();
            spawners.push(tokio::spawn(async move {
                let batch = |n: usize| async move {
                    let hs: Vec<_> = (0..n).map(|_| tokio::spawn(async {})).collect();
                    for h in hs {
                        h.await.unwrap();
                    }
                };
                batch(BATCH).await;
                ready.wait().await;
                let share = TOTAL / threads;
                let mut done = 0;
                while done < share {
                    let n = BATCH.min(share - done);
                    batch(n).await;
                    done += n;
                }
                Instant::now()
            }));
        }
        ready.wait().await;
        let t0 = Instant::now();
        let mut last = t0;
        for s in spawners {
            last = last.max(s.await.unwrap());
        }
        (last - t0).as_nanos() as f64
    });
    format!("{{\"ns\":{:.0},\"threads\":{}}}", ns, threads)
}

fn usage() -> ! {
    eprintln!("usage: peers-tokio W1 COUNT | W2 N ROUNDS | W3 N ROUNDS | W3mem N | S3 THREADS | echo-server");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 2 && args[1] == "echo-server" {
        runtime().block_on(echo_server());
        return;
    }
    if args.len() < 3 {
        usage();
    }
    let a: usize = args[2].parse().ok().filter(|&v| v > 0).unwrap_or_else(|| usage());
    let nrounds: usize = match args.get(3) {
        Some(s) => s.parse().ok().filter(|&v| v > 0).unwrap_or_else(|| usage()),
        None => 3,
    };
    if args[1] == "S3" {
        println!("{}", s3(a));
        return;
    }
    let rt = runtime();
    let out = match args[1].as_str() {
        "W1" => rt.block_on(w1(a)),
        "W2" => rt.block_on(rounds(a, nrounds, None)),
        "W3" => rt.block_on(rounds(a, nrounds, Some(Duration::from_millis(10)))),
        "W3mem" => rt.block_on(parked(a)),
        _ => usage(),
    };
    // The runtime's version is the one Cargo.lock pins (Debian's package).
    println!("{}", out);
}
