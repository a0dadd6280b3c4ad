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

/// One page read from a source that yields items in key order after a
/// cursor (`fetch(after, n)`: at most `n` items whose key is greater than
/// `after`), keeping those `keep` allows. It reads in chunks of the page's
/// size until the page is full or the source ends, so a page of a listing
/// of 10,000 items costs one chunk when every item is kept (issue 19). The
/// page and its token are those [`page`] gives over the kept items.
pub fn page_from<T>(
    mut fetch: impl FnMut(Option<&str>, usize) -> anyhow::Result<Vec<T>>,
    key: impl Fn(&T) -> &str,
    keep: impl Fn(&T) -> bool,
    listing: &str,
    limit: usize,
    next_token: Option<&str>,
) -> Result<(Vec<T>, Option<String>), OpError> {
    let mut after = next_token.map(|t| cursor(listing, t)).transpose()?;
    // One more than the page tells whether there is a next page.
    let chunk = limit.saturating_add(1);
    let mut kept = Vec::new();
    while kept.len() <= limit {
        let items = fetch(after.as_deref(), chunk)?;
        let ended = items.len() < chunk;
        if let Some(last) = items.last() {
            after = Some(key(last).to_string());
        }
        kept.extend(items.into_iter().filter(|item| keep(item)));
        if ended {
            break;
        }
    }
    let next = (kept.len() > limit).then(|| {
        kept.truncate(limit);
        token(listing, key(kept.last().expect("limit is at least 1")))
    });
    Ok((kept, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `page_from` over a sorted source gives what `page` gives over the
    /// same items, filtered, for every page size and filter.
    #[test]
    fn pages_read_in_chunks_are_the_pages_of_the_whole_listing() {
        let items: Vec<String> = (0..23).map(|i| format!("p{i:02}")).collect();
        let reads = std::cell::Cell::new(0);
        let fetch = |after: Option<&str>, n: usize| {
            reads.set(reads.get() + 1);
            Ok(items.iter().filter(|i| after.is_none_or(|a| i.as_str() > a)).take(n).cloned().collect())
        };
        let filters: [fn(&String) -> bool; 3] = [|_| true, |i| i.ends_with('3'), |_| false];
        for keep in filters {
            for limit in [1, 2, 5, 22, 23, 100] {
                let whole: Vec<String> = items.iter().filter(|i| keep(i)).cloned().collect();
                let (mut token_a, mut token_b) = (None::<String>, None::<String>);
                loop {
                    let (a, next_a) = page(whole.clone(), String::clone, "pipelines", limit, token_a.as_deref()).unwrap();
                    let (b, next_b) =
                        page_from(fetch, |i| i.as_str(), keep, "pipelines", limit, token_b.as_deref()).unwrap();
                    assert_eq!((&a, &next_a), (&b, &next_b), "limit {limit}");
                    if next_a.is_none() {
                        break;
                    }
                    (token_a, token_b) = (next_a, next_b);
                }
            }
        }
        // Everything kept: a page of 5 out of 23 is one read.
        reads.set(0);
        page_from(fetch, |i| i.as_str(), |_| true, "pipelines", 5, None).unwrap();
        assert_eq!(reads.get(), 1);
        // A token of another listing is refused before anything is read.
        reads.set(0);
        let other = token("tags", "p01");
        let err = page_from(fetch, |i| i.as_str(), |_| true, "pipelines", 5, Some(&other)).unwrap_err();
        assert!(matches!(err, OpError::InvalidNextToken(_)) && reads.get() == 0, "{err:?}");
    }

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
