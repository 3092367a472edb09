//! Which networks' views a commit can change. A network's view is compiled
//! from the services of its service networks, the target groups they
//! forward to, those groups' networks' gateways, the services of any network
//! that forward to its own groups (what its gateways serve), and the
//! identities. A commit that changes none of those for a network leaves its
//! view as it was: the view is carried to the new revision without being
//! compiled, so a change costs what the networks it touches cost, not every
//! watched network's compilation.

use crate::snapshot::forwards_to;
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
    Networks(BTreeSet<String>),
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
        let mut networks = BTreeSet::new();
        let mut objects = 0;
        for key in commit.put.iter().map(|(k, _)| k).chain(&commit.delete) {
            objects += 1;
            let Some((kind, name)) = key.split_once('/') else {
                return Reach::All;
            };
            match Kind::parse(kind) {
                Some(Kind::Service) => {
                    for state in [old, new] {
                        service(state, name, &mut networks);
                    }
                }
                Some(Kind::TargetGroup) => {
                    for state in [old, new] {
                        target_group(state, name, &mut networks);
                    }
                }
                _ => return Reach::All,
            }
        }
        if objects == 0 {
            return Reach::All;
        }
        Reach::Networks(networks)
    }

    pub fn reaches(&self, network: &str) -> bool {
        match self {
            Reach::All => true,
            Reach::Networks(n) => n.contains(network),
        }
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

/// The network of target group `name` in `state` and every network that
/// sees a service forwarding to it.
fn target_group(state: &State, name: &str, out: &mut BTreeSet<String>) {
    let Some(Spec::TargetGroup(tg)) = state.get(Kind::TargetGroup, name).map(|o| &o.resource.spec)
    else {
        return;
    };
    out.insert(tg.network.clone());
    for obj in state.list(Kind::Service) {
        if let Spec::Service(s) = &obj.resource.spec {
            if forwards_to(s).any(|t| t == name) {
                service(state, obj.resource.name(), out);
            }
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

    /// Whether no commit after `since` up to `until` reached `network`:
    /// false when one did, or when one of them is not remembered.
    pub fn untouched(&self, network: &str, since: u64, until: u64) -> bool {
        let mut expected = since + 1;
        for (revision, reach) in self
            .commits
            .iter()
            .filter(|(r, _)| *r > since && *r <= until)
        {
            if *revision != expected || reach.reaches(network) {
                return false;
            }
            expected += 1;
        }
        expected == until + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn east() -> Reach {
        Reach::Networks(BTreeSet::from(["east".to_string()]))
    }

    #[test]
    fn a_view_is_untouched_only_when_every_commit_since_is_known_and_missed_it() {
        let mut log = Log::default();
        log.record(5, east());
        log.record(6, Reach::Networks(BTreeSet::new()));
        assert!(log.untouched("west", 4, 6));
        assert!(log.untouched("east", 5, 6));
        assert!(!log.untouched("east", 4, 6), "commit 5 reached east");
        assert!(!log.untouched("west", 3, 6), "commit 4 is not known");
        assert!(!log.untouched("west", 6, 7), "commit 7 is not known");
        log.record(7, Reach::All);
        assert!(!log.untouched("west", 6, 7), "commit 7 reached everyone");
        for r in 8..8 + REMEMBERED as u64 {
            log.record(r, east());
        }
        assert!(
            !log.untouched("west", 6, 7 + REMEMBERED as u64),
            "forgotten"
        );
        assert!(log.untouched("west", 8, 7 + REMEMBERED as u64));
    }
}
