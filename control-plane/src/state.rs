//! The control plane's state and the two ways it changes: apply and delete.
//!
//! Both are pure functions from the current state to a candidate state plus
//! the [`Commit`] that makes it durable; nothing is visible until the commit
//! succeeded and the caller swaps the candidate in. A rejected apply changes
//! nothing, and an apply that changes nothing does not bump the revision.

use crate::keys::AccessKey;
use crate::store::{Commit, Loaded, StoreError};
use crate::validate::{Problem, validate};
use crate::vip::{Allocations, VipAllocator};
use ipnet::{Ipv4Net, Ipv6Net};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use thiserror::Error;
use trellis_api::client::{Change, ChangeAction};
use trellis_api::resource::{Spec, Status};
use trellis_api::{FieldError, Kind, Object, Resource};

/// All objects, by kind and name. `Arc` so that a candidate state is a cheap
/// copy of the current one.
pub type Objects = BTreeMap<(Kind, String), Arc<Object>>;

/// Settings that shape the state but are not part of it.
#[derive(Clone, Debug)]
pub struct Settings {
    pub zone: String,
    pub vip_pool_v4: Ipv4Net,
    pub vip_pool_v6: Ipv6Net,
    /// How long a deleted service's VIPs are held back, in seconds.
    pub vip_hold_secs: u64,
    /// The most the stored objects may add up to, in bytes of JSON.
    pub max_state_bytes: usize,
}

/// Access keys by id.
pub type Keys = BTreeMap<String, Arc<AccessKey>>;

/// Installation documents by name, as stored (`crate::docs`).
pub type Docs = BTreeMap<String, Arc<[u8]>>;

#[derive(Clone, Debug)]
pub struct State {
    pub revision: u64,
    pub objects: Objects,
    /// What the objects add up to in the store, in bytes of JSON.
    pub bytes: usize,
    pub vips: VipAllocator,
    /// Unsealed at start by the caller of [`State::load`] (it holds the
    /// master key); the store's sealed records are in `Loaded::keys`.
    pub keys: Keys,
    pub docs: Docs,
}

/// The outcome of an apply that passed validation.
#[derive(Debug)]
pub struct Applied {
    pub state: State,
    pub changes: Vec<Change>,
    /// `None` when nothing changed.
    pub commit: Option<Commit>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DeleteError {
    #[error("{0} \"{1}\" does not exist")]
    NotFound(Kind, String),
    #[error("{kind} \"{name}\" is still used by {}; change or delete those first", referrers.join(", "))]
    InUse {
        kind: Kind,
        name: String,
        referrers: Vec<String>,
    },
}

/// An object's size in the store.
fn stored_size(obj: &Object) -> usize {
    serde_json::to_vec(obj).map_or(0, |b| b.len())
}

/// An object as the store holds it (its HTTPS keys already opened).
fn stored_object(key: &str, bytes: &[u8], settings: &Settings) -> Result<Object, StoreError> {
    let mut obj: Object =
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{key}: {e}")))?;
    if obj.resource.kind() == Kind::Service {
        // The zone is a setting and may have changed since the write.
        obj.status.dns_name = Some(dns_name(obj.resource.name(), &settings.zone));
    }
    Ok(obj)
}

fn key_string(kind: Kind, name: &str) -> String {
    format!("{kind}/{name}")
}

impl State {
    pub fn empty(settings: &Settings) -> State {
        State {
            revision: 0,
            objects: Objects::new(),
            bytes: 0,
            vips: VipAllocator::new(
                settings.vip_pool_v4,
                settings.vip_pool_v6,
                settings.vip_hold_secs,
                Allocations::default(),
            ),
            keys: Keys::new(),
            docs: Docs::new(),
        }
    }

    pub fn load(loaded: Loaded, settings: &Settings) -> Result<State, StoreError> {
        let allocations = match &loaded.vips {
            Some(bytes) => serde_json::from_slice(bytes)
                .map_err(|e| StoreError::Corrupt(format!("VIP allocations: {e}")))?,
            None => Allocations::default(),
        };
        let mut objects = Objects::new();
        let mut total = 0;
        for (key, bytes) in loaded.objects {
            total += bytes.len();
            let obj = stored_object(&key, &bytes, settings)?;
            objects.insert(
                (obj.resource.kind(), obj.resource.name().to_string()),
                Arc::new(obj),
            );
        }
        Ok(State {
            revision: loaded.revision,
            objects,
            bytes: total,
            vips: VipAllocator::new(
                settings.vip_pool_v4,
                settings.vip_pool_v6,
                settings.vip_hold_secs,
                allocations,
            ),
            keys: Keys::new(),
            docs: loaded
                .docs
                .into_iter()
                .map(|(name, bytes)| (name, Arc::from(bytes)))
                .collect(),
        })
    }

