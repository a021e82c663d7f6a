# Helpers shared by the NixOS VM tests (vm-tests/*.nix) for their scripts:
# host states through `provisioning status --json` on the node `server`.
import json


def status_query(name, states):
    # jq: true when host `name` is in one of `states` (an object with a
    # "hosts" array or a bare array are both accepted).
    return (
        '(if type == "object" then .hosts else . end)'
        f' | map(select(.name == "{name}" and ([.state] | inside({json.dumps(states)}))))'
        " | length == 1"
    )


def wait_for_state(name, states, timeout=120):
    server.wait_until_succeeds(  # noqa: F821 (a machine of the test driver)
        f"provisioning status --json | jq -e '{status_query(name, states)}'",
        timeout=timeout,
    )


def host_states():
    out = json.loads(server.succeed("provisioning status --json"))  # noqa: F821
    items = out["hosts"] if isinstance(out, dict) else out
    return {h["name"]: h["state"] for h in items}
