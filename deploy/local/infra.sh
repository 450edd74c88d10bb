#!/usr/bin/env bash
# Local, Docker-free infrastructure: a single-node KRaft Apache Kafka broker (official jars
# from Maven Central, run on the machine's Java 17) and a PostgreSQL server (Debian's
# package), both with data under .local/.
#
#   infra.sh up        start both (installs what is missing); returns once both accept clients
#   infra.sh down      stop both
#   infra.sh status    say what runs
#   infra.sh restart-kafka | stop-pg | start-pg    (fault tests)
#
# Overridable: KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093), PG_PORT (5432),
# PG_USER/PG_PASSWORD/PG_DB (depthflow), DEPTHFLOW_LOCAL_DIR (.local), KAFKA_HEAP_OPTS.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LOCAL="${DEPTHFLOW_LOCAL_DIR:-$ROOT/.local}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
PG_PORT="${PG_PORT:-5432}"
PG_USER="${PG_USER:-depthflow}"
PG_PASSWORD="${PG_PASSWORD:-depthflow}"
PG_DB="${PG_DB:-depthflow}"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$ROOT/deploy/local/pom.xml")"
KDIR="$LOCAL/kafka"
PGDIR="$LOCAL/pg"

say() { printf '[infra] %s\n' "$*" >&2; }
die() { printf '[infra] ERROR: %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

apt_install() {
  [ "$(id -u)" = 0 ] || die "need root to apt-get install $*; install them and retry"
  say "installing $* with apt-get"
  if [ ! -f "$LOCAL/.apt-updated" ]; then apt-get update -qq >&2 && mkdir -p "$LOCAL" && touch "$LOCAL/.apt-updated"; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

# ---------------------------------------------------------------- Kafka
kafka_fetch() {
  if [ -f "$KDIR/libs/.version" ] && [ "$(cat "$KDIR/libs/.version")" = "$KAFKA_VERSION" ]; then return; fi
  command -v java >/dev/null || apt_install openjdk-17-jre-headless
  command -v mvn >/dev/null || apt_install maven
  say "fetching Apache Kafka $KAFKA_VERSION broker jars from Maven Central"
  rm -rf "$KDIR/libs"; mkdir -p "$KDIR/libs"
  mvn -q -B -f "$ROOT/deploy/local/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$KDIR/libs" -DincludeScope=runtime >&2 \
      || die "mvn could not fetch the Kafka jars (is Maven Central reachable?)"
  echo "$KAFKA_VERSION" > "$KDIR/libs/.version"
}

kafka_java() {
  # shellcheck disable=SC2086
  java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g} -XX:+UseG1GC -Djava.awt.headless=true \
    -Dkafka.logs.dir="$KDIR/logs" -Dlog4j.configuration="file:$ROOT/deploy/local/log4j.properties" \
    -cp "$KDIR/libs/*" "$@"
}

kafka_config() {
  mkdir -p "$KDIR/logs" "$KDIR/data"
  cat > "$KDIR/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$KDIR/data
num.partitions=6
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
delete.topic.enable=true
log.retention.hours=168
log.segment.bytes=268435456
message.max.bytes=10485760
PROPS
}

kafka_up() {
  if port_open "$KAFKA_PORT"; then say "Kafka already listening on 127.0.0.1:$KAFKA_PORT"; return; fi
  kafka_fetch
  kafka_config
  if [ ! -f "$KDIR/data/meta.properties" ]; then
    local cid; cid="$(kafka_java kafka.tools.StorageTool random-uuid | tail -1)"
    kafka_java kafka.tools.StorageTool format -t "$cid" -c "$KDIR/server.properties" >&2 \
      || die "cannot format the KRaft storage in $KDIR/data"
  fi
  say "starting Kafka $KAFKA_VERSION (KRaft) on 127.0.0.1:$KAFKA_PORT"
  : > "$KDIR/logs/stdout.log"
  setsid nohup bash -c "$(declare -f kafka_java); KDIR='$KDIR' ROOT='$ROOT' KAFKA_HEAP_OPTS='${KAFKA_HEAP_OPTS:-}' kafka_java kafka.Kafka '$KDIR/server.properties'" \
    >>"$KDIR/logs/stdout.log" 2>&1 < /dev/null &
  echo $! > "$KDIR/kafka.pid"
  for _ in $(seq 1 240); do
    if port_open "$KAFKA_PORT" && grep -q "Kafka Server started" "$KDIR/logs/server.log" 2>/dev/null; then
      say "Kafka is up"; return
    fi
    if ! kill -0 "$(cat "$KDIR/kafka.pid")" 2>/dev/null; then
      tail -30 "$KDIR/logs/stdout.log" "$KDIR/logs/server.log" >&2 2>/dev/null || true
      die "Kafka exited during start (logs above, full logs in $KDIR/logs)"
    fi
    sleep 0.5
  done
  die "Kafka did not accept connections within 120 s (see $KDIR/logs)"
}

kafka_down() {
  if [ -f "$KDIR/kafka.pid" ] && kill -0 "$(cat "$KDIR/kafka.pid")" 2>/dev/null; then
    local pid; pid="$(cat "$KDIR/kafka.pid")"
    say "stopping Kafka (pid $pid)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  # a broker started by an earlier checkout of this folder
  pkill -f "kafka.Kafka $KDIR/server.properties" 2>/dev/null || true
  for _ in $(seq 1 40); do port_open "$KAFKA_PORT" || break; sleep 0.25; done
  rm -f "$KDIR/kafka.pid"
}

# ---------------------------------------------------------------- PostgreSQL
pg_bin() {
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  if [ -z "$d" ] || [ ! -x "$d/initdb" ]; then
    apt_install postgresql
    d="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
  fi
  echo "$d"
}

as_pg() {
  # initdb and postgres refuse to run as root: run them as the postgres system user.
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_can_login() {
  PGPASSWORD="$PG_PASSWORD" psql -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d "$PG_DB" -tAc 'select 1' >/dev/null 2>&1
}

pg_start() {
  local bin; bin="$(pg_bin)"
  mkdir -p "$PGDIR"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$PGDIR"; fi
  if [ ! -f "$PGDIR/data/PG_VERSION" ]; then
    say "creating a PostgreSQL cluster in $PGDIR/data"
    as_pg "$bin/initdb" -D "$PGDIR/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      -E UTF8 --locale=C.UTF-8 >/dev/null || die "initdb failed"
    cat >> "$PGDIR/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$PGDIR'
max_connections = 200
shared_buffers = 512MB
synchronous_commit = on
wal_level = replica
max_wal_size = 4GB
fsync = on
CONF
  fi
  if ! as_pg "$bin/pg_ctl" -D "$PGDIR/data" status >/dev/null 2>&1; then
    say "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    as_pg "$bin/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/postgres.log" -w -t 60 \
      -o "-p $PG_PORT" start >/dev/null || { tail -20 "$PGDIR/postgres.log" >&2; die "PostgreSQL did not start"; }
  fi
}

pg_up() {
  if port_open "$PG_PORT" && pg_can_login; then say "PostgreSQL already accepting $PG_USER on 127.0.0.1:$PG_PORT"; return; fi
  if port_open "$PG_PORT" && [ ! -f "$PGDIR/data/postmaster.pid" ]; then
    die "port $PG_PORT is taken by another server that refuses $PG_USER; set PG_PORT or POSTGRES_DSN"
  fi
  pg_start
  local bin; bin="$(pg_bin)"
  # Role and database, idempotently, over the local socket as the superuser.
  as_pg "$bin/psql" -h "$PGDIR" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -q \
    -v user="$PG_USER" -v pass="$PG_PASSWORD" -v db="$PG_DB" <<'SQL' >/dev/null
SELECT format('CREATE ROLE %I LOGIN CREATEDB PASSWORD %L', :'user', :'pass')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'user') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SQL
  pg_can_login || die "PostgreSQL runs but $PG_USER cannot log in to $PG_DB"
  say "PostgreSQL is up"
}

pg_stop() {
  local bin; bin="$(pg_bin)"
  if [ -f "$PGDIR/data/PG_VERSION" ]; then
    as_pg "$bin/pg_ctl" -D "$PGDIR/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
}

case "${1:-}" in
  up) kafka_up; pg_up
      say "Kafka:      127.0.0.1:$KAFKA_PORT"
      say "PostgreSQL: postgresql://$PG_USER:***@127.0.0.1:$PG_PORT/$PG_DB" ;;
  down) kafka_down; pg_stop; say "stopped" ;;
  status)
    port_open "$KAFKA_PORT" && say "Kafka: up on $KAFKA_PORT" || say "Kafka: down"
    pg_can_login && say "PostgreSQL: up on $PG_PORT" || say "PostgreSQL: down" ;;
  kafka-fetch) kafka_fetch ;;
  restart-kafka) kafka_down; kafka_up ;;
  stop-kafka) kafka_down ;;
  start-kafka) kafka_up ;;
  stop-pg) pg_stop ;;
  start-pg) pg_up ;;
  *) echo "usage: $0 up|down|status|kafka-fetch|restart-kafka|stop-kafka|start-kafka|stop-pg|start-pg" >&2; exit 2 ;;
esac
