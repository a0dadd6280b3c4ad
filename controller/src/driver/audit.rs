//! The audit log's driver side (issue 15, gov): every call, enrollment and
//! agent connection is run as one step whose audit record is written in
//! the same transaction as the changes it made (`crate::audit` is the
//! record and its chain; the store keeps them).
//!
//! Within a step, the store applies each commit as a savepoint of the
//! step's transaction, so a handler still reads what it wrote; what a
//! commit would send (jobs to agents, events to watchers) is held until
//! the step's transaction is committed, as it is for any other commit.

use super::Driver;
use crate::audit::{self, Anchor, Entry, Filter, Head, Verifier};
use crate::ops::{self, AuditRecordView, Context, Handle, ListAuditRecords, OpError, VerifyAudit};
use crate::store::Change;
use serde_json::Value;
use sluice_protocol::ToAgent;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Records a listing shows unless told otherwise, and at most.
const DEFAULT_LIST: u64 = 100;
const MAX_LIST: u64 = 10_000;

/// Records read per page while verifying: bounded memory for any log.
const VERIFY_PAGE: usize = 1_000;

/// How often records older than the retention are pruned.
const PRUNE_EVERY: u64 = 3_600_000;

/// Default `--audit-retention-days`: a little over a year, so that a
/// yearly review finds the whole year.
pub const DEFAULT_AUDIT_RETENTION_DAYS: u64 = 400;

/// The audit log's state in the driver.
pub(super) struct AuditLog {
    /// Where the next record links.
    head: Head,
    retention: Duration,
    next_prune: u64,
}

impl AuditLog {
    pub(super) fn new(retention: Duration) -> Self {
        Self { head: Head::default(), retention, next_prune: 0 }
    }
}

/// What a step's commits would have sent, held until the step's
/// transaction is committed.
#[derive(Default)]
pub(super) struct Held {
    pub(super) to_agents: Vec<(String, ToAgent)>,
    pub(super) events: Vec<Arc<Value>>,
}

impl Driver {
    /// Reads where the stored chain ends (start-up).
    pub(super) fn recover_audit(&mut self) -> anyhow::Result<()> {
        self.audit.head = Head(self.store.audit_head()?);
        Ok(())
    }

    /// Runs `work` as one step whose audit record, made by `describe`
    /// from its outcome, commits with its changes.
    pub(super) fn audited<T>(
        &mut self,
        now: u64,
        work: impl FnOnce(&mut Self) -> T,
        describe: impl FnOnce(&T) -> Entry,
    ) -> T {
        if let Err(e) = self.store.begin_step() {
            crate::ha::write_failed(&e);
        }
        self.held = Some(Held::default());
        let outcome = work(self);
        let change = self.audit_change(now, describe(&outcome));
        let held = self.held.take().unwrap_or_default();
        if let Err(e) = self.store.apply(&[change]).and_then(|()| self.store.end_step()) {
            crate::ha::write_failed(&e);
        }
        self.send_all_after_commit(held.to_agents);
        for event in held.events {
            let _ = self.events.send(event);
        }
        outcome
    }

    /// Sends messages a commit covers, each agent's together in one write:
    /// now, or when the open step's transaction commits.
    pub(super) fn send_all_after_commit(&mut self, messages: Vec<(String, ToAgent)>) {
        if let Some(held) = &mut self.held {
            held.to_agents.extend(messages);
            return;
        }
        let mut by_agent: HashMap<String, Vec<ToAgent>> = HashMap::new();
        for (agent_id, message) in messages {
            by_agent.entry(agent_id).or_default().push(message);
        }
        for (agent_id, messages) in by_agent {
            if let Some(agent) = self.agents.get(&agent_id) {
                agent.tx.send_all(messages);
            }
        }
    }

    /// Sends a message a commit covers: now, or when the open step's
    /// transaction commits.
    pub(super) fn send_after_commit(&mut self, agent_id: String, message: ToAgent) {
        self.send_all_after_commit(vec![(agent_id, message)]);
    }

    /// Tells watchers of an event a commit covers: now, or when the open
    /// step's transaction commits.
    pub(super) fn tell_after_commit(&mut self, event: Arc<Value>) {
        match &mut self.held {
            Some(held) => held.events.push(event),
            None => {
                let _ = self.events.send(event);
            }
        }
    }

