//! Per-repository access rules: who may pull, push or delete where.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Deserializer};

use crate::scope::{Access, Scope};

/// Something done to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Read manifests and blobs.
    Pull,
    /// Upload blobs and manifests.
    Push,
    /// Delete manifests, tags and blobs.
    Delete,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 3] = [Action::Pull, Action::Push, Action::Delete];

    /// `pull`, `push` or `delete`.
    pub fn parse(name: &str) -> Option<Action> {
        match name {
            "pull" => Some(Action::Pull),
            "push" => Some(Action::Push),
            "delete" => Some(Action::Delete),
            _ => None,
        }
    }

    /// The name in scopes and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Action::Pull => 1,
            Action::Push => 2,
            Action::Delete => 4,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of [`Action`]s. Deserialises from a list of `"pull"`, `"push"`, `"delete"` and `"*"`
/// (all three).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ActionSet(u8);

impl ActionSet {
    /// No action.
    pub const EMPTY: ActionSet = ActionSet(0);
    /// Every action.
    pub const ALL: ActionSet = ActionSet(7);

    /// Whether `action` is in the set.
    pub fn contains(self, action: Action) -> bool {
        self.0 & action.bit() != 0
    }

    /// The set with `action` added.
    pub fn with(self, action: Action) -> ActionSet {
        ActionSet(self.0 | action.bit())
    }

    /// Actions in either set.
    pub fn union(self, other: ActionSet) -> ActionSet {
        ActionSet(self.0 | other.0)
    }

    /// Actions in both sets.
    pub fn intersection(self, other: ActionSet) -> ActionSet {
        ActionSet(self.0 & other.0)
    }

    /// Whether every action of `self` is in `other`.
    pub fn is_subset(self, other: ActionSet) -> bool {
        self.0 & !other.0 == 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The actions, in `pull`, `push`, `delete` order.
    pub fn iter(self) -> impl Iterator<Item = Action> {
        Action::ALL.into_iter().filter(move |a| self.contains(*a))
    }

    /// The actions a token request names: `*` is all, unknown names add nothing.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> ActionSet {
        names.into_iter().fold(ActionSet::EMPTY, |set, name| {
            if name == "*" {
                ActionSet::ALL
            } else {
                Action::parse(name).map_or(set, |a| set.with(a))
            }
        })
    }
}

impl fmt::Debug for ActionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl serde::Serialize for ActionSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter().map(Action::as_str))
    }
}

impl<'de> Deserialize<'de> for ActionSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Unlike a token request, configuration names must all be known: a typo grants nothing
        // silently otherwise.
        let names = Vec::<String>::deserialize(d)?;
        names.iter().try_fold(ActionSet::EMPTY, |set, name| {
            if name == "*" {
                Ok(ActionSet::ALL)
            } else {
                Action::parse(name).map(|a| set.with(a)).ok_or_else(|| {
                    serde::de::Error::invalid_value(
                        serde::de::Unexpected::Str(name),
                        &"\"pull\", \"push\", \"delete\" or \"*\"",
                    )
                })
            }
        })
    }
}

/// One `[[access]]` rule: these subjects may do these actions on repositories matching these
/// patterns.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Repository patterns, `*` matching any run of characters (`/` included).
    pub repositories: Vec<String>,
    /// User names; `"*"` is any authenticated user.
    #[serde(default)]
    pub users: Vec<String>,
    /// Group names, defined in [`Groups`].
    #[serde(default)]
    pub groups: Vec<String>,
    /// Whether unauthenticated clients get these actions (and with them everyone else).
    #[serde(default)]
    pub anonymous: bool,
    /// The actions granted.
    pub actions: ActionSet,
}

/// Group name → member user names.
pub type Groups = BTreeMap<String, Vec<String>>;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Who {
    /// No credentials.
    Anonymous,
    /// An authenticated user (htpasswd, token subject, or client certificate name).
    User(String),
}

