// Runs a built plugin under `sluice action run`, the sandbox an agent uses,
// from a plugin's own tests, and answers with its JSON result: the same
// document every language's tests read (status, summary or message,
// outputVariables, log, outputs.NAME.files). The binary is SLUICE_BIN
// when set, else `sluice` on PATH.
//
//   import { runAction } from 'sluice-plugin/testing';
//   const result = runAction('plugin.wasm', { config: { Name: 'world' }, inputs: { src: 'fixtures/src' }, outputs: ['out'] });
//   assert.equal(result.status, 'Succeeded');

import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export function runAction(plugin, { config = {}, inputs = {}, outputs = [], grants = {}, variables = {}, outputRoot } = {}) {
  const sluice = process.env.SLUICE_BIN || 'sluice';
  const root = outputRoot || mkdtempSync(join(tmpdir(), 'sluice-action-run-'));
  const args = ['--output', 'json', 'action', 'run', '--plugin', plugin];
  for (const [k, v] of Object.entries(config)) args.push('--config', `${k}=${v}`);
  for (const [k, v] of Object.entries(inputs)) args.push('--input', `${k}=${v}`);
  for (const name of outputs) args.push('--output-dir', `${name}=${join(root, name)}`);
  for (const [k, v] of Object.entries(grants)) args.push('--grant', `${k}=${v}`);
  for (const [k, v] of Object.entries(variables)) args.push('--variable', `${k}=${v}`);
  const done = spawnSync(sluice, args, { encoding: 'utf8' });
  if (done.error) throw new Error(`running ${sluice}: ${done.error.message} (put sluice on PATH or set SLUICE_BIN)`);
  let result;
  try {
    result = JSON.parse(done.stdout);
  } catch {
    result = undefined;
  }
  if (!result || result.status === undefined) {
    throw new Error(`sluice action run did not run the plugin (exit ${done.status}): ${done.stdout.trim()}${done.stderr.trim()}`);
  }
  return result;
}
