//! Output artifacts from the buildspec's `artifacts` and
//! `secondary-artifacts`: which section fills which output, and the copy.
//!
//! An output artifact takes the `secondary-artifacts` entry of its own name;
//! otherwise the first output takes the primary `artifacts`, as CodePipeline
//! hands CodeBuild's primary artifact to the first output. An output with
//! neither, but with `files` in the pipeline declaration, is collected from
//! the source directory by those patterns; with nothing at all it is an
//! error naming the output.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use sluice_plugin_sdk::{Artifact, Error, ResultExt, artifacts};

use crate::buildspec::{ArtifactSpec, Buildspec};

/// The spec that fills each output, by index.
pub fn assign<'a>(spec: &'a Buildspec, outputs: &[Artifact]) -> Result<Vec<Option<&'a ArtifactSpec>>, Error> {
    let mut assigned = Vec::new();
    for (i, output) in outputs.iter().enumerate() {
        let chosen = spec.secondary.iter().find(|(id, _)| *id == output.name).map(|(_, s)| s).or(if i == 0 {
            spec.artifacts.as_ref()
        } else {
            None
        });
        if chosen.is_none() && output.files.is_empty() {
            let hint = if i == 0 { "artifacts.files" } else { "artifacts.secondary-artifacts" };
            return Err(Error::new(format!(
                "output artifact \"{}\" has no files in the buildspec: add {hint} (secondary artifacts are matched by output name)",
                output.name
            )));
        }
        assigned.push(chosen);
    }
    Ok(assigned)
}

/// Copies the files of `spec` from `src` (the source directory, a sandbox
/// path) into `output`, keeping modes; returns how many.
pub fn collect(src: &Path, spec: &ArtifactSpec, output: &Artifact) -> Result<usize, Error> {
    let base = match &spec.base_directory {
        Some(dir) => src.join(dir),
        None => src.to_path_buf(),
    };
    if !fs::metadata(&base).map(|m| m.is_dir()).unwrap_or(false) {
        return Err(Error::new(format!(
            "{}.base-directory {:?} is not a directory of the source",
            spec.key,
            spec.base_directory.as_deref().unwrap_or(".")
        )));
    }
    let mut files = artifacts::matching_files(&base, &spec.files).with_context(|| format!("{}.files", spec.key))?;
    if !spec.exclude.is_empty() {
        let excluded = exclusions(&spec.exclude).with_context(|| format!("{}.exclude-paths", spec.key))?;
        files.retain(|f| !excluded.is_match(f));
    }
    let mut targets: BTreeMap<String, &str> = BTreeMap::new();
    for file in &files {
        let target = if spec.discard_paths { file.rsplit('/').next().unwrap_or(file).to_owned() } else { file.clone() };
        if let Some(other) = targets.insert(target.clone(), file) {
            return Err(Error::new(format!(
                "{}: \"{other}\" and \"{file}\" both become \"{target}\" with discard-paths",
                spec.key
            )));
        }
    }
    for (target, file) in &targets {
        artifacts::copy(base.join(file), output.path.join(target)).with_context(|| format!("copying \"{file}\""))?;
    }
    Ok(targets.len())
}

/// `exclude-paths` patterns, with the same glob rules as `files`.
fn exclusions(patterns: &[String]) -> Result<globset::GlobSet, Error> {
    let mut set = globset::GlobSetBuilder::new();
    for pattern in patterns {
        let glob = globset::GlobBuilder::new(pattern.trim_start_matches("./"))
            .literal_separator(true)
            .build()
            .map_err(|e| Error::new(format!("invalid pattern \"{pattern}\": {}", e.kind())))?;
        set.add(glob);
    }
    set.build().map_err(|e| Error::new(format!("invalid patterns: {e}")))
}

