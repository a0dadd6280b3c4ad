// The host services inside the component, through the sluice:plugin
// imports. `bin/sluice-plugin.mjs` inlines this file after shared.js; the
// import lines are hoisted out, the `export` list on the last line dropped.
import { log as __witLog } from 'sluice:plugin/log@0.2.0';
import { run as __witRun, hostPath as __witHostPath } from 'sluice:plugin/process@0.2.0';
import { get as __witSecret } from 'sluice:plugin/secrets@0.2.0';
import { copy as __witCopy } from 'sluice:plugin/files@0.2.0';
import { remainingMs as __witRemainingMs } from 'sluice:plugin/deadline@0.2.0';

// A host call's `err` arrives as a thrown value carrying the message.
function hostError(e) {
  return new PluginError(e && e.payload !== undefined ? String(e.payload) : String(e && e.message !== undefined ? e.message : e));
}

const log = {
  trace: (m) => __witLog('trace', String(m)),
  debug: (m) => __witLog('debug', String(m)),
  info: (m) => __witLog('info', String(m)),
  warn: (m) => __witLog('warn', String(m)),
  error: (m) => __witLog('error', String(m)),
};

const secrets = {
  get(name) {
    try { return __witSecret(name); } catch (e) { throw hostError(e); }
  },
};

const process = {
  run(program, args = [], { cwd = undefined, env = {}, streamOutput = false, check = false } = {}) {
    let out;
    try {
      out = __witRun({ program, args, cwd, env: Object.entries(env), streamOutput });
    } catch (e) { throw hostError(e); }
    const decode = (b) => new TextDecoder().decode(b);
    const result = { status: out.status, stdout: decode(out.stdout), stderr: decode(out.stderr) };
    if (check && result.status !== 0) throw new PluginError(`${program} exited with ${result.status}: ${result.stderr.trim().slice(-2000)}`);
    return result;
  },
  hostPath(path) {
    try { return __witHostPath(path); } catch (e) { throw hostError(e); }
  },
};

const artifacts = {
  /** Copies a file or directory tree into a writable directory of the action, keeping executable bits. */
  copy(from, to) {
    try { return Number(__witCopy(from, to)); } catch (e) { throw hostError(e); }
  },
};

const deadline = { remainingMs: () => Number(__witRemainingMs()) };

const definePlugin = (plugin) => definePluginWith(plugin, true);

export { log, secrets, process, artifacts, deadline, definePlugin };
