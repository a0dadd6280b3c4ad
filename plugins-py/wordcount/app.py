"""Sluice plugin `wordcount@1`, in Python: counts the lines and words of the
files of its input artifact, logs them, writes a report into its output
artifact and returns the totals as output variables.

Built into a WebAssembly component of the `sluice:plugin` world with
componentize-py (see docs/plugins.md); the same host runs it as any plugin.
"""

import os

from wit_world import exports
from wit_world.imports import log, types


def _config(ctx: types.Context) -> dict:
    return dict(ctx.configuration)


class Action(exports.Action):
    def describe(self) -> types.ActionInfo:
        return types.ActionInfo(
            name="wordcount",
            version="1",
            category="Test",
            description="Counts lines and words of the input files; fails above MaxWords",
            configuration=[
                types.ConfigProperty(
                    name="MaxWords",
                    required=False,
                    secret=False,
                    description="Fail when the input has more words than this",
                    type="number",
                ),
            ],
            input_artifacts=types.ArtifactBounds(min=1, max=1),
            output_artifacts=types.ArtifactBounds(min=0, max=1),
            capabilities=types.Capabilities(exec=[], http=[], secrets=[], env=[], fs=[]),
        )

    def execute(self, ctx: types.Context) -> types.Outcome:
        config = _config(ctx)
        root = ctx.inputs[0].path
        lines = words = files = 0
        for directory, _subdirs, names in os.walk(root):
            for name in sorted(names):
                path = os.path.join(directory, name)
                try:
                    with open(path, "r", encoding="utf-8", errors="replace") as f:
                        text = f.read()
                except OSError as e:
                    return types.Outcome_Failed(types.Failure(message=f"reading {path}: {e}", retryable=False))
                files += 1
                lines += text.count("\n")
                words += len(text.split())
                log.log(log.Level.INFO, f"{os.path.relpath(path, root)}: {len(text.split())} words")
        if ctx.outputs:
            with open(os.path.join(ctx.outputs[0].path, "wordcount.txt"), "w") as f:
                f.write(f"files {files}\nlines {lines}\nwords {words}\n")
        limit = config.get("MaxWords", "").strip()
        if limit:
            try:
                maximum = int(limit)
            except ValueError:
                return types.Outcome_Failed(types.Failure(message=f"MaxWords {limit!r} is not a number", retryable=False))
            if words > maximum:
                return types.Outcome_Failed(
                    types.Failure(message=f"{words} words is more than MaxWords {maximum}", retryable=False)
                )
        return types.Outcome_Succeeded(
            types.Success(
                summary=f"{files} files, {lines} lines, {words} words",
                output_variables=[("Files", str(files)), ("Lines", str(lines)), ("Words", str(words))],
                external_url=None,
            )
        )
