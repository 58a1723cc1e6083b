"""The `tetriopt` command line. Bad input exits 2 with one line naming the field and value."""

from __future__ import annotations

import sys

import click

from .errors import InputError


class _Group(click.Group):
    """Turns InputError into a one-line message and exit code 2 (no traceback)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except InputError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="tetriopt")
def main() -> None:
    """Deadline-aware step-level sequence-parallel scheduling of DiT image generation."""


def _register() -> None:
    # Each command lives in the module named for what it does; imports stay lazy-cheap.
    from .commands import solve_cmd

    main.add_command(solve_cmd.solve)
    # Optional commands whose modules need optional dependencies register themselves here.
    for mod, name in (("tetriopt.commands.profile_cmd", "profile"),
                      ("tetriopt.commands.serve_cmd", "serve"),
                      ("tetriopt.commands.workload_cmd", "workload"),
                      ("tetriopt.commands.bench_cmd", "bench"),
                      ("tetriopt.commands.bound_cmd", "bound")):
        try:
            module = __import__(mod, fromlist=[name])
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("tetriopt.commands"):
                continue  # command not built yet
            raise
        main.add_command(getattr(module, name))


_register()

if __name__ == "__main__":
    main()
