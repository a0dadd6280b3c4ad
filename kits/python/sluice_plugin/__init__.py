"""Write Sluice action plugins in Python.

A plugin is a class with ``describe()`` and ``execute(ctx)``; ``export``
turns it into the ``Action`` class componentize-py exports as the
``sluice:plugin/action`` interface::

    import sluice_plugin as sp

    class Greeter(sp.Plugin):
        def describe(self) -> sp.ActionInfo:
            return sp.ActionInfo("greeter", "1", "Build", "Greets Name",
                                 configuration=[sp.Property("Name", "Whom to greet", required=True)])

        def execute(self, ctx: sp.Context) -> sp.Outcome:
            name = ctx.config.required("Name")
            sp.log.info(f"Hello, {name}!")
            return sp.Outcome.succeeded(f"greeted {name}", variables={"Greeting": f"Hello, {name}!"})

    Action = sp.export(Greeter)

``python -m sluice_plugin build`` makes ``plugin.wasm`` with componentize-py
(the WIT is inside this package); ``sluice_plugin.testing`` runs it under
``sluice action run``. Raising ``sluice_plugin.Error`` (or any exception)
fails the action with its message.

Inside the component the host services go to the host (the generated
``wit_world`` bindings); in plain Python (a unit test) they are stood in
for: logs go to stderr, programs run directly, secrets come from
``SLUICE_SECRET_<NAME>``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

__version__ = "0.2.0"
#: The WIT package this kit speaks.
WIT_PACKAGE = "sluice:plugin@0.2.0"
#: The directory holding ``plugin.wit``.
WIT_DIR = os.path.join(os.path.dirname(__file__), "wit")

CATEGORIES = ("Source", "Build", "Test", "Deploy", "Approval", "Invoke")
PROPERTY_TYPES = ("string", "number", "boolean", "list")


# The generated bindings exist only when componentize-py builds the
# component. They are imported here, when the app module imports this one:
# componentize-py snapshots the interpreter after importing the app, and a
# component has no Python files to import from later.
try:
    from wit_world.imports import deadline as _wit_deadline, log as _wit_log, process as _wit_process
    from wit_world.imports import files as _wit_files, secrets as _wit_secrets, types as _wit_types

    _HOST = (_wit_log, _wit_process, _wit_secrets, _wit_types, _wit_deadline, _wit_files)
except ImportError:
    _HOST = None


def _host():
    """The generated bindings inside a component, None in plain Python."""
    return _HOST


class Error(Exception):
    """Fails the action with this message; ``retryable=True`` says a retry could succeed."""

    def __init__(self, message: str, retryable: bool = False):
        super().__init__(message)
        self.message = message
        self.retryable = retryable


@dataclass
class Property:
    """One configuration property the action accepts."""

    name: str
    description: str = ""
    required: bool = False
    secret: bool = False
    type: str = "string"


@dataclass
class ActionInfo:
    """What the plugin is: ``describe()`` returns one."""

    name: str
    version: str
    category: str
    description: str = ""
    configuration: List[Property] = field(default_factory=list)
    #: (min, max) input artifacts.
    inputs: Tuple[int, int] = (0, 0)
    #: (min, max) output artifacts.
    outputs: Tuple[int, int] = (0, 0)
    exec: List[str] = field(default_factory=list)
    http: List[str] = field(default_factory=list)
    secrets: List[str] = field(default_factory=list)
    env: List[str] = field(default_factory=list)
    fs: List[str] = field(default_factory=list)

    def check(self) -> None:
        """Raises ValueError for what a controller would refuse later."""
        if self.category not in CATEGORIES:
            raise ValueError(f"category {self.category!r} is not one of {', '.join(CATEGORIES)}")
        for p in self.configuration:
            if p.type not in PROPERTY_TYPES:
                raise ValueError(f"property {p.name!r}: type {p.type!r} is not one of {', '.join(PROPERTY_TYPES)}")
        for what, (low, high) in (("inputs", self.inputs), ("outputs", self.outputs)):
            if not 0 <= low <= high:
                raise ValueError(f"{what} bounds {low}..{high} are not 0 <= min <= max")


class Config:
    """The action's configuration, every ``#{...}`` variable resolved."""

    def __init__(self, entries: Iterable[Tuple[str, str]]):
        self.entries: List[Tuple[str, str]] = list(entries)

    def get(self, key: str, default: Optional[str] = None) -> Optional[str]:
        """The value of ``key`` (empty values included), or ``default``."""
        for k, v in self.entries:
            if k == key:
                return v
        return default

    def required(self, key: str) -> str:
        """The value of ``key``; absent or blank raises ``Error`` naming it."""
        value = self.get(key)
        if value is None or not value.strip():
            raise Error(f'configuration "{key}" is required')
        return value

    def list(self, key: str) -> List[str]:
        """The non-blank lines of a ``list`` property, trimmed."""
        return [line.strip() for line in (self.get(key) or "").splitlines() if line.strip()]

    def as_dict(self) -> Dict[str, str]:
        return dict(self.entries)


