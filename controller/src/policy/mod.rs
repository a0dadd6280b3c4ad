//! Who may do what: roles as policies on resources, users in teams, and
//! teams delegating roles on their resources to other teams.
//!
//! - [`document`]: the policy language (IAM-shaped statements, default
//!   deny, deny wins) and its evaluation; pure.
//! - [`roles`]: the built-in roles (admin, operator, developer, approver,
//!   viewer) as policies.
//! - [`Directory`]: the shared snapshot of users, teams, memberships,
//!   custom roles, delegations and pipeline owners that every call is
//!   checked against. The driver owns the writes (and persists them);
//!   the API reads it to filter streams.
//!
//! A caller holds: the role bound to it as a user (acting for all its
//! teams), and every role another team granted to one of its teams
//! (acting for the granting team, on the granting team's resources only).
//! The built-in admin (`DATA/admin.token`) holds admin; a webhook delivery
//! may only deliver; a job key only reaches the S3 subset, whose own grant
//! narrows it further. docs/permissions.md describes the model for users.

pub mod document;
pub mod records;
pub mod roles;

pub use document::{Decision, Effect, Holding, Policy, PolicyError, Statement};

use crate::auth::{ADMIN_USER, Caller, Role, Via};
use crate::ops::OpError;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

/// The resource of operations that act on no one resource (lists act on
/// `*`, then show only what the caller may read).
pub const ANY: &str = "*";

/// Actions every authenticated user has: knowing who one is and what one
/// may do.
pub const SELF_ACTIONS: &[&str] = &["sluice:WhoAmI", "sluice:CheckAccess"];

/// A named user as the directory knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    pub role: String,
}

/// A team and its members.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TeamEntry {
    pub members: BTreeSet<String>,
}

/// OWNER grants ROLE on its resources to the members of TO.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    pub owner: String,
    pub to: String,
    pub role: String,
}

/// One consistent view of everything a check needs.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub users: BTreeMap<String, UserEntry>,
    pub teams: BTreeMap<String, TeamEntry>,
    /// Custom roles (built-in ones are [`roles::builtin`]).
    pub roles: BTreeMap<String, Policy>,
    pub grants: BTreeSet<Grant>,
    /// The team each pipeline belongs to, if any.
    pub pipeline_teams: BTreeMap<String, String>,
    /// The team each secret belongs to, if any.
    pub secret_teams: BTreeMap<String, String>,
}

impl Snapshot {
    /// A role's policy, built-in or custom.
    pub fn role(&self, name: &str) -> Option<&Policy> {
        roles::builtin(name).or_else(|| self.roles.get(name))
    }

    pub fn teams_of(&self, user: &str) -> Vec<String> {
        self.teams.iter().filter(|(_, t)| t.members.contains(user)).map(|(name, _)| name.clone()).collect()
    }

    /// The team that owns a resource: a pipeline's (and its stages' and
    /// actions'), or the team itself for `team/NAME`.
    pub fn owner_of<'a>(&'a self, resource: &'a str) -> Option<&'a str> {
        let mut parts = resource.splitn(3, '/');
        match (parts.next(), parts.next()) {
            (Some("pipeline"), Some(name)) => self.pipeline_teams.get(name).map(String::as_str),
            (Some("secret"), Some(name)) => self.secret_teams.get(name).map(String::as_str),
            (Some("team"), Some(name)) => Some(name),
            _ => None,
        }
    }

