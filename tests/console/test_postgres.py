"""The console on a shared PostgreSQL store: the cluster page shows the nodes, their
session leases and the projection owners while the nodes run."""

from __future__ import annotations

import re

from starlette.testclient import TestClient

from meerkat_runtime import EchoExecutor, Runtime
from meerkat_runtime.console import create_app

from ..waiting import WAIT


def test_cluster_page_shows_nodes_leases_and_projection_owners(postgres_url: str) -> None:
    with Runtime.open(postgres_url, executor=EchoExecutor(), node_id="node-a") as node:
        for sid in ("s-1", "s-2"):
            outcome = node.session(sid).accept({"input_type": "prompt", "content": "hi"})
            assert outcome.completion is not None
            outcome.completion.wait(WAIT)
        node.projections.wait_caught_up(WAIT)
        with Runtime.open(postgres_url, read_only=True) as rt:
            rt.projections.wait_caught_up(WAIT)
            client = TestClient(create_app(rt))
            overview = client.get("/")
            assert overview.status_code == 200
            assert 'href="/cluster"' in overview.text  # the nav offers it on a shared store
            page = client.get("/cluster")
            assert page.status_code == 200, page.text[-300:]
            text = page.text
    nodes = re.search(r'<table id="nodes">.*?</table>', text, re.S)
    assert nodes is not None
    assert "node-a" in nodes.group(0)
    assert '<span class="ok">yes</span>' in nodes.group(0)  # alive
    assert "Nodes: 1 alive of 1" in text  # the read-only console joined no cluster
    leases = re.search(r'<table id="session-leases">.*?</table>', text, re.S)
    assert leases is not None
    for sid in ("s-1", "s-2"):
        assert f'href="/sessions/{sid}"' in leases.group(0)
    owners = re.search(r'<table id="projection-owners">.*?</table>', text, re.S)
    assert owners is not None
    for name in ("ledger", "views"):
        assert re.search(rf"<tr><td>{name}</td><td class=\"mono\">node-a</td>", owners.group(0))
