//! The audit log (issue 15, gov): listing and verifying it.

use serde::{Deserialize, Serialize};

/// ListAuditRecords: the newest records matching every filter given,
/// oldest first. `since` and `until` are RFC 3339 times or durations
/// before now (`15m`, `2h`, `7d`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListAuditRecords {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(default, deserialize_with = "super::query_number::deserialize", skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Only records before this sequence number: the page before one
    /// whose oldest record is this (issue 16, pages: the console's paging).
    #[serde(default, deserialize_with = "super::query_number::deserialize", skip_serializing_if = "Option::is_none")]
    pub before_seq: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListAuditRecordsOutput {
    pub records: Vec<AuditRecordView>,
}

/// One record as shown: the stored record, its time as RFC 3339 and its hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecordView {
    pub seq: u64,
    pub time: String,
    pub user: String,
    pub via: String,
    pub operation: String,
    pub resource: String,
    pub result: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    pub source: String,
    pub request_id: String,
    pub hash: String,
}

/// VerifyAudit: walks the whole stored chain from its anchor. With
/// `expectHead` (`SEQ:HASH`, a head printed earlier and kept elsewhere),
/// also checks that this record is still the one in the log.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerifyAudit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_head: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyAuditOutput {
    pub verified: bool,
    /// Records verified (up to the first bad one).
    pub count: u64,
    /// Where verification started: the last pruned record (0 when none was).
    pub anchor_seq: u64,
    pub anchor_hash: String,
    /// The last good record's place: keep it elsewhere to detect a chain
    /// rewritten or cut later.
    pub head_seq: u64,
    pub head_hash: String,
    /// The first bad record, when not verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_bad: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}
