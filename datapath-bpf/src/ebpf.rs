//! Loading, attaching, pinning and reconciling the eBPF datapath.
//!
//! Layout under the pin directory (default `/sys/fs/bpf/trellis`):
//!
//! | path | what |
//! | --- | --- |
//! | `maps/trellis_*` | every map, pinned by name; reused by the next agent |
//! | `links/trellis_*` | the cgroup links of connect4/6, getpeername4/6 and sockops |
//! | `maps/trellis_meta` | ABI version, object digest and cgroup of the links (a layout that never changes) |
//!
//! An agent that finds pins of the same ABI reuses the maps; links of the same
//! object on the same cgroup are taken over as they are (redirection never
//! stops across an agent restart). A new object replaces the links (the new
//! ones are attached before the old ones are detached); a new ABI replaces the
//! maps too. The getsockopt program is attached for as long as the
//! [`EbpfDatapath`] lives: it serves the proxy, which lives as long.

use crate::abi::{
    self, Config, ConfigBytes, Meta, MetaBytes, OrigBytes, PeerBytes, Stats, StatsBytes, SvcKey,
    SvcKeyBytes, SvcValue, SvcValueBytes,
};
use crate::mounts;
use crate::{Datapath, Error, Reconciled, ServiceEntry};
use aya::maps::{Array, HashMap as BpfHashMap, MapData};
use aya::programs::cgroup_sockopt::CgroupSockoptLink;
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{CgroupAttachMode, CgroupSockAddr, CgroupSockopt, SockOps};
use aya::{Ebpf, EbpfLoader};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/trellis.bpf.o"));

/// Programs attached to the clients' cgroup, whose links are pinned.
const PINNED_PROGRAMS: [&str; 5] = [
    "trellis_connect4",
    "trellis_connect6",
    "trellis_getpeername4",
    "trellis_getpeername6",
    "trellis_sockops",
];
const GETSOCKOPT: &str = "trellis_getsockopt";

/// Attached as bpf_links (kernel >= 5.7), which always coexist with other
/// programs on the cgroup; the kernel refuses BPF_F_ALLOW_MULTI for links.
const LINK_MODE: CgroupAttachMode = CgroupAttachMode::Single;

#[derive(Clone, Debug)]
pub struct Options {
    /// cgroup v2 directory whose processes' connections are redirected.
    pub cgroup: PathBuf,
    /// cgroup v2 directory of the proxy (where SO_ORIGINAL_DST is answered).
    pub proxy_cgroup: PathBuf,
    /// bpffs directory for pins (mounted if needed).
    pub pin_dir: PathBuf,
    pub proxy_v4: SocketAddrV4,
    /// Where IPv6 VIPs go; the port must be the IPv4 listener's.
    pub proxy_v6: SocketAddrV6,
    /// SO_MARK of the proxy's upstream sockets: never redirected. 0 = none.
    pub proxy_mark: u32,
}

pub struct EbpfDatapath {
    svc: BpfHashMap<MapData, SvcKeyBytes, SvcValueBytes>,
    stats: Array<MapData, StatsBytes>,
    callers: Callers,
    /// The getsockopt hook stays attached while this lives. The loaded
    /// object itself (parsed ELF and BTF, tens of MB) is dropped after
    /// attaching: links and maps hold their programs in the kernel.
    _getsockopt: CgroupSockoptLink,
}

