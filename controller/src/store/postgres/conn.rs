//! One connection to PostgreSQL, usable from synchronous code anywhere.
//!
//! The driver is a tokio task that calls the [`crate::store::Store`]
//! methods synchronously, as it does SQLite's. The connection's I/O runs on
//! a thread of its own (a current-thread runtime that drives
//! `tokio_postgres::Connection`); a call here waits for its answer with
//! `futures_executor::block_on`, which parks the calling thread like a
//! SQLite call does and works the same in a multi-threaded runtime, a
//! current-thread one (tests) or none. Statements are prepared once and
//! kept; the writes of a batch go out together ([`Conn::pipeline`]), so a
//! step costs one round trip, not one per statement.

use anyhow::{Context as _, Result, bail};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

/// A parameter of a statement, owned: writes are built before they are sent.
pub(in crate::store) type Param = Box<dyn ToSql + Sync + Send>;

/// One statement of a pipeline.
pub(in crate::store) struct Write {
    pub sql: std::borrow::Cow<'static, str>,
    pub params: Vec<Param>,
}

/// `w!(sql, a, b)`: a [`Write`] of owned parameters.
macro_rules! w {
    ($sql:expr $(, $p:expr)* $(,)?) => {
        $crate::store::postgres::conn::Write {
            sql: ::std::borrow::Cow::from($sql),
            params: vec![$(Box::new($p) as $crate::store::postgres::conn::Param),*],
        }
    };
}
pub(in crate::store) use w;

pub(in crate::store) struct Conn {
    client: Client,
    statements: Mutex<HashMap<String, Statement>>,
}

/// The connection settings of a `postgres://` URL, with what sluice
/// requires of them: no TLS is spoken yet, so a URL that asks for it is
/// refused rather than connected in clear; without `sslmode` the
/// connection is plain (documented). The password may come from
/// `PGPASSWORD` instead of the URL.
pub fn parse_url(url: &str) -> Result<tokio_postgres::Config> {
    let mut config: tokio_postgres::Config =
        url.parse().with_context(|| format!("the store URL {} is not a PostgreSQL URL", redact(url)))?;
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    for pair in query.split('&') {
        if let Some(mode) = pair.strip_prefix("sslmode=")
            && mode != "disable"
        {
            bail!(
                "the store URL asks for sslmode={mode}: this release speaks no TLS to PostgreSQL; connect over a unix \
                 socket or a trusted network with sslmode=disable (or leave sslmode out)"
            );
        }
    }
    config.ssl_mode(tokio_postgres::config::SslMode::Disable);
    if config.get_password().is_none()
        && let Ok(password) = std::env::var("PGPASSWORD")
    {
        config.password(password);
    }
    if config.get_application_name().is_none() {
        config.application_name("sluice");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(std::time::Duration::from_secs(10));
    }
    Ok(config)
}

/// The URL without its password, for logs and errors.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    // The userinfo ends at the last `@`: a password may hold an unencoded
    // `/`, `?`, `#` or `@` (issue 18, fwdfix).
    let (userinfo, after) = match rest.rsplit_once('@') {
        Some((userinfo, after)) => (Some(userinfo), after),
        None => (None, rest),
    };
    let userinfo = match userinfo {
        Some(info) => match info.split_once(':') {
            Some((user, _)) => format!("{user}:***@"),
            None => format!("{info}@"),
        },
        None => String::new(),
    };
    // `?password=` is a password too.
    let after = match after.split_once('?') {
        Some((path, query)) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}", pairs.join("&"))
        }
        None => after.to_string(),
    };
    format!("{scheme}://{userinfo}{after}")
}

