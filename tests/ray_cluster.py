"""A local Ray cluster for the tests: a head node and one worker node, both on 127.0.0.1.

    python tests/ray_cluster.py     # prints `ADDRESS 127.0.0.1:PORT`, runs until SIGTERM
    python tests/ray_cluster.py --workers 2 --head-cpus 0   # the benchmark's clusters

Started by the `ray_address` session fixture (tests/conftest.py) in a process group of its own and
stopped by it at the end. It uses Ray's own multi-node-on-one-machine helper (`ray.cluster_utils`):
`ray start --address ...` for a second node refuses to run when RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
and, without it, resolves 127.0.0.1 to the machine's outward address, where the head (bound to
127.0.0.1) is not listening. Small object stores, no dashboard, one CPU per node.
"""

from __future__ import annotations

import os
import signal
import sys
import time

OBJECT_STORE_BYTES = 150 * 1024 * 1024


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=1, help="worker nodes besides the head")
    parser.add_argument("--head-cpus", type=int, default=1)
    parser.add_argument("--object-store-mib", type=int, default=OBJECT_STORE_BYTES >> 20)
    args = parser.parse_args()
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # every node on 127.0.0.1
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1, "object_store_memory": args.object_store_mib << 20, "node_ip_address": "127.0.0.1"}
    head = {**node, "num_cpus": args.head_cpus, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, connect=False, head_node_args=head)
    for _ in range(args.workers):
        cluster.add_node(**node)
    cluster.wait_for_nodes()

    def stop(*_: object) -> None:
        cluster.shutdown()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    print("ADDRESS", cluster.address, flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
