//! The lease row (`sluice_lease`, one row, id 1) on a connection of its
//! own: taking it, renewing it, giving it up, reading who holds it. Every
//! time is the database's (`now()`): the controllers' clocks never decide
//! who leads. [`Term`] is the holder's side of it, without IO: until when
//! it may still act as the leader by its own monotonic clock.

use anyhow::{Context as _, Result};
use std::time::{Duration, Instant};
use tracing::warn;

/// How long a lease lasts past its last renewal. A standby takes over at
/// most this long (plus one attempt interval) after the leader stopped
/// renewing, which leaves the new leader's start-up ~6 s of the 10 s the
/// failover promises.
pub const TTL: Duration = Duration::from_secs(3);

/// How often the leader renews and a standby tries to take the lease: a
/// leader has TTL - MARGIN = 2 s of term, so four renewals may be late or
/// lost before it steps down.
pub const EVERY: Duration = Duration::from_millis(500);

/// The longest a lease statement may wait for a row lock (the lease row is
/// locked by a write's fence only between the fence and its COMMIT, one
/// pipelined batch): a standby's attempt or a renewal that hits a stuck
/// transaction fails and is tried again, it never waits past the term.
const LOCK_TIMEOUT: &str = "SET lock_timeout = '400ms'; SET statement_timeout = '2s'";

/// How much earlier than the database the leader gives up its term: its
/// clock started counting after the database's did (the renewal was sent
/// before `now()` ran), and a write takes a moment to reach the database.
pub const MARGIN: Duration = Duration::from_secs(1);

/// The table, exactly as the PostgreSQL store's schema creates it (seam 1
/// of issue 18): created here too so that a standby that starts before any
/// leader ever opened the store can wait on it.
const ENSURE: &str = "CREATE TABLE IF NOT EXISTS sluice_lease (
    id INT PRIMARY KEY CHECK (id = 1),
    holder TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    api_url TEXT NOT NULL,
    fleet_addr TEXT NOT NULL
);
INSERT INTO sluice_lease (id, holder, epoch, expires_at, api_url, fleet_addr)
    VALUES (1, '', 0, '-infinity', '', '') ON CONFLICT (id) DO NOTHING;";

/// Who holds the lease, as the row says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub holder: String,
    pub epoch: i64,
    pub api_url: String,
    pub fleet_addr: String,
    /// Whether the lease has not expired (by the database's clock).
    pub live: bool,
}

