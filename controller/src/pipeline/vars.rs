//! Variable references in configuration values: `#{namespace.name}`.
//!
//! Three kinds exist, as in CodePipeline: `#{variables.NAME}` (a pipeline
//! variable), `#{codepipeline.PipelineExecutionId}`, and `#{Namespace.Name}`
//! (an output variable of an earlier action that declares that namespace).
//! There is no escape: any `#{` starts a reference. Substitution is a single
//! pass, so a substituted value is never scanned for references again.

use std::fmt;

/// Namespace of pipeline variables.
pub const VARIABLES_NAMESPACE: &str = "variables";
/// Namespace of the variables the engine itself provides.
pub const CODEPIPELINE_NAMESPACE: &str = "codepipeline";
/// The variables in [`CODEPIPELINE_NAMESPACE`].
pub const CODEPIPELINE_VARIABLES: &[&str] = &["PipelineExecutionId"];

/// One `#{namespace.name}` reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VarRef {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for VarRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{{{}.{}}}", self.namespace, self.name)
    }
}

/// A piece of a configuration value.
#[derive(Debug, PartialEq)]
pub(crate) enum Piece<'a> {
    Text(&'a str),
    Ref(VarRef),
    /// Something that starts with `#{` but is not a reference.
    Malformed {
        text: &'a str,
        reason: &'static str,
    },
}

fn namespace_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '@' | '-' | '_')
}

/// Splits a value into text and references.
pub(crate) fn pieces(value: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find("#{") {
        if start > 0 {
            out.push(Piece::Text(&rest[..start]));
        }
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push(Piece::Malformed { text: &rest[start..], reason: "it has no closing '}'" });
            return out;
        };
        let text = &rest[start..start + 2 + end + 1];
        let inner = &after[..end];
        out.push(match inner.split_once('.') {
            None => Piece::Malformed { text, reason: "expected #{namespace.name}" },
            Some((namespace, _)) if namespace.is_empty() || !namespace.chars().all(namespace_char) => {
                Piece::Malformed { text, reason: "the namespace may only contain A-Z a-z 0-9 @ - _" }
            }
            Some((_, name)) if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '{') => {
                Piece::Malformed { text, reason: "the variable name is empty or contains blanks or '{'" }
            }
            Some((namespace, name)) => Piece::Ref(VarRef { namespace: namespace.to_owned(), name: name.to_owned() }),
        });
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    out
}

/// The well-formed references in `value`, in order (repeats included).
pub fn variable_references(value: &str) -> Vec<VarRef> {
    pieces(value)
        .into_iter()
        .filter_map(|piece| match piece {
            Piece::Ref(reference) => Some(reference),
            _ => None,
        })
        .collect()
}

/// Substitutes every reference in `value` with what `lookup` returns. Fails
/// on the first reference that is malformed or that `lookup` cannot resolve,
/// naming it.
pub fn resolve(value: &str, lookup: impl Fn(&VarRef) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    for piece in pieces(value) {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Ref(reference) => match lookup(&reference) {
                Some(resolved) => out.push_str(&resolved),
                None => return Err(format!("unresolved variable reference \"{reference}\"")),
            },
            Piece::Malformed { text, reason } => {
                return Err(format!("malformed variable reference \"{text}\": {reason}"));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(namespace: &str, name: &str) -> VarRef {
        VarRef { namespace: namespace.into(), name: name.into() }
    }

    #[test]
    fn finds_references_between_text() {
        assert_eq!(
            variable_references("git checkout #{Src.CommitId} && echo #{variables.ENV}#{codepipeline.PipelineExecutionId}"),
            vec![r("Src", "CommitId"), r("variables", "ENV"), r("codepipeline", "PipelineExecutionId")]
        );
        assert_eq!(variable_references("no refs, just # and { }"), vec![]);
        assert_eq!(variable_references("#{A.b.c}"), vec![r("A", "b.c")]);
    }

    #[test]
    fn malformed_references_are_pieces_of_their_own() {
        assert_eq!(
            pieces("x #{nodot} y"),
            vec![
                Piece::Text("x "),
                Piece::Malformed { text: "#{nodot}", reason: "expected #{namespace.name}" },
                Piece::Text(" y"),
            ]
        );
        assert!(matches!(pieces("#{A.b")[..], [Piece::Malformed { text: "#{A.b", .. }]));
        assert!(matches!(pieces("#{a b.c}")[..], [Piece::Malformed { .. }]));
        assert!(matches!(pieces("#{A.}")[..], [Piece::Malformed { .. }]));
        assert!(matches!(pieces("#{.x}")[..], [Piece::Malformed { .. }]));
    }

    #[test]
    fn resolve_substitutes_once_and_names_the_first_failure() {
        let lookup = |v: &VarRef| match (v.namespace.as_str(), v.name.as_str()) {
            ("variables", "ENV") => Some("prod".to_owned()),
            ("Src", "CommitId") => Some("#{variables.ENV}".to_owned()),
            _ => None,
        };
        assert_eq!(resolve("deploy #{variables.ENV}!", lookup).unwrap(), "deploy prod!");
        // A resolved value is not scanned again.
        assert_eq!(resolve("#{Src.CommitId}", lookup).unwrap(), "#{variables.ENV}");
        assert_eq!(
            resolve("#{variables.ENV} #{Build.Out} #{Other.X}", lookup).unwrap_err(),
            "unresolved variable reference \"#{Build.Out}\""
        );
        assert_eq!(
            resolve("a #{oops", lookup).unwrap_err(),
            "malformed variable reference \"#{oops\": it has no closing '}'"
        );
        assert_eq!(resolve("plain", lookup).unwrap(), "plain");
    }
}