impl Conn {
    /// Connects on a new thread that then drives the connection until the
    /// client is dropped (or the server goes, when every call fails).
    pub fn connect(config: &tokio_postgres::Config, what: &str) -> Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        let config = config.clone();
        let name = format!("sluice-pg-{what}");
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = tx.send(Err(anyhow::Error::from(e).context("starting the PostgreSQL connection's runtime")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match config.connect(tokio_postgres::NoTls).await {
                        Ok((client, connection)) => {
                            let _ = tx.send(Ok(client));
                            if let Err(e) = connection.await {
                                tracing::error!(error = %e, "the connection to PostgreSQL ended");
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(anyhow::Error::from(e)));
                        }
                    }
                });
            })
            .context("starting the PostgreSQL connection's thread")?;
        let client = rx.recv().context("the PostgreSQL connection's thread ended")??;
        Ok(Self { client, statements: Mutex::new(HashMap::new()) })
    }

    /// Waits for `work` on this thread.
    pub fn run<T>(&self, work: impl Future<Output = Result<T>>) -> Result<T> {
        futures_executor::block_on(work)
    }

    /// The prepared statement of `sql`, prepared on first use.
    pub async fn statement(&self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.statements.lock().unwrap_or_else(|p| p.into_inner()).get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).await?;
        self.statements.lock().unwrap_or_else(|p| p.into_inner()).insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    pub fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        self.run(async {
            let statement = self.statement(sql).await?;
            Ok(self.client.query(&statement, params).await?)
        })
        .with_context(|| format!("querying the store: {}", first_line(sql)))
    }

    pub fn query_opt(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// Statements without parameters, in one simple query (DDL).
    pub fn batch(&self, sql: &str) -> Result<()> {
        self.run(async { Ok(self.client.batch_execute(sql).await?) })
    }

    /// Sends every write at once and waits for all answers: one round trip
    /// for a batch. The results come back in order; after a failed one the
    /// server refuses the rest of its transaction (and a `COMMIT` among
    /// them rolls it back).
    pub fn pipeline(&self, writes: &[Write]) -> Vec<Result<Vec<Row>, tokio_postgres::Error>> {
        futures_executor::block_on(async {
            // Statements not prepared yet are prepared together first.
            let prepared = futures_util::future::join_all(writes.iter().map(|w| self.statement(&w.sql))).await;
            let runs = writes.iter().zip(prepared).map(|(w, statement)| async move {
                let statement = statement?;
                let params: Vec<&(dyn ToSql + Sync)> = w.params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
                self.client.query(&statement, &params).await
            });
            futures_util::future::join_all(runs).await
        })
    }
}

fn first_line(sql: &str) -> &str {
    sql.trim().lines().next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_that_asks_for_tls_is_refused_and_passwords_stay_out_of_messages() {
        let err = parse_url("postgres://sluice:hunter2@db:5432/sluice?sslmode=require").unwrap_err();
        assert!(format!("{err:#}").contains("sslmode=require"), "{err:#}");
        assert!(!format!("{err:#}").contains("hunter2"));
        let config = parse_url("postgres://sluice@db:5432/sluice?sslmode=disable").unwrap();
        assert_eq!(config.get_dbname(), Some("sluice"));
        let config = parse_url("postgresql://sluice@db/sluice").unwrap();
        assert_eq!(config.get_ssl_mode(), tokio_postgres::config::SslMode::Disable);
        let err = parse_url("postgres://[::1").unwrap_err();
        assert!(format!("{err:#}").contains("not a PostgreSQL URL"), "{err:#}");
        assert_eq!(redact("postgres://u:secret@h:1/d?x=1"), "postgres://u:***@h:1/d?x=1");
        assert_eq!(redact("postgres://u@h/d"), "postgres://u@h/d");
        assert_eq!(redact("postgres://h"), "postgres://h");
        // issue 18, fwdfix: a password in the query, or with characters
        // that end an authority, is not shown either.
        for url in [
            "postgres://u@h/d?password=hunter2",
            "postgres://u@h/d?sslmode=disable&PASSWORD=hunter2",
            "postgres://u:hu/nter2@h/d",
            "postgres://u:hu?nter2@h/d",
            "postgres://u:hu#nter2@h/d",
            "postgres://u:hu@nter2@h:5432/d",
        ] {
            let shown = redact(url);
            assert!(!shown.contains("hunter2") && !shown.contains("nter2"), "{url} -> {shown}");
            assert!(shown.contains("***"), "{shown}");
            if let Err(e) = parse_url(url) {
                assert!(!format!("{e:#}").contains("nter2"), "{e:#}");
            }
        }
        assert_eq!(redact("postgres://u:p/w@h:1/d?x=1"), "postgres://u:***@h:1/d?x=1");
    }
}
