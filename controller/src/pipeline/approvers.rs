//! `Approvers` of a manual approval (issue 15, gov): who may decide, as a
//! comma-separated list of `user:NAME`, `team:NAME` and `role:NAME`
//! (`user:ann, team:release, role:approver`). Without it, anyone allowed
//! to call PutApprovalResult on the action may decide.
//!
//! Names are checked for their form when a declaration is validated, not
//! for existence: a team may be made, or a user join it, after the
//! pipeline; membership counts when a decision is made.
//!
//! Pure: the engine asks [`eligible`] with the decider's teams and roles,
//! which the driver reads from the directory.

/// One entry of `Approvers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approver {
    User(String),
    Team(String),
    Role(String),
}

impl Approver {
    /// `user:ann`, `team:release`, `role:approver`.
    pub fn as_text(&self) -> String {
        match self {
            Self::User(n) => format!("user:{n}"),
            Self::Team(n) => format!("team:{n}"),
            Self::Role(n) => format!("role:{n}"),
        }
    }
}

/// The most entries an `Approvers` list may have.
pub const MAX_APPROVERS: usize = 50;

/// Parses `Approvers`; every problem at once.
pub fn parse(text: &str) -> Result<Vec<Approver>, Vec<String>> {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for item in text.split(',').map(str::trim) {
        if item.is_empty() {
            problems
                .push("Approvers has an empty entry: give user:NAME, team:NAME or role:NAME, separated by commas".into());
            continue;
        }
        let parsed = match item.split_once(':') {
            Some(("user", name)) => Approver::User(name.trim().to_string()),
            Some(("team", name)) => Approver::Team(name.trim().to_string()),
            Some(("role", name)) => Approver::Role(name.trim().to_string()),
            _ => {
                problems.push(format!("Approvers entry {item:?} is not user:NAME, team:NAME or role:NAME"));
                continue;
            }
        };
        let name = match &parsed {
            Approver::User(n) | Approver::Team(n) | Approver::Role(n) => n,
        };
        if let Err(why) = crate::auth::check_user_name(name) {
            problems.push(format!("Approvers entry {item:?}: {}", why.replacen("user name", "name", 1)));
            continue;
        }
        if !found.contains(&parsed) {
            found.push(parsed);
        }
    }
    if found.len() > MAX_APPROVERS {
        problems.push(format!("Approvers names {} entries, more than {MAX_APPROVERS}", found.len()));
    }
    if problems.is_empty() { Ok(found) } else { Err(problems) }
}

/// With `RequiredApprovals` N: an `Approvers` list of users only must name
/// at least N of them, or the approval could never pass. With a team or a
/// role in it, how many people it names is known only when deciding.
pub fn check_enough(approvers: &[Approver], required: u32) -> Result<(), String> {
    let users = approvers.iter().filter(|a| matches!(a, Approver::User(_))).count();
    if users == approvers.len() && (users as u64) < u64::from(required) {
        return Err(format!(
            "RequiredApprovals is {required} but Approvers names only {users} user{}: the approval could never pass",
            if users == 1 { "" } else { "s" }
        ));
    }
    Ok(())
}

/// Who is deciding: the user and the teams and roles they hold, as
/// `team:NAME` and `role:NAME`.
#[derive(Debug, Clone, Copy)]
pub struct Decider<'a> {
    pub user: &'a str,
    pub member_of: &'a [String],
}

/// Whether `decider` is among `approvers` (the declared text); an empty
/// list names everyone. A list that does not parse (it was validated when
/// stored) names nobody.
pub fn eligible(approvers: &str, decider: &Decider<'_>) -> bool {
    if approvers.trim().is_empty() {
        return true;
    }
    let Ok(list) = parse(approvers) else { return false };
    list.iter().any(|a| match a {
        Approver::User(name) => name == decider.user,
        other => decider.member_of.iter().any(|m| *m == other.as_text()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approvers_parse_with_every_problem_named() {
        let list = parse(" user:ann, team:release,role:approver,user:ann").unwrap();
        assert_eq!(
            list,
            [Approver::User("ann".into()), Approver::Team("release".into()), Approver::Role("approver".into())]
        );
        let problems = parse("ann,,group:x,user:a b").unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("\"ann\" is not user:NAME"), "{problems:?}");
        assert!(problems[1].contains("empty entry"), "{problems:?}");
        assert!(problems[3].contains("may contain only"), "{problems:?}");
    }

    #[test]
    fn n_of_m_must_be_possible_when_only_users_are_named() {
        let users = parse("user:ann,user:bob").unwrap();
        assert!(check_enough(&users, 2).is_ok());
        assert_eq!(
            check_enough(&users, 3).unwrap_err(),
            "RequiredApprovals is 3 but Approvers names only 2 users: the approval could never pass"
        );
        assert!(check_enough(&parse("user:ann,team:release").unwrap(), 5).is_ok());
    }

    #[test]
    fn eligibility_follows_users_teams_and_roles() {
        let member_of = ["team:release".to_string(), "role:developer".to_string()];
        let cy = Decider { user: "cy", member_of: &member_of };
        assert!(eligible("", &cy));
        assert!(eligible("team:release", &cy));
        assert!(eligible("user:ann, role:developer", &cy));
        assert!(!eligible("user:ann,team:ops", &cy));
        let ann = Decider { user: "ann", member_of: &[] };
        assert!(eligible("user:ann,team:ops", &ann));
        assert!(!eligible("garbage", &ann));
    }
}