@dataclass
class Artifact:
    """An artifact directory: inputs read-only, outputs writable and empty."""

    name: str
    path: str
    #: For outputs: the glob patterns the pipeline asked for (empty: all).
    files: List[str] = field(default_factory=list)


@dataclass
class Context:
    """Everything one call of ``execute`` knows."""

    config: Config
    inputs: List[Artifact] = field(default_factory=list)
    outputs: List[Artifact] = field(default_factory=list)
    workspace: str = "/tmp"
    variables: Dict[str, str] = field(default_factory=dict)
    pipeline: str = "p"
    execution_id: str = "e"
    stage: str = "s"
    action: str = "a"
    attempt: int = 1
    continuation: Optional[str] = None

    @staticmethod
    def for_test(config: Dict[str, str], **fields) -> "Context":
        """A context for a unit test: this configuration, what ``fields`` set, nothing else."""
        return Context(config=Config(config.items()), **fields)

    def input(self, name: str) -> Optional[Artifact]:
        return next((a for a in self.inputs if a.name == name), None)

    def output(self, name: str) -> Optional[Artifact]:
        return next((a for a in self.outputs if a.name == name), None)


@dataclass
class Outcome:
    """How a call of ``execute`` ended, short of failing (failing is raising ``Error``)."""

    summary: str
    variables: Dict[str, str] = field(default_factory=dict)
    external_url: Optional[str] = None
    #: Set for in-progress: call again after ``poll_after_ms`` with this.
    continuation: Optional[str] = None
    poll_after_ms: int = 0

    @staticmethod
    def succeeded(summary: str, variables: Optional[Dict[str, str]] = None, external_url: Optional[str] = None):
        return Outcome(summary, dict(variables or {}), external_url)

    @staticmethod
    def in_progress(continuation: str, poll_after_ms: int, summary: str = ""):
        return Outcome(summary, continuation=continuation, poll_after_ms=poll_after_ms)


class Plugin:
    """Subclass it: ``describe()`` and ``execute(ctx)``; then ``Action = export(MyPlugin)``."""

    def describe(self) -> ActionInfo:
        raise NotImplementedError

    def execute(self, ctx: Context) -> Outcome:
        raise NotImplementedError


class log:
    """Lines in the action's log, live (secret values are masked by the host)."""

    @staticmethod
    def _write(level: str, message: str) -> None:
        host = _host()
        if host is None:
            print(f"{level}: {message}", file=sys.stderr)
            return
        wit_log = host[0]
        wit_log.log(getattr(wit_log.Level, level.upper()), str(message))

    @staticmethod
    def debug(message: str) -> None:
        log._write("debug", message)

    @staticmethod
    def info(message: str) -> None:
        log._write("info", message)

    @staticmethod
    def warn(message: str) -> None:
        log._write("warn", message)

    @staticmethod
    def error(message: str) -> None:
        log._write("error", message)


class secrets:
    """Secrets granted to the action (declare them in ``ActionInfo.secrets``)."""

    @staticmethod
    def get(name: str) -> str:
        host = _host()
        if host is None:
            var = "SLUICE_SECRET_" + name.replace("-", "_").replace(".", "_")
            if var not in os.environ:
                raise Error(f'secret "{name}" is not available outside a sluice host (set {var} in a test)')
            return os.environ[var]
        try:
            return host[2].get(name)
        except Exception as e:  # componentize_py_types.Err
            raise Error(str(getattr(e, "value", e)))


