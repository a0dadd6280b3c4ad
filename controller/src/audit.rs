//! The audit log: one record per call on every interface (REST, the AWS
//! API, webhook deliveries, plugin pushes, the S3 subset, the fleet's
//! enrollments and connections), refusals included, hash-chained so that a
//! changed, removed, inserted or reordered record is detected.
//!
//! A record is built from the operation's name, the resource it acts on,
//! the principal and the outcome: never from an operation's contents, so
//! that no secret value (a secret's value, a token, an access key's secret,
//! a webhook's body) can reach the log.
//!
//! The chain: `hash_n = sha256(hash_{n-1} || canonical(record_n))`, hex,
//! with `hash_0` the [`GENESIS`] hash or, once old records are pruned, the
//! hash of the last pruned record (the [`Anchor`]). `canonical` is the
//! record's compact JSON with its fields in declaration order.
//!
//! What [`Verifier`] detects: a record whose content changed (its hash no
//! longer follows), a record removed (a gap in the sequence numbers, or the
//! next record's hash no longer follows), one inserted or two reordered.
//! What it cannot detect: someone with write access to the database who
//! recomputes every hash after their edit, or who removes the newest
//! records (the tail). Against both, anchor the head hash that
//! `sluice audit verify` prints somewhere else and compare later
//! (`sluice audit verify --expect-head SEQ:HASH`).
//!
//! Pure: no clock, no store, no I/O. The driver owns the head and writes
//! each record with the change it describes.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The hash before the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The longest message kept: an error's text, cut so that a flood of long
/// errors cannot bloat the log.
pub const MAX_MESSAGE: usize = 512;

/// The result of a call that succeeded.
pub const OK: &str = "ok";

/// What a call was and how it ended, before it has a place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    pub user: String,
    /// How the caller proved who it is ([`crate::auth::Via`]'s text).
    pub via: String,
    /// The operation's name (`StartPipelineExecution`), or the
    /// transport's step that refused it (`Authenticate`, `SigV4`,
    /// `S3:GetObject`, `EnrollAgent`, `AgentConnect`).
    pub operation: String,
    pub resource: String,
    /// [`OK`], or the error's type (`AccessDeniedException`).
    pub result: String,
    /// The error's message; empty when the call succeeded.
    pub message: String,
    /// The peer's address, empty when not known.
    pub source: String,
    pub request_id: String,
}

impl Entry {
    /// An entry for a caller's call: principal and origin from `caller`.
    pub fn of_caller(caller: &crate::auth::Caller, operation: &str, resource: &str) -> Self {
        Self {
            user: caller.user.clone(),
            via: caller.via.to_string(),
            operation: operation.to_string(),
            resource: resource.to_string(),
            result: OK.to_string(),
            message: String::new(),
            source: caller.origin.source.map(|s| s.to_string()).unwrap_or_default(),
            request_id: caller.origin.request_id.clone(),
        }
    }

    /// The same entry, refused or failed with `kind` (an error type) and
    /// `message`. A refused request's resource and operation may be the
    /// caller's text (a path, a header): clipped too.
    pub fn failed(self, kind: &str, message: &str) -> Self {
        Self {
            result: kind.to_string(),
            message: clip(message),
            // Claimed by the request (a SigV4 access key id, say): as long
            // as the sender likes.
            user: clip(&self.user),
            via: clip(&self.via),
            resource: clip(&self.resource),
            operation: clip(&self.operation),
            ..self
        }
    }
}

/// Refusals of unauthenticated requests recorded per second, on average.
pub const REFUSALS_PER_SECOND: f64 = 20.0;
/// How many may come at once before the rate applies.
pub const REFUSAL_BURST: f64 = 200.0;

/// A token bucket over the refusals of requests that never authenticated
/// (anyone on the network can make those): within it each is recorded;
/// over it they are counted, and the next one recorded says how many
/// were not. Nothing is dropped without a trace, and a flood cannot fill
/// the disk or hold up the driver.
#[derive(Clone)]
pub struct RefusalBudget(std::sync::Arc<std::sync::Mutex<Bucket>>);

struct Bucket {
    tokens: f64,
    last: std::time::Instant,
    suppressed: u64,
}

impl Default for RefusalBudget {
    fn default() -> Self {
        let bucket = Bucket { tokens: REFUSAL_BURST, last: std::time::Instant::now(), suppressed: 0 };
        Self(std::sync::Arc::new(std::sync::Mutex::new(bucket)))
    }
}

impl RefusalBudget {
    /// The entry to record (with the count of those not recorded before
    /// it), or `None` when the budget is spent.
    pub fn admit(&self, entry: Entry) -> Option<Entry> {
        self.admit_at(entry, std::time::Instant::now())
    }

