// sluice-plugin: write Sluice action plugins in JavaScript.
//
//   import { definePlugin, Outcome, log } from 'sluice-plugin';
//   export const action = definePlugin({ describe() {...}, execute(ctx) {...} });
//
// `npx sluice-plugin build plugin.js` makes plugin.wasm with componentize-js
// (this module is replaced there by the host's imports); in node, for a
// plugin's unit tests, the host services are stood in for: logs go to
// stderr, programs run directly, secrets come from SLUICE_SECRET_<NAME>.

import { PluginError, Config, Outcome, contextForTest, definePluginWith } from './shared.js';
import { spawnSync } from 'node:child_process';
import { cpSync, statSync } from 'node:fs';

export { PluginError, Config, Outcome, contextForTest };

export const WIT_PACKAGE = 'sluice:plugin@0.2.0';

export const log = Object.fromEntries(
  ['trace', 'debug', 'info', 'warn', 'error'].map((level) => [level, (m) => console.error(`${level}: ${m}`)]),
);

export const secrets = {
  get(name) {
    const variable = `SLUICE_SECRET_${name.replace(/[-.]/g, '_')}`;
    if (!(variable in globalThis.process.env)) {
      throw new PluginError(`secret "${name}" is not available outside a sluice host (set ${variable} in a test)`);
    }
    return globalThis.process.env[variable];
  },
};

export const process = {
  run(program, args = [], { cwd = undefined, env = {}, check = false } = {}) {
    const out = spawnSync(program, args, { cwd, env, encoding: 'utf8' });
    if (out.error) throw new PluginError(`cannot run "${program}": ${out.error.message}`);
    const result = { status: out.status, stdout: out.stdout, stderr: out.stderr };
    if (check && result.status !== 0) throw new PluginError(`${program} exited with ${result.status}: ${result.stderr.trim().slice(-2000)}`);
    return result;
  },
  hostPath: (path) => path,
};

export const artifacts = {
  copy(from, to) {
    cpSync(from, to, { recursive: true });
    return statSync(from).isDirectory() ? -1 : 1;
  },
};

export const deadline = { remainingMs: () => Number.MAX_SAFE_INTEGER };

export const definePlugin = (plugin) => definePluginWith(plugin, false);
