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
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::{Arc, Mutex};
use trellis_api::delta::{Changes, Delta, Keyed};
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
#[derive(Default)]
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
    removals: VecDeque<Removal>,
    /// The oldest revision a delta can start from.
    horizon: u64,
    full: Arc<Encoded>,
    full_digest: String,
    public: tokio::sync::OnceCell<(Arc<Encoded>, String)>,
    deltas: Mutex<HashMap<(u64, SnapshotView), Arc<Encoded>>>,
}

impl View {
    /// The view of `snapshot`, compiled from the state at `revision`,
    /// following `previous` (the same network's last view): items equal to
    /// the previous ones keep their stamps, and if nothing changed the view
    /// keeps its revision and its encodings.
    pub fn next(
        previous: Option<&View>,
        snapshot: Snapshot,
        revision: u64,
        day: i64,
    ) -> Result<View, serde_json::Error> {
        View::next_bounded(previous, snapshot, revision, day, MAX_REMOVALS)
    }

    /// [`View::next`] remembering at most `max_removals` removals.
    fn next_bounded(
        previous: Option<&View>,
        mut snapshot: Snapshot,
        revision: u64,
        day: i64,
        max_removals: usize,
    ) -> Result<View, serde_json::Error> {
        let Some(prev) = previous else {
            snapshot.revision = revision;
            let stamps = Stamps {
                services: vec![revision; snapshot.services.len()],
                service_networks: vec![revision; snapshot.service_networks.len()],
                target_groups: vec![revision; snapshot.target_groups.len()],
                gateways: vec![revision; snapshot.gateways.len()],
                identities: vec![revision; snapshot.identities.len()],
                inbound: vec![revision; snapshot.inbound.len()],
            };
            return View::encoded(snapshot, stamps, VecDeque::new(), revision, revision, day);
        };
        let old = &*prev.snapshot;
        let mut removed = Vec::new();
        let stamps = Stamps {
            services: restamp(
                (&old.services, &prev.stamps.services),
                &snapshot.services,
                revision,
                Collection::Services,
                &mut removed,
            ),
            service_networks: restamp(
                (&old.service_networks, &prev.stamps.service_networks),
                &snapshot.service_networks,
                revision,
                Collection::ServiceNetworks,
                &mut removed,
            ),
            target_groups: restamp(
                (&old.target_groups, &prev.stamps.target_groups),
                &snapshot.target_groups,
                revision,
                Collection::TargetGroups,
                &mut removed,
            ),
            gateways: restamp(
                (&old.gateway_items(), &prev.stamps.gateways),
                &snapshot.gateway_items(),
                revision,
                Collection::Gateways,
                &mut removed,
            ),
            identities: restamp(
                (&old.identities, &prev.stamps.identities),
                &snapshot.identities,
                revision,
                Collection::Identities,
                &mut removed,
            ),
            inbound: restamp(
                (&old.inbound, &prev.stamps.inbound),
                &snapshot.inbound,
                revision,
                Collection::Inbound,
                &mut removed,
            ),
        };
        let changed = !removed.is_empty()
            || old.region != snapshot.region
            || old.dns_zone != snapshot.dns_zone
            || old.vip_pools != snapshot.vip_pools
            || stamps.iter().any(|s| s == revision);
        if !changed {
            // Same content: same revision, same bodies, same deltas.
            return Ok(View {
                compiled_at: revision,
                day,
                snapshot: prev.snapshot.clone(),
                stamps,
                removals: prev.removals.clone(),
                horizon: prev.horizon,
                full: prev.full.clone(),
                full_digest: prev.full_digest.clone(),
                public: prev.public.clone(),
                deltas: Mutex::new(
                    prev.deltas
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone(),
                ),
            });
        }
        let mut removals: VecDeque<Removal> = prev.removals.clone();
        let mut horizon = prev.horizon;
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
        View::encoded(snapshot, stamps, removals, horizon, revision, day)
    }

