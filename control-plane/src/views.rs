//! One network's compiled view and what changed in it: the answers to
//! watches. Every item of the view (a service, a target group, an
//! identity...) is stamped with the revision at which it last changed, and
//! the names of removed items are remembered for a while, so a watcher that
//! holds revision R gets only what was stamped after R: a delta whose size
//! follows the change, not the network. A watcher older than what is
//! remembered, or one a delta would not save much for, gets the whole view.
//!
//! Each answer is encoded once per revision, whatever the number of
//! watchers asking for it, and compressed once, when someone first accepts
//! gzip.

use crate::SnapshotView;
use bytes::Bytes;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::{Arc, Mutex};
use trellis_api::delta::{Changes, Delta, Digests, Gateways, ItemDigest, Keyed, item_digest};
use trellis_api::snapshot::Snapshot;

/// Most removals remembered per network; a watcher from before the oldest
/// one gets the whole view.
const MAX_REMOVALS: usize = 4096;
/// Most deltas kept encoded per view (watchers usually hold one or two
/// revisions).
const MAX_DELTAS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Collection {
    Services,
    ServiceNetworks,
    TargetGroups,
    Gateways,
    Identities,
    Inbound,
}

/// Per collection, in the snapshot's order: the revision each item last
/// changed at.
#[derive(Clone, Default)]
struct Stamps {
    services: Vec<u64>,
    service_networks: Vec<u64>,
    target_groups: Vec<u64>,
    gateways: Vec<u64>,
    identities: Vec<u64>,
    inbound: Vec<u64>,
}

#[derive(Clone)]
struct Removal {
    at: u64,
    collection: Collection,
    name: String,
}

/// What a watcher is sent: a whole snapshot or a delta, encoded.
pub struct Encoded {
    pub delta: bool,
    pub plain: Bytes,
    gzip: tokio::sync::OnceCell<Bytes>,
}

impl Encoded {
    fn new(plain: Vec<u8>, delta: bool) -> Arc<Encoded> {
        Arc::new(Encoded {
            delta,
            plain: Bytes::from(plain),
            gzip: tokio::sync::OnceCell::new(),
        })
    }

    /// The body gzip-compressed, compressed by the first caller only.
    pub async fn gzip(&self) -> Bytes {
        self.gzip
            .get_or_init(|| async {
                let plain = self.plain.clone();
                tokio::task::spawn_blocking(move || gzip(&plain))
                    .await
                    .unwrap_or_default()
            })
            .await
            .clone()
    }
}

fn gzip(plain: &[u8]) -> Bytes {
    // Fast compression: a full view is megabytes and watchers wait for it;
    // level 1 already shrinks snapshot JSON about tenfold.
    let mut out = flate2::write::GzEncoder::new(
        Vec::with_capacity(plain.len() / 8),
        flate2::Compression::fast(),
    );
    match out.write_all(plain).and_then(|()| out.finish()) {
        Ok(v) => Bytes::from(v),
        Err(_) => Bytes::new(),
    }
}

/// One network's view at one revision.
pub struct View {
    /// The state revision it was compiled from.
    pub compiled_at: u64,
    /// The UTC day its signing keys were derived for.
    pub day: i64,
    /// Revision = the revision at which its content last changed.
    snapshot: Arc<Snapshot>,
    stamps: Stamps,
    /// Each item's digest, as nodes are sent it and as DNS servers are
    /// (secrets as fingerprints): kept for unchanged items, so a change
    /// hashes what it changed.
    items: Digests,
    public_items: Digests,
    removals: VecDeque<Removal>,
    /// The oldest revision a delta can start from.
    horizon: u64,
    full_digest: String,
    public_digest: String,
    /// The whole view, encoded when a watcher first needs it (most
    /// revisions are only ever sent as deltas), shared with the views it is
    /// carried to.
    full: Arc<tokio::sync::OnceCell<Arc<Encoded>>>,
    public: Arc<tokio::sync::OnceCell<Arc<Encoded>>>,
    /// Per (revision held, view): the delta, or `None` when the whole view
    /// is sent instead; made once.
    deltas: Mutex<HashMap<(u64, SnapshotView), DeltaCell>>,
}