/// An output filled by the pipeline's own `files` patterns.
pub fn collect_declared(src: &Path, output: &Artifact) -> Result<usize, Error> {
    let spec =
        ArtifactSpec { key: format!("output \"{}\"", output.name), files: output.files.clone(), ..Default::default() };
    collect(src, &spec, output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buildspec::parse;
    use std::path::PathBuf;

    fn tree(root: &Path, files: &[&str]) {
        for f in files {
            let p = root.join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, f).unwrap();
        }
    }

    fn out(root: &Path, name: &str, files: &[&str]) -> Artifact {
        let path = root.join("out").join(name);
        fs::create_dir_all(&path).unwrap();
        Artifact { name: name.into(), path, files: files.iter().map(|s| s.to_string()).collect() }
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut all = Vec::new();
        fn walk(base: &Path, dir: &Path, all: &mut Vec<String>) {
            for e in fs::read_dir(dir).unwrap() {
                let p: PathBuf = e.unwrap().path();
                if p.is_dir() {
                    walk(base, &p, all)
                } else {
                    all.push(p.strip_prefix(base).unwrap().display().to_string());
                }
            }
        }
        walk(dir, dir, &mut all);
        all.sort();
        all
    }

    const SPEC: &str = "version: 0.2\nphases: {}\nartifacts:\n  files: ['**/*']\n  base-directory: dist\n  discard-paths: yes\n  exclude-paths: ['**/*.map']\n  secondary-artifacts:\n    docs:\n      files: ['site/**/*']\n";

    #[test]
    fn base_directory_discard_paths_and_secondary_artifacts() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        tree(&src, &["dist/app.js", "dist/app.js.map", "dist/css/site.css", "site/index.html", "site/a/b.html", "README"]);
        let spec = parse(SPEC).unwrap();
        let outputs = [out(dir.path(), "Build", &[]), out(dir.path(), "docs", &[])];
        let assigned = assign(&spec, &outputs).unwrap();
        assert_eq!(collect(&src, assigned[0].unwrap(), &outputs[0]).unwrap(), 2);
        assert_eq!(listing(&outputs[0].path), ["app.js", "site.css"]);
        assert_eq!(collect(&src, assigned[1].unwrap(), &outputs[1]).unwrap(), 2);
        assert_eq!(listing(&outputs[1].path), ["site/a/b.html", "site/index.html"]);
    }

    #[test]
    fn unmatched_missing_and_colliding_artifacts_fail_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        tree(&src, &["dist/a/x.txt", "dist/b/x.txt"]);
        let spec = parse(SPEC).unwrap();
        let outputs = [out(dir.path(), "Build", &[]), out(dir.path(), "other", &[])];
        assert_eq!(
            assign(&spec, &outputs).unwrap_err().message(),
            "output artifact \"other\" has no files in the buildspec: add artifacts.secondary-artifacts (secondary artifacts are matched by output name)"
        );
        let assigned = assign(&spec, &outputs[..1]).unwrap();
        assert_eq!(
            collect(&src, assigned[0].unwrap(), &outputs[0]).unwrap_err().message(),
            "artifacts: \"a/x.txt\" and \"b/x.txt\" both become \"x.txt\" with discard-paths"
        );
        let spec = parse("version: 0.2\nphases: {}\nartifacts:\n  files: [nothing/here]\n").unwrap();
        let message = collect(&src, spec.artifacts.as_ref().unwrap(), &outputs[0]).unwrap_err().message().to_owned();
        assert!(message.starts_with("artifacts.files: file pattern \"nothing/here\" matched no file"), "{message}");
        let spec = parse("version: 0.2\nphases: {}\nartifacts:\n  files: [x]\n  base-directory: missing\n").unwrap();
        assert_eq!(
            collect(&src, spec.artifacts.as_ref().unwrap(), &outputs[0]).unwrap_err().message(),
            "artifacts.base-directory \"missing\" is not a directory of the source"
        );
        // No buildspec section, but the pipeline's own patterns.
        let declared = out(dir.path(), "decl", &["dist/a/**"]);
        assert_eq!(collect_declared(&src, &declared).unwrap(), 1);
        assert_eq!(listing(&declared.path), ["dist/a/x.txt"]);
    }
}