    fn admit_at(&self, mut entry: Entry, now: std::time::Instant) -> Option<Entry> {
        let mut bucket = self.0.lock().expect("refusal budget lock");
        let refill = now.saturating_duration_since(bucket.last).as_secs_f64() * REFUSALS_PER_SECOND;
        bucket.tokens = (bucket.tokens + refill).min(REFUSAL_BURST);
        bucket.last = now;
        if bucket.tokens < 1.0 {
            if bucket.suppressed == 0 {
                tracing::warn!("more than {REFUSALS_PER_SECOND} unauthenticated refusals a second: counting the excess");
            }
            bucket.suppressed += 1;
            return None;
        }
        bucket.tokens -= 1.0;
        let suppressed = std::mem::take(&mut bucket.suppressed);
        if suppressed > 0 {
            entry.message = clip(&format!(
                "{} ({suppressed} earlier unauthenticated refusals not recorded: over {REFUSALS_PER_SECOND} a second)",
                entry.message
            ));
        }
        Some(entry)
    }
}

/// One record of the log as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub seq: u64,
    /// Milliseconds since the epoch.
    pub time: u64,
    pub user: String,
    pub via: String,
    pub operation: String,
    pub resource: String,
    pub result: String,
    pub message: String,
    pub source: String,
    pub request_id: String,
}

impl Record {
    pub fn new(seq: u64, time: u64, entry: Entry) -> Self {
        let Entry { user, via, operation, resource, result, message, source, request_id } = entry;
        Self { seq, time, user, via, operation, resource, result, message, source, request_id }
    }

    /// The bytes the chain hashes: compact JSON, fields in declaration order.
    pub fn canonical(&self) -> String {
        serde_json::to_string(self).expect("a record of strings and numbers serializes")
    }

    /// The pipeline a record's resource names (`pipeline/NAME...`), if any.
    pub fn pipeline(&self) -> Option<&str> {
        pipeline_of(&self.resource)
    }
}

/// The pipeline a resource names (`pipeline/web`, `pipeline/web/Deploy/Approve`).
pub fn pipeline_of(resource: &str) -> Option<&str> {
    resource.strip_prefix("pipeline/").map(|rest| rest.split('/').next().unwrap_or(rest))
}

/// `sha256(prev || canonical(record))`, hex.
pub fn link(prev: &str, record: &Record) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev.as_bytes());
    hasher.update(record.canonical().as_bytes());
    hex::encode(hasher.finalize())
}

/// Where the stored chain starts: the last pruned record (seq 0 and
/// [`GENESIS`] when nothing was pruned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub seq: u64,
    pub hash: String,
}

impl Default for Anchor {
    fn default() -> Self {
        Self { seq: 0, hash: GENESIS.to_string() }
    }
}

/// The newest record's place in the chain: where the next one links.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Head(pub Anchor);

impl Head {
    /// Makes the next record of `entry` at `time`, and its hash; the head
    /// moves to it.
    pub fn append(&mut self, time: u64, entry: Entry) -> (Record, String) {
        let record = Record::new(self.0.seq + 1, time, entry);
        let hash = link(&self.0.hash, &record);
        self.0 = Anchor { seq: record.seq, hash: hash.clone() };
        (record, hash)
    }
}

/// Why a stored chain does not verify, at the first record that breaks it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Break {
    #[error("record {expected} is missing (the next stored record is {found}): removed or reordered")]
    Missing { expected: u64, found: u64 },
    #[error("record {seq} does not match its hash: altered, inserted or reordered")]
    Altered { seq: u64 },
    #[error("record {seq} is not the anchored head: expected hash {expected}, found {found}")]
    NotAnchored { seq: u64, expected: String, found: String },
    #[error("the log ends at record {last}, before the anchored head {anchored}: its tail was removed")]
    Truncated { last: u64, anchored: u64 },
}

/// Checks a stored chain record by record, oldest first.
#[derive(Debug, Clone)]
pub struct Verifier {
    head: Anchor,
    count: u64,
}

impl Verifier {
    pub fn new(anchor: Anchor) -> Self {
        Self { head: anchor, count: 0 }
    }

    /// The next stored record and the hash stored with it.
    pub fn feed(&mut self, record: &Record, stored_hash: &str) -> Result<(), Break> {
        let expected = self.head.seq + 1;
        if record.seq != expected {
            return Err(Break::Missing { expected, found: record.seq });
        }
        let hash = link(&self.head.hash, record);
        if hash != stored_hash {
            return Err(Break::Altered { seq: record.seq });
        }
        self.head = Anchor { seq: record.seq, hash };
        self.count += 1;
        Ok(())
    }