type DeltaCell = Arc<tokio::sync::OnceCell<Option<Arc<Encoded>>>>;

/// One collection of a view followed from the previous view's: the stamps
/// and digests of its items, kept for items equal to the previous ones and
/// made anew for the others.
struct Followed {
    stamps: Vec<u64>,
    items: Vec<ItemDigest>,
    public_items: Vec<ItemDigest>,
}

/// The previous view's side of one collection: items, stamps, digests.
type Previous<'a, T> = (&'a [T], &'a [u64], &'a [ItemDigest], &'a [ItemDigest]);

impl View {
    /// The view of `snapshot`, compiled from the state at `revision`,
    /// following `previous` (the same network's last view): items equal to
    /// the previous ones keep their stamps and digests, and if nothing
    /// changed the view keeps its revision and its encodings.
    pub fn next(previous: Option<&View>, snapshot: Snapshot, revision: u64, day: i64) -> View {
        View::next_bounded(previous, snapshot, revision, day, MAX_REMOVALS)
    }

    /// [`View::next`] remembering at most `max_removals` removals.
    fn next_bounded(
        previous: Option<&View>,
        mut snapshot: Snapshot,
        revision: u64,
        day: i64,
        max_removals: usize,
    ) -> View {
        let mut removed = Vec::new();
        macro_rules! follow {
            ($field:ident, $collection:expr) => {
                follow(
                    previous.map(|p| {
                        (
                            &p.snapshot.$field[..],
                            &p.stamps.$field[..],
                            &p.items.$field[..],
                            &p.public_items.$field[..],
                        )
                    }),
                    &snapshot.$field,
                    revision,
                    $collection,
                    &mut removed,
                )
            };
        }
        let services = follow!(services, Collection::Services);
        let service_networks = follow!(service_networks, Collection::ServiceNetworks);
        let target_groups = follow!(target_groups, Collection::TargetGroups);
        let identities = follow!(identities, Collection::Identities);
        let inbound = follow!(inbound, Collection::Inbound);
        let old_gateways = previous.map(|p| p.snapshot.gateway_items());
        let gateways = follow(
            previous.zip(old_gateways.as_deref()).map(|(p, g)| {
                (
                    g,
                    &p.stamps.gateways[..],
                    &p.items.gateways[..],
                    &p.public_items.gateways[..],
                )
            }),
            &snapshot.gateway_items(),
            revision,
            Collection::Gateways,
            &mut removed,
        );
        let parts = [
            services,
            service_networks,
            target_groups,
            gateways,
            identities,
            inbound,
        ];
        let [
            services,
            service_networks,
            target_groups,
            gateways,
            identities,
            inbound,
        ] = parts.map(|f| (f.stamps, f.items, f.public_items));
        let stamps = Stamps {
            services: services.0,
            service_networks: service_networks.0,
            target_groups: target_groups.0,
            gateways: gateways.0,
            identities: identities.0,
            inbound: inbound.0,
        };
        let items = Digests {
            services: services.1,
            service_networks: service_networks.1,
            target_groups: target_groups.1,
            gateways: gateways.1,
            identities: identities.1,
            inbound: inbound.1,
        };
        let public_items = Digests {
            services: services.2,
            service_networks: service_networks.2,
            target_groups: target_groups.2,
            gateways: gateways.2,
            identities: identities.2,
            inbound: inbound.2,
        };
        let (mut removals, mut horizon) = match previous {
            None => (VecDeque::new(), revision),
            Some(prev) => {
                let old = &*prev.snapshot;
                let changed = !removed.is_empty()
                    || old.region != snapshot.region
                    || old.dns_zone != snapshot.dns_zone
                    || old.vip_pools != snapshot.vip_pools
                    || stamps.iter().any(|s| s == revision);
                if !changed {
                    return prev.carried(revision, day);
                }
                (prev.removals.clone(), prev.horizon)
            }
        };
        removals.extend(removed.into_iter().map(|(collection, name)| Removal {
            at: revision,
            collection,
            name,
        }));
        while removals.len() > max_removals {
            if let Some(r) = removals.pop_front() {
                horizon = horizon.max(r.at);
            }
        }
        snapshot.revision = revision;
        View {
            compiled_at: revision,
            day,
            full_digest: snapshot.digest_with(&items),
            public_digest: snapshot.digest_with(&public_items),
            snapshot: Arc::new(snapshot),
            stamps,
            items,
            public_items,
            removals,
            horizon,
            full: Arc::default(),
            public: Arc::default(),
            deltas: Mutex::new(HashMap::new()),
        }
    }