    /// What a caller holds, and how it is named in refusals.
    pub fn holdings(&self, caller: &Caller) -> (String, Vec<Holding<'_>>) {
        let holding = |through: String, policy, teams, only_owner| Holding { through, policy, teams, only_owner };
        match &caller.via {
            Via::Webhook => return ("webhook".into(), vec![holding("webhook".into(), roles::webhook(), vec![], None)]),
            Via::JobKey(_) => return ("job key".into(), vec![holding("job key".into(), roles::job_key(), vec![], None)]),
            Via::Agent(_) => return ("agent".into(), vec![]),
            Via::Token | Via::AccessKey(_) | Via::Session(_) => {}
        }
        if caller.user == ADMIN_USER && caller.role == Role::Admin && !self.users.contains_key(ADMIN_USER) {
            let admin = roles::builtin(roles::ADMIN).expect("admin is built in");
            return ("admin".into(), vec![holding("role admin".into(), admin, vec![], None)]);
        }
        let Some(user) = self.users.get(&caller.user) else {
            return ("unknown user".into(), vec![]);
        };
        let teams = self.teams_of(&caller.user);
        let mut held = Vec::new();
        if let Some(policy) = self.role(&user.role) {
            held.push(holding(format!("role {}", user.role), policy, teams.clone(), None));
        }
        for grant in self.grants.iter().filter(|g| teams.contains(&g.to)) {
            if let Some(policy) = self.role(&grant.role) {
                let through = format!("role {} granted by team {} to team {}", grant.role, grant.owner, grant.to);
                held.push(holding(through, policy, vec![grant.owner.clone()], Some(grant.owner.clone())));
            }
        }
        (user.role.clone(), held)
    }

    /// The decision on `action` on `resource` owned by `owner`.
    pub fn decide_owned(&self, caller: &Caller, action: &str, resource: &str, owner: Option<&str>) -> Decision {
        if asks_of_itself(caller, action) {
            return Decision::Allowed("every user may ask who it is and what it may do".into());
        }
        let (_, held) = self.holdings(caller);
        document::decide(&held, action, resource, owner)
    }

    pub fn decide(&self, caller: &Caller, action: &str, resource: &str) -> Decision {
        self.decide_owned(caller, action, resource, self.owner_of(resource))
    }

    /// The caller's holdings, worked out once to judge many resources: a
    /// listing's every item (issue 19, scale). Allows exactly what
    /// [`Snapshot::decide`] allows.
    pub fn judge<'a>(&'a self, caller: &'a Caller) -> Judge<'a> {
        Judge { snapshot: self, caller, holdings: self.holdings(caller).1 }
    }
}

/// What [`Snapshot::judge`] returns.
pub struct Judge<'a> {
    snapshot: &'a Snapshot,
    caller: &'a Caller,
    holdings: Vec<document::Holding<'a>>,
}

impl Judge<'_> {
    pub fn allows(&self, action: &str, resource: &str) -> bool {
        asks_of_itself(self.caller, action)
            || document::allows(&self.holdings, action, resource, self.snapshot.owner_of(resource))
    }
}

/// Every user may ask who it is and what it may do.
fn asks_of_itself(caller: &Caller, action: &str) -> bool {
    SELF_ACTIONS.contains(&action) && matches!(caller.via, Via::Token | Via::AccessKey(_) | Via::Session(_))
}

impl Snapshot {
    /// `Ok` or the refusal naming who, what and on what.
    pub fn check_owned(&self, caller: &Caller, action: &str, resource: &str, owner: Option<&str>) -> Result<(), OpError> {
        match self.decide_owned(caller, action, resource, owner) {
            Decision::Allowed(_) => Ok(()),
            decision => Err(self.refusal(caller, action, resource, &decision)),
        }
    }

    pub fn refusal(&self, caller: &Caller, action: &str, resource: &str, decision: &Decision) -> OpError {
        let (role, _) = self.holdings(caller);
        let why = match decision {
            Decision::Denied(by) => format!(": explicitly denied by {by}"),
            _ => String::new(),
        };
        OpError::AccessDenied(format!("{} ({role}) may not {action} on {resource}{why}", caller.user))
    }
}

/// The directory as the driver and the API share it: cheap to clone, the
/// driver swaps in a new snapshot after each change it commits.
#[derive(Debug, Clone, Default)]
pub struct Directory(Arc<RwLock<Arc<Snapshot>>>);

