#!/bin/bash
# rfload's HdrHistogram files read by HdrHistogram's reference reader (the
# Java library, Debian's libhdrhistogram-java): a short open-loop run
# against examples/http_hello writes a .hgrm and an interval log; the
# reader must find a line for every second, the same total, and, from the
# intervals added up, the same distribution row for row (the percentile
# column may differ in its 12th decimal: Java and C round differently).
# Skipped (77) where java, javac or the library are missing.
#   check_hdr_java.sh RFLOAD HTTP_HELLO
set -u
. "$(dirname "$0")/common.sh"
rfload=$1 server=$2
jar=/usr/share/java/hdrhistogram.jar
if ! command -v java >/dev/null || ! command -v javac >/dev/null ||
   [ ! -r "$jar" ]; then
    echo "skipped: needs java, javac and $jar (libhdrhistogram-java)"
    exit 77
fi
dir=$(mktemp -d /tmp/rfload_hdr.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
"$server" --port 0 >"$dir/server.log" 2>&1 &
pid=$!
port=$(listening_port "$dir/server.log")
[ -n "$port" ] || { echo "FAIL: http_hello did not start"; exit 1; }
"$rfload" -q -c 4 -t 2 -R 2000 -d 3 --hgrm "$dir/r.hgrm" \
    --interval-log "$dir/r.hlog" "http://127.0.0.1:$port/" >/dev/null ||
    { echo "FAIL: rfload failed"; exit 1; }
kill "$pid"; wait "$pid" 2>/dev/null; pid=
javac -d "$dir" -cp "$jar" "$(dirname "$0")/HdrCheck.java" ||
    { echo "FAIL: javac"; exit 1; }
java -cp "$jar:$dir" HdrCheck "$dir/r.hlog" "$dir/java.hgrm" >"$dir/java.out" ||
    { echo "FAIL: HdrHistogram could not read the interval log"; exit 1; }
read -r intervals total <"$dir/java.out"
ours=$(sed -n 's/.*Total count    = *\([0-9]*\)\]/\1/p' "$dir/r.hgrm")
fails=0
[ "$intervals" = 3 ] || { echo "FAIL: $intervals intervals, not 3"; fails=1; }
[ "$total" = "$ours" ] || { echo "FAIL: total $total, rfload's $ours"; fails=1; }
# Row for row: value and count equal, percentile within 1e-11.
if ! awk 'NR == FNR { if ($0 !~ /^#/ && NF >= 3 && $1 ~ /^[0-9]/) a[++n] = $0; next }
          $0 !~ /^#/ && NF >= 3 && $1 ~ /^[0-9]/ {
              split(a[++m], o, " ")
              d = o[2] - $2; if (d < 0) d = -d
              if (o[1] != $1 || o[3] != $3 || d > 1e-11) { print "row " m ": " a[m] " | " $0; bad = 1 }
          }
          END { if (n != m) { print n " rows against " m; bad = 1 }; exit bad }' \
        "$dir/r.hgrm" "$dir/java.hgrm"; then
    echo "FAIL: the distributions differ"
    fails=1
fi
[ "$fails" = 0 ] && echo "ok: $intervals intervals, $total answers, the same distribution"
exit "$fails"