    /// This view, unchanged, as compiled at `revision` (on `day`): same
    /// content revision, same bodies, same deltas.
    pub fn carried(&self, revision: u64, day: i64) -> View {
        View {
            compiled_at: revision,
            day,
            snapshot: self.snapshot.clone(),
            stamps: self.stamps.clone(),
            items: self.items.clone(),
            public_items: self.public_items.clone(),
            removals: self.removals.clone(),
            horizon: self.horizon,
            full_digest: self.full_digest.clone(),
            public_digest: self.public_digest.clone(),
            full: self.full.clone(),
            public: self.public.clone(),
            deltas: Mutex::new(
                self.deltas
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
            ),
        }
    }

    /// The snapshot it serves.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// How many services it holds.
    pub fn services(&self) -> usize {
        self.snapshot.services.len()
    }

    /// The revision at which the view's content last changed.
    pub fn revision(&self) -> u64 {
        self.snapshot.revision
    }

    /// What a watcher holding `since` (if it takes deltas) is sent in
    /// `view`: a delta when one is possible and worth it, else the whole
    /// snapshot.
    pub async fn answer(
        self: &Arc<Self>,
        since: Option<u64>,
        view: SnapshotView,
    ) -> Result<Arc<Encoded>, serde_json::Error> {
        if let Some(since) = since {
            // Single flight: ten thousand watchers woken by one change wait
            // for one encoding of their delta instead of each making it.
            let cell = {
                let mut deltas = self.deltas.lock().unwrap_or_else(|e| e.into_inner());
                if deltas.len() >= MAX_DELTAS && !deltas.contains_key(&(since, view)) {
                    deltas.clear();
                }
                deltas.entry((since, view)).or_default().clone()
            };
            let delta = cell
                .get_or_try_init(|| async {
                    let this = self.clone();
                    tokio::task::spawn_blocking(move || {
                        let Some(mut delta) = this.delta(since) else {
                            return Ok(None);
                        };
                        let plain = match view {
                            SnapshotView::Full => serde_json::to_vec(&delta)?,
                            SnapshotView::Public => {
                                delta.digest.clone_from(&this.public_digest);
                                trellis_api::secret::to_vec_shown(&delta)?
                            }
                        };
                        Ok(Some(Encoded::new(plain, true)))
                    })
                    .await
                    .unwrap_or_else(|e| Err(serde::ser::Error::custom(e)))
                })
                .await?;
            if let Some(delta) = delta {
                return Ok(delta.clone());
            }
        }
        let cell = match view {
            SnapshotView::Full => &self.full,
            SnapshotView::Public => &self.public,
        };
        cell.get_or_try_init(|| async {
            let snapshot = self.snapshot.clone();
            tokio::task::spawn_blocking(move || {
                let plain = match view {
                    SnapshotView::Full => serde_json::to_vec(&*snapshot)?,
                    SnapshotView::Public => trellis_api::secret::to_vec_shown(&*snapshot)?,
                };
                Ok(Encoded::new(plain, false))
            })
            .await
            .unwrap_or_else(|e| Err(serde::ser::Error::custom(e)))
        })
        .await
        .cloned()
    }

