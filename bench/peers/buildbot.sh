#!/usr/bin/env bash
# Buildbot beside Sluice: per-step overhead of the same 3-step and 10-step
# builds of steps that do nothing, measured in the same run on this machine.
#
# Buildbot (master and worker, from PyPI, in a virtualenv) runs on loopback;
# each build is a chain of `true` shell steps. A small service inside the
# master stamps every step start with the master's clock; the per-step
# overhead is the gap between two consecutive step starts (the whole cost of
# one step, as Sluice's figure is the gap between two action dispatches).
# Sluice's figure comes from `sluice-bench overhead --actions N` (release
# build) in the same run. Not run by CI: it installs buildbot.
#
# Usage: bench/peers/buildbot.sh [BUILDS_PER_SIZE]   (default 6, the first is a warm-up)
# Env:   BUILDBOT_VENV (default ~/.cache/sluice-bench/buildbot-venv)
#        SLUICE_BENCH  (default target/release/sluice-bench)
set -euo pipefail
cd "$(dirname "$0")/../.."

BUILDS=${1:-6}
VENV=${BUILDBOT_VENV:-$HOME/.cache/sluice-bench/buildbot-venv}
# The versions this was written against; both install on Python 3.9 to 3.13.
BUILDBOT_VERSION=4.3.0
SLUICE_BENCH=${SLUICE_BENCH:-${CARGO_TARGET_DIR:-target}/release/sluice-bench}

if [ ! -x "$SLUICE_BENCH" ]; then
  echo "error: $SLUICE_BENCH is missing: build it first with cargo build --release --workspace --bins" >&2
  exit 2
fi
if [ ! -x "$VENV/bin/buildbot" ] || ! "$VENV/bin/pip" show buildbot 2>/dev/null | grep -q "^Version: $BUILDBOT_VERSION$"; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "buildbot==$BUILDBOT_VERSION" "buildbot-worker==$BUILDBOT_VERSION"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/buildbot-peer.XXXXXX")
cleanup() {
  "$VENV/bin/buildbot-worker" stop "$WORK/worker" >/dev/null 2>&1 || true
  "$VENV/bin/buildbot" stop "$WORK/master" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
STAMPS="$WORK/stamps.txt"
"$VENV/bin/buildbot" create-master -q "$WORK/master"
cat > "$WORK/master/master.cfg" <<EOF
import time
from twisted.internet import defer
from buildbot.plugins import changes, schedulers, steps, util, worker
from buildbot.util import service

class Stamps(service.BuildbotService):
    """Writes the master's time of every step start and build end."""
    name = "stamps"

    @defer.inlineCallbacks
    def startService(self):
        yield super().startService()
        self.consumers = [
            (yield self.master.mq.startConsuming(self.step, ("steps", None, "started"))),
            (yield self.master.mq.startConsuming(self.build, ("builds", None, "finished"))),
        ]

    def write(self, line):
        with open("$STAMPS", "a") as f:
            f.write("%.6f %s\n" % (time.time(), line))

    def step(self, key, msg):
        self.write("step %s %s" % (msg["buildid"], msg["name"]))

    def build(self, key, msg):
        self.write("build %s %s" % (msg["buildid"], msg["results"]))

def chain(n):
    factory = util.BuildFactory()
    for i in range(n):
        factory.addStep(steps.ShellCommand(name="true-%d" % (i + 1), command=["true"]))
    return factory

c = BuildmasterConfig = {}
c["workers"] = [worker.Worker("w1", "bench")]
c["protocols"] = {"pb": {"port": "tcp:$PORT:interface=127.0.0.1"}}
c["change_source"] = [changes.PBChangeSource(user="bench", passwd="bench")]
c["builders"] = [
    util.BuilderConfig(name="steps%d" % n, workernames=["w1"], factory=chain(n)) for n in (3, 10)
]
c["schedulers"] = [
    schedulers.SingleBranchScheduler(name="s%d" % n, change_filter=util.ChangeFilter(branch="steps%d" % n),
                                     treeStableTimer=None, builderNames=["steps%d" % n])
    for n in (3, 10)
]
c["services"] = [Stamps()]
c["title"] = "sluice-bench peer"
c["buildbotURL"] = "http://127.0.0.1/"
c["db"] = {"db_url": "sqlite:///state.sqlite"}
EOF
"$VENV/bin/buildbot" start "$WORK/master" >/dev/null
"$VENV/bin/buildbot-worker" create-worker -q "$WORK/worker" "127.0.0.1:$PORT" w1 bench
"$VENV/bin/buildbot-worker" start "$WORK/worker" >/dev/null
for _ in $(seq 300); do
  grep -q "worker w1 attached\|Worker w1 attached\|attached to" "$WORK/master/twistd.log" 2>/dev/null && break
  sleep 0.1
done

# One build at a time: send a change, wait for the build to finish.
finished() { cat "$STAMPS" 2>/dev/null | grep -c "^[0-9.]* build " || true; }
for n in 3 10; do
  for _ in $(seq "$BUILDS"); do
    before=$(finished)
    "$VENV/bin/buildbot" sendchange --master "127.0.0.1:$PORT" --auth bench:bench --who bench \
      --branch "steps$n" --comments bench README >/dev/null
    for _ in $(seq 600); do
      [ "$(finished)" -gt "${before:-0}" ] && break
      sleep 0.05
    done
  done
done

# Sluice: the same chains of noop actions, measured by its own benchmark.
"$SLUICE_BENCH" overhead --actions 3 --executions "$((BUILDS - 1))" --output json > "$WORK/sluice3.json"
"$SLUICE_BENCH" overhead --actions 10 --executions "$((BUILDS - 1))" --output json > "$WORK/sluice10.json"

python3 - "$STAMPS" "$WORK/sluice3.json" "$WORK/sluice10.json" <<'EOF'
import json, statistics, sys

stamps, sluice = sys.argv[1], {3: sys.argv[2], 10: sys.argv[3]}
builds = {}  # buildid -> [step start times], in order
for line in open(stamps):
    t, kind, buildid, rest = line.split(" ", 3)
    if kind == "step" and rest.strip().startswith("true-"):
        builds.setdefault(buildid, []).append(float(t))

by_size = {3: [], 10: []}
for starts in builds.values():
    if len(starts) in by_size:
        by_size[len(starts)].append(starts)

def figure(doc, name):
    for s in doc["scenarios"]:
        for f in s["figures"]:
            if f["figure"] == name:
                return f["value"]

print("machine: %s" % json.load(open(sluice[3]))["machine"])
print()
print("| steps | buildbot per-step p50 | sluice per-action p50 | buildbot / sluice |")
print("| ----- | --------------------- | --------------------- | ----------------- |")
for n in (3, 10):
    runs = by_size[n][1:]  # the first build of each size warms up
    gaps = [(b - a) * 1e3 for starts in runs for a, b in zip(starts, starts[1:])]
    if not gaps:
        print("| %d | no buildbot builds finished | | |" % n)
        continue
    bb = statistics.median(gaps)
    sl = figure(json.load(open(sluice[n])), "per-action overhead p50")
    print("| %5d | %18.2f ms | %18.3f ms | %16.0fx |" % (n, bb, sl, bb / sl))
print()
print("per-step overhead: the gap between two consecutive step starts (buildbot) or action")
print("dispatches (sluice) in one build, over %s measured builds of each size" % (len(by_size[3]) - 1))
EOF
