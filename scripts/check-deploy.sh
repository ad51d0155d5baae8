#!/usr/bin/env bash
# Validates the deployment files offline, as there is no Docker engine or Kubernetes here:
#   - docker-compose.yml, alone and with docker-compose.secure.yml, with `docker-compose
#     config -q` (Debian's docker-compose);
#   - that docker-compose.yml and nginx/keygrid.conf agree on the nodes' service names and
#     ports and on nginx's published ports;
#   - deploy/kubernetes/*.yaml with kubernetes-validate --strict (from PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_packages docker-compose:docker-compose
# Into a venv of its own, as schemathesis: Debian's python3 has no pip and refuses a
# system-wide install (PEP 668).
kubernetes_validate=$(pip_tool kubernetes-validate kubernetes-validate)

step "docker-compose config"
docker-compose -f docker-compose.yml config -q
# The secure override names its tokens file as a secret: any file will do for the check.
KG_AUTH_TOKENS=/dev/null docker-compose -f docker-compose.yml -f docker-compose.secure.yml config -q

step "docker-compose.yml agrees with nginx/keygrid.conf"
# Debian's docker-compose runs on the system Python, which therefore has PyYAML.
docker-compose -f docker-compose.yml config | /usr/bin/python3 -c '
import re, sys, yaml

compose = yaml.safe_load(sys.stdin)
services = compose["services"]
nginx = open("nginx/keygrid.conf").read()
problems = []

upstream = re.search(r"upstream keygrid_nodes \{(.*?)\n\}", nginx, re.S).group(1)
servers = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", upstream, re.M)
backends = sorted(name for name in services if name.startswith("backend"))
if sorted(host for host, _ in servers) != backends:
    problems.append(f"nginx upstream {servers} != compose backends {backends}")
for host, port in servers:
    service = services.get(host)
    if service is None:
        continue
    listen = str(service.get("environment", {}).get("KG_LISTEN", ""))
    if not listen.endswith(":" + port):
        problems.append(f"{host}: nginx expects port {port}, the node listens on {listen!r}")
    if "healthcheck" not in service:
        problems.append(f"{host}: no healthcheck")

# A short form renders as HOST_IP:PUBLISHED:TARGET/PROTOCOL once an address is bound.
published = {str(p["target"]) if isinstance(p, dict) else str(p).split(":")[-1].split("/")[0]
             for p in services["nginx"].get("ports", [])}
for port in re.findall(r"^\s*listen\s+(\d+);", nginx, re.M):
    if port not in published:
        problems.append(f"nginx listens on {port} but compose does not publish it")

for name, service in services.items():
    if "healthcheck" not in service and name.startswith(("postgres", "redis", "nginx", "pgadmin")):
        problems.append(f"{name}: no healthcheck")
    if service.get("restart") != "unless-stopped":
        problems.append(f"{name}: restart is not unless-stopped")

if problems:
    sys.exit("\n".join(problems))
print(f"ok: {len(servers)} nodes, ports {sorted(published)}")
'

step "kubernetes-validate"
"$kubernetes_validate" --strict --quiet deploy/kubernetes/*.yaml
echo "ok: $(ls deploy/kubernetes/*.yaml | wc -l) manifests"
