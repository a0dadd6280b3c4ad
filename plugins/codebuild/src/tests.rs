//! `execute` end to end, natively: the SDK then runs the shell directly
//! and sandbox paths are host paths (the confinement is the host's, and
//! is tested by the cross tests).

use super::*;
use std::path::PathBuf;

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Fixture {
    fn new(buildspec: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        for sub in ["in/src", "lib", "ws", "out/Build", "out/docs"] {
            fs::create_dir_all(root.join(sub)).unwrap();
        }
        fs::write(root.join("in/buildspec.yml"), buildspec).unwrap();
        fs::write(root.join("in/src/main.c"), "int main;\n").unwrap();
        fs::write(root.join("lib/helper.sh"), "echo helper\n").unwrap();
        Fixture { _dir: dir, root }
    }

    fn context(&self, config: &[(&str, &str)]) -> Context {
        let artifact = |name: &str, path: &str| Artifact { name: name.into(), path: self.root.join(path), files: vec![] };
        Context {
            pipeline: "web".into(),
            execution_id: "exec-1".into(),
            inputs: vec![artifact("SourceArtifact", "in"), artifact("lib-src", "lib")],
            outputs: vec![artifact("Build", "out/Build"), artifact("docs", "out/docs")],
            workspace: self.root.join("ws"),
            ..Context::for_test(config)
        }
    }
}

const BUILDSPEC: &str = r#"
version: 0.2
env:
  variables:
    STAGE: prod
  exported-variables:
    - IMAGE_TAG
    - STAGE
phases:
  install:
    commands:
      - mkdir -p dist/bin site
  pre_build:
    commands:
      - IMAGE_TAG="web-$CODEBUILD_BUILD_NUMBER"
      - cd src
  build:
    commands:
      - cp main.c ../dist/bin/main.c
      - echo "$STAGE $IMAGE_TAG $CODEBUILD_BUILD_ID $CODEBUILD_BUILD_SUCCEEDING" > ../dist/env.txt
      - cp "$CODEBUILD_SRC_DIR_lib_src/helper.sh" ../site/
      - test "$CODEBUILD_SRC_DIR" = "$(cd .. && pwd)"