    /// A call of the API (any interface), checked against the caller's
    /// permissions once, whatever its transport, and recorded with its
    /// result, refusals included.
    pub(super) fn call(
        &mut self,
        now: u64,
        request: ops::Request,
        caller: crate::auth::Caller,
    ) -> Result<ops::Response, OpError> {
        let entry = Entry::of_caller(&caller, request.name(), &request.resource());
        let ctx = Context { caller, now };
        let work = |driver: &mut Self| {
            driver.authorize_call(&request, &ctx.caller)?;
            request.dispatch(driver, &ctx)
        };
        self.audited(now, work, |result| outcome(entry, result))
    }

    /// A record a transport sends: a refusal that never became a call.
    pub(super) fn record(&mut self, now: u64, entry: Entry) {
        let change = self.audit_change(now, entry);
        if let Err(e) = self.store.apply(&[change]) {
            crate::ha::write_failed(&e);
        }
    }

    fn audit_change(&mut self, now: u64, entry: Entry) -> Change {
        Change::Audit(Box::new(self.audit.head.append(now, entry)))
    }

    /// Removes records older than the retention, keeping the last removed
    /// record's hash as the anchor verification starts from.
    pub(super) fn prune_audit(&mut self, now: u64) {
        if now < self.audit.next_prune {
            return;
        }
        self.audit.next_prune = now + PRUNE_EVERY;
        let before = now.saturating_sub(self.audit.retention.as_millis() as u64);
        match self.store.audit_prune_point(before) {
            Ok(Some(anchor)) => {
                info!(through = anchor.seq, "pruning audit records older than the retention");
                if let Err(e) = self.store.apply(&[Change::PruneAudit(anchor)]) {
                    crate::ha::write_failed(&e);
                }
            }
            Ok(None) => {}
            Err(e) => warn!("cannot find audit records to prune: {e:#}"),
        }
    }
}

impl Driver {
    /// The teams and roles a caller holds now, as `Approvers` names them
    /// (`team:NAME`, `role:NAME`): what an approval's eligibility reads.
    /// A role delegated by another team counts only on that team's
    /// pipelines (`pipeline`'s owner).
    pub(super) fn member_of(&self, caller: &crate::auth::Caller, pipeline: &str) -> Vec<String> {
        self.directory.member_of(&caller.user, pipeline)
    }
}

/// The entry of a call that ended with `result`.
fn outcome<T>(entry: Entry, result: &Result<T, OpError>) -> Entry {
    match result {
        Ok(_) => entry,
        Err(e) => entry.failed(e.aws_type(), &e.to_string()),
    }
}

fn view(record: audit::Record, hash: String) -> AuditRecordView {
    AuditRecordView {
        seq: record.seq,
        time: crate::views::time(record.time),
        user: record.user,
        via: record.via,
        operation: record.operation,
        resource: record.resource,
        result: record.result,
        message: record.message,
        source: record.source,
        request_id: record.request_id,
        hash,
    }
}

impl Handle<ListAuditRecords> for Driver {
    fn handle(&mut self, op: ListAuditRecords, ctx: &Context) -> Result<ops::ListAuditRecordsOutput, OpError> {
        let time = |text: &Option<String>, what: &str| {
            text.as_deref()
                .map(|t| audit::parse_time(t, ctx.now).map_err(|e| OpError::invalid(format!("{what}: {e}"))))
                .transpose()
        };
        let limit = op.limit.unwrap_or(DEFAULT_LIST);
        if limit == 0 || limit > MAX_LIST {
            return Err(OpError::invalid(format!("limit must be 1 to {MAX_LIST}, not {limit}")));
        }
        let filter = Filter {
            after_seq: 0,
            since: time(&op.since, "since")?,
            until: time(&op.until, "until")?,
            user: op.user,
            pipeline: op.pipeline,
            operation: op.operation,
            limit: limit as usize,
            newest: true,
            before_seq: op.before_seq,
        };
        let records = self.store.audit_records(&filter)?;
        Ok(ops::ListAuditRecordsOutput { records: records.into_iter().map(|(r, h)| view(r, h)).collect() })
    }
}

