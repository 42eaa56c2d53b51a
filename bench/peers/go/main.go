// The workloads W1-W3 of docs/benchmarks.md with goroutines, for
// bench/compare. Run with GOMAXPROCS=1 (bench/compare sets it), so that, as
// in ringfiber, one thread runs every goroutine.
//
//	peers-go W1 COUNT       two goroutines ping-pong with runtime.Gosched()
//	peers-go Q1 COUNT       queue ping-pong through two buffered channels of capacity 1
//	peers-go W2 N ROUNDS    N goroutines doing nothing, joined with a WaitGroup
//	peers-go W3 N ROUNDS    N goroutines each time.Sleep(10ms), WaitGroup
//	peers-go W3mem N        N goroutines parked on one channel: memory
//	peers-go echo-server    the W6 and W7 servers: see servers.go
//	peers-go http-server
//
// Prints one JSON object on stdout. W1 uses Gosched, Go's yield, which is
// what W1 measures in ringfiber (rf_yield) and asyncio (sleep(0)); an
// unbuffered channel ping-pong would measure a channel handoff instead.
// For W2 and W3 the first round runs in a fresh process ("first_*"); the
// figure is the median of the later rounds. rss_per_task: resident memory
// (/proc/self/statm) read by the last goroutine to start, while all N are
// alive, minus the memory before the first round, divided by N. In a
// sleeping round the first goroutines may be done before the last starts
// (when starting N takes longer than 10 ms), so W3mem measures the memory
// with all N certainly alive: each blocks receiving from one channel, the
// memory is read once all have started, then the channel is closed.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

func w1(count int) map[string]any {
	var wg sync.WaitGroup
	player := func() {
		defer wg.Done()
		for i := 0; i < count; i++ {
			runtime.Gosched()
		}
	}
	wg.Add(2)
	t0 := time.Now()
	go player()
	go player()
	wg.Wait()
	return map[string]any{"ns": float64(time.Since(t0).Nanoseconds()) / float64(count)}
}

// Queue ping-pong: two buffered channels of capacity 1; the driver sends
// on there and receives from back, the partner echoes. One round trip =
// two sends, two receives, two goroutine switches (Q1 in ringfiber).
func q1(count int) map[string]any {
	there, back := make(chan int, 1), make(chan int, 1)
	done := make(chan struct{})
	go func() {
		for i := 0; i < count; i++ {
			back <- <-there
		}
		close(done)
	}()
	item := 1
	t0 := time.Now()
	for i := 0; i < count; i++ {
		there <- item
		item = <-back
	}
	ns := float64(time.Since(t0).Nanoseconds()) / float64(count)
	<-done
	return map[string]any{"ns": ns}
}

func rounds(n, nrounds int, sleep time.Duration) map[string]any {
	base := rssBytes()
	var started int64
	var rss int64
	task := func(wg *sync.WaitGroup) {
		if atomic.AddInt64(&started, 1) == int64(n) {
			atomic.StoreInt64(&rss, rssBytes())
		}
		if sleep > 0 {
			time.Sleep(sleep)
		}
		wg.Done()
	}
	times := make([]int64, 0, nrounds)
	var rssMax int64
	for r := 0; r < nrounds; r++ {
		atomic.StoreInt64(&started, 0)
		var wg sync.WaitGroup
		t0 := time.Now()
		wg.Add(n)
		for i := 0; i < n; i++ {
			go task(&wg)
		}
		wg.Wait()
		times = append(times, time.Since(t0).Nanoseconds())
		if d := atomic.LoadInt64(&rss) - base; d > rssMax {
			rssMax = d
		}
	}
	later := append([]int64(nil), times[1:]...)
	if len(later) == 0 {
		later = times
	}
	sort.Slice(later, func(i, j int) bool { return later[i] < later[j] })
	var med float64
	if m := len(later); m%2 == 1 {
		med = float64(later[m/2])
	} else {
		med = float64(later[m/2-1]+later[m/2]) / 2
	}
	return map[string]any{
		"first_ns":          times[0],
		"round_ns":          med,
		"ns_per_task":       med / float64(n),
		"first_ns_per_task": float64(times[0]) / float64(n),
		"rss_per_task":      float64(rssMax) / float64(n),
	}
}

func parked(n int) map[string]any {
	base := rssBytes()
	release := make(chan struct{})
	var started, done sync.WaitGroup
	started.Add(n)
	done.Add(n)
	for i := 0; i < n; i++ {
		go func() {
			started.Done()
			<-release
			done.Done()
		}()
	}
	started.Wait()
	rss := rssBytes() - base
	close(release)
	done.Wait()
	return map[string]any{"rss_per_task": float64(rss) / float64(n), "alive": n}
}

func main() {
	usage := "usage: peers-go W1 COUNT | Q1 COUNT | W2 N ROUNDS | W3 N ROUNDS | W3mem N" +
		" | echo-server | http-server"
	if len(os.Args) == 2 && os.Args[1] == "echo-server" {
		echoServer() // servers.go
	} else if len(os.Args) == 2 && os.Args[1] == "http-server" {
		httpServer()
	}
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	a, err := strconv.Atoi(os.Args[2])
	if err != nil || a <= 0 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	nrounds := 3
	if len(os.Args) > 3 {
		if nrounds, err = strconv.Atoi(os.Args[3]); err != nil || nrounds < 1 {
			fmt.Fprintln(os.Stderr, usage)
			os.Exit(2)
		}
	}
	var out map[string]any
	switch os.Args[1] {
	case "W1":
		out = w1(a)
	case "Q1":
		out = q1(a)
	case "W2":
		out = rounds(a, nrounds, 0)
	case "W3":
		out = rounds(a, nrounds, 10*time.Millisecond)
	case "W3mem":
		out = parked(a)
	default:
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	out["go"] = runtime.Version()
	out["gomaxprocs"] = runtime.GOMAXPROCS(0)
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
}
