"""Sub-commands of `slidebench`; see harness/cli.py."""
