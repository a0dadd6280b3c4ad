//! Built-in plugin `noop@1`: succeeds at once with the summary "noop".
//!
//! A placeholder action for pipelines under construction and the cheapest
//! plugin for measuring dispatch overhead. It needs no capability, touches no
//! file and knows nothing beyond the SDK.

use sluice_plugin_sdk::{ActionInfo, Category, Context, Error, Outcome, Plugin, Property, log};

/// The noop plugin.
pub struct Noop;

impl Plugin for Noop {
    fn describe() -> ActionInfo {
        ActionInfo::new("noop", "1", Category::Build)
            .description("Does nothing and succeeds at once; logs `Message` when set")
            .property(Property::optional(
                "Message",
                "A line to write to the action log",
            ))
            .inputs(0, 5)
            .outputs(0, 5)
    }

    fn execute(ctx: Context) -> Result<Outcome, Error> {
        if let Some(message) = ctx.config.get("Message").filter(|m| !m.is_empty()) {
            log::info(message);
        }
        for input in &ctx.inputs {
            log::debug(format!("input artifact \"{}\" ignored", input.name));
        }
        Ok(Outcome::succeeded("noop"))
    }
}

sluice_plugin_sdk::export_plugin!(Noop);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn succeeds_with_noop() {
        let info = Noop::describe();
        assert_eq!(
            (info.name.as_str(), info.version.as_str(), info.category),
            ("noop", "1", Category::Build)
        );
        let ctx = Context { workspace: "/nonexistent".into(), ..Context::for_test(&[("Message", "hello")]) };
        assert_eq!(Noop::execute(ctx).unwrap(), Outcome::succeeded("noop"));
    }
}
