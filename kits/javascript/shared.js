// The part of the kit that is the same natively (node, a plugin's unit
// tests) and inside the component: the types a plugin works with and their
// conversion to and from the sluice:plugin WIT records. `bin/sluice-plugin.mjs`
// inlines this file into the component; keep it free of imports, and keep
// the `export` list on its last line.

const CATEGORIES = ['Source', 'Build', 'Test', 'Deploy', 'Approval', 'Invoke'];
const PROPERTY_TYPES = ['string', 'number', 'boolean', 'list'];

/** Fails the action with this message; `retryable` says a retry could succeed. */
class PluginError extends Error {
  constructor(message, { retryable = false } = {}) {
    super(message);
    this.retryable = retryable;
  }
}

/** The action's configuration, every `#{...}` variable resolved. */
class Config {
  constructor(entries) {
    this.entries = Array.isArray(entries) ? entries : Object.entries(entries || {});
  }
  /** The value of `key` (empty values included), or `fallback`. */
  get(key, fallback = undefined) {
    const found = this.entries.find(([k]) => k === key);
    return found ? found[1] : fallback;
  }
  /** The value of `key`; absent or blank throws a PluginError naming it. */
  required(key) {
    const value = this.get(key);
    if (value === undefined || value.trim() === '') throw new PluginError(`configuration "${key}" is required`);
    return value;
  }
  /** The non-blank lines of a `list` property, trimmed. */
  list(key) {
    return (this.get(key) || '').split('\n').map((l) => l.trim()).filter((l) => l !== '');
  }
}

/** How a call of `execute` ended, short of failing (failing is throwing). */
const Outcome = {
  succeeded(summary, { variables = {}, externalUrl = undefined } = {}) {
    return { summary, variables, externalUrl };
  },
  inProgress(continuation, pollAfterMs, summary = '') {
    return { summary, continuation, pollAfterMs };
  },
};

/** A context for a unit test: this configuration, what `fields` set, nothing else. */
function contextForTest(config, fields = {}) {
  return {
    config: new Config(config), inputs: [], outputs: [], workspace: '/tmp', variables: {},
    pipeline: 'p', executionId: 'e', stage: 's', action: 'a', attempt: 1, continuation: undefined, ...fields,
  };
}

function toWitInfo(info) {
  if (!CATEGORIES.includes(info.category)) throw new Error(`category ${info.category} is not one of ${CATEGORIES.join(', ')}`);
  const configuration = (info.configuration || []).map((p) => {
    const type = p.type || 'string';
    if (!PROPERTY_TYPES.includes(type)) throw new Error(`property ${p.name}: type ${type} is not one of ${PROPERTY_TYPES.join(', ')}`);
    return { name: p.name, required: !!p.required, secret: !!p.secret, description: p.description || '', type };
  });
  const bounds = ([min, max] = [0, 0]) => ({ min, max });
  const caps = info.capabilities || {};
  return {
    name: info.name, version: info.version, category: info.category, description: info.description || '',
    configuration, inputArtifacts: bounds(info.inputs), outputArtifacts: bounds(info.outputs),
    capabilities: { exec: caps.exec || [], http: caps.http || [], secrets: caps.secrets || [], env: caps.env || [], fs: caps.fs || [] },
  };
}

function fromWitContext(ctx) {
  const artifact = (a) => ({ name: a.name, path: a.path, files: a.files });
  return {
    config: new Config(ctx.configuration), inputs: ctx.inputs.map(artifact), outputs: ctx.outputs.map(artifact),
    workspace: ctx.workspace, variables: Object.fromEntries(ctx.variables), pipeline: ctx.pipeline,
    executionId: ctx.executionId, stage: ctx.stage, action: ctx.action, attempt: ctx.attempt, continuation: ctx.continuation,
  };
}

function toWitOutcome(outcome) {
  if (outcome.continuation !== undefined) {
    return { tag: 'in-progress', val: { continuation: outcome.continuation, pollAfterMs: outcome.pollAfterMs, summary: outcome.summary } };
  }
  return { tag: 'succeeded', val: { summary: outcome.summary, outputVariables: Object.entries(outcome.variables || {}), externalUrl: outcome.externalUrl } };
}

/**
 * The `action` export of a plugin: `export const action = definePlugin({ describe() {...}, execute(ctx) {...} })`.
 * `describe()` returns `{ name, version, category, description, configuration: [{ name, description, required,
 * secret, type }], inputs: [min, max], outputs: [min, max], capabilities: { exec, http, secrets, env, fs } }`;
 * `execute(ctx)` returns an `Outcome` or throws (a PluginError, or anything: its message fails the action).
 * Natively the plugin is returned as it is, for unit tests.
 */
function definePluginWith(plugin, componentized) {
  if (!componentized) return plugin;
  return {
    describe() {
      return toWitInfo(plugin.describe());
    },
    execute(ctx) {
      try {
        return toWitOutcome(plugin.execute(fromWitContext(ctx)));
      } catch (e) {
        const message = e instanceof PluginError ? e.message : `${e && e.name ? e.name + ': ' : ''}${e && e.message !== undefined ? e.message : e}`;
        return { tag: 'failed', val: { message, retryable: !!(e && e.retryable) } };
      }
    },
  };
}

export { PluginError, Config, Outcome, contextForTest, definePluginWith, toWitInfo };