fn digest(bytes: &[u8]) -> u64 {
    // FNV-1a: tells one build of the object from another; not security.
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The owner recorded in the pinned meta map, if there is one.
fn pinned_meta(maps_dir: &Path) -> Option<Meta> {
    let data = MapData::from_pin(maps_dir.join("trellis_meta")).ok()?;
    let map: Array<MapData, MetaBytes> = Array::try_from(aya::maps::Map::Array(data)).ok()?;
    map.get(&0, 0).ok().map(|b| Meta::decode(&b))
}

fn open_dir(path: &Path) -> Result<File, Error> {
    File::open(path).map_err(|e| Error::Io(path.to_path_buf(), e))
}

fn prog_err(name: &'static str) -> impl Fn(aya::programs::ProgramError) -> Error {
    move |e| Error::Program(name, Box::new(e))
}

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> Error {
    move |e| Error::Map(name, Box::new(e))
}

impl EbpfDatapath {
    /// Loads the programs (or takes over pinned ones) and attaches them.
    pub fn attach(opts: &Options) -> Result<EbpfDatapath, Error> {
        mounts::check_cgroup2(&opts.cgroup)?;
        mounts::check_cgroup2(&opts.proxy_cgroup)?;
        mounts::ensure_bpffs(&opts.pin_dir)?;
        let maps_dir = opts.pin_dir.join("maps");
        let links_dir = opts.pin_dir.join("links");
        for d in [&maps_dir, &links_dir] {
            std::fs::create_dir_all(d).map_err(|e| Error::Io(d.clone(), e))?;
        }
        let cgroup_id = std::fs::metadata(&opts.cgroup)
            .map_err(|e| Error::Io(opts.cgroup.clone(), e))?
            .ino();
        let wanted = Meta {
            abi: abi::ABI_VERSION,
            object: digest(OBJECT),
            cgroup_id,
        };
        let found = pinned_meta(&maps_dir);
        let keep_links = found == Some(wanted);
        if let Some(old) = found {
            if old.abi != wanted.abi {
                tracing::warn!(
                    old = old.abi,
                    new = wanted.abi,
                    "datapath ABI changed: replacing pinned maps"
                );
                unpin_links(&links_dir)?;
                remove_files(&maps_dir)?;
            } else if !keep_links {
                tracing::info!("datapath object or cgroup changed: replacing links, keeping maps");
            }
        }

        // The programs use no CO-RE relocations (context fields only, which
        // the verifier rewrites), so the kernel's BTF is not needed: parsing
        // it would cost ~10 MB of transient heap the node then keeps.
        let mut ebpf = EbpfLoader::new()
            .btf(None)
            .default_map_pin_directory(&maps_dir)
            .load(OBJECT)
            .map_err(|e| Error::Load(Box::new(e)))?;

        let cgroup = open_dir(&opts.cgroup)?;
        let mut replaced = Vec::new();
        for name in PINNED_PROGRAMS {
            let pin = links_dir.join(name);
            if keep_links && pin.exists() {
                continue;
            }
            let link = attach_program(&mut ebpf, name, &cgroup)?;
            // Attach the new link before detaching the old one: both briefly
            // run, and the second sees an already-rewritten address (no match).
            let old = links_dir.join(format!("{name}.old"));
            if pin.exists() {
                std::fs::rename(&pin, &old).map_err(|e| Error::Io(pin.clone(), e))?;
                replaced.push(old);
            }
            link.pin(&pin)
                .map_err(|e| Error::Pin(pin.clone(), e.to_string()))?;
        }
        for old in replaced {
            unpin(&old)?;
        }

        let proxy_cgroup = open_dir(&opts.proxy_cgroup)?;
        let prog: &mut CgroupSockopt = program(&mut ebpf, GETSOCKOPT)?;
        prog.load().map_err(prog_err(GETSOCKOPT))?;
        let link_id = prog
            .attach(&proxy_cgroup, LINK_MODE)
            .map_err(prog_err(GETSOCKOPT))?;
        let getsockopt = prog.take_link(link_id).map_err(prog_err(GETSOCKOPT))?;

        let mut cfg: Array<MapData, ConfigBytes> = take_map(&mut ebpf, "trellis_cfg")?;
        let config = Config {
            proxy_v4: *opts.proxy_v4.ip(),
            proxy_v6: *opts.proxy_v6.ip(),
            proxy_port: opts.proxy_v4.port(),
            proxy_mark: opts.proxy_mark,
        };
        cfg.set(0, config.encode(), 0)
            .map_err(map_err("trellis_cfg"))?;
        let svc = take_map(&mut ebpf, "trellis_svc")?;
        let stats = take_map(&mut ebpf, "trellis_stats")?;
        let callers = Callers(Arc::new(take_map(&mut ebpf, "trellis_peer_orig")?));

        let mut meta: Array<MapData, MetaBytes> = take_map(&mut ebpf, "trellis_meta")?;
        meta.set(0, wanted.encode(), 0)
            .map_err(map_err("trellis_meta"))?;
        tracing::info!(
            cgroup = %opts.cgroup.display(),
            pins = %opts.pin_dir.display(),
            took_over = keep_links,
            "eBPF datapath attached"
        );
        Ok(EbpfDatapath {
            svc,
            stats,
            callers,
            _getsockopt: getsockopt,
        })
    }

    /// Counters per VIP.
    pub fn stats(&self) -> Result<BTreeMap<IpAddr, Stats>, Error> {
        let mut out = BTreeMap::new();
        for entry in self.svc.iter() {
            let (k, v) = entry.map_err(map_err("trellis_svc"))?;
            let (Some(key), value) = (SvcKey::decode(&k), SvcValue::decode(&v)) else {
                continue;
            };
            if key.port == 0 {
                let s = self
                    .stats
                    .get(&value.id, 0)
                    .map_err(map_err("trellis_stats"))?;
                out.insert(key.vip, Stats::decode(&s));
            }
        }
        Ok(out)
    }

    /// Detaches everything pinned under `pin_dir` and removes the pins.
    pub fn cleanup(pin_dir: &Path) -> Result<(), Error> {
        if !pin_dir.exists() {
            return Ok(());
        }
        unpin_links(&pin_dir.join("links"))?;
        remove_files(&pin_dir.join("maps"))?;
        for d in [
            pin_dir.join("links"),
            pin_dir.join("maps"),
            pin_dir.to_path_buf(),
        ] {
            if d.exists() {
                std::fs::remove_dir(&d).map_err(|e| Error::Io(d.clone(), e))?;
            }
        }
        tracing::info!(pins = %pin_dir.display(), "eBPF datapath detached and unpinned");
        Ok(())
    }
}

impl Datapath for EbpfDatapath {
    fn name(&self) -> &'static str {
        "ebpf"
    }

    fn callers(&self) -> Option<Callers> {
        Some(self.callers.clone())
    }

    /// Makes the services map hold exactly `services`. New entries are added
    /// before stale ones are removed; established connections are untouched.
    fn reconcile(&mut self, services: &[ServiceEntry]) -> Result<Reconciled, Error> {
        let mut current: BTreeMap<SvcKey, SvcValue> = BTreeMap::new();
        for entry in self.svc.iter() {
            let (k, v) = entry.map_err(map_err("trellis_svc"))?;
            if let Some(key) = SvcKey::decode(&k) {
                current.insert(key, SvcValue::decode(&v));
            }
        }
        // Keep each VIP's id; give new VIPs the lowest free ones (0 is reserved).
        let mut ids: BTreeMap<IpAddr, u32> = current
            .iter()
            .filter(|(k, _)| k.port == 0)
            .map(|(k, v)| (k.vip, v.id))
            .collect();
        let wanted_vips: BTreeSet<IpAddr> = services.iter().map(|s| s.vip).collect();
        ids.retain(|vip, _| wanted_vips.contains(vip));
        let used: BTreeSet<u32> = ids.values().copied().collect();
        let mut free = (1..abi::MAX_SERVICES).filter(|i| !used.contains(i));
        let mut fresh = Vec::new();
        let mut desired: BTreeMap<SvcKey, SvcValue> = BTreeMap::new();
        for s in services {
            let id = match ids.get(&s.vip) {
                Some(id) => *id,
                None => {
                    let id = free
                        .next()
                        .ok_or(Error::TooManyServices(abi::MAX_SERVICES - 1))?;
                    ids.insert(s.vip, id);
                    fresh.push(id);
                    id
                }
            };
            let vip_only = SvcValue {
                id,
                flags: abi::SVC_VIP_ONLY,
            };
            desired.insert(
                SvcKey {
                    vip: s.vip,
                    port: 0,
                },
                vip_only,
            );
            for port in &s.ports {
                desired.insert(
                    SvcKey {
                        vip: s.vip,
                        port: *port,
                    },
                    SvcValue { id, flags: 0 },
                );
            }
        }
        for id in fresh {
            self.stats
                .set(id, [0; 16], 0)
                .map_err(map_err("trellis_stats"))?;
        }
        let mut out = Reconciled::default();
        for (k, v) in &desired {
            if current.get(k) == Some(v) {
                out.unchanged += 1;
                continue;
            }
            self.svc
                .insert(k.encode(), v.encode(), 0)
                .map_err(map_err("trellis_svc"))?;
            out.added += 1;
        }
        for k in current.keys().filter(|k| !desired.contains_key(k)) {
            self.svc
                .remove(&k.encode())
                .map_err(map_err("trellis_svc"))?;
            out.removed += 1;
        }
        Ok(out)
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, Error>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| Error::Program(name, Box::new(aya::programs::ProgramError::NotLoaded)))?;
    prog.try_into().map_err(prog_err(name))
}

