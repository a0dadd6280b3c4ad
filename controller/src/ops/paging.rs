//! Pages of a listing: `maxResults` and an opaque `nextToken`, as
//! CodePipeline's paginated operations take them, for every transport.
//!
//! A token is the listing's name and the last item's sort key, base64
//! (URL-safe) encoded: opaque to clients, checked on the way back (a token
//! of another listing, or not one at all, is `InvalidNextTokenException`).

use super::OpError;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The token that resumes `listing` after the item whose key is `cursor`.
pub fn token(listing: &str, cursor: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{listing}\n{cursor}"))
}

/// The cursor of a token `listing` gave.
pub fn cursor(listing: &str, token: &str) -> Result<String, OpError> {
    let bad = || OpError::InvalidNextToken(format!("nextToken {token:?} is not one this listing gave"));
    let bytes = URL_SAFE_NO_PAD.decode(token.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (name, cursor) = text.split_once('\n').ok_or_else(bad)?;
    if name != listing {
        return Err(bad());
    }
    Ok(cursor.to_string())
}

/// How many items a page holds: `max_results` within `1..=max`, else `default`.
pub fn limit(max_results: Option<usize>, default: usize, max: usize) -> Result<usize, OpError> {
    match max_results {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(OpError::invalid(format!("maxResults {n} must be between 1 and {max}"))),
    }
}

/// One page of `items` (sorted by `key`, ascending): those after the
/// token's cursor, at most `limit`, and the token of the next page if any.
pub fn page<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> String,
    listing: &str,
    limit: usize,
    next_token: Option<&str>,
) -> Result<(Vec<T>, Option<String>), OpError> {
    let after = next_token.map(|t| cursor(listing, t)).transpose()?;
    let mut rest: Vec<T> = items.into_iter().filter(|item| after.as_ref().is_none_or(|a| key(item) > *a)).collect();
    let next = (rest.len() > limit).then(|| {
        rest.truncate(limit);
        token(listing, &key(rest.last().expect("limit is at least 1")))
    });
    Ok((rest, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_each_other_and_tokens_are_checked() {
        let items: Vec<String> = (0..5).map(|i| format!("p{i}")).collect();
        let (first, next) = page(items.clone(), String::clone, "pipelines", 2, None).unwrap();
        assert_eq!(first, ["p0", "p1"]);
        let (second, next) = page(items.clone(), String::clone, "pipelines", 2, next.as_deref()).unwrap();
        assert_eq!(second, ["p2", "p3"]);
        let (last, next) = page(items.clone(), String::clone, "pipelines", 2, next.as_deref()).unwrap();
        assert_eq!((last, next), (vec!["p4".to_string()], None));
        // Another listing's token, garbage, and an out-of-range limit.
        let other = token("tags", "p1");
        for bad in [other.as_str(), "!!!", "", "cGlwZWxpbmVz"] {
            let err = page(items.clone(), String::clone, "pipelines", 2, Some(bad)).unwrap_err();
            assert!(matches!(err, OpError::InvalidNextToken(_)), "{bad:?}: {err:?}");
        }
        assert_eq!(limit(None, 100, 1000), Ok(100));
        assert!(limit(Some(0), 100, 1000).is_err() && limit(Some(1001), 100, 1000).is_err());
    }
}
