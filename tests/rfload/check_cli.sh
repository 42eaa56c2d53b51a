#!/bin/bash
# rfload's command line, as a user meets it: bad arguments exit with
# status 2 and one line "rfload: <what is wrong>" on stderr (nothing on
# stdout); --help exits 0 with the usage on stdout; a refused connection
# exits 1 with the address and the reason, and leaves no --json file.
#   check_cli.sh PATH/TO/rfload
set -u
rfload=$1
fails=0

expect() { # expect STATUS NEEDLE ARGS...
    local want=$1 needle=$2
    shift 2
    local out err status
    out=$(timeout 20 "$rfload" "$@" 2>/tmp/rfload_cli_err.$$)
    status=$?
    err=$(cat /tmp/rfload_cli_err.$$)
    if [ "$status" != "$want" ] || ! grep -qF -- "$needle" <<<"$err$out"; then
        echo "FAIL: rfload $*: status $status (wanted $want)," \
             "output '$out', stderr '$err' (wanted '$needle')"
        fails=$((fails + 1))
    elif [ "$want" = 2 ] && [ -n "$out" ]; then
        echo "FAIL: rfload $*: printed on stdout: $out"
        fails=$((fails + 1))
    fi
}

expect 2 "rfload: no URL given"
expect 2 "rfload: unknown option --bogus" --bogus http://127.0.0.1:1/
expect 2 "rfload: --connections must be 1..100000, not 'many'" \
    -c many http://127.0.0.1:1/
expect 2 "rfload: --rate: a number of requests per second" --rate -3 \
    http://127.0.0.1:1/
expect 2 "rfload: --duration must be a positive time" -d 3x echo://127.0.0.1:1
expect 2 "rfload: the URL must start with http:// or echo://" 127.0.0.1:80
expect 2 "is not a numeric address" http://localhost.example:80/
expect 2 "rfload: --json needs a file name" --json= http://127.0.0.1:1/
expect 2 "(rfload --help lists the options)" -t 0 http://127.0.0.1:1/
expect 0 "usage: rfload [options] URL" --help
expect 0 "rfload 0." --version
expect 2 "rfload: a method is an HTTP token" -m "BAD METHOD" http://127.0.0.1:1/
expect 2 "rfload: --header applies to http:// targets only" -H "X: 1" \
    echo://127.0.0.1:1
reqfile=/tmp/rfload_cli_req.$$
printf 'request\n  method GET\n  weight 2\n' > "$reqfile"
expect 2 "rfload: $reqfile:3: unknown key" --request-file "$reqfile" \
    http://127.0.0.1:1/
rm -f "$reqfile"

# A port nothing listens on (found by binding one and letting it go).
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 9)
json=/tmp/rfload_cli_json.$$
expect 1 "rfload: connect to 127.0.0.1:$port: " -q -n 5 --json "$json" \
    "echo://127.0.0.1:$port"
if [ -e "$json" ]; then
    echo "FAIL: a run that did not start left $json behind"
    fails=$((fails + 1))
    rm -f "$json"
fi

rm -f /tmp/rfload_cli_err.$$
if [ "$fails" != 0 ]; then
    echo "$fails check(s) failed"
    exit 1
fi
echo "all command-line checks passed"