impl Directory {
    pub fn new(snapshot: Snapshot) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(snapshot))))
    }

    /// The current snapshot (consistent for as long as it is held).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.0.read().expect("directory lock").clone()
    }

    /// Changes the directory (the driver, after committing the change).
    pub fn update(&self, change: impl FnOnce(&mut Snapshot)) {
        let mut guard = self.0.write().expect("directory lock");
        let mut next = (**guard).clone();
        change(&mut next);
        *guard = Arc::new(next);
    }

    pub fn teams_of(&self, user: &str) -> Vec<String> {
        self.snapshot().teams_of(user)
    }

    /// The teams and roles a user holds now, as `Approvers` names them
    /// (`team:NAME`, `role:NAME`): what an approval's eligibility reads
    /// (the driver's decision and the console's offer alike). A role
    /// delegated by another team counts only on that team's pipelines
    /// (`pipeline`'s owner).
    pub fn member_of(&self, user: &str, pipeline: &str) -> Vec<String> {
        let owner = self.snapshot().pipeline_teams.get(pipeline).cloned();
        let teams = self.teams_of(user).into_iter().map(|t| format!("team:{t}"));
        let roles = self.roles_on(user, Some(owner.as_deref())).into_iter().map(|r| format!("role:{r}"));
        teams.chain(roles).collect()
    }

    /// Role names a user holds: its own, and those granted to its teams.
    pub fn roles_of(&self, user: &str) -> Vec<String> {
        self.roles_on(user, None)
    }

    /// The roles a user holds on what `owner` owns: its own role, and the
    /// roles granted to its teams by `owner` (every grant when `owner` is
    /// `None`). A delegated role acts only on the granting team's resources.
    pub fn roles_on(&self, user: &str, owner: Option<Option<&str>>) -> Vec<String> {
        let snapshot = self.snapshot();
        let teams = snapshot.teams_of(user);
        let mut roles: Vec<String> = snapshot.users.get(user).map(|u| u.role.clone()).into_iter().collect();
        if user == ADMIN_USER && roles.is_empty() {
            roles.push(roles::ADMIN.into());
        }
        let from_owner = |g: &&Grant| owner.is_none_or(|o| o == Some(g.owner.as_str()));
        for grant in snapshot.grants.iter().filter(|g| teams.contains(&g.to)).filter(from_owner) {
            if !roles.contains(&grant.role) {
                roles.push(grant.role.clone());
            }
        }
        roles
    }

    /// `Ok` if `caller` may use `action` on `resource`, else the refusal
    /// (HTTP 403, CLI exit 3, `AccessDeniedException`).
    pub fn check(&self, caller: &Caller, action: &str, resource: &str) -> Result<(), OpError> {
        let snapshot = self.snapshot();
        snapshot.check_owned(caller, action, resource, snapshot.owner_of(resource))
    }

    pub fn allows(&self, caller: &Caller, action: &str, resource: &str) -> bool {
        // The verdict without naming the statement that decided it.
        self.snapshot().judge(caller).allows(action, resource)
    }
}

/// `pipeline/NAME`.
pub fn pipeline(name: &str) -> String {
    format!("pipeline/{name}")
}

/// `pipeline/NAME/STAGE`.
pub fn stage(pipeline: &str, stage: &str) -> String {
    format!("pipeline/{pipeline}/{stage}")
}

/// `pipeline/NAME/STAGE/ACTION`.
pub fn action(pipeline: &str, stage: &str, action: &str) -> String {
    format!("pipeline/{pipeline}/{stage}/{action}")
}

/// `KIND/NAME` for the other kinds (`secret`, `agent`, `plugin`, `team`, ...).
pub fn named(kind: &str, name: &str) -> String {
    format!("{kind}/{name}")
}

/// The pipeline a declaration names (`pipeline/*` when it names none: the
/// operation then fails on the declaration, not on the permission).
pub fn declared(declaration: &str) -> String {
    crate::pipeline::declared_name(declaration).map_or_else(|| pipeline(ANY), |name| pipeline(&name))
}