    /// This state with `commit`, which another control plane made on it,
    /// applied (its HTTPS keys opened); `keys` are the access keys it puts,
    /// unsealed by the caller.
    pub fn follow(
        &self,
        commit: Commit,
        keys: Vec<Arc<AccessKey>>,
        settings: &Settings,
    ) -> Result<State, StoreError> {
        let mut next = self.clone();
        next.revision = commit.revision;
        for (key, bytes) in commit.put {
            let obj = stored_object(&key, &bytes, settings)?;
            let name = (obj.resource.kind(), obj.resource.name().to_string());
            if let Some(old) = next.objects.insert(name, Arc::new(obj)) {
                next.bytes = next.bytes.saturating_sub(stored_size(&old));
            }
            next.bytes += bytes.len();
        }
        for key in commit.delete {
            let Some((kind, name)) = key
                .split_once('/')
                .and_then(|(k, n)| Some((Kind::parse(k)?, n)))
            else {
                return Err(StoreError::Corrupt(format!("{key}: not a Kind/name")));
            };
            if let Some(old) = next.objects.remove(&(kind, name.to_string())) {
                next.bytes = next.bytes.saturating_sub(stored_size(&old));
            }
        }
        if !commit.vips.is_empty() {
            let allocations = serde_json::from_slice(&commit.vips)
                .map_err(|e| StoreError::Corrupt(format!("VIP allocations: {e}")))?;
            next.vips = VipAllocator::new(
                settings.vip_pool_v4,
                settings.vip_pool_v6,
                settings.vip_hold_secs,
                allocations,
            );
        }
        for id in &commit.keys_delete {
            next.keys.remove(id);
        }
        for key in keys {
            next.keys.insert(key.id.clone(), key);
        }
        for (name, bytes) in commit.docs_put {
            next.docs.insert(name, Arc::from(bytes));
        }
        Ok(next)
    }

    pub fn get(&self, kind: Kind, name: &str) -> Option<&Arc<Object>> {
        self.objects.get(&(kind, name.to_string()))
    }

    pub fn list(&self, kind: Kind) -> impl Iterator<Item = &Arc<Object>> {
        self.objects
            .range((kind, String::new())..)
            .take_while(move |((k, _), _)| *k == kind)
            .map(|(_, o)| o)
    }

