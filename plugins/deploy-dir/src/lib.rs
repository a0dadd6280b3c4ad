//! Built-in plugin `deploy-dir@1`: deploys an artifact into a directory of
//! releases with an atomically switched `current` symlink.
//!
//! Layout under `TargetDirectory`:
//!
//! ```text
//! releases/<execution-id>/...   one directory per deployment
//! current -> releases/<execution-id>
//! ```
//!
//! The target is a host directory the pipeline action grants with the `fs`
//! capability (`"capabilities": {"fs": ["/srv/www"]}`); the host preopens it
//! read-write at the same path inside the sandbox. The switch creates a
//! relative symlink `current.tmp-<execution-id>` and renames it over
//! `current`, so a reader sees the old release or the new one, never neither.
//! This crate knows only the SDK.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;
use sluice_plugin_sdk::{
    ActionInfo, Category, Context, Error, Outcome, Plugin, Property, PropertyType, ResultExt,
    artifacts, log,
};

/// Releases kept when `KeepReleases` is not set, the current one included.
const DEFAULT_KEEP_RELEASES: u32 = 5;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Config {
    target_directory: PathBuf,
    #[serde(default)]
    keep_releases: Option<u32>,
}

/// The deploy-dir plugin.
pub struct DeployDir;

impl Plugin for DeployDir {
    fn describe() -> ActionInfo {
        ActionInfo::new("deploy-dir", "1", Category::Deploy)
            .description(
                "Copies the input artifact into TargetDirectory/releases/<execution-id>, points \
                 TargetDirectory/current at it atomically and prunes old releases. The action must \
                 grant TargetDirectory with the fs capability.",
            )
            .property(Property::required(
                "TargetDirectory",
                "Absolute host directory to deploy into",
            ))
            .property(
                Property::optional(
                    "KeepReleases",
                    "How many releases to keep, the current one included; 5 by default",
                )
                .kind(PropertyType::Number),
            )
            .inputs(1, 1)
            .outputs(0, 0)
            // The target comes from the configuration: any directory the
            // action grants.
            .fs(["*"])
    }

    fn execute(ctx: Context) -> Result<Outcome, Error> {
        let config: Config = ctx.config.parse()?;
        let target = config.target_directory;
        if !target.is_absolute() {
            return Err(Error::new(format!(
                "configuration \"TargetDirectory\": \"{}\" is not an absolute path",
                target.display()
            )));
        }
        let keep = config.keep_releases.unwrap_or(DEFAULT_KEEP_RELEASES);
        if keep == 0 {
            return Err(Error::new(
                "configuration \"KeepReleases\": must be at least 1",
            ));
        }
        let [input] = ctx.inputs.as_slice() else {
            return Err(Error::new(format!(
                "expected one input artifact, got {}",
                ctx.inputs.len()
            )));
        };
        let id = release_name(&ctx.execution_id)?;

        let current = target.join("current");
        if let Ok(meta) = fs::symlink_metadata(&current)
            && !meta.file_type().is_symlink()
        {
            return Err(Error::new(format!(
                "\"{}\" exists and is not a symbolic link",
                current.display()
            )));
        }

        let releases = target.join("releases");
        let release = releases.join(id);
        fs::create_dir_all(&releases)
            .with_context(|| format!("creating \"{}\"", releases.display()))?;
        if fs::symlink_metadata(&release).is_ok() {
            log::info(format!(
                "replacing \"{}\" left by an earlier attempt",
                release.display()
            ));
            remove(&release)?;
        }
        let files = artifacts::copy(&input.path, &release)?;
        log::info(format!(
            "copied {files} files into \"{}\"",
            release.display()
        ));

        switch_current(&target, &current, id)?;
        log::info(format!(
            "\"{}\" now points to \"releases/{id}\"",
            current.display()
        ));

        for old in prune(&releases, id, keep)? {
            log::info(format!("removed old release \"{}\"", old.display()));
        }
        Ok(
            Outcome::succeeded(format!("deployed {files} files to {}", release.display()))
                .variable("DeployedPath", release.display().to_string())
                .variable("CurrentLink", current.display().to_string()),
        )
    }
}

sluice_plugin_sdk::export_plugin!(DeployDir);

/// The execution id as a directory name; it must be a single plain component.
fn release_name(execution_id: &str) -> Result<&str, Error> {
    let plain = !execution_id.is_empty()
        && execution_id != "."
        && execution_id != ".."
        && !execution_id.contains(['/', '\\', '\0']);
    if plain {
        Ok(execution_id)
    } else {
        Err(Error::new(format!(
            "execution id {execution_id:?} is not a valid directory name"
        )))
    }
}

/// Points `current` at `releases/<id>`: a fresh relative symlink renamed over it.
fn switch_current(target: &Path, current: &Path, id: &str) -> Result<(), Error> {
    let temporary = target.join(format!("current.tmp-{id}"));
    if fs::symlink_metadata(&temporary).is_ok() {
        fs::remove_file(&temporary)
            .with_context(|| format!("removing \"{}\"", temporary.display()))?;
    }
    let link_target = Path::new("releases").join(id);
    // `std::os::wasi::fs::symlink_path` is unstable; `soft_link` is the
    // stable spelling on every target, including wasm32-wasip2.
    #[allow(deprecated)]
    fs::soft_link(&link_target, &temporary)
        .with_context(|| format!("creating symbolic link \"{}\"", temporary.display()))?;
    fs::rename(&temporary, current).with_context(|| {
        format!(
            "renaming \"{}\" to \"{}\"",
            temporary.display(),
            current.display()
        )
    })
}

