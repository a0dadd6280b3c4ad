//! The PostgreSQL backend's own tests (the shared ones run on both
//! backends from `store.rs`'s tests): schema versioning and fencing.

use super::throwaway::Throwaway;
use super::*;
use crate::store::{Change, UserRecord};

fn store(what: &str) -> Option<(PgStore, String)> {
    let cluster = Throwaway::shared()?;
    let url = cluster.database(what).unwrap();
    Some((PgStore::open(&url, Durability::Process).unwrap(), url))
}

fn user(name: &str) -> Change {
    Change::User(UserRecord { name: name.into(), role: "operator".into(), created_at: 1 })
}

fn take_lease(url: &str, holder: &str, epoch: i64) {
    let conn = Conn::connect(&parse_url(url).unwrap(), "test").unwrap();
    conn.query(
        "UPDATE sluice_lease SET holder = $1, epoch = $2, expires_at = now() + interval '10 seconds' WHERE id = 1",
        &[&holder, &epoch],
    )
    .unwrap();
}

#[test]
fn the_lease_row_is_made_expired_and_held_by_nobody() {
    let Some((store, _)) = store("lease_row") else { return };
    let row = store
        .conn
        .query_opt("SELECT holder, epoch, expires_at <= now(), api_url, fleet_addr FROM sluice_lease", &[])
        .unwrap()
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "");
    assert_eq!(row.get::<_, i64>(1), 0);
    assert!(row.get::<_, bool>(2), "expired");
    let count = store.conn.query_opt("SELECT COUNT(*) FROM sluice_lease", &[]).unwrap().unwrap();
    assert_eq!(count.get::<_, i64>(0), 1);
    // The single row stays single.
    assert!(store.conn.batch("INSERT INTO sluice_lease VALUES (2, 'x', 1, now(), '', '')").is_err());
}

#[test]
fn a_fenced_store_writes_nothing_and_a_matching_fence_writes() {
    let Some((mut store, url)) = store("fence") else { return };
    take_lease(&url, "ctl-a", 1);
    store.set_fence(Some(Fence { holder: "ctl-a".into(), epoch: 1 }));
    store.apply(&[user("ann")]).unwrap();

    // Another controller takes the lease: this one's writes are refused,
    // whole, outside a step and inside one.
    take_lease(&url, "ctl-b", 2);
    let err = store.apply(&[user("bob"), user("cid")]).unwrap_err();
    let fenced = err.downcast_ref::<Fenced>().unwrap_or_else(|| panic!("not Fenced: {err:#}"));
    assert_eq!((fenced.found_holder.as_str(), fenced.found_epoch), ("ctl-b", 2));
    store.begin_step().unwrap();
    assert!(store.apply(&[user("dan")]).unwrap_err().is::<Fenced>());
    store.end_step().unwrap();
    let names = |store: &PgStore| store.users().unwrap().into_iter().map(|u| u.name).collect::<Vec<_>>();
    assert_eq!(names(&store), ["ann"], "nothing of a refused write is stored");

    // With the new lease's fence it writes again (set through the trait,
    // as the driver's boxed store is); without a fence, too.
    let boxed: &mut dyn Store = &mut store;
    boxed.postgres().unwrap().set_fence(Some(Fence { holder: "ctl-b".into(), epoch: 2 }));
    store.begin_step().unwrap();
    store.apply(&[user("eve")]).unwrap();
    store.apply(&[user("fay")]).unwrap();
    store.end_step().unwrap();
    store.set_fence(None);
    store.apply(&[user("gus")]).unwrap();
    assert_eq!(names(&store), ["ann", "eve", "fay", "gus"]);
}

#[test]
fn a_step_is_one_transaction_and_a_failed_apply_in_it_is_undone_alone() {
    let Some((mut store, url)) = store("step") else { return };
    let other = PgStore::open(&url, Durability::Process).unwrap();
    store.begin_step().unwrap();
    store.apply(&[user("ann")]).unwrap();
    assert_eq!(store.users().unwrap().len(), 1, "the step sees its own writes");
    assert!(other.users().unwrap().is_empty(), "nobody else sees them before the step ends");
    // A log line of an absurd sequence number is fine; a second audit record of one seq is not.
    let record = crate::audit::Record::new(1, 1, crate::audit::Entry::default());
    let audit = Change::Audit(Box::new((record, "h".into())));
    store.apply(std::slice::from_ref(&audit)).unwrap();
    assert!(store.apply(&[user("bob"), audit]).is_err());
    store.apply(&[user("cid")]).unwrap();
    store.end_step().unwrap();
    let names: Vec<String> = other.users().unwrap().into_iter().map(|u| u.name).collect();
    assert_eq!(names, ["ann", "cid"], "the failed apply went, the rest of the step committed");
}

#[test]
fn a_store_of_a_newer_release_is_refused_untouched() {
    let Some((store, url)) = store("newer") else { return };
    let newer = i64::from(crate::store::schema::CURRENT + 1);
    store.conn.query("UPDATE sluice_schema SET version = $1", &[&newer]).unwrap();
    store.conn.batch("DROP TABLE tags").unwrap();
    let err = PgStore::open(&url, Durability::Process).err().unwrap();
    assert!(format!("{err:#}").contains(&format!("schema version {newer} is newer")), "{err:#}");
    let tags = store.conn.query_opt("SELECT to_regclass('tags') IS NULL", &[]).unwrap().unwrap();
    assert!(tags.get::<_, bool>(0), "nothing was created in the newer store");
    assert_eq!(version(&store.conn).unwrap() as i64, newer);
}

#[test]
fn controllers_opening_one_database_together_create_the_schema_once() {
    let Some(cluster) = Throwaway::shared() else { return };
    let url = cluster.database("together").unwrap();
    let opened: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || PgStore::open(&url, Durability::Process).map(|_| ()))
        })
        .collect();
    for t in opened {
        t.join().unwrap().unwrap();
    }
    let store = PgStore::open(&url, Durability::Process).unwrap();
    assert_eq!(version(&store.conn).unwrap(), crate::store::schema::CURRENT);
}

/// What a driver step costs on each backend: a commit of one execution
/// (with a source revision) and two log lines, alone and as a step with
/// an audit record. A measurement, not a check (figures in the notes):
/// `cargo test -p sluice --lib step_cost -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn step_cost() {
    use crate::store::tests::{backends, carrying};
    for fresh in backends("step_cost") {
        let mut store = fresh.open();
        let step = |i: u64| {
            let line = |seq| {
                Change::Log(crate::store::LogLine {
                    job_id: "j".into(),
                    execution_id: format!("e{i}"),
                    seq,
                    text: "a line of output\n".into(),
                })
            };
            vec![carrying(&format!("e{i}"), i, "web", &[("Source", "abc")]), line(0), line(1)]
        };
        for i in 0..50 {
            store.apply(&step(i)).unwrap();
        }
        let n = 1000;
        let t = std::time::Instant::now();
        for i in 100..100 + n {
            store.apply(&step(i)).unwrap();
        }
        let apply = t.elapsed() / n as u32;
        let t = std::time::Instant::now();
        let mut head = crate::audit::Head::default();
        for i in 5000..5000 + n {
            store.begin_step().unwrap();
            store.apply(&step(i)).unwrap();
            let record = head.append(i, crate::audit::Entry::default());
            store.apply(&[Change::Audit(Box::new(record))]).unwrap();
            store.end_step().unwrap();
        }
        let audited = t.elapsed() / n as u32;
        println!("{}: apply {apply:?} per step, audited step {audited:?}", fresh.location);
    }
}
