//! The fan-in rule's unit tests and its simulator: random DAGs of
//! pipelines, random commits, completion orders, failures, retries and
//! SUPERSEDED skips, with [`decide`] (the function the driver calls)
//! starting every downstream execution; after every start it checks never
//! early, never mixed, never twice, and at the end that the newest commit
//! of every root reached every pipeline below it.
//!
//! SLUICE_FEED_SEED=N cargo test -p sluice --lib feed::   # one seed
//! SLUICE_FEED_RUNS=5000 cargo test -p sluice --lib feed:: # seeds 0..N (500 by default)

use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn cand(id: &str, ordinal: u64, lineage: &[(&str, &str)], reach: Reach) -> Candidate {
    Candidate {
        id: id.into(),
        ordinal,
        lineage: lineage.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        reach,
    }
}

fn feed(action: &str, pipeline: &str, executions: Vec<Candidate>) -> Feed {
    Feed { action: action.into(), pipeline: pipeline.into(), stage: "Build".into(), executions, consumed: None }
}

#[test]
fn cycles_are_found_and_named() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["c".to_string(), "d".to_string()])),
        ("c".to_string(), BTreeSet::from(["a".to_string()])),
    ]
    .into();
    assert_eq!(find_cycle(&graph, "a").unwrap(), ["a", "b", "c", "a"]);
    assert_eq!(find_cycle(&graph, "d"), None);
    let own: BTreeMap<String, BTreeSet<String>> = [("x".to_string(), BTreeSet::from(["x".to_string()]))].into();
    assert_eq!(find_cycle(&own, "x").unwrap(), ["x", "x"]);
}

#[test]
fn a_diamond_starts_once_both_branches_built_the_commit() {
    let b1 = cand("b1", 1, &[("A/Src", "c1"), ("B", "b1")], Reach::Passed);
    let c1_running = cand("c1", 1, &[("A/Src", "c1"), ("C", "c1")], Reach::Pending);
    let c0 = cand("c0", 0, &[("A/Src", "c0"), ("C", "c0")], Reach::Passed);
    // B passed commit 1; C's build of it runs: hold, never C's older build.
    let feeds = [feed("FromB", "B", vec![b1.clone()]), feed("FromC", "C", vec![c1_running, c0.clone()])];
    match decide(&feeds, "FromB", "b1") {
        Decision::Hold(why) => assert!(why.contains("execution c1 of C") && why.contains("A/Src@c1"), "{why}"),
        other => panic!("{other:?}"),
    }
    // C passes it: the set starts, with both builds of commit 1.
    let c1 = cand("c1", 1, &[("A/Src", "c1"), ("C", "c1")], Reach::Passed);
    let feeds = [feed("FromB", "B", vec![b1.clone()]), feed("FromC", "C", vec![c1.clone(), c0])];
    let set = BTreeMap::from([("FromB".to_string(), "b1".to_string()), ("FromC".to_string(), "c1".to_string())]);
    assert_eq!(decide(&feeds, "FromC", "c1"), Decision::Start(set));
    // Once taken, the same set does not start again, from either side.
    let mut taken = feeds.clone();
    taken[0].consumed = Some(("b1".into(), 1));
    taken[1].consumed = Some(("c1".into(), 1));
    assert!(matches!(decide(&taken, "FromB", "b1"), Decision::Already(_)));
    assert!(matches!(decide(&taken, "FromC", "c1"), Decision::Already(_)));
}

