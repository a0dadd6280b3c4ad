//! Transfers in the driver: which plugin and artifact streams an agent may
//! open, the upload quota's books and the free-space floor, what a result
//! may name, and the collection of unreferenced artifacts.

use super::Driver;
use super::command::Transfer;
use std::time::{Duration, UNIX_EPOCH};
use tracing::{info, warn};

/// An upload granted to an agent: the largest size it asked for, and
/// when that was granted (ms).
#[derive(Debug, Clone, Copy)]
pub(super) struct Booking {
    pub(super) size: u64,
    pub(super) granted: u64,
}

/// Uploads an agent may have booked that no result named yet, whatever
/// their sizes: the books stay small.
const MAX_BOOKED_UPLOADS: usize = 4096;

/// How long after start-up the first collection of unreferenced artifacts
/// waits (at most one `--artifact-gc-interval`). Listing every artifact in
/// use reads a row per artifact an execution produced: on a store of a
/// million executions about two seconds of a core, which start-up (a
/// reconnecting fleet, clients retrying) should not share (issue 19,
/// scale). Restarts more often than this still collect: each waits only
/// this long.
pub(super) const FIRST_COLLECTION_DELAY: Duration = Duration::from_secs(300);

/// When the first collection after a start at `now` (ms) is due.
pub(super) fn first_collection(now: u64, interval: Duration) -> u64 {
    now + FIRST_COLLECTION_DELAY.min(interval).as_millis() as u64
}

/// The nice value of the collection's thread: serving requests and
/// dispatching actions go first when the cores are busy.
const COLLECTION_NICE: i32 = 10;

impl Driver {
    /// May `agent_id`, connected as `conn_id`, move these bytes? It may
    /// fetch the plugin and the input artifacts of jobs it holds (and the
    /// plugin of a poll it was handed), and upload while it holds a job
    /// that declares output artifacts, within its quota and the store's
    /// free-space floor. An upload granted is booked against the quota.
    pub(super) fn authorize_transfer(
        &mut self,
        now: u64,
        agent_id: &str,
        conn_id: u64,
        transfer: &Transfer,
    ) -> Result<(), String> {
        if self.agents.get(agent_id).is_none_or(|a| a.conn_id != conn_id) {
            return Err(format!("agent {agent_id} is not connected on this connection"));
        }
        let held = || self.jobs.values().filter(|j| j.agent == agent_id);
        match transfer {
            Transfer::FetchPlugin { digest } => {
                if held().any(|j| &j.plugin_digest == digest) || self.polls_plugin(agent_id, digest) {
                    Ok(())
                } else {
                    Err(format!("plugin {digest} belongs to no job or poll agent {agent_id} holds"))
                }
            }
            Transfer::FetchArtifact { digest } => {
                if held().any(|j| j.dispatch.inputs.iter().any(|(_, a)| &a.digest == digest)) {
                    Ok(())
                } else {
                    Err(format!("artifact {digest} is an input of no job agent {agent_id} holds"))
                }
            }
            Transfer::Upload { digest, size } => {
                if !held().any(|j| !j.dispatch.outputs.is_empty()) {
                    return Err(format!("agent {agent_id} holds no job that declares output artifacts"));
                }
                self.book_upload(now, agent_id, digest, *size)?;
                // Transfers name no job: the grant counts for every job
                // with outputs the agent holds now, and for no later one.
                for job in self.jobs.values_mut().filter(|j| j.agent == agent_id && !j.dispatch.outputs.is_empty()) {
                    if let Some(uploaded) = &mut job.uploaded
                        && uploaded.len() < MAX_BOOKED_UPLOADS
                    {
                        uploaded.insert(digest.clone());
                    }
                }
                Ok(())
            }
        }
    }