/// A rule that cannot be what was meant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A group not in the groups table.
    #[error("access rule {rule}: group {group:?} is not defined")]
    UnknownGroup {
        /// 1-based rule number.
        rule: usize,
        /// The group name.
        group: String,
    },
    /// `repositories = []`.
    #[error("access rule {rule}: no repositories")]
    NoRepositories {
        /// 1-based rule number.
        rule: usize,
    },
    /// No users, no groups and not anonymous.
    #[error("access rule {rule}: applies to nobody (no users, groups or anonymous)")]
    NoSubjects {
        /// 1-based rule number.
        rule: usize,
    },
    /// `actions = []`.
    #[error("access rule {rule}: no actions")]
    NoActions {
        /// 1-based rule number.
        rule: usize,
    },
}

/// The rules in force.
///
/// A grant is the union over every rule that matches the repository and the asker; nothing is
/// ever denied by a rule. A rule matches an authenticated user named in `users` (or any user
/// when `users` holds `"*"`), a member of one of its `groups`, or anyone at all when
/// `anonymous = true`: what anonymous clients may do, users may do too.
///
/// With no rules at all, every authenticated user may do everything and anonymous clients
/// nothing: turning on authentication without writing rules means "log in to use it".
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    rules: Vec<CompiledRule>,
}

#[derive(Debug, Clone)]
struct CompiledRule {
    repositories: Vec<String>,
    /// Users named directly or through groups.
    users: BTreeSet<String>,
    any_user: bool,
    anonymous: bool,
    actions: ActionSet,
}

impl AccessPolicy {
    /// Checks the rules against the groups and resolves group membership.
    pub fn new(rules: Vec<Rule>, groups: Groups) -> Result<AccessPolicy, PolicyError> {
        let mut compiled = Vec::with_capacity(rules.len());
        for (index, rule) in rules.into_iter().enumerate() {
            let number = index + 1;
            if rule.repositories.is_empty() {
                return Err(PolicyError::NoRepositories { rule: number });
            }
            if rule.users.is_empty() && rule.groups.is_empty() && !rule.anonymous {
                return Err(PolicyError::NoSubjects { rule: number });
            }
            if rule.actions.is_empty() {
                return Err(PolicyError::NoActions { rule: number });
            }
            let mut users: BTreeSet<String> = rule.users.iter().cloned().collect();
            for group in &rule.groups {
                let members = groups.get(group).ok_or_else(|| PolicyError::UnknownGroup {
                    rule: number,
                    group: group.clone(),
                })?;
                users.extend(members.iter().cloned());
            }
            compiled.push(CompiledRule {
                repositories: rule.repositories,
                any_user: users.contains("*"),
                users,
                anonymous: rule.anonymous,
                actions: rule.actions,
            });
        }
        Ok(AccessPolicy { rules: compiled })
    }

    /// Everything `who` may do on `repository`.
    pub fn granted(&self, who: &Who, repository: &str) -> ActionSet {
        if self.rules.is_empty() {
            return match who {
                Who::Anonymous => ActionSet::EMPTY,
                Who::User(_) => ActionSet::ALL,
            };
        }
        self.rules
            .iter()
            .filter(|rule| rule.applies_to(who))
            .filter(|rule| {
                rule.repositories
                    .iter()
                    .any(|pattern| ferry_policy::glob_match(pattern, repository))
            })
            .fold(ActionSet::EMPTY, |set, rule| set.union(rule.actions))
    }

    /// Whether `who` may do `action` on `repository`.
    pub fn allowed(&self, who: &Who, repository: &str, action: Action) -> bool {
        self.granted(who, repository).contains(action)
    }

