// Sluice plugin `semver@1`, in JavaScript: reads a semantic version from its
// configuration (say "#{SourceVariables.TagName}"), fails when it is not one
// or is below `Minimum`, and outputs its parts as variables.
//
// Built into a component of the `sluice:plugin` world with componentize-js
// (no AOT); the same host runs it as any plugin.

import { log } from 'sluice:plugin/log@0.2.0';

const SEMVER = /^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$/;

function parse(text) {
  const m = SEMVER.exec(text.trim());
  if (!m) return null;
  return { major: Number(m[1]), minor: Number(m[2]), patch: Number(m[3]), pre: m[4] || '' };
}

function below(a, b) {
  for (const part of ['major', 'minor', 'patch']) {
    if (a[part] !== b[part]) return a[part] < b[part];
  }
  // A pre-release is below its release.
  return a.pre !== '' && b.pre === '';
}

function failed(message) {
  return { tag: 'failed', val: { message, retryable: false } };
}

export const action = {
  describe() {
    return {
      name: 'semver',
      version: '1',
      category: 'Test',
      description: 'Checks that Version is a semantic version at least Minimum; outputs Major, Minor, Patch, Prerelease',
      configuration: [
        { name: 'Version', required: true, secret: false, description: 'The version, e.g. #{SourceVariables.TagName}', type: 'string' },
        { name: 'Minimum', required: false, secret: false, description: 'The lowest version accepted', type: 'string' },
      ],
      inputArtifacts: { min: 0, max: 0 },
      outputArtifacts: { min: 0, max: 0 },
      capabilities: { exec: [], http: [], secrets: [], env: [], fs: [] },
    };
  },

  execute(ctx) {
    const config = Object.fromEntries(ctx.configuration);
    const version = parse(config.Version || '');
    if (!version) return failed(`"${config.Version}" is not a semantic version`);
    log('info', `version ${config.Version.trim()}`);
    if (config.Minimum) {
      const minimum = parse(config.Minimum);
      if (!minimum) return failed(`Minimum "${config.Minimum}" is not a semantic version`);
      if (below(version, minimum)) return failed(`${config.Version.trim()} is below the minimum ${config.Minimum}`);
    }
    return {
      tag: 'succeeded',
      val: {
        summary: `${version.major}.${version.minor}.${version.patch}${version.pre ? '-' + version.pre : ''}`,
        outputVariables: [
          ['Major', String(version.major)],
          ['Minor', String(version.minor)],
          ['Patch', String(version.patch)],
          ['Prerelease', version.pre],
        ],
        externalUrl: undefined,
      },
    };
  },
};