    /// Books an upload of `digest` of `size` bytes by `agent_id` against
    /// its quota and the free-space floor.
    pub(super) fn book_upload(&mut self, now: u64, agent_id: &str, digest: &str, size: u64) -> Result<(), String> {
        // The largest size asked for a digest is what its upload
        // may write (`put_stream` stops at the size of the request
        // granted): a request asking more is checked again for
        // the difference.
        let books = self.uploads.get(agent_id);
        let booked = books.and_then(|u| u.get(digest)).map(|b| b.size);
        if booked.is_some_and(|b| b >= size) {
            return Ok(());
        }
        let more = size - booked.unwrap_or(0);
        if booked.is_none() && books.is_some_and(|u| u.len() >= MAX_BOOKED_UPLOADS) {
            return Err(format!(
                "agent {agent_id} has {MAX_BOOKED_UPLOADS} uploads that no result named yet: no more are granted"
            ));
        }
        let used: u64 = books.map(|u| u.values().map(|b| b.size).sum()).unwrap_or(0);
        if used.saturating_add(more) > self.agent_upload_quota {
            return Err(format!(
                "agent {agent_id}'s upload quota is used up: {used} bytes uploaded (or cut off) that no result \
                 named yet, {more} more asked, {} allowed (--agent-upload-quota)",
                self.agent_upload_quota
            ));
        }
        // The floor keeps the controller's disk free: uploads into object
        // storage (issue 18, s3) do not land on it.
        if self.artifacts.is_local() && !self.artifacts.contains(digest) {
            let free = self.artifacts.free_bytes().map_err(|e| format!("{e:#}"))?;
            let reserved = self.uploads_in_flight();
            if free.saturating_sub(reserved).saturating_sub(more) < self.min_free_space {
                self.metrics.free_space_refusals.inc();
                return Err(format!(
                    "the controller's artifact store has {free} bytes free, {reserved} of them granted to \
                     uploads in flight; {more} more bytes would leave less than the {} kept free \
                     (--min-free-space)",
                    self.min_free_space
                ));
            }
        }
        let booking = Booking { size, granted: now };
        self.uploads.entry(agent_id.to_string()).or_default().insert(digest.to_string(), booking);
        Ok(())
    }

    /// Whether a result may name the artifact `digest`: one the store
    /// has, never one that is not there. (Whose upload it was is not
    /// asked: the same bytes may have been stored by another job, or
    /// before a controller restart; an agent learns a digest it did not
    /// upload only from the inputs of jobs it held, whose bytes it had.)
    /// The size must be the stored blob's: it is what consumers and the
    /// API are told.
    pub(super) fn may_name(&self, digest: &str, size: u64) -> bool {
        self.artifacts.size_of(digest) == Some(size)
    }

    /// Once an agent holds no job, its books keep only the uploads that
    /// are not stored: bytes it cut off (or is still sending) stay on disk
    /// as partial files until the collector removes them, and count against
    /// its quota until then ([`Driver::forget_collected_uploads`]). Whole
    /// blobs no result named are the collector's (and the free-space
    /// floor's) business.
    pub(super) fn settle_uploads(&mut self, agent_id: &str) {
        if self.jobs.values().any(|j| j.agent == agent_id) {
            return;
        }
        let artifacts = &self.artifacts;
        if let Some(books) = self.uploads.get_mut(agent_id) {
            books.retain(|digest, _| !artifacts.contains(digest));
            if books.is_empty() {
                self.uploads.remove(agent_id);
            }
        }
    }

    /// Drops the bookings, of agents that hold no job, whose bytes are
    /// gone: neither stored nor left in a partial file (the collector
    /// removed it, or it was never written), and that were granted longer
    /// than a collection interval ago (an upload granted a moment ago may
    /// not have written its first byte yet).
    pub(super) fn forget_collected_uploads(&mut self, now: u64) {
        let artifacts = &self.artifacts;
        let jobs = &self.jobs;
        let settled = now.saturating_sub(self.artifact_gc_interval.as_millis() as u64);
        self.uploads.retain(|agent_id, books| {
            if !jobs.values().any(|j| &j.agent == agent_id) {
                books.retain(|digest, booking| {
                    booking.granted >= settled || artifacts.contains(digest) || artifacts.has_partial(digest)
                });
            }
            !books.is_empty()
        });
    }

