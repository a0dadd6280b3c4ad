//! Test plugin `compat-0-1`: built against `sluice:plugin@0.1.0` as it was
//! released (`wit/released/0.1.0`), the way a third party's plugin built
//! before 0.2.0 is. The runtime's tests run it on the newest host and check
//! every 0.1.0 import still works: log, files, process and secrets.
//! Never registered as a built-in.

wit_bindgen::generate!({
    path: "../../wit/released/0.1.0",
    world: "plugin",
});

use exports::sluice::plugin::action::Guest;
use sluice::plugin::types::{
    ActionInfo, ArtifactBounds, Capabilities, ConfigProperty, Context, Failure, Outcome, Success,
};
use sluice::plugin::{files, log, process, secrets};

struct Compat;

impl Guest for Compat {
    fn describe() -> ActionInfo {
        ActionInfo {
            name: "compat-0-1".into(),
            version: "1".into(),
            category: "Build".into(),
            description: "Built against sluice:plugin@0.1.0".into(),
            configuration: vec![ConfigProperty {
                name: "Greeting".into(),
                required: true,
                secret: false,
                description: "Logged and returned".into(),
                type_: "string".into(),
            }],
            input_artifacts: ArtifactBounds { min: 1, max: 1 },
            output_artifacts: ArtifactBounds { min: 1, max: 1 },
            capabilities: Capabilities {
                exec: vec!["sh".into()],
                http: vec![],
                secrets: vec!["TOKEN".into()],
                env: vec![],
                fs: vec![],
            },
        }
    }

    fn execute(ctx: Context) -> Outcome {
        match run(&ctx) {
            Ok(success) => Outcome::Succeeded(success),
            Err(message) => Outcome::Failed(Failure { message, retryable: false }),
        }
    }
}

fn run(ctx: &Context) -> Result<Success, String> {
    let greeting = ctx
        .configuration
        .iter()
        .find(|(k, _)| k == "Greeting")
        .map(|(_, v)| v.clone())
        .ok_or("Greeting is required")?;
    log::log(log::Level::Info, &format!("hello from 0.1.0: {greeting}"));
    let (input, output) = (&ctx.inputs[0], &ctx.outputs[0]);
    let copied = files::copy(&input.path, &format!("{}/copy", output.path))?;
    let out = process::run(&process::Command {
        program: "sh".into(),
        args: vec!["-c".into(), "echo from-sh".into()],
        cwd: None,
        env: vec![],
        stream_output: true,
    })?;
    let token = secrets::get("TOKEN")?;
    log::log(log::Level::Info, &format!("the token is {token}"));
    Ok(Success {
        summary: format!("{greeting}: copied {copied} file(s)"),
        output_variables: vec![
            ("Greeting".into(), greeting),
            ("Shell".into(), String::from_utf8_lossy(&out.stdout).trim().to_string()),
            ("TokenLength".into(), token.len().to_string()),
        ],
        external_url: None,
    })
}

export!(Compat);