fn attach_program(ebpf: &mut Ebpf, name: &'static str, cgroup: &File) -> Result<FdLink, Error> {
    let mode = LINK_MODE;
    let link: FdLink = if name == "trellis_sockops" {
        let p: &mut SockOps = program(ebpf, name)?;
        p.load().map_err(prog_err(name))?;
        let id = p.attach(cgroup, mode).map_err(prog_err(name))?;
        p.take_link(id).map_err(prog_err(name))?.try_into()
    } else {
        let p: &mut CgroupSockAddr = program(ebpf, name)?;
        p.load().map_err(prog_err(name))?;
        let id = p.attach(cgroup, mode).map_err(prog_err(name))?;
        p.take_link(id).map_err(prog_err(name))?.try_into()
    }
    .map_err(|e: aya::programs::links::LinkError| Error::Pin(PathBuf::from(name), e.to_string()))?;
    Ok(link)
}

/// Who made each redirected connection, by the connection's client end as
/// the proxy sees it (the entries the sockops program keeps).
#[derive(Clone)]
pub struct Callers(Arc<BpfHashMap<MapData, PeerBytes, OrigBytes>>);

impl Callers {
    /// The cgroup id of the process that connected from `peer`, while the
    /// connection is open.
    pub fn cgroup(&self, peer: SocketAddr) -> Option<u64> {
        let orig = self.0.get(&abi::peer_key(peer), 0).ok()?;
        Some(abi::orig_cgroup(&orig)).filter(|id| *id != 0)
    }
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, Error>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or_else(|| {
        Error::Map(
            name,
            Box::new(aya::maps::MapError::InvalidName { name: name.into() }),
        )
    })?;
    T::try_from(map).map_err(map_err(name))
}

fn unpin(path: &Path) -> Result<(), Error> {
    let link =
        PinnedLink::from_pin(path).map_err(|e| Error::Pin(path.to_path_buf(), e.to_string()))?;
    // Dropping the last reference detaches the program from the cgroup.
    drop(link.unpin().map_err(|e| Error::Io(path.to_path_buf(), e))?);
    Ok(())
}

fn unpin_links(dir: &Path) -> Result<(), Error> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        unpin(&e.path())?;
    }
    Ok(())
}

fn remove_files(dir: &Path) -> Result<(), Error> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        std::fs::remove_file(e.path()).map_err(|err| Error::Io(e.path(), err))?;
    }
    Ok(())
}