    /// Bytes granted to uploads that are not stored yet, over all agents:
    /// the free-space floor reserves them (bytes already written to a
    /// partial file count twice, which errs on the safe side).
    pub(super) fn uploads_in_flight(&self) -> u64 {
        self.uploads
            .values()
            .flat_map(|books| books.iter())
            .filter(|(digest, _)| !self.artifacts.contains(digest))
            .fold(0u64, |sum, (_, booking)| sum.saturating_add(booking.size))
    }

    /// Removes artifacts no stored execution refers to (those of deleted
    /// pipelines, of results that never arrived), off the driver's task.
    pub(super) fn collect_artifacts(&mut self, now: u64) {
        if now < self.next_gc {
            return;
        }
        // Data lifecycle (issue 17, life): not while a backup copies.
        if self.backup_holds_collection(now) {
            return;
        }
        self.next_gc = now + self.artifact_gc_interval.as_millis() as u64;
        // Before this collection: what the last one removed is released.
        self.forget_collected_uploads(now);
        // The artifacts in use are listed off the driver where the store
        // can (issue 19, scale): committed before the listing, or younger
        // than the collection's age, nothing in use is removed.
        let listing = self.store.artifact_digests_off_driver();
        // Outputs job workers uploaded for actions still running (a
        // continuation may hold them longer than the collection's age).
        let workers: Vec<String> = self.workers.jobs().flat_map(|j| j.uploaded.values().map(|a| a.digest.clone())).collect();
        let artifacts = self.artifacts.clone();
        let before = UNIX_EPOCH + Duration::from_millis(now) - self.artifact_gc_interval;
        // Data lifecycle (issue 17, life): a backup beginning waits for it.
        let collecting = self.lifecycle.collecting.start();
        // A thread of its own at a lower priority (issue 19, scale): a
        // blocking-pool thread would keep the lower priority for the
        // uploads it serves next, and may not be given back a higher one.
        let collection = std::thread::Builder::new().name("sluice-gc".into()).spawn(move || {
            let _collecting = collecting;
            lower_priority();
            let mut keep = match listing() {
                Ok(keep) => keep,
                Err(e) => return warn!("listing the artifacts in use: {e:#}"),
            };
            keep.extend(workers);
            match artifacts.collect_garbage(&keep, before) {
                Ok((0, _)) => {}
                Ok((count, bytes)) => info!(count, bytes, "unreferenced artifacts removed"),
                Err(e) => warn!("removing unreferenced artifacts: {e:#}"),
            }
        });
        if let Err(e) = collection {
            warn!("cannot start the collection of unreferenced artifacts: {e}");
        }
    }
}

/// Gives the calling thread (not the process: on Linux the nice value is
/// each thread's own) [`COLLECTION_NICE`]; the collection runs either way.
fn lower_priority() {
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), COLLECTION_NICE) {
        tracing::debug!("cannot lower the collection's priority: {e}");
    }
}

/// The nice value of the calling thread (tests).
#[cfg(test)]
fn own_nice() -> i32 {
    rustix::process::getpriority_process(Some(rustix::thread::gettid())).expect("the own thread's priority")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_collection_waits_after_start_but_never_past_the_interval() {
        let now = 1_000_000;
        assert_eq!(first_collection(now, Duration::from_secs(3600)), now + 300_000);
        assert_eq!(first_collection(now, Duration::from_secs(2)), now + 2_000);
    }

    #[test]
    fn lowering_the_priority_touches_only_the_calling_thread() {
        let before = own_nice();
        let (lowered, beside) = std::thread::scope(|s| {
            let lowered = s.spawn(|| {
                lower_priority();
                own_nice()
            });
            let beside = s.spawn(own_nice);
            (lowered.join().unwrap(), beside.join().unwrap())
        });
        assert_eq!(lowered, (before + COLLECTION_NICE).min(19));
        assert_eq!(beside, before, "a thread beside it keeps its priority");
        assert_eq!(own_nice(), before, "the thread that started it keeps its priority");
    }
}