impl Handle<VerifyAudit> for Driver {
    fn handle(&mut self, op: VerifyAudit, _: &Context) -> Result<ops::VerifyAuditOutput, OpError> {
        let expected = op.expect_head.as_deref().map(audit::parse_anchor).transpose().map_err(OpError::invalid)?;
        let anchor = self.store.audit_anchor()?;
        let mut verifier = Verifier::new(anchor.clone());
        let mut problem = None;
        'pages: loop {
            let filter = Filter { after_seq: verifier.head().seq, limit: VERIFY_PAGE, ..Filter::default() };
            let page = self.store.audit_records(&filter)?;
            if page.is_empty() {
                break;
            }
            for (record, hash) in &page {
                if let Err(broken) = verifier.feed(record, hash) {
                    problem = Some(broken);
                    break 'pages;
                }
            }
        }
        // Pruning deletes every record up to the anchor: one still stored
        // there means the anchor was moved to skip records.
        if problem.is_none() && anchor.seq > 0 {
            let oldest = Filter { after_seq: 0, limit: 1, ..Filter::default() };
            if let Some((record, _)) = self.store.audit_records(&oldest)?.first()
                && record.seq <= anchor.seq
            {
                problem = Some(audit::Break::Altered { seq: record.seq });
            }
        }
        // A head kept elsewhere finds a rewritten chain or a cut tail; a
        // kept head gone from the log is a break unless pruning took it.
        if problem.is_none()
            && let Some(expected) = &expected
        {
            let seen = self.store.audit_hash(expected.seq)?;
            problem = match seen {
                None if expected.seq > anchor.seq && expected.seq <= verifier.head().seq => {
                    Some(audit::Break::NotAnchored {
                        seq: expected.seq,
                        expected: expected.hash.clone(),
                        found: "nothing".into(),
                    })
                }
                seen => verifier.check_anchored(expected, seen.as_deref()).err(),
            };
        }
        let head: &Anchor = verifier.head();
        let first_bad = problem.as_ref().map(|p| match p {
            audit::Break::Missing { expected, .. } => *expected,
            audit::Break::Altered { seq } | audit::Break::NotAnchored { seq, .. } => *seq,
            audit::Break::Truncated { last, .. } => last + 1,
        });
        Ok(ops::VerifyAuditOutput {
            verified: problem.is_none(),
            count: verifier.count(),
            anchor_seq: anchor.seq,
            anchor_hash: anchor.hash,
            head_seq: head.seq,
            head_hash: head.hash.clone(),
            first_bad,
            problem: problem.map(|p| p.to_string()),
        })
    }
}

/// An enrollment with a join token: the principal is the agent it made
/// (`agent:ID`), or the unknown host when refused.
pub(super) fn enrollment(
    request: &sluice_protocol::EnrollRequest,
    source: std::net::SocketAddr,
    response: &sluice_protocol::EnrollResponse,
) -> Entry {
    use sluice_protocol::EnrollResponse;
    let hostname = crate::driver::intake::clean_text(&request.hostname, 253, crate::driver::intake::Lines::Joined);
    let entry = Entry {
        user: hostname,
        via: "join-token".to_string(),
        operation: "EnrollAgent".to_string(),
        resource: "agent/*".to_string(),
        result: audit::OK.to_string(),
        source: source.to_string(),
        ..Entry::default()
    };
    match response {
        EnrollResponse::Enrolled { agent_id, .. } => {
            Entry { via: format!("agent:{agent_id}"), resource: format!("agent/{agent_id}"), ..entry }
        }
        EnrollResponse::Refused { reason } => entry.failed("AccessDeniedException", reason),
    }
}

/// An agent's connection on the fleet port (its certificate verified by then).
pub(super) fn connection(agent_id: &str, source: std::net::SocketAddr) -> Entry {
    Entry {
        user: agent_id.to_string(),
        via: crate::auth::Via::Agent(agent_id.to_string()).to_string(),
        operation: "AgentConnect".to_string(),
        resource: format!("agent/{agent_id}"),
        result: audit::OK.to_string(),
        source: source.to_string(),
        ..Entry::default()
    }
}

/// A connection's entry, refused if its hello was.
pub(super) fn welcomed(entry: Entry, welcome: &ToAgent) -> Entry {
    match welcome {
        ToAgent::Refused { reason } => entry.failed("AccessDeniedException", reason),
        _ => entry,
    }
}