    /// What changed after `since`, or `None` when the whole view must be
    /// sent (`since` is older than the removals remembered, or not older
    /// than the view) or is as good (more than half of it changed).
    fn delta(&self, since: u64) -> Option<Delta> {
        let s = &*self.snapshot;
        if since < self.horizon || since >= s.revision {
            return None;
        }
        let mut delta = Delta {
            network: s.network.clone(),
            base: since,
            revision: s.revision,
            digest: self.full_digest.clone(),
            region: s.region.clone(),
            dns_zone: s.dns_zone.clone(),
            vip_pools: s.vip_pools.clone(),
            services: changed(&s.services, &self.stamps.services, since),
            service_networks: changed(&s.service_networks, &self.stamps.service_networks, since),
            target_groups: changed(&s.target_groups, &self.stamps.target_groups, since),
            gateways: changed(&s.gateway_items(), &self.stamps.gateways, since),
            identities: changed(&s.identities, &self.stamps.identities, since),
            inbound: changed(&s.inbound, &self.stamps.inbound, since),
        };
        for r in self.removals.iter().filter(|r| r.at > since) {
            let removed = match r.collection {
                Collection::Services => &mut delta.services.removed,
                Collection::ServiceNetworks => &mut delta.service_networks.removed,
                Collection::TargetGroups => &mut delta.target_groups.removed,
                Collection::Gateways => &mut delta.gateways.removed,
                Collection::Identities => &mut delta.identities.removed,
                Collection::Inbound => &mut delta.inbound.removed,
            };
            removed.push(r.name.clone());
        }
        let items = self.stamps.iter().count();
        (delta.len() * 2 <= items.max(1)).then_some(delta)
    }
}

impl Stamps {
    fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        [
            &self.services,
            &self.service_networks,
            &self.target_groups,
            &self.gateways,
            &self.identities,
            &self.inbound,
        ]
        .into_iter()
        .flatten()
        .copied()
    }
}

/// Equality that need not look inside an item the view shares with the
/// previous one: a patched view shares every item its changes did not
/// reach.
trait Same {
    fn same(&self, other: &Self) -> bool;
}

impl<T: PartialEq> Same for Arc<T> {
    fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(self, other) || self == other
    }
}

impl Same for Gateways {
    fn same(&self, other: &Self) -> bool {
        self == other
    }
}

/// One collection followed from the previous view (`old`: items, stamps and
/// digests, sorted by name): an item equal to the old one keeps its stamp
/// and digests, any other is stamped `revision` and hashed; names only in
/// `old` are pushed to `removed`.
fn follow<T: Keyed + Same + Serialize>(
    old: Option<Previous<'_, T>>,
    new: &[T],
    revision: u64,
    collection: Collection,
    removed: &mut Vec<(Collection, String)>,
) -> Followed {
    let (old, stamps, items, public_items) = old.unwrap_or((&[], &[], &[], &[]));
    let mut out = Followed {
        stamps: Vec::with_capacity(new.len()),
        items: Vec::with_capacity(new.len()),
        public_items: Vec::with_capacity(new.len()),
    };
    let mut o = 0;
    for item in new {
        while o < old.len() && old[o].key() < item.key() {
            removed.push((collection, old[o].key().to_string()));
            o += 1;
        }
        let same = o < old.len() && old[o].key() == item.key();
        let kept = (same && old[o].same(item))
            .then(|| Some((*stamps.get(o)?, *items.get(o)?, *public_items.get(o)?)))
            .flatten();
        let (stamp, digest, public) =
            kept.unwrap_or_else(|| (revision, item_digest(item, false), item_digest(item, true)));
        out.stamps.push(stamp);
        out.items.push(digest);
        out.public_items.push(public);
        if same {
            o += 1;
        }
    }
    removed.extend(old[o..].iter().map(|x| (collection, x.key().to_string())));
    out
}