    /// Creates or updates every document in `documents`, all or nothing.
    pub fn apply(
        &self,
        documents: &[Value],
        settings: &Settings,
        now: u64,
        dry_run: bool,
    ) -> Result<Applied, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut resources = Vec::with_capacity(documents.len());
        let mut batch: HashMap<(Kind, String), usize> = HashMap::with_capacity(documents.len());
        for (i, doc) in documents.iter().enumerate() {
            match Resource::from_value(i, doc) {
                Ok(mut r) => {
                    let stored = self.objects.get(&(r.kind(), r.name().to_string()));
                    crate::tls::restore_keys(&mut r, stored.map(|o| &o.resource));
                    let key = (r.kind(), r.name().to_string());
                    if let Some(first) = batch.insert(key, i) {
                        errors.push(FieldError::new(
                            i,
                            "metadata.name",
                            format!(
                                "{} \"{}\" is also declared in document {first}",
                                r.kind(),
                                r.name()
                            ),
                        ));
                    }
                    resources.push((i, r));
                }
                Err(mut e) => errors.append(&mut e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }

        let revision = self.revision + 1;
        let mut next = self.clone();
        let mut changes = Vec::with_capacity(resources.len());
        let mut created_services = Vec::new();
        let mut changed = Vec::new();
        for (i, resource) in resources {
            let key = (resource.kind(), resource.name().to_string());
            let (action, before, status) = match next.objects.get(&key) {
                Some(old) if old.resource == resource => {
                    changes.push(change(
                        &key,
                        ChangeAction::Unchanged,
                        dry_run,
                        Some(&old.resource),
                        None,
                    ));
                    continue;
                }
                Some(old) => {
                    let status = Status {
                        revision,
                        ..old.status.clone()
                    };
                    (ChangeAction::Configured, Some(old.resource.clone()), status)
                }
                None => {
                    if key.0 == Kind::Service {
                        created_services.push((i, key.1.clone()));
                    }
                    let status = Status {
                        created_revision: revision,
                        revision,
                        created_at: now,
                        ..Status::default()
                    };
                    (ChangeAction::Created, None, status)
                }
            };
            changes.push(change(
                &key,
                action,
                dry_run,
                before.as_ref(),
                Some(&resource),
            ));
            changed.push(key.clone());
            next.objects
                .insert(key, Arc::new(Object { resource, status }));
        }

        let problems = validate(&next.objects, &settings.zone);
        errors.extend(problems.into_iter().map(|p| locate(p, &batch)));
        for (i, name) in &created_services {
            match next.vips.allocate(name, now) {
                Ok(vips) => {
                    let key = (Kind::Service, name.clone());
                    if let Some(obj) = next.objects.get_mut(&key) {
                        let status = &mut Arc::make_mut(obj).status;
                        status.vip = Some(vips.v4);
                        status.vip_v6 = Some(vips.v6);
                        status.dns_name = Some(dns_name(name, &settings.zone));
                    }
                }
                Err(e) => errors.push(FieldError::new(
                    *i,
                    "metadata.name",
                    format!("cannot allocate a VIP: {e}"),
                )),
            }
        }
        if !errors.is_empty() {
            errors.sort_by_key(|e| e.document.unwrap_or(usize::MAX));
            return Err(errors);
        }
        if changed.is_empty() {
            return Ok(Applied {
                state: self.clone(),
                changes,
                commit: None,
            });
        }
        next.revision = revision;
        let put: Vec<(String, Vec<u8>)> = changed
            .iter()
            .filter_map(|key| {
                let obj = next.objects.get(key)?;
                Some((
                    key_string(key.0, &key.1),
                    serde_json::to_vec(obj.as_ref()).ok()?,
                ))
            })
            .collect();
        let before: usize = changed
            .iter()
            .filter_map(|key| self.objects.get(key))
            .map(|obj| stored_size(obj))
            .sum();
        next.bytes =
            self.bytes - before.min(self.bytes) + put.iter().map(|(_, b)| b.len()).sum::<usize>();
        if next.bytes > settings.max_state_bytes && next.bytes > self.bytes {
            return Err(vec![FieldError {
                document: None,
                object: "the store".into(),
                path: String::new(),
                message: format!(
                    "this apply would make the stored state {} bytes, over the limit of {} \
                     (--max-state-bytes); delete what is unused, or raise the limit",
                    next.bytes, settings.max_state_bytes
                ),
            }]);
        }
        let commit = Commit {
            revision,
            put,
            delete: Vec::new(),
            vips: serde_json::to_vec(next.vips.allocations()).unwrap_or_default(),
            ..Commit::default()
        };
        Ok(Applied {
            state: next,
            changes,
            commit: Some(commit),
        })
    }

    /// Deletes one object, unless other objects still reference it.
    pub fn delete(&self, kind: Kind, name: &str, now: u64) -> Result<(State, Commit), DeleteError> {
        let key = (kind, name.to_string());
        if !self.objects.contains_key(&key) {
            return Err(DeleteError::NotFound(kind, name.to_string()));
        }
        let referrers = self.referrers(kind, name);
        if !referrers.is_empty() {
            return Err(DeleteError::InUse {
                kind,
                name: name.to_string(),
                referrers,
            });
        }
        let mut next = self.clone();
        if let Some(old) = next.objects.remove(&key) {
            next.bytes = next.bytes.saturating_sub(stored_size(&old));
        }
        if kind == Kind::Service {
            next.vips.release(name, now);
        }
        // An identity's keys go with it.
        let keys_delete: Vec<String> = match kind {
            Kind::Identity => self
                .keys
                .values()
                .filter(|k| k.identity == name)
                .map(|k| k.id.clone())
                .collect(),
            _ => Vec::new(),
        };
        for id in &keys_delete {
            next.keys.remove(id);
        }
        next.revision += 1;
        let commit = Commit {
            revision: next.revision,
            delete: vec![key_string(kind, name)],
            keys_delete,
            ..next.commit_base()
        };
        Ok((next, commit))
    }

    /// A commit of the revision and the VIP allocations, nothing else.
    fn commit_base(&self) -> Commit {
        Commit {
            revision: self.revision,
            vips: serde_json::to_vec(self.vips.allocations()).unwrap_or_default(),
            ..Commit::default()
        }
    }

    /// Adds or replaces an access key.
    pub fn put_key(&self, key: AccessKey) -> (State, Commit) {
        let mut next = self.clone();
        next.revision += 1;
        let commit = Commit {
            keys_put: vec![(key.id.clone(), key.record())],
            ..next.commit_base()
        };
        next.keys.insert(key.id.clone(), Arc::new(key));
        (next, commit)
    }

    pub fn remove_key(&self, id: &str) -> Option<(State, Commit)> {
        let mut next = self.clone();
        next.keys.remove(id)?;
        next.revision += 1;
        let commit = Commit {
            keys_delete: vec![id.to_string()],
            ..next.commit_base()
        };
        Some((next, commit))
    }

    /// A new revision with nothing else changed: snapshots are compiled
    /// again (the daily rotation of derived signing keys).
    /// The next revision with `docs` put.
    pub fn put_docs(&self, docs: Vec<crate::store::Entry>) -> (State, Commit) {
        let (mut next, mut commit) = self.install_docs(docs);
        next.revision += 1;
        commit.revision = next.revision;
        (next, commit)
    }

    /// This revision with `docs` put: the documents a store gets at its
    /// first start, which no operator made and no replica needs to follow
    /// (one that started without them commits its own and loses the race).
    pub fn install_docs(&self, docs: Vec<crate::store::Entry>) -> (State, Commit) {
        let mut next = self.clone();
        for (name, bytes) in &docs {
            next.docs.insert(name.clone(), Arc::from(bytes.as_slice()));
        }
        let commit = Commit {
            docs_put: docs,
            ..next.commit_base()
        };
        (next, commit)
    }

    pub fn bump(&self) -> (State, Commit) {
        let mut next = self.clone();
        next.revision += 1;
        let commit = next.commit_base();
        (next, commit)
    }

    /// Objects that reference `kind/name`, each with where it does.
    fn referrers(&self, kind: Kind, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        for ((k, n), obj) in &self.objects {
            match (&obj.resource.spec, kind) {
                (Spec::ServiceNetwork(s), Kind::Network)
                    if s.networks.iter().any(|x| x == name) =>
                {
                    out.push(key_string(*k, n))
                }
                (Spec::TargetGroup(s), Kind::Network) if s.network == name => {
                    out.push(key_string(*k, n))
                }
                (Spec::Service(s), Kind::ServiceNetwork)
                    if s.service_networks.iter().any(|x| x == name) =>
                {
                    out.push(key_string(*k, n))
                }
                (Spec::Service(s), Kind::TargetGroup) => {
                    for l in &s.listeners {
                        let actions = std::iter::once((None, &l.default_action))
                            .chain(l.rules.iter().map(|r| (Some(&r.name), &r.action)));
                        for (rule, action) in actions {
                            let uses = action.target_groups().any(|g| g == name);
                            if uses {
                                let place = match rule {
                                    Some(r) => format!("listener {}, rule {r}", l.name),
                                    None => format!("listener {}, default action", l.name),
                                };
                                out.push(format!("{} ({place})", key_string(*k, n)));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }
}

pub fn dns_name(service: &str, zone: &str) -> String {
    format!("{service}.{}", zone.trim_end_matches('.'))
}

fn change(
    key: &(Kind, String),
    action: ChangeAction,
    dry_run: bool,
    before: Option<&Resource>,
    after: Option<&Resource>,
) -> Change {
    // Never a private key in a diff.
    let spec = |r: Option<&Resource>| r.map(|r| r.redacted().to_value());
    Change {
        kind: key.0,
        name: key.1.clone(),
        action,
        before: if dry_run { spec(before) } else { None },
        after: if dry_run {
            spec(after.or(before))
        } else {
            None
        },
    }
}

/// A problem on a submitted object points at its document; one on a stored
/// object that the batch would break names the object.
fn locate(p: Problem, batch: &HashMap<(Kind, String), usize>) -> FieldError {
    let object = key_string(p.kind, &p.name);
    FieldError {
        document: batch.get(&(p.kind, p.name)).copied(),
        object,
        path: p.path,
        message: p.message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::tests::settings;
    use trellis_api::manifest;

    const SAMPLE: &str = include_str!("../../samples/blue-green.yaml");

    fn docs(text: &str) -> Vec<Value> {
        manifest::parse("x.yaml", text)
            .unwrap()
            .into_iter()
            .map(|d| d.value)
            .collect()
    }

    fn applied(state: &State, text: &str, now: u64) -> State {
        let s = settings("169.254.171.0/24");
        let a = state.apply(&docs(text), &s, now, false).unwrap();
        a.state
    }

    #[test]
    fn reapplying_changes_nothing_and_keeps_the_revision() {
        let s = settings("169.254.171.0/24");
        let one = applied(&State::empty(&s), SAMPLE, 0);
        assert_eq!(one.revision, 1);
        let again = one.apply(&docs(SAMPLE), &s, 5, false).unwrap();
        assert!(again.commit.is_none());
        assert_eq!(again.state.revision, 1);
        assert!(
            again
                .changes
                .iter()
                .all(|c| c.action == ChangeAction::Unchanged)
        );
    }

    #[test]
    fn a_change_bumps_only_the_changed_objects() {
        let s = settings("169.254.171.0/24");
        let one = applied(&State::empty(&s), SAMPLE, 0);
        let vip = one.get(Kind::Service, "checkout").unwrap().status.vip;
        let two = applied(&one, &SAMPLE.replace("weight: 90", "weight: 50"), 10);
        assert_eq!(two.revision, 2);
        let svc = two.get(Kind::Service, "checkout").unwrap();
        assert_eq!((svc.status.created_revision, svc.status.revision), (1, 2));
        assert_eq!(svc.status.vip, vip, "VIP is stable across re-applies");
        assert_eq!(
            two.get(Kind::TargetGroup, "checkout-blue")
                .unwrap()
                .status
                .revision,
            1
        );
    }

    #[test]
    fn breaking_a_stored_object_is_refused_and_names_it() {
        let s = settings("169.254.171.0/24");
        let one = applied(&State::empty(&s), SAMPLE, 0);
        let tcp = "apiVersion: trellis.dev/v1alpha1
kind: TargetGroup
metadata: {name: checkout-green}
spec: {network: east, protocol: TCP, port: 8080}
";
        let errs = one.apply(&docs(tcp), &s, 0, false).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].document, None);
        assert_eq!(errs[0].object, "Service/checkout");
        assert_eq!(
            errs[0].path,
            "spec.listeners[0].defaultAction.forward[1].targetGroup"
        );
    }

    #[test]
    fn delete_keeps_references_whole() {
        let s = settings("169.254.171.0/24");
        let one = applied(&State::empty(&s), SAMPLE, 0);
        let err = one.delete(Kind::Network, "east", 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Network \"east\" is still used by ServiceNetwork/shop, TargetGroup/checkout-blue, \
             TargetGroup/checkout-green; change or delete those first"
        );
        assert_eq!(
            one.delete(Kind::Service, "nope", 0).unwrap_err(),
            DeleteError::NotFound(Kind::Service, "nope".into())
        );
        let (two, commit) = one.delete(Kind::Service, "checkout", 0).unwrap();
        assert_eq!(
            (two.revision, commit.delete.as_slice()),
            (2, &["Service/checkout".to_string()][..])
        );
        assert!(two.delete(Kind::TargetGroup, "checkout-blue", 0).is_ok());
    }

    #[test]
    fn a_recreated_service_gets_its_vip_back_within_the_hold() {
        let s = settings("169.254.171.0/24");
        let one = applied(&State::empty(&s), SAMPLE, 0);
        let vip = one.get(Kind::Service, "checkout").unwrap().status.vip;
        let (two, _) = one.delete(Kind::Service, "checkout", 100).unwrap();
        let other =
            "apiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: {name: other}\nspec: {}\n";
        let three = applied(&two, other, 110);
        assert_ne!(
            three.get(Kind::Service, "other").unwrap().status.vip,
            vip,
            "held back"
        );
        let four = applied(&three, SAMPLE, 120);
        assert_eq!(four.get(Kind::Service, "checkout").unwrap().status.vip, vip);
    }
}
