"""Test-only hook for the zombie-primary drill (scripts/ha.sh zombie, kg-bench chaos
pg-zombie): Python imports this file at start-up when scripts/ha.sh runs Patroni with
KG_HA_TEST_HOOKS=1, and it wraps Patroni's etcd3 leader-key update.

When the member's trigger file exists, the next call of `Etcd3._update_leader` (the leader
renewing its key, once per loop) removes the trigger, stops the member's postmaster and its
children, writes the frozen marker, and stops this Patroni process itself. Execution resumes
inside the wrapper on SIGCONT (`scripts/ha.sh resume`), and the original update runs with the
cluster view Patroni had cached before the freeze: the exact moment at which Patroni 3.0.2
overwrote the new leader's key with a plain put. Without the trigger the wrapper only calls
the original.
"""

import os
import signal
import sys

TRIGGER = os.environ.get("KG_ZOMBIE_TRIGGER")
PGDATA = os.environ.get("KG_ZOMBIE_PGDATA")


def _children(pid):
    """Every process whose parent is `pid`, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def _freeze():
    stopped = []
    try:
        with open(os.path.join(PGDATA, "postmaster.pid")) as pidfile:
            postmaster = int(pidfile.readline())
        # The postmaster first, so that it forks no new backend while its children stop.
        for pid in [postmaster] + _children(postmaster):
            try:
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
            except OSError:
                pass
    except (OSError, ValueError):
        pass
    with open(TRIGGER + ".frozen", "w") as marker:
        marker.write(" ".join(str(pid) for pid in [os.getpid()] + stopped) + "\n")
    _log(f"frozen inside the leader-key update with the postmaster's tree {stopped}")
    os.kill(os.getpid(), signal.SIGSTOP)


def _log(message):
    sys.stderr.write(f"kg-zombie-hook: {message}\n")
    sys.stderr.flush()


def _install():
    from patroni.dcs import etcd3

    original = etcd3.Etcd3._update_leader

    def _update_leader(self, *args, **kwargs):
        if not os.path.exists(TRIGGER):
            return original(self, *args, **kwargs)
        os.unlink(TRIGGER)
        _freeze()
        # Awake again: what the leader-key update does now is the drill's evidence, in
        # Patroni's log beside its own lines.
        try:
            result = original(self, *args, **kwargs)
        except BaseException as error:
            _log(f"the leader-key update after the freeze raised {error!r}")
            raise
        _log(f"the leader-key update after the freeze returned {result!r}")
        return result

    etcd3.Etcd3._update_leader = _update_leader


if TRIGGER and PGDATA:
    _install()