/// The items stamped after `since`.
fn changed<T: Clone>(items: &[T], stamps: &[u64], since: u64) -> Changes<T> {
    Changes {
        put: items
            .iter()
            .zip(stamps)
            .filter(|&(_, &at)| at > since)
            .map(|(x, _)| x.clone())
            .collect(),
        removed: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reach::Reach;
    use crate::snapshot::{Scope, compile, patch};
    use crate::state::{Settings, State};
    use crate::store::Commit;
    use proptest::prelude::*;
    use serde_json::{Value, json};
    use trellis_api::Kind;

    fn settings() -> Settings {
        Settings {
            zone: "trellis.internal".into(),
            vip_pool_v4: "169.254.171.0/24".parse().unwrap(),
            vip_pool_v6: "fd00:7472:6c73::/112".parse().unwrap(),
            vip_hold_secs: 900,
            max_state_bytes: usize::MAX,
        }
    }

    fn doc(kind: &str, name: &str, spec: Value) -> Value {
        json!({"apiVersion": "trellis.dev/v1alpha1", "kind": kind,
            "metadata": {"name": name}, "spec": spec})
    }

    /// A change an operator makes; the property runs random sequences.
    #[derive(Clone, Debug)]
    enum Op {
        /// Service `i` forwards to groups `a` and `b` with weights.
        Service {
            i: u8,
            a: u8,
            b: u8,
            w: u8,
            signed: bool,
            other_sn: bool,
        },
        DeleteService(u8),
        Group {
            j: u8,
            port: u16,
            west: bool,
        },
        DeleteGroup(u8),
        /// Which networks service network `shop` spans.
        Shop {
            west: bool,
        },
        Identity {
            k: u8,
            team: u8,
        },
        DeleteIdentity(u8),
        Gateway {
            port: u16,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..5u8, 0..4u8, 0..4u8, 0..=100u8, any::<bool>(), any::<bool>()).prop_map(
                |(i, a, b, w, signed, other_sn)| Op::Service { i, a, b, w, signed, other_sn }
            ),
            1 => (0..5u8).prop_map(Op::DeleteService),
            2 => (0..4u8, 8000..8003u16, any::<bool>())
                .prop_map(|(j, port, west)| Op::Group { j, port, west }),
            1 => (0..4u8).prop_map(Op::DeleteGroup),
            1 => any::<bool>().prop_map(|west| Op::Shop { west }),
            1 => (0..3u8, 0..3u8).prop_map(|(k, team)| Op::Identity { k, team }),
            1 => (0..3u8).prop_map(Op::DeleteIdentity),
            1 => (9000..9003u16).prop_map(|port| Op::Gateway { port }),
        ]
    }

    fn step(state: &State, op: &Op, s: &Settings) -> State {
        step_commit(state, op, s).0
    }

    /// [`step`] and its commit, if it changed anything.
    fn step_commit(state: &State, op: &Op, s: &Settings) -> (State, Option<Commit>) {
        let deleted = |r: Result<(State, Commit), _>| {
            r.map_or_else(|_| (state.clone(), None), |(s, c)| (s, Some(c)))
        };
        let docs = match op {
            Op::Service {
                i,
                a,
                b,
                w,
                signed,
                other_sn,
            } => vec![doc(
                "Service",
                &format!("s{i}"),
                json!({"serviceNetworks": [if *other_sn { "other" } else { "shop" }],
                    "authType": if *signed { "SIGV4" } else { "NONE" },
                    "listeners": [{"name": "web", "protocol": "HTTP", "defaultAction": {"forward": [
                        {"targetGroup": format!("g{a}"), "weight": w},
                        {"targetGroup": format!("g{b}"), "weight": 100 - w}]}}]}),
            )],
            Op::Group { j, port, west } => vec![doc(
                "TargetGroup",
                &format!("g{j}"),
                json!({"network": if *west { "west" } else { "east" }, "port": port,
                    "targets": [{"address": "10.0.0.1"}]}),
            )],
            Op::Shop { west } => vec![doc(
                "ServiceNetwork",
                "shop",
                json!({"networks": if *west { json!(["east", "west"]) } else { json!(["east"]) }}),
            )],
            Op::Identity { k, team } => vec![doc(
                "Identity",
                &format!("id{k}"),
                json!({"tags": {"team": format!("t{team}")}}),
            )],
            Op::Gateway { port } => vec![doc(
                "Network",
                "west",
                json!({"gateways": [{"address": format!("10.9.0.1:{port}")}]}),
            )],
            Op::DeleteService(i) => {
                return deleted(state.delete(Kind::Service, &format!("s{i}"), 0));
            }
            Op::DeleteGroup(j) => {
                return deleted(state.delete(Kind::TargetGroup, &format!("g{j}"), 0));
            }
            Op::DeleteIdentity(k) => {
                return deleted(state.delete(Kind::Identity, &format!("id{k}"), 0));
            }
        };
        state
            .apply(&docs, s, 0, false)
            .map_or_else(|_| (state.clone(), None), |a| (a.state, a.commit))
    }

    /// [`step`] that must change the state.
    fn must(state: &State, op: &Op, s: &Settings) -> State {
        let next = step(state, op, s);
        assert!(next.revision > state.revision, "{op:?} was refused");
        next
    }

    fn base(s: &Settings) -> State {
        let docs = vec![
            doc("Network", "east", json!({})),
            doc(
                "Network",
                "west",
                json!({"gateways": [{"address": "10.9.0.1:9000"}]}),
            ),
            doc("ServiceNetwork", "shop", json!({"networks": ["east"]})),
            doc("ServiceNetwork", "other", json!({"networks": ["west"]})),
        ];
        State::empty(s).apply(&docs, s, 0, false).unwrap().state
    }

    fn scope(network: &str) -> Scope<'_> {
        Scope {
            network,
            zone: "trellis.internal",
            region: "us-east-1",
            day: 20_000,
            trellis_ca: "",
        }
    }

    /// `network`'s snapshot of `state`, as the control plane compiles it.
    fn compiled(state: &State, network: &str) -> Snapshot {
        compile(state, &scope(network)).unwrap()
    }

    fn view(state: &State, previous: Option<&View>, network: &str, max_removals: usize) -> View {
        View::next_bounded(
            previous,
            compiled(state, network),
            state.revision,
            20_000,
            max_removals,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Whatever the changes (deletes, references moved to other groups,
        /// services moving between service networks, identities, gateways),
        /// a holder of any earlier revision that is sent a delta arrives at
        /// exactly the whole snapshot of the current one; one older than
        /// what is remembered is sent the whole snapshot.
        #[test]
        fn deltas_lead_to_the_whole_snapshot(ops in proptest::collection::vec(op(), 1..24)) {
            let s = settings();
            let mut state = base(&s);
            for network in ["east", "west"] {
                let mut held: Vec<Arc<Snapshot>> = Vec::new();
                // A holder that follows every revision, as a node does: in
                // place, its item digests carried from delta to delta.
                let mut follower: Option<(Snapshot, Digests)> = None;
                let mut last: Option<View> = None;
                let mut st = state.clone();
                for op in &ops {
                    st = step(&st, op, &s);
                    let v = view(&st, last.as_ref(), network, 3);
                    follower = Some(match follower.take() {
                        Some((mut snap, mut digests)) if snap.revision < v.revision() => {
                            match v.delta(snap.revision) {
                                Some(d) => {
                                    snap.apply(&mut digests, &d).expect("each delta applies in place");
                                    prop_assert_eq!(&digests, &Digests::of(&snap, false));
                                    (snap, digests)
                                }
                                None => ((*v.snapshot).clone(), Digests::of(&v.snapshot, false)),
                            }
                        }
                        Some(kept) => kept,
                        None => ((*v.snapshot).clone(), Digests::of(&v.snapshot, false)),
                    });
                    prop_assert_eq!(follower.as_ref().map(|f| &f.0), Some(&*v.snapshot));
                    for old in &held {
                        if old.revision >= v.revision() {
                            continue;
                        }
                        if let Some(d) = v.delta(old.revision) {
                            prop_assert!(old.revision >= v.horizon, "a delta from before the horizon");
                            let next = old.with(&d).expect("the delta applies");
                            prop_assert_eq!(&next, &*v.snapshot);
                            prop_assert_eq!(next.digest(), v.full_digest.clone());
                        }
                    }
                    if held.last().is_none_or(|h| h.revision != v.revision()) {
                        held.push(v.snapshot.clone());
                    }
                    last = Some(v);
                }
                state = st;
            }
            let _ = state;
        }

        /// A network a commit does not reach compiles, after it, to exactly
        /// what it compiled to before: carrying its view forward is right.
        /// One it reaches with services and target groups only compiles to
        /// what its previous snapshot patched with them makes, patch after
        /// patch: patching is right.
        #[test]
        fn carried_and_patched_views_are_what_compiling_makes(ops in proptest::collection::vec(op(), 1..24)) {
            let s = settings();
            let mut state = base(&s);
            let mut patched = [compiled(&state, "east"), compiled(&state, "west")];
            for op in &ops {
                let (next, commit) = step_commit(&state, op, &s);
                if let Some(commit) = commit {
                    let reach = Reach::of(&state, &next, &commit);
                    for (network, held) in ["east", "west"].into_iter().zip(&mut patched) {
                        let whole = compiled(&next, network);
                        *held = match &reach {
                            Reach::Objects { networks, changed } if networks.contains(network) => {
                                let p = patch(&next, &scope(network), held, changed).unwrap();
                                prop_assert_eq!(&p, &whole, "{:?}", op);
                                p
                            }
                            Reach::Objects { .. } => {
                                prop_assert_eq!(&compiled(&state, network), &whole, "{:?}", op);
                                whole
                            }
                            Reach::All => whole,
                        };
                    }
                }
                state = next;
            }
        }
    }

    #[test]
    fn a_weight_change_is_one_service() {
        let s = settings();
        let mut state = base(&s);
        for j in 0..2 {
            state = must(
                &state,
                &Op::Group {
                    j,
                    port: 8080,
                    west: false,
                },
                &s,
            );
        }
        for i in 0..5 {
            let op = Op::Service {
                i,
                a: 0,
                b: 1,
                w: 90,
                signed: false,
                other_sn: false,
            };
            state = must(&state, &op, &s);
        }
        let before = view(&state, None, "east", MAX_REMOVALS);
        let held = before.snapshot.clone();
        let op = Op::Service {
            i: 3,
            a: 0,
            b: 1,
            w: 50,
            signed: false,
            other_sn: false,
        };
        state = must(&state, &op, &s);
        let after = view(&state, Some(&before), "east", MAX_REMOVALS);
        let d = after.delta(held.revision).expect("a delta");
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d.services.put[0].name, "s3");
        assert_eq!(held.with(&d).unwrap(), *after.snapshot);
        // Digests out of step with the snapshot are made again, not trusted.
        let mut in_place = (*held).clone();
        in_place.apply(&mut Digests::default(), &d).unwrap();
        assert_eq!(in_place, *after.snapshot);

        // Nothing this network sees changed: same revision, same bodies.
        let unrelated = step(&state, &Op::Gateway { port: 9001 }, &s);
        let same = view(&unrelated, Some(&after), "east", MAX_REMOVALS);
        assert_eq!(same.revision(), after.revision());
        assert!(Arc::ptr_eq(&same.snapshot, &after.snapshot));
        assert!(Arc::ptr_eq(&same.full, &after.full));
        assert_eq!(same.full_digest, after.full_digest);
    }

    #[test]
    fn a_holder_older_than_the_removals_remembered_gets_the_whole_snapshot() {
        let s = settings();
        let mut state = base(&s);
        for j in 0..4 {
            state = must(
                &state,
                &Op::Group {
                    j,
                    port: 8080,
                    west: false,
                },
                &s,
            );
        }
        for i in 0..5 {
            let op = Op::Service {
                i,
                a: 0,
                b: 1,
                w: 90,
                signed: false,
                other_sn: false,
            };
            state = must(&state, &op, &s);
        }
        let mut v = view(&state, None, "east", 2);
        let first = v.revision();
        for i in 0..3 {
            state = must(&state, &Op::DeleteService(i), &s);
            v = view(&state, Some(&v), "east", 2);
        }
        assert!(v.horizon > first);
        assert!(v.delta(first).is_none());
    }

    #[tokio::test]
    async fn answers_are_encoded_once_and_the_public_view_has_no_secret() {
        let s = settings();
        let mut state = base(&s);
        for j in 0..2 {
            state = must(
                &state,
                &Op::Group {
                    j,
                    port: 8080,
                    west: false,
                },
                &s,
            );
        }
        for i in 0..4 {
            let op = Op::Service {
                i,
                a: 0,
                b: 1,
                w: 100,
                signed: true,
                other_sn: false,
            };
            state = must(&state, &op, &s);
        }
        state = must(&state, &Op::Identity { k: 0, team: 0 }, &s);
        let mut with_key = state.clone();
        let dir = tempfile::tempdir().unwrap();
        let keyring = crate::keys::Keyring::open_or_create(&dir.path().join("key")).unwrap();
        let key = keyring.issue("id0", 0).unwrap();
        with_key.keys.insert(key.id.clone(), Arc::new(key));
        let before = Arc::new(view(&with_key, None, "east", MAX_REMOVALS));
        let held = before.snapshot.clone();
        let next = must(&with_key, &Op::Identity { k: 0, team: 1 }, &s);
        let after = Arc::new(view(&next, Some(&before), "east", MAX_REMOVALS));

        let full = after
            .answer(Some(held.revision), SnapshotView::Full)
            .await
            .unwrap();
        assert!(full.delta, "{:?} {:?}", held, after.snapshot);
        let again = after
            .answer(Some(held.revision), SnapshotView::Full)
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&full, &again), "one encoding per (since, view)");
        let d: Delta = serde_json::from_slice(&full.plain).unwrap();
        assert_eq!(held.with(&d).unwrap(), *after.snapshot);

        let public = after
            .answer(Some(held.revision), SnapshotView::Public)
            .await
            .unwrap();
        assert!(public.delta);
        let text = String::from_utf8(public.plain.to_vec()).unwrap();
        let secret = &after.snapshot.identities[0].keys[0].signing_keys;
        for v in secret.values() {
            assert!(
                !text.contains(v.expose()),
                "a signing key in the public delta"
            );
        }
        let d: Delta = serde_json::from_slice(&public.plain).unwrap();
        let held_public: Snapshot = serde_json::from_value(held.shown()).unwrap();
        let next_public = held_public
            .with(&d)
            .expect("the public delta leads to the public view");
        let whole: Snapshot = serde_json::from_slice(
            &after
                .answer(None, SnapshotView::Public)
                .await
                .unwrap()
                .plain,
        )
        .unwrap();
        assert_eq!(next_public, whole);

        let gz = full.gzip().await;
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut plain).unwrap();
        assert_eq!(plain, full.plain);
    }
}