artifacts:
  files:
    - '**/*'
  base-directory: dist
  discard-paths: yes
  secondary-artifacts:
    docs:
      files:
        - site/*
"#;

#[test]
fn runs_a_buildspec_end_to_end() {
    let fx = Fixture::new(BUILDSPEC);
    let outcome = CodeBuild::execute(fx.context(&[
        ("ProjectName", "web-build"),
        ("EnvironmentVariables", r#"[{"name":"STAGE","value":"test","type":"PLAINTEXT"}]"#),
    ]))
    .unwrap();
    assert_eq!(outcome.summary(), "buildspec of \"web-build\": 3 phases succeeded, 3 artifact files");
    assert_eq!(outcome.get_variable("IMAGE_TAG"), Some("web-1"));
    assert_eq!(outcome.get_variable("STAGE"), Some("test"), "EnvironmentVariables override the buildspec");
    let env = fs::read_to_string(fx.root.join("out/Build/env.txt")).unwrap();
    assert_eq!(env.trim(), "test web-1 web-build:exec-1 1");
    assert!(fx.root.join("out/Build/main.c").exists(), "discard-paths flattens");
    assert_eq!(fs::read_to_string(fx.root.join("out/docs/site/helper.sh")).unwrap(), "echo helper\n");
}

#[test]
fn a_failed_build_runs_finally_and_post_build_then_fails() {
    let spec = r#"
version: 0.2
phases:
  build:
    commands:
      - echo building > build.log
      - exit 2
      - echo never > never.txt
    finally:
      - echo "finally $CODEBUILD_BUILD_SUCCEEDING" >> build.log
  post_build:
    commands:
      - echo "post $CODEBUILD_BUILD_SUCCEEDING" >> build.log
artifacts:
  files: [build.log]
"#;
    let fx = Fixture::new(spec);
    let mut ctx = fx.context(&[]);
    ctx.outputs.truncate(1);
    let err = CodeBuild::execute(ctx).unwrap_err();
    assert_eq!(err.message(), "build failed: phase BUILD: command \"exit 2\" exited with status 2");
    let log = fs::read_to_string(fx.root.join("ws/src/build.log")).unwrap();
    assert_eq!(log, "building\nfinally 1\npost 0\n");
    assert!(!fx.root.join("ws/src/never.txt").exists());
}

#[test]
fn a_failed_install_skips_the_rest() {
    let spec = "version: 0.2\nphases:\n  install:\n    commands: ['false']\n  build:\n    commands: [touch built]\n  post_build:\n    commands: [touch post]\n";
    let fx = Fixture::new(spec);
    let mut ctx = fx.context(&[]);
    ctx.outputs.clear();
    let err = CodeBuild::execute(ctx).unwrap_err();
    assert_eq!(
        err.message(),
        "build failed: phase INSTALL: command \"false\" exited with status 1 (skipped BUILD, POST_BUILD)"
    );
    assert!(!fx.root.join("ws/src/built").exists() && !fx.root.join("ws/src/post").exists());
}

#[test]
fn buildspec_from_configuration_path_or_inline() {
    let fx = Fixture::new("not: a buildspec");
    fs::create_dir_all(fx.root.join("in/ci")).unwrap();
    fs::write(
        fx.root.join("in/ci/spec.yml"),
        "version: 0.2\nphases:\n  build:\n    commands: [echo from-path > out.txt]\nartifacts:\n  files: [out.txt]\n",
    )
    .unwrap();
    let mut ctx = fx.context(&[("BuildSpec", "ci/spec.yml")]);
    ctx.outputs.truncate(1);
    CodeBuild::execute(ctx.clone()).unwrap();
    assert_eq!(fs::read_to_string(fx.root.join("out/Build/out.txt")).unwrap(), "from-path\n");

    let inline =
        "version: 0.2\nphases:\n  build:\n    commands: [echo inline > out2.txt]\nartifacts:\n  files: [out2.txt]\n";
    ctx.config = [("BuildSpec", inline)].into_iter().collect();
    ctx.workspace = fx.root.join("ws2");
    fs::create_dir_all(&ctx.workspace).unwrap();
    CodeBuild::execute(ctx.clone()).unwrap();
    assert_eq!(fs::read_to_string(fx.root.join("out/Build/out2.txt")).unwrap(), "inline\n");

    // The default file holds no buildspec: the error names the file and the key.
    ctx.config = sluice_plugin_sdk::Config::new();
    ctx.workspace = fx.root.join("ws3");
    fs::create_dir_all(&ctx.workspace).unwrap();
    let message = CodeBuild::execute(ctx.clone()).unwrap_err().message().to_owned();
    assert!(message.starts_with("\"buildspec.yml\": buildspec key \"not\": unknown key"), "{message}");
    ctx.config = [("BuildSpec", "../../etc/passwd")].into_iter().collect();
    let message = CodeBuild::execute(ctx.clone()).unwrap_err().message().to_owned();
    assert!(message.contains("must be a path inside the source"), "{message}");
    ctx.config = [("BuildSpec", "missing.yml")].into_iter().collect();
    let message = CodeBuild::execute(ctx).unwrap_err().message().to_owned();
    assert!(message.starts_with("no buildspec: \"missing.yml\" is not in input artifact \"SourceArtifact\""), "{message}");
}

#[test]
fn secrets_come_from_granted_sluice_secrets() {
    // The SDK's native stand-in reads SLUICE_SECRET_<NAME> (`.`, `-` as `_`).
    unsafe { std::env::set_var("SLUICE_SECRET_cbplugin_db_password", "hunter2") };
    let spec = "version: 0.2\nenv:\n  parameter-store:\n    DB_PASSWORD: /cbplugin/db-password\nphases:\n  build:\n    commands:\n      - test \"$DB_PASSWORD\" = hunter2\n";
    let fx = Fixture::new(spec);
    let mut ctx = fx.context(&[]);
    ctx.outputs.clear();
    CodeBuild::execute(ctx.clone()).unwrap();
    let spec = "version: 0.2\nenv:\n  parameter-store:\n    X: /cbplugin/not-set\nphases: {}\n";
    fs::write(fx.root.join("in/buildspec.yml"), spec).unwrap();
    ctx.workspace = fx.root.join("ws-b");
    fs::create_dir_all(&ctx.workspace).unwrap();
    let message = CodeBuild::execute(ctx).unwrap_err().message().to_owned();
    assert!(message.starts_with("variable \"X\" (env.parameter-store): Sluice secret \"cbplugin.not-set\""), "{message}");
}

#[test]
fn describe_asks_for_nothing_shell_does_not_but_secrets() {
    let info = CodeBuild::describe();
    let caps = &info.capabilities;
    assert_eq!(caps.exec, ["sh", "bash"]);
    assert_eq!(caps.secrets, ["*"]);
    assert!(caps.http.is_empty() && caps.env.is_empty() && caps.fs.is_empty());
}