/// The pipeline an ARN names (`arn:aws:codepipeline:REGION:ACCOUNT:NAME`).
pub fn from_arn(arn: &str) -> String {
    let name = arn.splitn(6, ':').nth(5).unwrap_or(arn);
    pipeline(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(user: &str) -> Caller {
        Caller::new(user, Role::Operator)
    }

    fn directory() -> Directory {
        let mut s = Snapshot::default();
        for (user, role) in [("ann", "viewer"), ("dev", "developer"), ("ops", "operator"), ("apr", "approver")] {
            s.users.insert(user.into(), UserEntry { role: role.into() });
        }
        s.teams.insert("web".into(), TeamEntry { members: ["dev".to_string()].into() });
        s.teams.insert("data".into(), TeamEntry { members: ["ann".to_string()].into() });
        s.pipeline_teams.insert("site".into(), "web".into());
        s.pipeline_teams.insert("etl".into(), "data".into());
        s.secret_teams.insert("webdb".into(), "web".into());
        Directory::new(s)
    }

    #[test]
    fn built_in_roles_decide_as_documented() {
        let d = directory();
        let admin = Caller::new(ADMIN_USER, Role::Admin);
        assert!(d.allows(&admin, "sluice:CreateUser", "user/x"));
        let start = "codepipeline:StartPipelineExecution";
        let refused = d.check(&caller("ann"), start, "pipeline/site").unwrap_err();
        assert_eq!(refused.to_string(), "ann (viewer) may not codepipeline:StartPipelineExecution on pipeline/site");
        assert!(d.allows(&caller("ann"), "codepipeline:GetPipelineState", "pipeline/site"));
        assert!(d.allows(&caller("dev"), start, "pipeline/site"));
        assert!(!d.allows(&caller("dev"), start, "pipeline/etl"));
        assert!(!d.allows(&caller("dev"), "sluice:PushPlugin", "plugin/x"));
        assert!(!d.allows(&caller("dev"), "sluice:CreateAgentToken", "agent/*"));
        assert!(d.allows(&caller("ops"), "sluice:PushPlugin", "plugin/x"));
        assert!(!d.allows(&caller("ops"), "sluice:CreateUser", "user/x"));
        assert!(d.allows(&caller("apr"), "codepipeline:PutApprovalResult", "pipeline/site/Deploy/Approve"));
        assert!(!d.allows(&caller("apr"), start, "pipeline/site"));
        assert!(!d.allows(&caller("nobody"), "codepipeline:GetPipeline", "pipeline/site"));
        assert!(d.allows(&caller("nobody-known"), "sluice:WhoAmI", ANY));
        // A developer grants its team's secrets, and no other.
        assert!(d.allows(&caller("dev"), "sluice:UseSecret", "secret/webdb"));
        assert!(!d.allows(&caller("dev"), "sluice:UseSecret", "secret/db"));
        assert!(!d.allows(&caller("dev"), "sluice:SetSecret", "secret/webdb"));
        assert!(d.allows(&caller("ops"), "sluice:UseSecret", "secret/db"));
    }

    #[test]
    fn delegations_reach_only_the_granting_team_and_follow_at_once() {
        let d = directory();
        let start = "codepipeline:StartPipelineExecution";
        assert!(!d.allows(&caller("ann"), start, "pipeline/site"));
        d.update(|s| {
            s.grants.insert(Grant { owner: "web".into(), to: "data".into(), role: "developer".into() });
        });
        assert!(d.allows(&caller("ann"), start, "pipeline/site"));
        assert!(!d.allows(&caller("ann"), start, "pipeline/etl"));
        assert_eq!(d.roles_of("ann"), vec!["viewer", "developer"]);
        d.update(|s| s.grants.clear());
        assert!(!d.allows(&caller("ann"), start, "pipeline/site"));
    }

    /// What a listing judges item by item is what a single request is
    /// decided: every kind of caller (deny statements, delegations, the
    /// self-service actions, internal principals, strangers) on every kind
    /// of resource (a team's, another team's, nobody's).
    #[test]
    fn a_judge_allows_exactly_what_a_decision_allows() {
        let d = directory();
        let known = ["codepipeline:GetPipeline", "codepipeline:StartPipelineExecution", "sluice:UseSecret"];
        let no_prod = Policy::parse(
            r#"{"Statement":[{"Effect":"Allow","Action":"codepipeline:*","Resource":"pipeline/*"},
                {"Effect":"Deny","Action":"codepipeline:StartPipelineExecution","Resource":"pipeline/prod*"}]}"#,
            &known,
        )
        .unwrap();
        d.update(|s| {
            s.roles.insert("no-prod".into(), no_prod);
            s.users.insert("rel".into(), UserEntry { role: "no-prod".into() });
            s.teams.insert("ops".into(), TeamEntry { members: ["rel".to_string()].into() });
            s.grants.insert(Grant { owner: "web".into(), to: "data".into(), role: "developer".into() });
            s.pipeline_teams.insert("prod-site".into(), "web".into());
        });
        let callers = [
            Caller::new(ADMIN_USER, Role::Admin),
            caller("ann"),
            caller("dev"),
            caller("ops"),
            caller("apr"),
            caller("rel"),
            caller("nobody"),
            Caller::new("webhook", Role::Operator).with_via(Via::Webhook),
            Caller::new("job-key:AK", Role::Operator).with_via(Via::JobKey("AK".into())),
            Caller::new("ag-1", Role::Operator).with_via(Via::Agent("ag-1".into())),
        ];
        let actions = [
            "codepipeline:GetPipeline",
            "codepipeline:StartPipelineExecution",
            "sluice:UseSecret",
            "sluice:DeliverWebhook",
            "sluice:WhoAmI",
            "s3:GetObject",
        ];
        let resources =
            ["pipeline/site", "pipeline/etl", "pipeline/prod-site", "pipeline/loose", "secret/webdb", "secret/db", "job/AK"];
        let snapshot = d.snapshot();
        let (mut allowed, mut refused) = (0, 0);
        for caller in &callers {
            let judge = snapshot.judge(caller);
            for action in actions {
                for resource in resources {
                    let decided = snapshot.decide(caller, action, resource).is_allowed();
                    assert_eq!(judge.allows(action, resource), decided, "{} {action} {resource}", caller.user);
                    if decided { allowed += 1 } else { refused += 1 }
                }
            }
        }
        // Both answers occur, for the comparison to mean something.
        assert!(allowed > 20 && refused > 100, "{allowed} allowed, {refused} refused");
        assert!(!snapshot.judge(&caller("rel")).allows("codepipeline:StartPipelineExecution", "pipeline/prod-site"));
        assert!(snapshot.judge(&caller("rel")).allows("codepipeline:StartPipelineExecution", "pipeline/site"));
    }

    #[test]
    fn internal_principals_are_narrow() {
        let d = directory();
        let hook = Caller::new("webhook", Role::Operator).with_via(Via::Webhook);
        assert!(d.allows(&hook, "sluice:DeliverWebhook", "pipeline/site"));
        assert!(!d.allows(&hook, "codepipeline:StartPipelineExecution", "pipeline/site"));
        let job = Caller::new("job-key:AK", Role::Operator).with_via(Via::JobKey("AK".into()));
        assert!(d.allows(&job, "s3:GetObject", "job/AK"));
        assert!(!d.allows(&job, "codepipeline:GetPipeline", "pipeline/site"));
        // A named user called `admin` is not the built-in admin without its token's role.
        assert!(!d.allows(&Caller::new(ADMIN_USER, Role::Operator), "sluice:CreateUser", "user/x"));
        assert_eq!(from_arn("arn:aws:codepipeline:us-east-1:000000000000:web"), "pipeline/web");
    }
}