class artifacts:
    """Copies between the action's directories."""

    @staticmethod
    def copy(source: str, destination: str) -> int:
        """Copies a file or a directory tree into ``destination`` (in a writable
        directory of the action; parents are created, files replaced), keeping
        executable bits, through the host: ``shutil`` cannot inside the sandbox,
        which has no permission bits and no ``/``. Returns the files copied."""
        host = _host()
        if host is None:
            import shutil

            if os.path.isdir(source):
                shutil.copytree(source, destination, dirs_exist_ok=True)
                return sum(len(files) for _, _, files in os.walk(source))
            os.makedirs(os.path.dirname(destination) or ".", exist_ok=True)
            shutil.copy2(source, destination)
            return 1
        try:
            return host[5].copy(source, destination)
        except Exception as e:
            raise Error(str(getattr(e, "value", e)))


@dataclass
class ProcessOutput:
    status: Optional[int]
    stdout: bytes
    stderr: bytes


class process:
    """Granted host programs (declare them in ``ActionInfo.exec``)."""

    @staticmethod
    def run(program: str, args: Sequence[str] = (), cwd: Optional[str] = None,
            env: Optional[Dict[str, str]] = None, stream_output: bool = False, check: bool = False) -> ProcessOutput:
        """Runs ``program``; ``check=True`` raises ``Error`` unless it exits 0."""
        host = _host()
        env = dict(env or {})
        if host is None:
            import subprocess  # natively only: a component has no subprocesses

            done = subprocess.run([program, *args], cwd=cwd, env=env, capture_output=True)
            out = ProcessOutput(done.returncode if done.returncode >= 0 else None, done.stdout, done.stderr)
        else:
            wit_process = host[1]
            command = wit_process.Command(program=program, args=list(args), cwd=cwd,
                                          env=list(env.items()), stream_output=stream_output)
            try:
                o = wit_process.run(command)
            except Exception as e:
                raise Error(str(getattr(e, "value", e)))
            out = ProcessOutput(o.status, bytes(o.stdout), bytes(o.stderr))
        if check and out.status != 0:
            tail = out.stderr.decode("utf-8", "replace").strip()[-2000:]
            raise Error(f"{program} exited with {out.status}: {tail}")
        return out


def deadline_ms() -> Optional[int]:
    """Milliseconds left until the action's deadline; None outside a host."""
    host = _host()
    return None if host is None else host[4].remaining_ms()


def _context(ctx) -> Context:
    return Context(
        config=Config(ctx.configuration),
        inputs=[Artifact(a.name, a.path, list(a.files)) for a in ctx.inputs],
        outputs=[Artifact(a.name, a.path, list(a.files)) for a in ctx.outputs],
        workspace=ctx.workspace,
        variables=dict(ctx.variables),
        pipeline=ctx.pipeline,
        execution_id=ctx.execution_id,
        stage=ctx.stage,
        action=ctx.action,
        attempt=ctx.attempt,
        continuation=ctx.continuation,
    )


def _info(info: ActionInfo, t):
    info.check()
    return t.ActionInfo(
        name=info.name,
        version=info.version,
        category=info.category,
        description=info.description,
        configuration=[t.ConfigProperty(name=p.name, required=p.required, secret=p.secret,
                                        description=p.description, type=p.type) for p in info.configuration],
        input_artifacts=t.ArtifactBounds(min=info.inputs[0], max=info.inputs[1]),
        output_artifacts=t.ArtifactBounds(min=info.outputs[0], max=info.outputs[1]),
        capabilities=t.Capabilities(exec=list(info.exec), http=list(info.http), secrets=list(info.secrets),
                                    env=list(info.env), fs=list(info.fs)),
    )


def _outcome(outcome: Outcome, t):
    if outcome.continuation is not None:
        return t.Outcome_InProgress(t.Progress(continuation=outcome.continuation,
                                               poll_after_ms=outcome.poll_after_ms, summary=outcome.summary))
    return t.Outcome_Succeeded(t.Success(summary=outcome.summary, output_variables=list(outcome.variables.items()),
                                         external_url=outcome.external_url))


def export(plugin_class):
    """The ``Action`` class componentize-py exports, for a ``Plugin`` subclass:
    ``Action = export(MyPlugin)`` at the top level of the app module."""

    class Action:
        def describe(self):
            return _info(plugin_class().describe(), _host()[3])

        def execute(self, ctx):
            t = _host()[3]
            try:
                return _outcome(plugin_class().execute(_context(ctx)), t)
            except Error as e:
                return t.Outcome_Failed(t.Failure(message=e.message, retryable=e.retryable))
            except Exception as e:  # anything else fails the action, with its type
                return t.Outcome_Failed(t.Failure(message=f"{type(e).__name__}: {e}", retryable=False))

    return Action
