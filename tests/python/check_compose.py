"""Checks docker-compose.yml against the real binaries: every service's
command names a binary hopper builds and uses only flags its --help lists.
Usage: check_compose.py COMPOSE_FILE BIN_DIR"""
import re
import subprocess
import sys

import yaml


def flags(help_text: str) -> set[str]:
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", help_text))


def main() -> None:
    compose, bin_dir = sys.argv[1], sys.argv[2]
    doc = yaml.safe_load(open(compose))
    services = doc["services"]
    checked = 0
    for name, svc in services.items():
        command = svc.get("command")
        if command is None or not str(svc.get("image", "")).startswith("hopper"):
            continue  # the database's own image: segments, the data loader
        assert isinstance(command, list), f"{name}: use the list form of command"
        binary, args = command[0], command[1:]
        assert binary in ("flight-server", "mop"), f"{name}: unknown binary {binary}"
        help_cmd = [f"{bin_dir}/{binary}"]
        if binary == "mop" or (args and not args[0].startswith("-")):
            help_cmd.append(args[0])  # the subcommand (flight-server keygen)
        help_text = subprocess.run(help_cmd + ["--help"], capture_output=True, text=True, check=True).stdout
        known = flags(help_text)
        for arg in args:
            if arg.startswith("--"):
                assert arg in known, f"{name}: {binary} does not accept {arg} (it knows {sorted(known)})"
        checked += 1
    assert checked >= 5, f"only {checked} services with commands"
    print(checked)


if __name__ == "__main__":
    main()