/// Removes the oldest releases so that `keep` remain, never `current_id`;
/// returns what it removed.
fn prune(releases: &Path, current_id: &str, keep: u32) -> Result<Vec<PathBuf>, Error> {
    let mut others: Vec<(SystemTime, String, PathBuf)> = Vec::new();
    for entry in
        fs::read_dir(releases).with_context(|| format!("reading \"{}\"", releases.display()))?
    {
        let entry = entry.with_context(|| format!("reading \"{}\"", releases.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == current_id {
            continue;
        }
        let meta = entry
            .metadata()
            .with_context(|| format!("reading \"{}\"", entry.path().display()))?;
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        others.push((modified, name, entry.path()));
    }
    // Newest first; the name breaks ties so that the order is stable.
    others.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
    let keep_others = keep as usize - 1;
    let mut removed = Vec::new();
    for (_, _, path) in others.into_iter().skip(keep_others) {
        remove(&path)?;
        removed.push(path);
    }
    Ok(removed)
}

fn remove(path: &Path) -> Result<(), Error> {
    let meta =
        fs::symlink_metadata(path).with_context(|| format!("reading \"{}\"", path.display()))?;
    let result = if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other.with_context(|| format!("removing \"{}\"", path.display())),
    }
}

#[cfg(test)]
mod tests {
    //! These run natively: sandbox paths are host paths.
    use super::*;
    use sluice_plugin_sdk::Artifact;
    use std::time::Duration;

    fn context(input: &Path, target: &Path, execution_id: &str, keep: Option<&str>) -> Context {
        let mut config = vec![("TargetDirectory".to_owned(), target.display().to_string())];
        if let Some(keep) = keep {
            config.push(("KeepReleases".to_owned(), keep.to_owned()));
        }
        Context {
            pipeline: "web".into(),
            execution_id: execution_id.into(),
            stage: "Deploy".into(),
            action: "Site".into(),
            attempt: 1,
            config: config.into(),
            inputs: vec![Artifact {
                name: "site".into(),
                path: input.to_path_buf(),
                files: vec![],
            }],
            outputs: vec![],
            workspace: input.to_path_buf(),
            variables: vec![],
            continuation: None,
        }
    }

    #[test]
    fn deploys_switches_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let (input, target) = (dir.path().join("in"), dir.path().join("www"));
        fs::create_dir_all(input.join("css")).unwrap();
        fs::write(input.join("index.html"), "v1").unwrap();
        fs::write(input.join("css/site.css"), "body{}").unwrap();

        let outcome = DeployDir::execute(context(&input, &target, "e1", Some("2"))).unwrap();
        assert_eq!(
            outcome.get_variable("DeployedPath"),
            Some(target.join("releases/e1").to_str().unwrap())
        );
        assert_eq!(
            outcome.get_variable("CurrentLink"),
            Some(target.join("current").to_str().unwrap())
        );
        assert_eq!(
            fs::read_link(target.join("current")).unwrap(),
            Path::new("releases/e1")
        );
        assert_eq!(
            fs::read_to_string(target.join("current/css/site.css")).unwrap(),
            "body{}"
        );

        for (n, id) in ["e2", "e3"].into_iter().enumerate() {
            // Modification times order the releases; keep them apart.
            std::thread::sleep(Duration::from_millis(20));
            fs::write(input.join("index.html"), format!("v{}", n + 2)).unwrap();
            DeployDir::execute(context(&input, &target, id, Some("2"))).unwrap();
        }
        assert_eq!(
            fs::read_to_string(target.join("current/index.html")).unwrap(),
            "v3"
        );
        let mut left: Vec<_> = fs::read_dir(target.join("releases"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["e2", "e3"]);
        assert!(!target.join("current.tmp-e3").exists());

        // A retry of the same execution replaces its release.
        fs::write(input.join("index.html"), "v3 again").unwrap();
        fs::remove_file(input.join("css/site.css")).unwrap();
        DeployDir::execute(context(&input, &target, "e3", Some("2"))).unwrap();
        assert_eq!(
            fs::read_to_string(target.join("current/index.html")).unwrap(),
            "v3 again"
        );
        assert!(!target.join("current/css/site.css").exists());
    }

    #[test]
    fn refuses_bad_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let err =
            DeployDir::execute(context(dir.path(), Path::new("www"), "e1", None)).unwrap_err();
        assert_eq!(
            err.message(),
            "configuration \"TargetDirectory\": \"www\" is not an absolute path"
        );
        let err = DeployDir::execute(context(dir.path(), dir.path(), "e1", Some("0"))).unwrap_err();
        assert_eq!(
            err.message(),
            "configuration \"KeepReleases\": must be at least 1"
        );
        let err = DeployDir::execute(context(dir.path(), &dir.path().join("t2"), "../x", None))
            .unwrap_err();
        assert_eq!(
            err.message(),
            "execution id \"../x\" is not a valid directory name"
        );
        let (input, target) = (dir.path().join("in"), dir.path().join("t"));
        fs::create_dir_all(&input).unwrap();
        fs::create_dir_all(target.join("current")).unwrap();
        let err = DeployDir::execute(context(&input, &target, "e1", None)).unwrap_err();
        assert_eq!(
            err.message(),
            format!(
                "\"{}\" exists and is not a symbolic link",
                target.join("current").display()
            )
        );
    }
}
