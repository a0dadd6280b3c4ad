"""``python -m sluice_plugin build`` (or ``sluice-plugin build``): the app
module of the current directory, as a component of the ``sluice:plugin``
world, with componentize-py and the WIT inside this package."""

import argparse
import importlib.util
import os
import subprocess
import sys

import sluice_plugin


def build(app: str, out: str, source: str) -> int:
    if importlib.util.find_spec("componentize_py") is None:
        print("componentize-py is not installed: pip install sluice-plugin installs it", file=sys.stderr)
        return 2
    # The kit itself is bundled from where it is installed.
    kit_parent = os.path.dirname(os.path.dirname(os.path.abspath(sluice_plugin.__file__)))
    # componentize-py of this interpreter, whatever its script's #! says.
    run_tool = "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; sys.exit(script())"
    command = [sys.executable, "-c", run_tool, "-d", sluice_plugin.WIT_DIR, "-w", "plugin", "componentize",
               "-p", source, "-p", kit_parent, app, "-o", out]
    done = subprocess.run(command)
    if done.returncode == 0:
        print(f"wrote {out} ({os.path.getsize(out)} bytes); next: sluice plugin check {out}")
    return done.returncode


def main() -> int:
    parser = argparse.ArgumentParser(prog="sluice-plugin", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="componentize the app module into a plugin component")
    b.add_argument("app", nargs="?", default="app", help="the module defining Action (default: app)")
    b.add_argument("-o", "--out", default="plugin.wasm", help="the component to write (default: plugin.wasm)")
    b.add_argument("-s", "--source", default=".", help="the directory holding the module (default: .)")
    sub.add_parser("wit", help="print the directory of the WIT this kit builds against")
    args = parser.parse_args()
    if args.command == "wit":
        print(sluice_plugin.WIT_DIR)
        return 0
    return build(args.app, args.out, args.source)


if __name__ == "__main__":
    sys.exit(main())