    /// The `access` claim for a token request: each `repository` scope's requested actions that
    /// are granted. Scopes of other types, and scopes of which nothing is granted, are left out.
    pub fn grant(&self, who: &Who, scopes: &[Scope]) -> Vec<Access> {
        scopes
            .iter()
            .filter(|scope| scope.kind == "repository")
            .filter_map(|scope| {
                let requested = ActionSet::from_names(scope.actions.iter().map(String::as_str));
                let granted = requested.intersection(self.granted(who, &scope.name));
                (!granted.is_empty()).then(|| Access {
                    kind: "repository".to_owned(),
                    name: scope.name.clone(),
                    actions: granted.iter().map(|a| a.as_str().to_owned()).collect(),
                })
            })
            .collect()
    }
}

impl CompiledRule {
    fn applies_to(&self, who: &Who) -> bool {
        self.anonymous
            || match who {
                Who::Anonymous => false,
                Who::User(name) => self.any_user || self.users.contains(name),
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::parse_scopes;
    use proptest::prelude::*;

    fn rule(
        repos: &[&str],
        users: &[&str],
        groups: &[&str],
        anonymous: bool,
        actions: &[&str],
    ) -> Rule {
        Rule {
            repositories: repos.iter().map(|s| s.to_string()).collect(),
            users: users.iter().map(|s| s.to_string()).collect(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
            anonymous,
            actions: ActionSet::from_names(actions.iter().copied()),
        }
    }

    fn groups() -> Groups {
        Groups::from([
            ("dev".to_string(), vec!["alice".to_string()]),
            (
                "ops".to_string(),
                vec!["bob".to_string(), "carol".to_string()],
            ),
        ])
    }

    fn user(name: &str) -> Who {
        Who::User(name.to_string())
    }

    #[test]
    fn union_of_matching_rules() {
        let policy = AccessPolicy::new(
            vec![
                rule(&["public/*"], &[], &[], true, &["pull"]),
                rule(&["team/*"], &[], &["dev"], false, &["pull", "push"]),
                rule(&["*"], &["root"], &[], false, &["*"]),
                rule(&["team/app"], &["*"], &[], false, &["pull"]),
            ],
            groups(),
        )
        .expect("valid");
        let all = ActionSet::ALL;
        let pull = ActionSet::EMPTY.with(Action::Pull);
        assert_eq!(policy.granted(&Who::Anonymous, "public/x"), pull);
        assert_eq!(policy.granted(&Who::Anonymous, "team/x"), ActionSet::EMPTY);
        assert_eq!(policy.granted(&user("bob"), "public/x"), pull);
        assert_eq!(
            policy.granted(&user("alice"), "team/x"),
            pull.with(Action::Push)
        );
        assert!(!policy.allowed(&user("alice"), "team/x", Action::Delete));
        assert_eq!(policy.granted(&user("root"), "anything/at/all"), all);
        assert_eq!(policy.granted(&user("dave"), "team/app"), pull);
        assert_eq!(
            policy.granted(&user("dave"), "team/other"),
            ActionSet::EMPTY
        );
    }

    #[test]
    fn no_rules_means_users_do_everything() {
        let policy = AccessPolicy::new(vec![], Groups::new()).expect("valid");
        assert_eq!(policy.granted(&user("x"), "a"), ActionSet::ALL);
        assert_eq!(policy.granted(&Who::Anonymous, "a"), ActionSet::EMPTY);
    }

    #[test]
    fn rules_that_cannot_be_meant() {
        let cases = [
            (
                rule(&["*"], &[], &["nope"], false, &["pull"]),
                "group \"nope\" is not defined",
            ),
            (rule(&[], &["a"], &[], false, &["pull"]), "no repositories"),
            (
                rule(&["*"], &[], &[], false, &["pull"]),
                "applies to nobody",
            ),
            (rule(&["*"], &["a"], &[], false, &[]), "no actions"),
        ];
        for (r, message) in cases {
            let err = AccessPolicy::new(
                vec![rule(&["*"], &["a"], &[], false, &["pull"]), r],
                groups(),
            )
            .expect_err(message);
            assert!(err.to_string().starts_with("access rule 2: "), "{err}");
            assert!(err.to_string().contains(message), "{err}");
        }
    }

    #[test]
    fn deserialises_strictly() {
        let r: Rule = serde_json::from_str(
            r#"{"repositories":["a/*"],"groups":["dev"],"actions":["pull","*"]}"#,
        )
        .expect("rule");
        assert_eq!(r.actions, ActionSet::ALL);
        assert!(!r.anonymous);
        assert!(
            serde_json::from_str::<Rule>(r#"{"repositories":["a"],"actions":["pul"]}"#).is_err()
        );
        assert!(
            serde_json::from_str::<Rule>(
                r#"{"repositories":["a"],"actions":["pull"],"user":["x"]}"#
            )
            .is_err()
        );
    }

    #[test]
    fn token_grants_intersect_requests() {
        let policy = AccessPolicy::new(
            vec![rule(&["a/*"], &["alice"], &[], false, &["pull", "push"])],
            Groups::new(),
        )
        .expect("valid");
        let scopes = parse_scopes(
            "repository:a/b:pull,push,delete repository:c:pull registry:catalog:* repository(plugin):a/p:*,frob",
        )
        .expect("scopes");
        let granted = policy.grant(&user("alice"), &scopes);
        let summary: Vec<_> = granted
            .iter()
            .map(|a| format!("{}:{}:{}", a.kind, a.name, a.actions.join(",")))
            .collect();
        assert_eq!(
            summary,
            ["repository:a/b:pull,push", "repository:a/p:pull,push"]
        );
        assert!(policy.grant(&Who::Anonymous, &scopes).is_empty());
    }

    fn arb_rule() -> impl Strategy<Value = Rule> {
        let repos = proptest::sample::subsequence(vec!["*", "a/*", "a/b", "b*", "*/c"], 1..3);
        let users = proptest::sample::subsequence(vec!["alice", "bob", "*"], 0..2);
        let groups = proptest::sample::subsequence(vec!["dev", "ops"], 0..2);
        let actions = proptest::sample::subsequence(vec!["pull", "push", "delete", "*"], 1..3);
        (repos, users, groups, any::<bool>(), actions).prop_map(|(r, u, g, anonymous, a)| {
            // Every generated rule applies to someone.
            rule(&r, &u, &g, anonymous || (u.is_empty() && g.is_empty()), &a)
        })
    }

    fn arb_who() -> impl Strategy<Value = Who> {
        prop_oneof![
            Just(Who::Anonymous),
            proptest::sample::select(vec!["alice", "bob", "carol", "dave"]).prop_map(user),
        ]
    }

    const REPOS: [&str; 6] = ["a/b", "a/c", "b", "b/c", "c", "a/b/c"];

    proptest! {
        #[test]
        fn adding_a_rule_never_removes_a_permission(
            rules in proptest::collection::vec(arb_rule(), 1..5),
            extra in arb_rule(),
            who in arb_who(),
        ) {
            let before = AccessPolicy::new(rules.clone(), groups()).expect("valid");
            let mut more = rules;
            more.push(extra);
            let after = AccessPolicy::new(more, groups()).expect("valid");
            for repo in REPOS {
                prop_assert!(before.granted(&who, repo).is_subset(after.granted(&who, repo)));
            }
        }

        #[test]
        fn anonymous_gets_only_anonymous_grants(rules in proptest::collection::vec(arb_rule(), 1..6)) {
            let policy = AccessPolicy::new(rules.clone(), groups()).expect("valid");
            for repo in REPOS {
                let anonymous_grants = rules
                    .iter()
                    .filter(|r| r.anonymous && r.repositories.iter().any(|p| ferry_policy::glob_match(p, repo)))
                    .fold(ActionSet::EMPTY, |set, r| set.union(r.actions));
                prop_assert!(policy.granted(&Who::Anonymous, repo).is_subset(anonymous_grants));
                // And users keep what anonymous clients have.
                prop_assert!(anonymous_grants.is_subset(policy.granted(&user("dave"), repo)));
            }
        }
    }
}
