#!/usr/bin/env bash
# Builds RabbitMQ's broker functional tests from the Java client's repository
# (rabbitmq-java-client v5.0.0, its src/test; a snapshot outside this
# repository, never copied into it) with javac against Debian's jars.
#
#   conformance/java/build.sh SNAPSHOT_DIR [OUT_DIR]
#
# SNAPSHOT_DIR holds src/test/java, e.g.
#   git -C <mirror of rabbitmq/rabbitmq-java-client> archive v5.0.0 src/test | tar -x -C /tmp/suites/java-client
# OUT_DIR (default $JAVA_SUITE_BUILD, else ~/.cache/amqp-gw/java-suite) gets a
# patched copy of the sources (src/), the classes, the classpath and the test
# classes to run (classes.txt). Nothing is rebuilt while the snapshot, the
# sources here and this script are unchanged.
#
# The copy is patched so that every connection goes to -Damqp.host/-Damqp.port
# (amqpgw.Target) and so that no second, "clustered" node is looked for on
# localhost:5673 (ClusteredTestBase), where the reference RabbitMQ may be.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
snapshot=$(cd "${1:?usage: build.sh SNAPSHOT_DIR [OUT_DIR]}" && pwd)
out="${2:-${JAVA_SUITE_BUILD:-$HOME/.cache/amqp-gw/java-suite}}"
[ -f "$snapshot/src/test/java/com/rabbitmq/client/test/BrokerTestCase.java" ] ||
  { echo "no rabbitmq-java-client src/test/java in $snapshot" >&2; exit 2; }

stamp=$( { (cd "$snapshot" && find src/test/java -name '*.java' | LC_ALL=C sort | xargs sha1sum)
           (cd "$here" && find build.sh src -type f | LC_ALL=C sort | xargs sha1sum); } | sha1sum | cut -c1-40)
if [ "$(cat "$out/stamp" 2>/dev/null)" = "$stamp" ]; then
  exit 0
fi

jars=(/usr/share/java/amqp-client-5.0.0.jar /usr/share/java/junit4.jar /usr/share/java/hamcrest.jar
      /usr/share/java/slf4j-api.jar /usr/share/java/slf4j-simple.jar /usr/share/java/metrics-core.jar)
for jar in "${jars[@]}"; do
  [ -f "$jar" ] || { echo "missing $jar (Debian: librabbitmq-client-java junit4 libhamcrest-java" \
                          "libslf4j-java libdropwizard-metrics-java)" >&2; exit 2; }
done
classpath=$(IFS=:; echo "${jars[*]}")

rm -rf "$out/src" "$out/classes" "$out/stamp"
mkdir -p "$out/src" "$out/classes"
cp -r "$snapshot/src/test/java/." "$out/src/"
t="$out/src/com/rabbitmq/client/test"

# patch FILE PERL-SUBSTITUTION: applied to the copy; it must change something.
patch() {
  local before
  before=$(sha1sum <"$1")
  perl -0pi -e "$2" "$1"
  [ "$(sha1sum <"$1")" != "$before" ] || { echo "patch did not apply to $1: $2" >&2; exit 1; }
}
# Every factory the tests get from TestUtils, and the ConnectionFactory subclasses of FrameMax and UnexpectedFrames.
patch "$t/TestUtils.java" \
  's/(ConnectionFactory connectionFactory = new ConnectionFactory\(\);)/$1 amqpgw.Target.apply(connectionFactory);/'
for f in FrameMax UnexpectedFrames; do
  patch "$t/functional/$f.java" \
    's/(public \w+ConnectionFactory\(\) \{\s*super\(\);)/$1 amqpgw.Target.apply(this);/g'
done
# Raw sockets (protocol header tests).
patch "$t/functional/ConnectionOpen.java" \
  's/createSocket\("localhost", AMQP\.PROTOCOL\.PORT\)/createSocket(amqpgw.Target.host(), amqpgw.Target.port())/g'
# One broker: no secondary node (otherwise DurableOnTransient would stop it with make).
patch "$t/functional/ClusteredTestBase.java" \
  's/cf2\.setHost\("localhost"\);/if (cf2 != null) throw new IOException("one broker: no secondary node");/'

if ! javac -nowarn -encoding UTF-8 -d "$out/classes" -cp "$classpath" -sourcepath "$out/src:$here/src" \
    "$t"/functional/*.java "$t/Bug20004Test.java" "$out/src/com/rabbitmq/client/impl/WorkPoolTests.java" \
    "$here"/src/amqpgw/*.java >"$out/javac.log" 2>&1; then
  cat "$out/javac.log" >&2
  echo "javac failed" >&2
  exit 1
fi

# The classes upstream's FunctionalTests suite lists, then the other test classes in functional/
# (SuiteRunner passes over abstract ones).
{ grep -o '^\s*[A-Za-z0-9]*\.class' "$t/functional/FunctionalTests.java" | tr -d ' \t' | sed 's/\.class$//' |
    while read -r c; do
      f=$(cd "$out/src" && find . -name "$c.java" | head -n1)
      echo "${f#./}"
    done
  (cd "$out/src" && grep -l '@Test' com/rabbitmq/client/test/functional/*.java | LC_ALL=C sort)
} | sed 's/\.java$//; s|/|.|g' | awk '!seen[$0]++' >"$out/classes.txt"

echo "$classpath" >"$out/classpath"
echo "$stamp" >"$out/stamp"
echo "built $(wc -l <"$out/classes.txt") test classes into $out" >&2
