"""Runs a built plugin under ``sluice action run``, the sandbox an agent
uses, from a plugin's own tests, and answers with its JSON result: the
same document every language's tests read (``status``, ``summary`` or
``message``, ``outputVariables``, ``log``, ``outputs.NAME.files``).

The ``sluice`` binary is ``SLUICE_BIN`` when set, else ``sluice`` on PATH::

    from sluice_plugin.testing import run_action

    result = run_action("plugin.wasm", config={"Name": "world"},
                        inputs={"src": "fixtures/src"}, outputs=["out"])
    assert result["status"] == "Succeeded", result
    assert result["outputVariables"]["Greeting"] == "Hello, world!"
"""

import json
import os
import subprocess
import tempfile
from typing import Dict, List, Optional


def run_action(plugin: str, config: Optional[Dict[str, str]] = None, inputs: Optional[Dict[str, str]] = None,
               outputs: Optional[List[str]] = None, grants: Optional[Dict[str, str]] = None,
               variables: Optional[Dict[str, str]] = None, output_root: Optional[str] = None) -> dict:
    """Runs ``plugin`` once. Outputs are written under ``output_root`` (a new
    temporary directory by default): ``result["outputs"][name]["dir"]``."""
    sluice = os.environ.get("SLUICE_BIN", "sluice")
    root = output_root or tempfile.mkdtemp(prefix="sluice-action-run-")
    command = [sluice, "--output", "json", "action", "run", "--plugin", plugin]
    for k, v in (config or {}).items():
        command += ["--config", f"{k}={v}"]
    for k, v in (inputs or {}).items():
        command += ["--input", f"{k}={v}"]
    for name in outputs or []:
        command += ["--output-dir", f"{name}={os.path.join(root, name)}"]
    for k, v in (grants or {}).items():
        command += ["--grant", f"{k}={v}"]
    for k, v in (variables or {}).items():
        command += ["--variable", f"{k}={v}"]
    done = subprocess.run(command, capture_output=True, text=True)
    try:
        result = json.loads(done.stdout)
    except json.JSONDecodeError:
        result = None
    if not isinstance(result, dict) or "status" not in result:
        raise RuntimeError(f"sluice action run did not run the plugin (exit {done.returncode}): "
                           f"{done.stdout.strip()}{done.stderr.strip()}")
    return result