    fn encoded(
        snapshot: Snapshot,
        stamps: Stamps,
        removals: VecDeque<Removal>,
        horizon: u64,
        compiled_at: u64,
        day: i64,
    ) -> Result<View, serde_json::Error> {
        let plain = serde_json::to_vec(&snapshot)?;
        let full_digest = trellis_api::secret::sha256_hex(&plain);
        Ok(View {
            compiled_at,
            day,
            snapshot: Arc::new(snapshot),
            stamps,
            removals,
            horizon,
            full: Encoded::new(plain, false),
            full_digest,
            public: tokio::sync::OnceCell::new(),
            deltas: Mutex::new(HashMap::new()),
        })
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
            let key = (since, view);
            if let Some(d) = self.cached_delta(key) {
                return Ok(d);
            }
            let this = self.clone();
            let public_digest = match view {
                SnapshotView::Full => None,
                SnapshotView::Public => Some(self.public().await?.1),
            };
            let delta = tokio::task::spawn_blocking(move || {
                let Some(delta) = this.delta(since) else {
                    return Ok(None);
                };
                let plain = match public_digest {
                    None => serde_json::to_vec(&delta)?,
                    Some(digest) => {
                        let mut shown = trellis_api::secret::shown(&delta);
                        shown["digest"] = digest.into();
                        serde_json::to_vec(&shown)?
                    }
                };
                Ok::<_, serde_json::Error>(Some(Encoded::new(plain, true)))
            })
            .await
            .unwrap_or(Ok(None))?;
            if let Some(delta) = delta {
                let mut deltas = self.deltas.lock().unwrap_or_else(|e| e.into_inner());
                if deltas.len() >= MAX_DELTAS {
                    deltas.clear();
                }
                deltas.insert(key, delta.clone());
                return Ok(delta);
            }
        }
        match view {
            SnapshotView::Full => Ok(self.full.clone()),
            SnapshotView::Public => Ok(self.public().await?.0),
        }
    }

    fn cached_delta(&self, key: (u64, SnapshotView)) -> Option<Arc<Encoded>> {
        self.deltas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned()
    }

    /// The view with every key replaced by its fingerprint, and its digest;
    /// made when first asked for.
    async fn public(&self) -> Result<(Arc<Encoded>, String), serde_json::Error> {
        self.public
            .get_or_try_init(|| async {
                let snapshot = self.snapshot.clone();
                tokio::task::spawn_blocking(move || {
                    let plain = serde_json::to_vec(&snapshot.shown())?;
                    let digest = trellis_api::secret::sha256_hex(&plain);
                    Ok((Encoded::new(plain, false), digest))
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

/// Stamps for `new` given the `old` items and their stamps (both sorted by
/// name): an equal item keeps its stamp, any other is stamped `revision`;
/// names only in `old` are pushed to `removed`.
fn restamp<T: Keyed + PartialEq>(
    (old, stamps): (&[T], &[u64]),
    new: &[T],
    revision: u64,
    collection: Collection,
    removed: &mut Vec<(Collection, String)>,
) -> Vec<u64> {
    let mut out = Vec::with_capacity(new.len());
    let mut o = 0;
    for item in new {
        while o < old.len() && old[o].key() < item.key() {
            removed.push((collection, old[o].key().to_string()));
            o += 1;
        }
        if o < old.len() && old[o].key() == item.key() {
            out.push(if old[o] == *item {
                stamps.get(o).copied().unwrap_or(revision)
            } else {
                revision
            });
            o += 1;
        } else {
            out.push(revision);
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
    use crate::snapshot::compile;
    use crate::state::{Settings, State};
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
                return state
                    .delete(Kind::Service, &format!("s{i}"), 0)
                    .map_or_else(|_| state.clone(), |(s, _)| s);
            }
            Op::DeleteGroup(j) => {
                return state
                    .delete(Kind::TargetGroup, &format!("g{j}"), 0)
                    .map_or_else(|_| state.clone(), |(s, _)| s);
            }
            Op::DeleteIdentity(k) => {
                return state
                    .delete(Kind::Identity, &format!("id{k}"), 0)
                    .map_or_else(|_| state.clone(), |(s, _)| s);
            }
        };
        state
            .apply(&docs, s, 0, false)
            .map_or_else(|_| state.clone(), |a| a.state)
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

    fn view(state: &State, previous: Option<&View>, network: &str, max_removals: usize) -> View {
        let snap = compile(state, network, "trellis.internal", "us-east-1", 20_000, "").unwrap();
        View::next_bounded(previous, snap, state.revision, 20_000, max_removals).unwrap()
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
                let mut last: Option<View> = None;
                let mut st = state.clone();
                for op in &ops {
                    st = step(&st, op, &s);
                    let v = view(&st, last.as_ref(), network, 3);
                    for old in &held {
                        if old.revision >= v.revision() {
                            continue;
                        }
                        if let Some(d) = v.delta(old.revision) {
                            prop_assert!(old.revision >= v.horizon, "a delta from before the horizon");
                            let next = old.with(d).expect("the delta applies");
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
        assert_eq!(held.with(d).unwrap(), *after.snapshot);

        // Nothing this network sees changed: same revision, same bodies.
        let unrelated = step(&state, &Op::Gateway { port: 9001 }, &s);
        let same = view(&unrelated, Some(&after), "east", MAX_REMOVALS);
        assert_eq!(same.revision(), after.revision());
        assert!(Arc::ptr_eq(&same.full, &after.full));
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
        assert_eq!(held.with(d).unwrap(), *after.snapshot);

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
            .with(d)
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
