//! Sluice's own action fields spelled as reserved `configuration` keys.
//!
//! The AWS SDKs validate every request against CodePipeline's model and
//! refuse members it does not define, so `capabilities`, `agentLabels`,
//! `retryOnAgentLost`, `pollIntervalSeconds` and `pluginDigest` cannot
//! travel through them as fields. Each has a second spelling the model
//! allows: a configuration key in the `Sluice:` namespace whose value is
//! text (configuration values are strings of 1 to 1000 characters, keys 1
//! to 50):
//!
//! | field                 | key                          | value                         |
//! |-----------------------|------------------------------|-------------------------------|
//! | `capabilities`        | `Sluice:Capabilities`        | the object as JSON text       |
//! | `agentLabels`         | `Sluice:AgentLabels`         | the object as JSON text       |
//! | `retryOnAgentLost`    | `Sluice:RetryOnAgentLost`    | `true` or `false`             |
//! | `pollIntervalSeconds` | `Sluice:PollIntervalSeconds` | a whole number                |
//! | `pluginDigest`        | `Sluice:PluginDigest`        | the digest                    |
//!
//! The parser takes either spelling on every interface (giving both is an
//! error) and keeps the field: plugins never see these keys. The AWS
//! GetPipeline writes the fields back as keys ([`to_configuration`]), so a
//! pipeline read with boto3 can be sent back as it is.

use serde_json::{Map, Value};

/// Every reserved key starts with this; no other key may.
pub const PREFIX: &str = "Sluice:";

/// Each field and its reserved key.
pub const KEYS: &[(&str, &str)] = &[
    ("capabilities", "Sluice:Capabilities"),
    ("agentLabels", "Sluice:AgentLabels"),
    ("retryOnAgentLost", "Sluice:RetryOnAgentLost"),
    ("pollIntervalSeconds", "Sluice:PollIntervalSeconds"),
    ("pluginDigest", "Sluice:PluginDigest"),
];

/// The field a reserved key stands for, read from its text into the JSON
/// value the field takes; `Err` says why the text is not one.
pub fn field_value(key: &str, text: &str) -> Option<(&'static str, Result<Value, String>)> {
    let (field, _) = KEYS.iter().find(|(_, k)| *k == key)?;
    let value = match *field {
        "capabilities" | "agentLabels" => match serde_json::from_str::<Value>(text) {
            Ok(v @ Value::Object(_)) => Ok(v),
            Ok(_) => Err(format!("{key} must be a JSON object, as the {field} field is")),
            Err(e) => Err(format!("{key} is not JSON: {e}")),
        },
        "retryOnAgentLost" => match text {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!("{key} must be \"true\" or \"false\"")),
        },
        "pollIntervalSeconds" => {
            text.parse::<u64>().map(Value::from).map_err(|_| format!("{key} must be a whole number of seconds"))
        }
        _ => Ok(Value::String(text.to_string())),
    };
    Some((field, value))
}

/// Rewrites every action of a `pipeline` object so that Sluice's own
/// fields are reserved configuration keys: the spelling the AWS SDKs
/// accept back.
pub fn to_configuration(pipeline: &mut Value) {
    let Some(stages) = pipeline.get_mut("stages").and_then(Value::as_array_mut) else { return };
    for stage in stages {
        let Some(actions) = stage.get_mut("actions").and_then(Value::as_array_mut) else { continue };
        for action in actions.iter_mut().filter_map(Value::as_object_mut) {
            action_to_configuration(action);
        }
    }
}

fn action_to_configuration(action: &mut Map<String, Value>) {
    let mut moved = Map::new();
    for (field, key) in KEYS {
        let Some(value) = action.remove(*field) else { continue };
        let text = match value {
            Value::String(s) => s,
            other => other.to_string(),
        };
        moved.insert(key.to_string(), Value::String(text));
    }
    if moved.is_empty() {
        return;
    }
    let configuration = action.entry("configuration").or_insert_with(|| Value::Object(Map::new()));
    if let Some(map) = configuration.as_object_mut() {
        map.extend(moved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_become_keys_and_keys_read_back_as_fields() {
        let mut pipeline = json!({"name": "p", "stages": [{"name": "S", "actions": [{
            "name": "a", "configuration": {"Url": "u"},
            "capabilities": {"exec": ["git"]}, "agentLabels": {"os": "linux"},
            "retryOnAgentLost": true, "pollIntervalSeconds": 60, "pluginDigest": "sha256:ab"
        }, {"name": "b"}]}]});
        to_configuration(&mut pipeline);
        let action = &pipeline["stages"][0]["actions"][0];
        assert_eq!(
            action["configuration"],
            json!({"Url": "u", "Sluice:Capabilities": "{\"exec\":[\"git\"]}", "Sluice:AgentLabels": "{\"os\":\"linux\"}",
                   "Sluice:RetryOnAgentLost": "true", "Sluice:PollIntervalSeconds": "60", "Sluice:PluginDigest": "sha256:ab"})
        );
        assert!(action.get("capabilities").is_none());
        assert_eq!(pipeline["stages"][0]["actions"][1], json!({"name": "b"}));
        for (key, text) in action["configuration"].as_object().unwrap().iter().filter(|(k, _)| k.starts_with(PREFIX)) {
            let (field, value) = field_value(key, text.as_str().unwrap()).unwrap();
            let mut original = json!({"capabilities": {"exec": ["git"]}, "agentLabels": {"os": "linux"},
                "retryOnAgentLost": true, "pollIntervalSeconds": 60, "pluginDigest": "sha256:ab"});
            assert_eq!(value.unwrap(), original[field].take(), "{key}");
        }
        assert!(field_value("Sluice:RetryOnAgentLost", "yes").unwrap().1.is_err());
        assert!(field_value("Sluice:Capabilities", "[]").unwrap().1.is_err());
        assert!(field_value("Sluice:PollIntervalSeconds", "-1").unwrap().1.is_err());
        assert!(field_value("Sluice:Other", "x").is_none());
    }
}
