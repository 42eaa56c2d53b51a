# Sourced by the rfload test scripts.
# listening_port LOG: the port a server prints in LOG ("listening on
# HOST:PORT"), waiting up to 5 s for the line; empty if it never comes.
listening_port() {
    local port=
    for _ in $(seq 100); do
        port=$(grep -o 'listening on .*:[0-9]*' "$1" | grep -o '[0-9]*$')
        [ -n "$port" ] && break
        sleep 0.05
    done
    echo "$port"
}
