// The W6 and W7 servers with Go's standard library, for bench/compare and
// bench/w7_http.sh. Run with GOMAXPROCS=1 like the other Go workloads.
//
//	peers-go echo-server   net.Listen + one goroutine per connection,
//	                       Read then Write it all back (TCP_NODELAY is
//	                       Go's default)
//	peers-go http-server   net/http answering "hello world!" (text/plain)
//	                       to every request, keep-alive (Go's default)
//
// Both listen on 127.0.0.1 at an ephemeral port, print "listening on
// 127.0.0.1:PORT" and serve until they are killed.
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
)

func listen() net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	return ln
}

func echoServer() {
	ln := listen()
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		go func(c net.Conn) {
			defer c.Close()
			buf := make([]byte, 16384)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}(c)
	}
}

func httpServer() {
	ln := listen()
	hello := []byte("hello world!")
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write(hello)
	})
	err := http.Serve(ln, h)
	if err != nil && err != io.EOF {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
