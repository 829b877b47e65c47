#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback, for the distributed-search tests.
#   postgres.sh start DIR PORT   -> prints the database URL
#   postgres.sh stop DIR
#   postgres.sh kill DIR         -> stops it the hard way (pg_ctl stop -m immediate: no shutdown, crash recovery next)
#   postgres.sh restart DIR      -> starts DIR's server again, on the port it had
set -euo pipefail
cmd=$1 dir=$2
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$bin" ] || { echo "PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 3; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
run_server() {
  as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
    -o "-p $1 -k $dir -c listen_addresses=127.0.0.1 -c max_connections=100" start >/dev/null
}
case $cmd in
  start)
    port=$3
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    as_pg "$bin/initdb" -D "$dir/data" -U autoplace --auth=trust >"$dir/initdb.log" 2>&1
    echo "$port" >"$dir/port"
    run_server "$port"
    as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U autoplace autoplace
    echo "postgresql://autoplace:secret-pw@127.0.0.1:$port/autoplace"
    ;;
  stop)
    as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    ;;
  kill)
    as_pg "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null
    ;;
  restart)
    run_server "$(cat "$dir/port")"
    ;;
  *) echo "usage: $0 start DIR PORT | stop DIR | kill DIR | restart DIR" >&2; exit 2 ;;
esac
