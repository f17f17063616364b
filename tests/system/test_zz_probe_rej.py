import asyncio, json, time
from tests.system.test_rejections import *  # noqa
from tests.harness import node_ready

def test_probe(cloud_factory, edge_factory, tmp_path):
    cloud = cloud_factory().start()
    edge = joined(edge_factory(cloud, "edge-a"), cloud.join_token()).start()
    wait_until(lambda: node_ready(cloud, "edge-a") == "True", what="ready")
    exc = asyncio.run(refused_handshake(cloud, (cloud.ca_pem().encode(),)))
    print("NOCERT:", type(exc).__mro__[:3], repr(exc), repr(exc.__cause__))
    impostor = CertAuthority.generate()
    key_pem, csr_pem = new_node_key_and_csr("edge-a")
    c, k = tmp_path / "i.crt", tmp_path / "i.key"
    write_public(c, impostor.sign_node_csr(csr_pem, "edge-a")); write_private(k, key_pem)
    exc = asyncio.run(refused_handshake(cloud, (cloud.ca_pem().encode(), c, k)))
    print("OTHERCA:", repr(exc), repr(exc.__cause__))
    typed = tmp_path / "t.yaml"
    d = device("d", None); d["spec"]["properties"][0]["reportCycle"] = "fast"
    typed.write_text(json.dumps(d))
    broken = tmp_path / "b.yaml"; broken.write_text("apiVersion: v1\nkind: [Device\nmetadata: {name: x}\n")
    print("EFCTL:", efctl(cloud, "apply", "-f", str(typed)).stderr, efctl(cloud, "apply", "-f", str(broken)).stderr)
    print("DELETE", cloud.delete("Node", "edge-a", None).status_code)
    t = time.monotonic()
    while time.monotonic() - t < 4:
        time.sleep(0.5)
        print("nodes", [n["metadata"]["name"] for n in cloud.list("Node")])
    print("EDGELOG", [l for l in edge.log().splitlines() if "WARN" in l or "ERROR" in l or "closed" in l][-5:])
    print("CLOUDLOG", [l for l in cloud.log().splitlines() if "edge-a" in l][-8:])