#[test]
fn a_failure_holds_until_retried_and_a_newer_set_supersedes_it() {
    let b1 = cand("b1", 1, &[("A/Src", "c1")], Reach::Passed);
    let c1 = cand("c1", 1, &[("A/Src", "c1")], Reach::Held("Failed (Build failed)".into()));
    let feeds = [feed("FromB", "B", vec![b1.clone()]), feed("FromC", "C", vec![c1])];
    match decide(&feeds, "FromB", "b1") {
        Decision::Hold(why) => assert!(why.contains("held by execution c1 of C") && why.contains("retry it"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Commit 2 went through both; the retried build of commit 1 comes too late.
    let mut feeds = [
        feed("FromB", "B", vec![cand("b2", 2, &[("A/Src", "c2")], Reach::Passed), b1]),
        feed(
            "FromC",
            "C",
            vec![cand("c2", 2, &[("A/Src", "c2")], Reach::Passed), cand("c1", 1, &[("A/Src", "c1")], Reach::Passed)],
        ),
    ];
    feeds[0].consumed = Some(("b2".into(), 2));
    feeds[1].consumed = Some(("c2".into(), 2));
    assert!(matches!(decide(&feeds, "FromC", "c1"), Decision::Already(_)));
}

#[test]
fn a_revision_one_branch_never_builds_has_no_set_and_unrelated_upstreams_take_the_newest() {
    // B skipped commit 1 (superseded, or filtered out): no set for it.
    let feeds = [
        feed(
            "FromB",
            "B",
            vec![cand("b2", 2, &[("A/Src", "c2")], Reach::Pending), cand("b1", 1, &[("A/Src", "c1")], Reach::Gone)],
        ),
        feed("FromC", "C", vec![cand("c1", 1, &[("A/Src", "c1")], Reach::Passed)]),
    ];
    assert!(matches!(decide(&feeds, "FromC", "c1"), Decision::NoSet(_)));
    // No shared source: the other upstream's newest success.
    let feeds = [
        feed("FromB", "B", vec![cand("b1", 1, &[("B/Src", "x")], Reach::Passed)]),
        feed(
            "FromC",
            "C",
            vec![cand("c3", 3, &[("C/Src", "z")], Reach::Pending), cand("c2", 2, &[("C/Src", "y")], Reach::Passed)],
        ),
    ];
    let set = BTreeMap::from([("FromB".to_string(), "b1".to_string()), ("FromC".to_string(), "c2".to_string())]);
    assert_eq!(decide(&feeds, "FromB", "b1"), Decision::Start(set));
}

#[test]
fn the_configuration_maps_outputs_to_upstream_artifacts() {
    let decl = crate::pipeline::parse(
        r#"{"pipeline": {"name": "z", "stages": [
            {"name": "Source", "actions": [{"name": "Lib", "actionTypeId": {"category": "Source", "owner": "Sluice", "provider": "pipeline", "version": "1"},
              "configuration": {"Pipeline": "a", "Artifacts": "bin, docs"}, "outputArtifacts": [{"name": "lib"}, {"name": "libdocs"}]}]},
            {"name": "Build", "actions": [{"name": "B", "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"},
              "inputArtifacts": [{"name": "lib"}]}]}]}}"#,
    )
    .unwrap();
    let sub = subscription(&decl.pipeline.stages[0].actions[0]).unwrap();
    assert_eq!(sub.pipeline, "a");
    assert_eq!(sub.stage, None);
    assert_eq!(sub.artifacts, [("lib".to_string(), "bin".to_string()), ("libdocs".to_string(), "docs".to_string())]);
    let mut action = decl.pipeline.stages[0].actions[0].clone();
    action.configuration.insert(ARTIFACTS_KEY, "bin");
    assert!(subscription(&action).unwrap_err().contains("one per output"));
}

// The simulator.

/// One simulated pipeline execution.
#[derive(Clone)]
struct Run {
    pipeline: usize,
    id: String,
    ordinal: u64,
    lineage: Lineage,
    reach: Reach,
    /// The upstream execution each source took (for downstream runs).
    set: BTreeMap<String, String>,
}

struct Sim {
    rng: StdRng,
    seed: u64,
    /// Upstreams of each pipeline; empty for a root (a git source).
    ups: Vec<Vec<usize>>,
    runs: Vec<Run>,
    consumed: BTreeMap<(usize, String), (String, u64)>,
    commits: Vec<u32>,
    next: u64,
    started_sets: BTreeSet<(usize, BTreeMap<String, String>)>,
}

fn name(p: usize) -> String {
    format!("p{p}")
}