/// A connection to PostgreSQL for the lease alone (the store's own is busy
/// with the driver's transactions, and a renewal must never wait on them).
pub struct LeaseConn {
    client: tokio_postgres::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LeaseConn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LeaseConn {
    /// Connects (with the store's own settings of `url`: `PGPASSWORD`, the
    /// TLS refusal, the connect timeout) and makes sure the lease row exists.
    pub async fn connect(url: &str) -> Result<Self> {
        let config = crate::store::postgres::parse_url(url)?;
        let (client, connection) = tokio::time::timeout(TTL, config.connect(tokio_postgres::NoTls))
            .await
            .context("connecting to PostgreSQL for the lease: timed out")?
            .context("connecting to PostgreSQL for the lease")?;
        let task = tokio::spawn(async move {
            if let Err(e) = connection.await {
                warn!("the lease's PostgreSQL connection ended: {e}");
            }
        });
        let conn = Self { client, task };
        conn.client.batch_execute(LOCK_TIMEOUT).await.context("setting the lease connection's timeouts")?;
        if let Err(e) = conn.client.batch_execute(ENSURE).await {
            // Two controllers starting at once race on CREATE TABLE IF NOT
            // EXISTS; the loser's error is harmless when the row is there.
            conn.read().await.with_context(|| format!("creating the lease row: {e}"))?;
        }
        Ok(conn)
    }

    /// Whether the connection is gone (the next attempt reconnects).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Takes the lease when it has expired (or is already ours): the new
    /// epoch, or `None` when another controller holds it.
    pub async fn acquire(&self, me: &str, api_url: &str, fleet_addr: &str) -> Result<Option<i64>> {
        let row = self
            .client
            .query_opt(
                "UPDATE sluice_lease SET holder = $1, epoch = epoch + 1, expires_at = now() + make_interval(secs => $2),
                     api_url = $3, fleet_addr = $4
                 WHERE id = 1 AND (expires_at < now() OR holder = $1) RETURNING epoch",
                &[&me, &TTL.as_secs_f64(), &api_url, &fleet_addr],
            )
            .await
            .context("taking the lease")?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Extends our lease of `epoch`: false when it is no longer ours.
    pub async fn renew(&self, me: &str, epoch: i64) -> Result<bool> {
        let renewed = self
            .client
            .execute(
                "UPDATE sluice_lease SET expires_at = now() + make_interval(secs => $3)
                 WHERE id = 1 AND holder = $1 AND epoch = $2",
                &[&me, &epoch, &TTL.as_secs_f64()],
            )
            .await
            .context("renewing the lease")?;
        Ok(renewed == 1)
    }

    /// Lets the lease expire now (a leader that stops on purpose), so that
    /// a standby takes over at its next attempt instead of after [`TTL`].
    pub async fn release(&self, me: &str, epoch: i64) -> Result<()> {
        self.client
            .execute(
                "UPDATE sluice_lease SET expires_at = now() - interval '1 second'
                 WHERE id = 1 AND holder = $1 AND epoch = $2",
                &[&me, &epoch],
            )
            .await
            .context("releasing the lease")?;
        Ok(())
    }

    /// The row as it is.
    pub async fn read(&self) -> Result<Holder> {
        let row = self
            .client
            .query_one("SELECT holder, epoch, api_url, fleet_addr, expires_at > now() FROM sluice_lease WHERE id = 1", &[])
            .await
            .context("reading the lease")?;
        Ok(Holder { holder: row.get(0), epoch: row.get(1), api_url: row.get(2), fleet_addr: row.get(3), live: row.get(4) })
    }
}

/// The leader's term by its own monotonic clock (which goes on while the
/// process is paused, so a resumed leader sees its term is over).
#[derive(Debug, Clone, Copy)]
pub struct Term {
    until: Instant,
}

impl Term {
    /// A term from a take or renewal whose statement was sent at `sent`:
    /// the database's `expires_at` is at least `sent + TTL`.
    pub fn from(sent: Instant) -> Self {
        Self { until: sent + TTL - MARGIN }
    }

    /// A renewal sent at `sent` succeeded.
    pub fn renewed(&mut self, sent: Instant) {
        self.until = self.until.max(sent + TTL - MARGIN);
    }

    /// Whether this controller may still act as the leader at `now`.
    pub fn holds(&self, now: Instant) -> bool {
        now < self.until
    }

    /// How long is left at `now` (zero when over).
    pub fn left(&self, now: Instant) -> Duration {
        self.until.saturating_duration_since(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_term_ends_before_the_database_lets_a_standby_take_over() {
        let sent = Instant::now();
        let term = Term::from(sent);
        assert!(term.holds(sent));
        assert!(term.holds(sent + TTL - MARGIN - Duration::from_millis(1)));
        assert!(!term.holds(sent + TTL - MARGIN));
        assert!(!term.holds(sent + TTL), "the database's lease outlives the term");
    }

    #[test]
    fn a_renewal_extends_the_term_and_a_late_answer_to_an_old_one_does_not_shorten_it() {
        let start = Instant::now();
        let mut term = Term::from(start);
        let later = start + TTL;
        term.renewed(later);
        assert!(term.holds(later + TTL - MARGIN - Duration::from_millis(1)));
        term.renewed(start + Duration::from_millis(100));
        assert!(term.holds(later + TTL - MARGIN - Duration::from_millis(1)));
        assert_eq!(term.left(start + Duration::from_secs(60)), Duration::ZERO);
    }

    #[test]
    fn a_paused_leader_resumed_after_the_ttl_no_longer_holds() {
        // SIGSTOP for longer than the lease, SIGCONT: the monotonic clock
        // went on, so the first look at the term says it is over.
        let sent = Instant::now();
        let term = Term::from(sent);
        assert!(!term.holds(sent + TTL + Duration::from_secs(20)));
    }
}