    /// Records verified so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The last verified record's place (the anchor when none was fed).
    pub fn head(&self) -> &Anchor {
        &self.head
    }

    /// After every record: that `anchored` (a head someone kept
    /// elsewhere) is still part of the log. `seen` is the hash stored
    /// with record `anchored.seq`, if that record is still stored.
    pub fn check_anchored(&self, anchored: &Anchor, seen: Option<&str>) -> Result<(), Break> {
        if anchored.seq > self.head.seq {
            return Err(Break::Truncated { last: self.head.seq, anchored: anchored.seq });
        }
        match seen {
            Some(found) if found == anchored.hash => Ok(()),
            // Pruned since it was anchored: the anchor row says where the
            // chain starts, and it was verified from there.
            None => Ok(()),
            Some(found) => {
                Err(Break::NotAnchored { seq: anchored.seq, expected: anchored.hash.clone(), found: found.to_string() })
            }
        }
    }
}

/// Which records a listing (or a verification's page) wants.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filter {
    /// Only records after this one.
    pub after_seq: u64,
    /// Milliseconds since the epoch, inclusive.
    pub since: Option<u64>,
    /// Milliseconds since the epoch, exclusive.
    pub until: Option<u64>,
    pub user: Option<String>,
    /// Records on this pipeline or anything in it (`pipeline/NAME/...`).
    pub pipeline: Option<String>,
    pub operation: Option<String>,
    pub limit: usize,
    /// The newest `limit` matches rather than the oldest (still returned oldest first).
    pub newest: bool,
    /// Only records before this one: the console's next page back (issue 16, pages).
    pub before_seq: Option<u64>,
}

/// `SEQ:HASH`, as `sluice audit verify` prints the head.
pub fn parse_anchor(text: &str) -> Result<Anchor, String> {
    let (seq, hash) = text.split_once(':').ok_or_else(|| format!("{text:?} is not SEQ:HASH"))?;
    let seq = seq.parse().map_err(|_| format!("{seq:?} is not a record number"))?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{hash:?} is not a sha256 hash (64 hex digits)"));
    }
    Ok(Anchor { seq, hash: hash.to_ascii_lowercase() })
}

/// An error message cut to [`MAX_MESSAGE`] bytes at a character boundary.
fn clip(message: &str) -> String {
    if message.len() <= MAX_MESSAGE {
        return message.to_string();
    }
    let mut end = MAX_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end])
}