fn action_for(u: usize) -> String {
    format!("From{u}")
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = rng.random_range(3..8);
        let roots = if rng.random_bool(0.3) { 2 } else { 1 };
        let mut ups = vec![Vec::new(); n];
        for (p, u) in ups.iter_mut().enumerate().skip(roots) {
            let mut chosen = BTreeSet::new();
            for _ in 0..rng.random_range(1..=p.min(3)) {
                chosen.insert(rng.random_range(0..p));
            }
            *u = chosen.into_iter().collect();
        }
        Self {
            rng,
            seed,
            ups,
            runs: Vec::new(),
            consumed: BTreeMap::new(),
            commits: vec![0; roots],
            next: 0,
            started_sets: BTreeSet::new(),
        }
    }

    fn fail(&self, what: String) -> ! {
        panic!(
            "feed simulation seed {}: {what}\nreplay: SLUICE_FEED_SEED={} cargo test -p sluice --lib feed::",
            self.seed, self.seed
        )
    }

    fn roots(&self) -> usize {
        self.commits.len()
    }

    /// A new execution of `p`: SUPERSEDED may skip its older running ones.
    fn launch(&mut self, p: usize, mut lineage: Lineage, set: BTreeMap<String, String>) {
        self.next += 1;
        let id = format!("{}-{}", name(p), self.next);
        lineage.insert(name(p), id.clone());
        if self.rng.random_bool(0.3) {
            for r in self.runs.iter_mut().filter(|r| r.pipeline == p && r.reach == Reach::Pending) {
                r.reach = Reach::Gone;
            }
        }
        self.runs.push(Run { pipeline: p, id, ordinal: self.next, lineage, reach: Reach::Pending, set });
    }

    fn push(&mut self, root: usize) {
        self.commits[root] += 1;
        let lineage = Lineage::from([(format!("{}/Src", name(root)), format!("c{}", self.commits[root]))]);
        self.launch(root, lineage, BTreeMap::new());
    }

    fn feeds(&self, d: usize) -> Vec<Feed> {
        self.ups[d]
            .iter()
            .map(|&u| Feed {
                action: action_for(u),
                pipeline: name(u),
                stage: "Build".into(),
                executions: self
                    .runs
                    .iter()
                    .filter(|r| r.pipeline == u)
                    .map(|r| Candidate {
                        id: r.id.clone(),
                        ordinal: r.ordinal,
                        lineage: r.lineage.clone(),
                        reach: r.reach.clone(),
                    })
                    .collect(),
                consumed: self.consumed.get(&(d, action_for(u))).cloned(),
            })
            .collect()
    }

    /// Run `i` passed its stage: every downstream decides.
    fn passed(&mut self, i: usize) {
        self.runs[i].reach = Reach::Passed;
        let (u, id) = (self.runs[i].pipeline, self.runs[i].id.clone());
        let downstream: Vec<usize> = (0..self.ups.len()).filter(|d| self.ups[*d].contains(&u)).collect();
        for d in downstream {
            if let Decision::Start(set) = decide(&self.feeds(d), &action_for(u), &id) {
                self.start(d, set);
            }
        }
    }

    fn start(&mut self, d: usize, set: BTreeMap<String, String>) {
        let members: Vec<Run> =
            set.values().map(|id| self.runs.iter().find(|r| &r.id == id).expect("a member exists").clone()).collect();
        // Never early: every member passed, and one for every upstream.
        if members.len() != self.ups[d].len() || members.iter().any(|m| m.reach != Reach::Passed) {
            self.fail(format!("{} started early with {set:?}", name(d)));
        }
        // Never mixed: members agree on every source and upstream they share.
        let mut lineage = Lineage::new();
        for m in &members {
            for (k, v) in &m.lineage {
                if let Some(w) = lineage.insert(k.clone(), v.clone())
                    && &w != v
                {
                    self.fail(format!("{} mixed {k}={w} and {k}={v} in {set:?}", name(d)));
                }
            }
        }
        // Never twice: not the same set again, never back past a taken member.
        if !self.started_sets.insert((d, set.clone())) {
            self.fail(format!("{} started twice with {set:?}", name(d)));
        }
        for m in &members {
            let key = (d, action_for(m.pipeline));
            if let Some((_, o)) = self.consumed.get(&key)
                && m.ordinal < *o
            {
                self.fail(format!("{} went back to {} in {set:?}", name(d), m.id));
            }
            self.consumed.insert(key, (m.id.clone(), m.ordinal));
        }
        // With one root, once per commit at most: a diamond never runs per branch.
        if self.roots() == 1 {
            let commit = lineage.get("p0/Src").cloned();
            let again = self.runs.iter().any(|r| r.pipeline == d && r.lineage.get("p0/Src") == commit.as_ref());
            if again {
                self.fail(format!("{} started a second time for {commit:?} with {set:?}", name(d)));
            }
        }
        for (action, id) in &set {
            lineage.insert(format!("{}/{action}", name(d)), id.clone());
        }
        self.launch(d, lineage, set);
    }

    fn step(&mut self) {
        let pending: Vec<usize> = (0..self.runs.len()).filter(|i| self.runs[*i].reach == Reach::Pending).collect();
        let held: Vec<usize> = (0..self.runs.len()).filter(|i| matches!(self.runs[*i].reach, Reach::Held(_))).collect();
        let roll = self.rng.random_range(0..10);
        if roll < 2 || pending.is_empty() && held.is_empty() {
            let root = self.rng.random_range(0..self.roots());
            self.push(root);
        } else if roll < 9 && !pending.is_empty() {
            let i = pending[self.rng.random_range(0..pending.len())];
            if self.rng.random_bool(0.2) {
                self.runs[i].reach = Reach::Held("Failed".into());
            } else {
                self.passed(i);
            }
        } else if !held.is_empty() {
            let i = held[self.rng.random_range(0..held.len())];
            self.passed(i);
        }
    }

    /// No more commits: every running execution passes, every failed one
    /// is retried and passes, until nothing moves.
    fn drain(&mut self) {
        while let Some(i) = (0..self.runs.len()).find(|i| matches!(self.runs[*i].reach, Reach::Pending | Reach::Held(_))) {
            self.passed(i);
        }
    }

    fn ancestors(&self, p: usize) -> BTreeSet<usize> {
        let mut out = BTreeSet::new();
        let mut todo = vec![p];
        while let Some(q) = todo.pop() {
            for &u in &self.ups[q] {
                if out.insert(u) {
                    todo.push(u);
                }
            }
        }
        out
    }

    /// The newest commit of every root reached every pipeline below it
    /// (below roots that all had a commit: a pipeline one of whose
    /// upstreams never ran has no set to start).
    fn check_reached(&self) {
        for p in self.roots()..self.ups.len() {
            let roots: Vec<usize> = self.ancestors(p).into_iter().filter(|r| *r < self.roots()).collect();
            if roots.iter().any(|r| self.commits[*r] == 0) {
                continue;
            }
            for root in roots {
                let key = format!("{}/Src", name(root));
                let last = format!("c{}", self.commits[root]);
                if !self.runs.iter().any(|r| r.pipeline == p && r.lineage.get(&key) == Some(&last)) {
                    let runs: Vec<String> =
                        self.runs.iter().map(|r| format!("{} {:?} {:?} {:?}", r.id, r.reach, r.lineage, r.set)).collect();
                    self.fail(format!(
                        "{} never ran {key}@{last} (upstreams {:?}, commits {:?})\n{}",
                        name(p),
                        self.ups,
                        self.commits,
                        runs.join("\n")
                    ));
                }
            }
        }
    }
}

fn seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("SLUICE_FEED_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![seed];
    }
    let runs: u64 = std::env::var("SLUICE_FEED_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(500);
    (0..runs).collect()
}

#[test]
fn random_dags_and_completion_orders_never_start_early_twice_or_mixed() {
    let mut starts = 0;
    for seed in seeds() {
        let mut sim = Sim::new(seed);
        let steps = sim.rng.random_range(10..80);
        for _ in 0..steps {
            sim.step();
        }
        sim.drain();
        sim.check_reached();
        starts += sim.runs.iter().filter(|r| !r.set.is_empty()).count();
    }
    assert!(starts > 0, "the simulation started no downstream execution");
}
