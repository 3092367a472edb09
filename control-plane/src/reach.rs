//! Which networks' views a commit can change. A network's view is compiled
//! from the services of its service networks, the target groups they
//! forward to, those groups' networks' gateways, the services of any network
//! that forward to its own groups (what its gateways serve), and the
//! identities. A commit that changes none of those for a network leaves its
//! view as it was: the view is carried to the new revision without being
//! compiled, so a change costs what the networks it touches cost, not every
//! watched network's compilation. A network a commit does reach gets its
//! view patched with the services and target groups the commit changed
//! ([`crate::snapshot::patch`]).

use crate::snapshot::{Changed, forwards_to};
use crate::state::State;
use crate::store::Commit;
use std::collections::{BTreeSet, VecDeque};
use trellis_api::Kind;
use trellis_api::resource::Spec;

/// Most commits remembered; a view older than the oldest is compiled anew.
const REMEMBERED: usize = 4096;

/// The networks one commit reaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    All,
    /// Services and target groups changed, and the networks whose views
    /// they can change.
    Objects {
        networks: BTreeSet<String>,
        changed: Changed,
    },
}

impl Reach {
    /// What `commit`, taking `old` to `new`, reaches. Changes to networks,
    /// service networks, identities and keys, and commits that change no
    /// object (the daily key rotation), reach every network: they are rare,
    /// and what they touch is spread over the views.
    pub fn of(old: &State, new: &State, commit: &Commit) -> Reach {
        if !commit.keys_put.is_empty() || !commit.keys_delete.is_empty() {
            return Reach::All;
        }
        // Installation documents (tokens, the CA made at first start) are
        // in no view: a commit of only those reaches no network.
        if !commit.docs_put.is_empty() && commit.put.is_empty() && commit.delete.is_empty() {
            return Reach::Objects {
                networks: BTreeSet::new(),
                changed: Changed::default(),
            };
        }
        let mut networks = BTreeSet::new();
        let mut changed = Changed::default();
        for key in commit.put.iter().map(|(k, _)| k).chain(&commit.delete) {
            let Some((kind, name)) = key.split_once('/') else {
                return Reach::All;
            };
            match Kind::parse(kind) {
                Some(Kind::Service) => {
                    for state in [old, new] {
                        service(state, name, &mut networks);
                    }
                    changed.services.insert(name.to_string());
                }
                Some(Kind::TargetGroup) => {
                    for state in [old, new] {
                        if let Some(Spec::TargetGroup(tg)) =
                            state.get(Kind::TargetGroup, name).map(|o| &o.resource.spec)
                        {
                            networks.insert(tg.network.clone());
                        }
                    }
                    changed.target_groups.insert(name.to_string());
                }
                _ => return Reach::All,
            }
        }
        if changed.is_empty() {
            return Reach::All;
        }
        // Every network that sees a service forwarding to a changed group:
        // one pass over the services, however many groups changed.
        if !changed.target_groups.is_empty() {
            for state in [old, new] {
                for obj in state.list(Kind::Service) {
                    if let Spec::Service(s) = &obj.resource.spec {
                        if forwards_to(s).any(|t| changed.target_groups.contains(t)) {
                            service(state, obj.resource.name(), &mut networks);
                        }
                    }
                }
            }
        }
        Reach::Objects { networks, changed }
    }
}

/// The networks that see service `name` in `state`, and those hosting the
/// target groups it forwards to.
fn service(state: &State, name: &str, out: &mut BTreeSet<String>) {
    let Some(Spec::Service(s)) = state.get(Kind::Service, name).map(|o| &o.resource.spec) else {
        return;
    };
    for sn in &s.service_networks {
        if let Some(Spec::ServiceNetwork(sn)) = state
            .get(Kind::ServiceNetwork, sn)
            .map(|o| &o.resource.spec)
        {
            out.extend(sn.networks.iter().cloned());
        }
    }
    for tg in forwards_to(s) {
        if let Some(Spec::TargetGroup(tg)) =
            state.get(Kind::TargetGroup, tg).map(|o| &o.resource.spec)
        {
            out.insert(tg.network.clone());
        }
    }
}

/// The reach of the latest commits, by revision.
#[derive(Debug, Default)]
pub struct Log {
    commits: VecDeque<(u64, Reach)>,
}

impl Log {
    pub fn record(&mut self, revision: u64, reach: Reach) {
        if self.commits.len() == REMEMBERED {
            self.commits.pop_front();
        }
        self.commits.push_back((revision, reach));
    }

    /// What the commits after `since` up to `until` changed that
    /// `network`'s view can show (nothing when none reached it); `None`
    /// when one of them reached every network or is not remembered: the
    /// view is compiled whole.
    pub fn changes(&self, network: &str, since: u64, until: u64) -> Option<Changed> {
        let mut expected = since + 1;
        let mut out = Changed::default();
        for (revision, reach) in self
            .commits
            .iter()
            .filter(|(r, _)| *r > since && *r <= until)
        {
            if *revision != expected {
                return None;
            }
            match reach {
                Reach::All => return None,
                Reach::Objects { networks, changed } if networks.contains(network) => {
                    out.services.extend(changed.services.iter().cloned());
                    out.target_groups
                        .extend(changed.target_groups.iter().cloned());
                }
                Reach::Objects { .. } => {}
            }
            expected += 1;
        }
        (expected == until + 1).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn east(service: &str) -> Reach {
        Reach::Objects {
            networks: BTreeSet::from(["east".to_string()]),
            changed: changed(&[service]),
        }
    }

    fn changed(services: &[&str]) -> Changed {
        Changed {
            services: services.iter().map(|s| s.to_string()).collect(),
            target_groups: BTreeSet::new(),
        }
    }

    #[test]
    fn a_view_learns_what_changed_only_when_every_commit_since_is_known() {
        let mut log = Log::default();
        log.record(5, east("a"));
        log.record(
            6,
            Reach::Objects {
                networks: BTreeSet::new(),
                changed: changed(&["hidden"]),
            },
        );
        log.record(7, east("b"));
        assert_eq!(log.changes("west", 4, 7), Some(Changed::default()));
        assert_eq!(log.changes("east", 5, 6), Some(Changed::default()));
        assert_eq!(
            log.changes("east", 4, 7),
            Some(changed(&["a", "b"])),
            "what commits 5 and 7 changed; commit 6 missed east"
        );
        assert_eq!(log.changes("west", 3, 7), None, "commit 4 is not known");
        assert_eq!(log.changes("west", 7, 8), None, "commit 8 is not known");
        log.record(8, Reach::All);
        assert_eq!(log.changes("west", 7, 8), None, "commit 8 reached everyone");
        for r in 9..9 + REMEMBERED as u64 {
            log.record(r, east("c"));
        }
        assert_eq!(
            log.changes("west", 7, 8 + REMEMBERED as u64),
            None,
            "forgotten"
        );
        assert_eq!(
            log.changes("west", 9, 8 + REMEMBERED as u64),
            Some(Changed::default())
        );
    }
}
