"""A real Redis Cluster for tests and benches: ``redis-server --cluster-enabled yes`` processes on free loopback ports,
formed with ``CLUSTER ADDSLOTSRANGE`` + ``CLUSTER MEET`` (+ ``CLUSTER REPLICATE``), killed and failed over on demand.

What Redis 7.0.15 does with a script's undeclared keys (measured on real servers; regression tests in
``integration/test_redis_cluster_fixture.py``). ``#!lua`` and ``#!lua flags=no-writes`` behave alike for reads:

===================================  ===================================  ==========================================
undeclared key                       ``#!lua`` (any flags)                no shebang
===================================  ===================================  ==========================================
cluster, same slot as KEYS           ALLOWED (no error)                   allowed
cluster, other slot, same node       ERR ``Script attempted to access     allowed (works by accident)
                                     keys that do not hash to the same
                                     slot script: <sha>, on
                                     @user_script:<line>.``
cluster, other slot, other node      ERR ``Script attempted to access a   same error
                                     non local key in a cluster node
                                     script: <sha>, on @user_script:<l>``
standalone server                    ALLOWED                              allowed
===================================  ===================================  ==========================================

So ``#!lua`` does not refuse an undeclared key as such: it pins the script to the slot of its declared keys (or, with
no KEYS, of the first key it touches) and refuses any other slot, on a cluster only. A cross-slot bug fails on a
one-node cluster too, but never on a standalone server. ``flags=no-writes`` refuses every write (SET, SPUBLISH, PUBLISH)
with ``Write commands are not allowed from read-only scripts.``, standalone or not.

Pub/sub from a ``#!lua`` script on a cluster: ``SPUBLISH`` to a channel of the declared keys' slot is accepted;
to a channel of another slot on the same node: the "do not hash to the same slot" error above; on another node: the
"non local key" error (the channel counts as a key). Plain ``PUBLISH`` is accepted (any channel; broadcast to every
node). Declared KEYS in two slots: ``CROSSSLOT Keys in request don't hash to the same slot``, before the script runs.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
from aic.local.ports import free_port
from redis.crc import key_slot

SLOTS = 16384


@dataclass
class ClusterNode:
    """One ``redis-server`` of the cluster: its ports, its directory (``nodes.conf``, ``redis.log``) and its process."""

    port: int
    bus_port: int
    workdir: Path
    process: subprocess.Popen[bytes]
    node_id: str = ""
    primary_id: str | None = None
    """The node id this one replicates; None for a primary."""
    alive: bool = True

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        """Without the password (``RedisCluster.urls`` has it)."""
        return f"redis://127.0.0.1:{self.port}"

    @property
    def is_primary(self) -> bool:
        return self.primary_id is None

    @property
    def log(self) -> Path:
        return self.workdir / "redis.log"

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = [line for line in self.log.read_text(errors="replace").splitlines() if "WARNING" not in line]
            text = text[-lines:]
        except OSError:
            text = ["(no log)"]
        return f"--- node :{self.port} ({self.node_id[:8] or '?'}) log ---\n" + "\n".join(text)


def wait_until(what: str, condition: Callable[[], bool], timeout_s: float, logs: Callable[[], str]) -> None:
    """Poll ``condition`` every 20 ms until true; a TimeoutError naming ``what`` with the nodes' logs otherwise.
    Redis errors while polling count as "not yet" (a node may be restarting its links)."""
    deadline = time.monotonic() + timeout_s
    last_error = ""
    while True:
        try:
            if condition():
                return
        except redis.RedisError as exc:
            last_error = f" (last error: {exc!r})"
        if time.monotonic() > deadline:
            raise TimeoutError(f"redis cluster: {what} not within {timeout_s} s{last_error}\n{logs()}")
        time.sleep(0.02)


def info_field(info: str, name: str) -> str:
    """One ``name:value`` field of an INFO or CLUSTER INFO reply (decoded text)."""
    for line in info.splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    return ""


@dataclass
class RedisCluster:
    """``primaries`` primaries with ``replicas_per_primary`` replicas each, slots split evenly and contiguously
    (primary i serves ``[i*16384//n, (i+1)*16384//n - 1]``). Start with ``RedisCluster.start(...)``; stop with
    ``stop()`` or use it as a context manager."""

    workdir: Path
    nodes: list[ClusterNode] = field(default_factory=list)
    password: str | None = None
    node_timeout_ms: int = 1000
    timeout_s: float = 30.0

    @classmethod
    def start(
        cls,
        primaries: int = 3,
        replicas_per_primary: int = 0,
        *,
        password: str | None = None,
        node_timeout_ms: int = 1000,
        extra_args: Sequence[str] = (),
        timeout_s: float = 30.0,
    ) -> RedisCluster:
        """Start the processes, form the cluster and wait until every node says ``cluster_state:ok``, knows every
        node, and every replica's link to its primary is up."""
        if primaries < 1 or replicas_per_primary < 0:
            raise ValueError("a cluster needs at least one primary and no negative replicas")
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (make setup installs it)")
        cluster = cls(Path(tempfile.mkdtemp(prefix="aic-redis-cluster-")), [], password, node_timeout_ms, timeout_s)
        try:
            for _ in range(primaries * (1 + replicas_per_primary)):
                cluster.nodes.append(cluster._spawn(binary, extra_args))
            cluster._form(primaries, replicas_per_primary)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    # --- what tests and benches use -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The first live primary's URL, with the password when there is one (any node would do for a cluster
        client: ``redis.asyncio.cluster.RedisCluster.from_url(cluster.url)``)."""
        return self.urls[0]

    @property
    def urls(self) -> list[str]:
        """Every live node's URL, primaries first."""
        auth = f":{self.password}@" if self.password else ""
        return [f"redis://{auth}127.0.0.1:{node.port}" for node in self.primaries() + self.replicas()]

    def primaries(self) -> list[ClusterNode]:
        return [node for node in self.nodes if node.alive and node.is_primary]

    def replicas(self) -> list[ClusterNode]:
        return [node for node in self.nodes if node.alive and not node.is_primary]

    def replicas_of(self, node: ClusterNode) -> list[ClusterNode]:
        return [other for other in self.replicas() if other.primary_id == node.node_id]

    def client(self, node: ClusterNode, **kwargs: object) -> redis.Redis:
        """A plain (non-cluster) sync client of one node, decoding replies."""
        return redis.Redis(port=node.port, password=self.password, decode_responses=True, **kwargs)  # type: ignore[arg-type]

    def command(self, node: ClusterNode, *args: str | int) -> Any:
        """One raw command on one node (redis-py's ``execute_command`` is untyped)."""
        return self.client(node).execute_command(*args)  # type: ignore[no-untyped-call]

    def primary_for_slot(self, slot: int) -> ClusterNode:
        """The live primary serving ``slot``, as the first live node's ``CLUSTER SLOTS`` says."""
        for start, end, served_by, *_ in self._slots():
            if start <= slot <= end:
                return self._by_port(int(served_by[1]))
        raise LookupError(f"slot {slot} is served by no node")

    def hash_tag_for(self, node: ClusterNode) -> str:
        """A hash tag (``{...}``) whose slot ``node`` serves now: ``f"{tag}:key"`` lands on that primary."""
        ranges = [
            (int(start), int(end)) for start, end, served_by, *_ in self._slots() if int(served_by[1]) == node.port
        ]
        for i in range(100_000):
            tag = f"{{t{i}}}"
            if any(start <= key_slot(tag.encode()) <= end for start, end in ranges):
                return tag
        raise LookupError(f"no hash tag found for node :{node.port}")

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL: no shutdown, no last write to disk, as a crashed machine."""
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(10)
        node.alive = False

    def wait_failover(self, killed: ClusterNode, timeout_s: float = 20.0) -> ClusterNode:
        """Until a replica of the killed primary is promoted and every surviving node says ``cluster_state:ok``;
        the promoted node (now listed by ``primaries()``)."""
        candidates = self.replicas_of(killed)
        if not candidates:
            raise ValueError(f"node :{killed.port} has no live replica to fail over to")

        def promoted() -> ClusterNode | None:
            for node in candidates:
                if self.client(node).info("replication")["role"] == "master":
                    return node
            return None

        wait_until(f"a replica of :{killed.port} promoted", lambda: promoted() is not None, timeout_s, self.logs)
        new_primary = promoted()
        assert new_primary is not None
        new_primary.primary_id = None
        for node in candidates:  # a primary's other replicas follow the promoted one
            if node is not new_primary:
                node.primary_id = new_primary.node_id
        self._wait_healthy(timeout_s)
        self._refresh_roles()
        return new_primary

    def node_cpu_seconds(self, node: ClusterNode) -> float:
        """CPU the node's process used so far (``used_cpu_sys`` + ``used_cpu_user`` of ``INFO cpu``)."""
        info = self.client(node).info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    def flushall(self) -> None:
        """FLUSHALL on every live primary (the replicas follow)."""
        for node in self.primaries():
            self.client(node).flushall()

    def stop(self) -> None:
        """Terminate every node (SIGKILL after 10 s) and remove the working directory."""
        for node in self.nodes:
            if node.process.poll() is None:
                node.process.terminate()
        for node in self.nodes:
            try:
                node.process.wait(10)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait(5)
            node.alive = False
        shutil.rmtree(self.workdir, ignore_errors=True)

    def logs(self) -> str:
        return "\n".join(node.log_tail() for node in self.nodes)

    def __enter__(self) -> RedisCluster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- forming ----------------------------------------------------------------------------------------------------

    def _spawn(self, binary: str, extra_args: Sequence[str]) -> ClusterNode:
        """One node on a free port and an explicit free bus port (port + 10000 may be out of range or taken)."""
        for _attempt in range(5):
            port, bus_port = free_port(), free_port()
            workdir = self.workdir / str(port)
            workdir.mkdir(exist_ok=True)
            args = [
                binary,
                "--port", str(port),
                "--cluster-port", str(bus_port),
                "--bind", "127.0.0.1",
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(self.workdir / f"nodes-{port}.conf"),
                "--cluster-node-timeout", str(self.node_timeout_ms),
                "--cluster-allow-reads-when-down", "no",
                "--hash-max-listpack-value", "128",
                "--appendonly", "no",
                "--save", "",
                "--dir", str(workdir),
                "--logfile", str(workdir / "redis.log"),
                "--daemonize", "no",
                "--loglevel", "notice",
                "--repl-diskless-sync-delay", "0",  # a replica's first sync at once, not after 5 s
            ]  # fmt: skip
            if self.password:
                args += ["--requirepass", self.password, "--masterauth", self.password]
            process = subprocess.Popen([*args, *extra_args], stdout=subprocess.DEVNULL, start_new_session=True)
            node = ClusterNode(port, bus_port, workdir, process)
            if self._answers(node):
                node.node_id = str(self.command(node, "CLUSTER", "MYID"))
                return node
            node.alive = False
            if process.poll() is None:
                process.kill()
            process.wait(5)
        raise RuntimeError(f"redis cluster: no node would start on free ports\n{node.log_tail()}")

    def _answers(self, node: ClusterNode) -> bool:
        """Whether the node answers PING within 10 s (False as soon as it exited, e.g. its port was taken)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if node.process.poll() is not None:
                return False
            try:
                return bool(self.client(node, socket_timeout=1).ping())
            except redis.ConnectionError:
                time.sleep(0.02)
        return False

    def _form(self, primaries: int, replicas_per_primary: int) -> None:
        heads, rest = self.nodes[:primaries], self.nodes[primaries:]
        for i, node in enumerate(heads):
            # distinct config epochs up front, as `redis-cli --cluster create` does: no collision to resolve
            self.command(node, "CLUSTER", "SET-CONFIG-EPOCH", i + 1)
            self.command(node, "CLUSTER", "ADDSLOTSRANGE", i * SLOTS // primaries, (i + 1) * SLOTS // primaries - 1)
        for node in self.nodes[1:]:
            self.command(self.nodes[0], "CLUSTER", "MEET", "127.0.0.1", node.port, node.bus_port)
        everyone = {node.node_id for node in self.nodes}
        wait_until("every node knowing every node", lambda: all(
            {line.split()[0] for line in self._cluster_nodes(node) if "handshake" not in line} >= everyone
            for node in self.nodes
        ), self.timeout_s, self.logs)  # fmt: skip
        for j, replica in enumerate(rest):
            primary = heads[j % primaries]
            self.command(replica, "CLUSTER", "REPLICATE", primary.node_id)
            replica.primary_id = primary.node_id
        self._wait_healthy(self.timeout_s)

    def _wait_healthy(self, timeout_s: float) -> None:
        """Every live node: ``cluster_state:ok``, knows every live node, agrees on who replicates whom, and every live
        replica's link is up."""
        wait_until("cluster_state:ok, agreed roles and replica links up on every node", self._healthy, timeout_s,
                   self.logs)  # fmt: skip

    def _healthy(self) -> bool:
        live = [node for node in self.nodes if node.alive]
        for node in live:
            info = str(self.command(node, "CLUSTER", "INFO"))
            if info_field(info, "cluster_state") != "ok":
                return False
            views = {line.split()[0]: line.split() for line in self._cluster_nodes(node)}
            for other in live:
                view = views.get(other.node_id)
                if view is None or "fail" in view[2] or "handshake" in view[2]:
                    return False
                if view[3] != (other.primary_id or "-") or ("master" in view[2]) != other.is_primary:
                    return False
        return all(
            self.client(node).info("replication").get("master_link_status") == "up"
            for node in live
            if node.primary_id is not None
        )

    def _refresh_roles(self) -> None:
        """Roles as a live node's ``CLUSTER NODES`` says, after a failover."""
        views = {line.split()[0]: line.split() for line in self._cluster_nodes(self._any_live())}
        for node in self.nodes:
            view = views.get(node.node_id)
            if node.alive and view is not None:
                node.primary_id = None if "master" in view[2] else view[3]

    def _cluster_nodes(self, node: ClusterNode) -> list[str]:
        return [line for line in str(self.command(node, "CLUSTER", "NODES")).splitlines() if line]

    def _slots(self) -> list[list[Any]]:
        reply: list[list[Any]] = self.command(self._any_live(), "CLUSTER", "SLOTS")
        return reply

    def _any_live(self) -> ClusterNode:
        return next(node for node in self.nodes if node.alive)

    def _by_port(self, port: int) -> ClusterNode:
        return next(node for node in self.nodes if node.port == port)


__all__ = ["SLOTS", "ClusterNode", "RedisCluster", "info_field", "wait_until"]
