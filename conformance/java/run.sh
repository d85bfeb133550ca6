#!/usr/bin/env bash
# Runs the functional tests that build.sh built against one AMQP endpoint
# (user guest/guest, vhost /): each class in its own JVM, each test in turn
# with a deadline. Prints one line per test on stdout, everything else
# (the tests' own output, "=== test (seconds)" markers, a summary) on stderr:
#   PASS|FAIL|SKIP Class.method [reason]
#
#   conformance/java/run.sh HOST PORT [CLASS...]   (default: every class in the build's classes.txt)
#
#   JAVA_SUITE_BUILD   the build (default ~/.cache/amqp-gw/java-suite)
#   JAVA_TEST_TIMEOUT  seconds per test (default 60)
# Tests listed in excluded.txt are not run (SKIP ... excluded: reason).
#
# One JVM per class: amqp-client 5.0.0 sometimes takes the socket reset that
# follows its own abort() for a failure and recovers the connection 5 s later,
# declaring again the queues the test had deleted (e.g. Routing's "foo",
# which then breaks DeadLetterExchange); such a connection dies with its JVM.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build="${JAVA_SUITE_BUILD:-$HOME/.cache/amqp-gw/java-suite}"
host="${1:?usage: run.sh HOST PORT [CLASS...]}"
port="${2:?usage: run.sh HOST PORT [CLASS...]}"
shift 2
[ -f "$build/stamp" ] || { echo "not built: conformance/java/build.sh SNAPSHOT_DIR $build" >&2; exit 2; }
if [ $# -eq 0 ]; then
  mapfile -t classes <"$build/classes.txt"
  set -- "${classes[@]}"
fi
pass=0 fail=0 skip=0 start=$SECONDS
for class in "$@"; do
  status=0
  lines=$(java -Damqp.host="$host" -Damqp.port="$port" -Dorg.slf4j.simpleLogger.defaultLogLevel=warn \
            -cp "$build/classes:$(cat "$build/classpath")" amqpgw.SuiteRunner \
            --timeout "${JAVA_TEST_TIMEOUT:-60}" --excluded "$here/excluded.txt" "$class") || status=$?
  [ $status -eq 0 ] || lines+="${lines:+$'\n'}FAIL ${class##*.}.* the JVM exited with status $status"
  [ -n "$lines" ] || continue
  echo "$lines"
  pass=$((pass + $(grep -c '^PASS' <<<"$lines" || true)))
  fail=$((fail + $(grep -c '^FAIL' <<<"$lines" || true)))
  skip=$((skip + $(grep -c '^SKIP' <<<"$lines" || true)))
done
echo "$pass passed, $fail failed, $skip skipped in $((SECONDS - start)) s against $host:$port" >&2