/// A time bound of `audit list`: RFC 3339 (`2026-12-06T04:00:00Z`), or a
/// duration before `now` (`90s`, `15m`, `2h`, `7d`); milliseconds since the epoch.
pub fn parse_time(text: &str, now: u64) -> Result<u64, String> {
    let text = text.trim();
    if let Ok(t) = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
        return u64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| format!("{text:?} is before 1970"));
    }
    let unit = text.chars().last().unwrap_or(' ');
    let scale: u64 = match unit {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        _ => return Err(format!("{text:?} is neither an RFC 3339 time nor a duration like 90s, 15m, 2h or 7d")),
    };
    let amount: u64 = text[..text.len() - 1]
        .parse()
        .map_err(|_| format!("{text:?} is neither an RFC 3339 time nor a duration like 90s, 15m, 2h or 7d"))?;
    Ok(now.saturating_sub(amount.saturating_mul(scale)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_refusals_is_counted_not_recorded_one_by_one() {
        let budget = RefusalBudget::default();
        let start = std::time::Instant::now();
        let someone = crate::auth::Caller::new("-", crate::auth::Role::Operator);
        let refusal = || Entry::of_caller(&someone, "Authenticate", "*").failed("UnauthorizedException", "bad token");
        let admitted = (0..1000).filter(|_| budget.admit_at(refusal(), start).is_some()).count();
        assert_eq!(admitted, REFUSAL_BURST as usize);
        // A second later the rate allows some more; the first says how many were not recorded.
        let later = start + std::time::Duration::from_secs(1);
        let next = budget.admit_at(refusal(), later).expect("the budget refilled");
        assert!(next.message.contains("800 earlier unauthenticated refusals not recorded"), "{}", next.message);
        let then = budget.admit_at(refusal(), later).expect("still within the refill");
        assert_eq!(then.message, "bad token");
    }

    fn entry(operation: &str) -> Entry {
        Entry {
            user: "ann".into(),
            via: "token".into(),
            operation: operation.into(),
            resource: "pipeline/web".into(),
            result: OK.into(),
            source: "127.0.0.1:5000".into(),
            request_id: "r1".into(),
            ..Entry::default()
        }
    }

    fn chain(n: u64) -> Vec<(Record, String)> {
        let mut head = Head::default();
        (1..=n).map(|i| head.append(1000 + i, entry(&format!("Op{i}")))).collect()
    }

    fn verify(anchor: Anchor, records: &[(Record, String)]) -> Result<u64, Break> {
        let mut v = Verifier::new(anchor);
        for (r, h) in records {
            v.feed(r, h)?;
        }
        Ok(v.count())
    }

    #[test]
    fn an_intact_chain_verifies_and_each_kind_of_tampering_is_named() {
        let records = chain(5);
        assert_eq!(verify(Anchor::default(), &records), Ok(5));

        let mut changed = records.clone();
        changed[2].0.user = "mallory".into();
        assert_eq!(verify(Anchor::default(), &changed), Err(Break::Altered { seq: 3 }));

        let mut removed = records.clone();
        removed.remove(1);
        assert_eq!(verify(Anchor::default(), &removed), Err(Break::Missing { expected: 2, found: 3 }));

        // Reordered with their numbers swapped too: the hashes break.
        let mut reordered = records.clone();
        reordered.swap(1, 2);
        (reordered[1].0.seq, reordered[2].0.seq) = (2, 3);
        assert_eq!(verify(Anchor::default(), &reordered), Err(Break::Altered { seq: 2 }));

        // An inserted record, renumbering those after it, with a made-up hash.
        let mut inserted = records.clone();
        let mut forged = records[1].clone();
        forged.0.seq = 3;
        forged.0.operation = "DeletePipeline".into();
        inserted.insert(2, forged);
        for (i, (r, _)) in inserted.iter_mut().enumerate() {
            r.seq = i as u64 + 1;
        }
        assert_eq!(verify(Anchor::default(), &inserted), Err(Break::Altered { seq: 3 }));
    }

    #[test]
    fn a_pruned_chain_verifies_from_its_anchor_and_a_kept_head_finds_a_cut_tail() {
        let records = chain(6);
        let anchor = Anchor { seq: 2, hash: records[1].1.clone() };
        assert_eq!(verify(anchor.clone(), &records[2..]), Ok(4));
        // From the wrong anchor (pruned further than it says), it breaks.
        assert!(verify(anchor, &records[3..]).is_err());

        let mut v = Verifier::new(Anchor::default());
        for (r, h) in &records[..4] {
            v.feed(r, h).unwrap();
        }
        let kept = Anchor { seq: 6, hash: records[5].1.clone() };
        assert_eq!(v.check_anchored(&kept, None), Err(Break::Truncated { last: 4, anchored: 6 }));
        let kept = Anchor { seq: 3, hash: records[2].1.clone() };
        assert_eq!(v.check_anchored(&kept, Some(&records[2].1)), Ok(()));
        assert!(matches!(v.check_anchored(&kept, Some(&records[1].1)), Err(Break::NotAnchored { seq: 3, .. })));
    }

    #[test]
    fn canonical_form_is_stable_and_the_head_moves() {
        let mut head = Head::default();
        let (r, h) = head.append(7, entry("GetPipeline"));
        assert_eq!(
            r.canonical(),
            r#"{"seq":1,"time":7,"user":"ann","via":"token","operation":"GetPipeline","resource":"pipeline/web","result":"ok","message":"","source":"127.0.0.1:5000","requestId":"r1"}"#
        );
        assert_eq!(h, link(GENESIS, &r));
        assert_eq!(head.0, Anchor { seq: 1, hash: h });
        assert_eq!(pipeline_of("pipeline/web/Deploy/Approve"), Some("web"));
        assert_eq!(pipeline_of("secret/db"), None);
    }

    #[test]
    fn messages_are_clipped_and_times_parse_both_ways() {
        let long = "é".repeat(MAX_MESSAGE);
        let e = entry("X").failed("ValidationException", &long);
        assert!(e.message.len() <= MAX_MESSAGE + 3 && e.message.ends_with("..."));
        assert_eq!(parse_time("2h", 10_000_000), Ok(10_000_000 - 7_200_000));
        assert_eq!(parse_time("1970-01-01T00:00:01Z", 0), Ok(1000));
        assert!(parse_time("yesterday", 0).is_err() && parse_time("h", 0).is_err());
        assert_eq!(parse_anchor(&format!("3:{GENESIS}")), Ok(Anchor { seq: 3, hash: GENESIS.into() }));
        assert!(parse_anchor("3:abc").is_err() && parse_anchor("x").is_err());
    }
}
