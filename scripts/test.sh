#!/usr/bin/env bash
# The project's test command (README): install into .venv, lint, type-check, run the tests.
# Integration tests start real servers (tritonserver from the nvidia-pytriton wheel, nginx);
# .ci/run installs the system packages they need first.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet torch==2.13.0  # the CPU build, before anything pulls CUDA's
.venv/bin/python -m pip install --quiet -e '.[dev,router,fit,local,bench,build,docker,ansible]'

.venv/bin/ruff check expert_deploy router_service tests scripts
.venv/bin/ruff format --check expert_deploy router_service tests scripts
PATH="$PWD/.venv/bin:$PATH" .venv/bin/ansible-lint --offline --profile production playbooks/
.venv/bin/mypy expert_deploy router_service

set +e
.venv/bin/pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure here" >&2
    exit 1
fi
exit "$status"
