//! The resolved configuration of an action: an ordered map of strings, read
//! key by key or deserialized whole into a struct.

use std::fmt;
use std::str::FromStr;

use serde::de::value::BorrowedStrDeserializer;
use serde::de::{self, Deserialize, DeserializeSeed, IntoDeserializer, Visitor};

use crate::Error;

/// The action's configuration, every `#{...}` variable already resolved by
/// the host, in the order the pipeline declared it.
///
/// Keys are CodePipeline-style property names (`Url`, `Branch`). A key whose
/// value is empty counts as absent for [`Config::required`] and for `Option`
/// fields in [`Config::parse`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    entries: Vec<(String, String)>,
}

impl Config {
    /// An empty configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `key`, if present (empty values included).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key`, or `default` when it is absent or empty.
    pub fn get_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        match self.get(key) {
            Some(value) if !value.trim().is_empty() => value,
            _ => default,
        }
    }

    /// The value of `key`; absent or empty is an error naming the key:
    /// `configuration "Url" is required`.
    pub fn required(&self, key: &str) -> Result<&str, Error> {
        match self.get(key) {
            Some(value) if !value.trim().is_empty() => Ok(value),
            _ => Err(Error::new(format!("configuration \"{key}\" is required"))),
        }
    }

    /// The value of `key` parsed with [`FromStr`] (surrounding whitespace
    /// ignored); `Ok(None)` when absent or empty, an error naming the key when
    /// it does not parse.
    pub fn get_parsed<T>(&self, key: &str) -> Result<Option<T>, Error>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.get(key).map(str::trim) {
            None | Some("") => Ok(None),
            Some(value) => value.parse().map(Some).map_err(|e| {
                Error::new(format!(
                    "configuration \"{key}\": invalid value {value:?}: {e}"
                ))
            }),
        }
    }

    /// The items of a `list` property: its non-blank lines, trimmed; empty
    /// when the key is absent.
    ///
    /// ```
    /// # use sluice_plugin_sdk::Config;
    /// let config: Config = [("Args", "-c\n\n  echo hi \r\n")].into_iter().collect();
    /// assert_eq!(config.list("Args"), ["-c", "echo hi"]);
    /// assert!(config.list("Missing").is_empty());
    /// ```
    pub fn list(&self, key: &str) -> Vec<&str> {
        self.get(key)
            .map(|value| {
                value
                    .lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Deserializes the whole configuration into `T`, usually a struct with
    /// `#[serde(rename_all = "PascalCase")]`.
    ///
    /// Values are strings; they are converted as the field asks: numbers and
    /// booleans (`true`/`false`, any case) are parsed, `Option` is `None` for an
    /// empty value, a sequence takes one item per non-blank line (the `list`
    /// property type), an enum takes a unit variant by name. Errors name the
    /// key: `configuration "Depth": expected an integer, found "deep"`, and a
    /// missing field reads `configuration "Url" is required`.
    ///
    /// ```
    /// # use sluice_plugin_sdk::Config;
    /// #[derive(serde::Deserialize)]
    /// #[serde(rename_all = "PascalCase")]
    /// struct GitConfig { url: String, #[serde(default)] depth: Option<u32> }
    ///
    /// let config: Config = [("Url", "/srv/web.git"), ("Depth", "0")].into_iter().collect();
    /// let git: GitConfig = config.parse().unwrap();
    /// assert_eq!((git.url.as_str(), git.depth), ("/srv/web.git", Some(0)));
    /// ```
    pub fn parse<'a, T: Deserialize<'a>>(&'a self) -> Result<T, Error> {
        T::deserialize(MapDeserializer {
            entries: &self.entries,
        })
        .map_err(Error::from)
    }

    /// The entries in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, consuming the configuration.
    pub fn into_entries(self) -> Vec<(String, String)> {
        self.entries
    }
}

impl From<Vec<(String, String)>> for Config {
    fn from(entries: Vec<(String, String)>) -> Self {
        Self { entries }
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Config {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self {
            entries: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

/// A deserialization error, with the key it happened at once known.
#[derive(Debug)]
struct ConfigError {
    key: Option<String>,
    message: String,
}

impl ConfigError {
    fn at(mut self, key: &str) -> Self {
        self.key.get_or_insert_with(|| key.to_owned());
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "configuration \"{key}\": {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl de::Error for ConfigError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self {
            key: None,
            message: msg.to_string(),
        }
    }

    fn missing_field(field: &'static str) -> Self {
        Self {
            key: None,
            message: format!("configuration \"{field}\" is required"),
        }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Self {
            key: Some(field.to_owned()),
            message: format!("unknown property, expected one of: {}", expected.join(", ")),
        }
    }

    fn duplicate_field(field: &'static str) -> Self {
        Self {
            key: Some(field.to_owned()),
            message: "given more than once".to_owned(),
        }
    }
}

/// The configuration as a map.
struct MapDeserializer<'de> {
    entries: &'de [(String, String)],
}

impl<'de> de::Deserializer<'de> for MapDeserializer<'de> {
    type Error = ConfigError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        visitor.visit_map(MapAccess {
            entries: self.entries.iter(),
            value: None,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

struct MapAccess<'de> {
    entries: std::slice::Iter<'de, (String, String)>,
    value: Option<&'de (String, String)>,
}

impl<'de> de::MapAccess<'de> for MapAccess<'de> {
    type Error = ConfigError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ConfigError> {
        let Some(entry) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some(entry);
        seed.deserialize(BorrowedStrDeserializer::new(&entry.0))
            .map(Some)
            .map_err(|e: ConfigError| e.at(&entry.0))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ConfigError> {
        let (key, value) = self
            .value
            .take()
            .expect("serde asks for a value after its key");
        seed.deserialize(ValueDeserializer { value })
            .map_err(|e| e.at(key))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// One configuration value: a string converted to what the field asks for.
struct ValueDeserializer<'de> {
    value: &'de str,
}

impl<'de> ValueDeserializer<'de> {
    fn parse<T: FromStr>(&self, what: &str) -> Result<T, ConfigError> {
        self.value
            .trim()
            .parse()
            .map_err(|_| de::Error::custom(format!("expected {what}, found {:?}", self.value)))
    }
}

macro_rules! parse_number {
    ($($method:ident $visit:ident $ty:ty, $what:literal;)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
            visitor.$visit(self.parse::<$ty>($what)?)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for ValueDeserializer<'de> {
    type Error = ConfigError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        visitor.visit_borrowed_str(self.value)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        let value = self.value.trim();
        if value.eq_ignore_ascii_case("true") {
            visitor.visit_bool(true)
        } else if value.eq_ignore_ascii_case("false") {
            visitor.visit_bool(false)
        } else {
            Err(de::Error::custom(format!(
                "expected a boolean (\"true\" or \"false\"), found {:?}",
                self.value
            )))
        }
    }

    parse_number! {
        deserialize_i8 visit_i8 i8, "an integer";
        deserialize_i16 visit_i16 i16, "an integer";
        deserialize_i32 visit_i32 i32, "an integer";
        deserialize_i64 visit_i64 i64, "an integer";
        deserialize_i128 visit_i128 i128, "an integer";
        deserialize_u8 visit_u8 u8, "a non-negative integer";
        deserialize_u16 visit_u16 u16, "a non-negative integer";
        deserialize_u32 visit_u32 u32, "a non-negative integer";
        deserialize_u64 visit_u64 u64, "a non-negative integer";
        deserialize_u128 visit_u128 u128, "a non-negative integer";
        deserialize_f32 visit_f32 f32, "a number";
        deserialize_f64 visit_f64 f64, "a number";
        deserialize_char visit_char char, "a single character";
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        if self.value.trim().is_empty() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        let lines = self
            .value
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty());
        let mut seq: de::value::SeqDeserializer<_, ConfigError> =
            de::value::SeqDeserializer::new(lines.map(|value| ValueDeserializer { value }));
        let result = visitor.visit_seq(&mut seq)?;
        seq.end()?;
        Ok(result)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        visitor.visit_enum(BorrowedStrDeserializer::new(self.value.trim()))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        str string bytes byte_buf map struct identifier
    }
}

impl<'de> IntoDeserializer<'de, ConfigError> for ValueDeserializer<'de> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "PascalCase")]
    struct Git {
        url: String,
        #[serde(default = "main")]
        branch: String,
        commit_id: Option<String>,
        #[serde(default)]
        depth: u32,
        #[serde(default)]
        verbose: bool,
    }

    fn main() -> String {
        "main".into()
    }

    fn config(pairs: &[(&str, &str)]) -> Config {
        pairs.iter().copied().collect()
    }

    #[test]
    fn get_required_and_defaults() {
        let c = config(&[("Url", "/srv/a.git"), ("Branch", ""), ("Depth", " 3 ")]);
        assert_eq!(c.get("Url"), Some("/srv/a.git"));
        assert_eq!(c.get("Missing"), None);
        assert_eq!(c.get_or("Branch", "main"), "main");
        assert_eq!(c.required("Url").unwrap(), "/srv/a.git");
        assert_eq!(
            c.required("Branch").unwrap_err().message(),
            "configuration \"Branch\" is required"
        );
        assert_eq!(c.get_parsed::<u32>("Depth").unwrap(), Some(3));
        assert_eq!(c.get_parsed::<u32>("Branch").unwrap(), None);
        let err = config(&[("Depth", "deep")])
            .get_parsed::<u32>("Depth")
            .unwrap_err();
        assert!(
            err.message()
                .starts_with("configuration \"Depth\": invalid value \"deep\""),
            "{err}"
        );
    }

    #[test]
    fn parse_coerces_strings_and_keeps_order_irrelevant() {
        let c = config(&[
            ("Verbose", "TRUE"),
            ("Depth", "0"),
            ("Url", "file:///srv/a.git"),
            ("CommitId", ""),
        ]);
        let git: Git = c.parse().unwrap();
        assert_eq!(
            git,
            Git {
                url: "file:///srv/a.git".into(),
                branch: "main".into(),
                commit_id: None,
                depth: 0,
                verbose: true
            }
        );
    }

    #[test]
    fn parse_errors_name_the_key() {
        let err = config(&[("Url", "x"), ("Depth", "deep")])
            .parse::<Git>()
            .unwrap_err();
        assert_eq!(
            err.message(),
            "configuration \"Depth\": expected a non-negative integer, found \"deep\""
        );
        let err = config(&[("Url", "x"), ("Verbose", "yes please")])
            .parse::<Git>()
            .unwrap_err();
        assert_eq!(
            err.message(),
            "configuration \"Verbose\": expected a boolean (\"true\" or \"false\"), found \"yes please\""
        );
        let err = config(&[("Branch", "dev")]).parse::<Git>().unwrap_err();
        assert_eq!(err.message(), "configuration \"Url\" is required");
    }

    #[test]
    fn parse_lists_enums_and_unknown_fields() {
        #[derive(Debug, Deserialize, PartialEq)]
        enum Mode {
            Fast,
            Slow,
        }
        #[derive(Debug, Deserialize)]
        #[serde(rename_all = "PascalCase", deny_unknown_fields)]
        struct Build {
            commands: Vec<String>,
            ports: Vec<u16>,
            mode: Mode,
            ratio: Option<f64>,
        }
        let c = config(&[
            ("Commands", "make\n\n  make test  \r\n"),
            ("Ports", "80\n443"),
            ("Mode", "Slow"),
            ("Ratio", "0.5"),
        ]);
        let build: Build = c.parse().unwrap();
        assert_eq!(build.commands, ["make", "make test"]);
        assert_eq!(build.ports, [80, 443]);
        assert_eq!(build.mode, Mode::Slow);
        assert_eq!(build.ratio, Some(0.5));

        let err = config(&[("Commands", "x"), ("Ports", "80\nhttp"), ("Mode", "Fast")])
            .parse::<Build>()
            .unwrap_err();
        assert_eq!(
            err.message(),
            "configuration \"Ports\": expected a non-negative integer, found \"http\""
        );
        let err = config(&[("Commands", "x"), ("Ports", ""), ("Mode", "Medium")])
            .parse::<Build>()
            .unwrap_err();
        assert!(
            err.message()
                .starts_with("configuration \"Mode\": unknown variant `Medium`"),
            "{err}"
        );
        let err = config(&[("Comands", "x")]).parse::<Build>().unwrap_err();
        assert!(
            err.message()
                .starts_with("configuration \"Comands\": unknown property"),
            "{err}"
        );
    }

    #[test]
    fn parse_borrows_and_fills_maps() {
        #[derive(Deserialize)]
        struct Borrowed<'a> {
            #[serde(rename = "Url")]
            url: &'a str,
        }
        let c = config(&[("Url", "x"), ("Other", "y")]);
        assert_eq!(c.parse::<Borrowed<'_>>().unwrap().url, "x");
        let all: std::collections::BTreeMap<String, String> = c.parse().unwrap();
        assert_eq!(all.len(), 2);
    }
}
